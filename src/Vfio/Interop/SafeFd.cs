using System.Runtime.InteropServices;

namespace Vfio.Interop;

/// <summary>A file descriptor owned by the library, closed through the kernel that opened it.</summary>
internal sealed class SafeFd : SafeHandle
{
    public SafeFd(VfioKernel kernel, int fd)
        : base(-1, ownsHandle: true)
    {
        Kernel = kernel;
        SetHandle(fd);
    }

    /// <summary>The kernel this descriptor belongs to.</summary>
    public VfioKernel Kernel { get; }

    /// <summary>The raw descriptor number (for diagnostics, poll and passing to ioctls).</summary>
    public int Value => (int)handle;

    public override bool IsInvalid => handle == -1;

    protected override bool ReleaseHandle() => Kernel.Close((int)handle) == 0;

    public override string ToString() => "fd " + Value.ToString(System.Globalization.CultureInfo.InvariantCulture);
}
