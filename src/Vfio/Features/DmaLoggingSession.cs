using System.Runtime.InteropServices;
using Vfio.Interop;

namespace Vfio;

/// <summary>An IOVA range whose device DMA writes are logged.</summary>
/// <param name="Iova">The first IOVA, aligned to the page size.</param>
/// <param name="Length">The length in bytes, a multiple of the page size.</param>
public readonly record struct DmaLogRange(ulong Iova, ulong Length);

/// <summary>Device DMA dirty logging in progress; disposing it stops the logging (<c>DMA_LOGGING_STOP</c>).</summary>
public sealed class DmaLoggingSession : IDisposable
{
    private readonly VfioDevice _device;
    private bool _stopped;

    internal DmaLoggingSession(VfioDevice device, ulong pageSize)
    {
        _device = device;
        PageSize = pageSize;
    }

    /// <summary>The granularity the device chose.</summary>
    public ulong PageSize { get; }

    /// <summary>
    /// Reads and clears the log for a range: bit <c>i</c> of the result (word <c>i / 64</c>) is set when
    /// the device wrote the page at <c>iova + i * pageSize</c>. After an error, treat all memory as dirty.
    /// </summary>
    /// <param name="iova">The start of the range.</param>
    /// <param name="length">Its length in bytes.</param>
    /// <param name="pageSize">The reporting granularity (a power of two, at least 4 KiB); <see cref="PageSize"/> when null.</param>
    public ulong[] Report(ulong iova, ulong length, ulong? pageSize = null)
    {
        ObjectDisposedException.ThrowIf(_stopped, this);
        return _device.ReportDmaLog(iova, length, pageSize ?? PageSize);
    }

    /// <summary>Stops the logging.</summary>
    public void Dispose()
    {
        if (_stopped)
        {
            return;
        }
        _stopped = true;
        if (_device.IsOpen)
        {
            _device.CheckFeature(VfioFeature.DmaLoggingStop, VfioFeatureAccess.Set, []);
        }
    }
}
