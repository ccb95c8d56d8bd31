using System.Runtime.InteropServices;
using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio;

/// <summary>The wake-up notification of <see cref="VfioDevice.EnterLowPowerWithWakeup"/>: an eventfd the kernel signals.</summary>
public sealed class LowPowerWakeup : IDisposable
{
    private readonly VfioKernel _kernel;
    private readonly SafeFd _fd;
    private bool _woken;

    internal LowPowerWakeup(VfioKernel kernel, SafeFd fd)
    {
        _kernel = kernel;
        _fd = fd;
    }

    /// <summary>Whether the kernel has signalled the wake-up (the device left low power).</summary>
    public bool HasWoken
    {
        get
        {
            if (!_woken && !_fd.IsClosed)
            {
                Span<byte> value = stackalloc byte[8];
                _woken = _kernel.Read(_fd, value) == 8 && MemoryMarshal.Read<ulong>(value) != 0;
            }
            return _woken;
        }
    }

    /// <summary>Closes the eventfd (the kernel keeps its own reference until low power is exited).</summary>
    public void Dispose() => _fd.Dispose();
}
