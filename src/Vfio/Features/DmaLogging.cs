using System.Runtime.InteropServices;
using Vfio.Interop;

namespace Vfio;

/// <summary>An IOVA range whose device DMA writes are logged.</summary>
/// <param name="Iova">The first IOVA, aligned to the page size.</param>
/// <param name="Length">The length in bytes, a multiple of the page size.</param>
public readonly record struct DmaLogRange(ulong Iova, ulong Length);

public abstract partial class VfioDevice
{
    /// <summary>
    /// Starts device DMA dirty logging for <paramref name="ranges"/> (<c>VFIO_DEVICE_FEATURE_DMA_LOGGING_START</c>,
    /// Linux 6.1, drivers with log support such as mlx5). Dispose the session to stop it.
    /// </summary>
    /// <param name="ranges">Non-overlapping ranges, aligned to <paramref name="pageSize"/>.</param>
    /// <param name="pageSize">The tracking granularity asked for; the device may choose another (see <see cref="DmaLoggingSession.PageSize"/>).</param>
    /// <returns>The logging session.</returns>
    /// <exception cref="VfioNotSupportedException">The device cannot log DMA.</exception>
    public unsafe DmaLoggingSession StartDmaLogging(IReadOnlyList<DmaLogRange> ranges, ulong pageSize = 4096)
    {
        ArgumentNullException.ThrowIfNull(ranges);
        var native = new vfio_device_feature_dma_logging_range[ranges.Count];
        for (int i = 0; i < native.Length; i++)
        {
            native[i] = new vfio_device_feature_dma_logging_range { iova = ranges[i].Iova, length = ranges[i].Length };
        }
        fixed (vfio_device_feature_dma_logging_range* p = native)
        {
            var control = SetFeature(VfioFeature.DmaLoggingStart, new vfio_device_feature_dma_logging_control
            {
                page_size = pageSize,
                num_ranges = (uint)native.Length,
                ranges = (ulong)p,
            });
            return new DmaLoggingSession(this, control.page_size);
        }
    }

    /// <summary>Reads and clears the dirty log for a range (<c>DMA_LOGGING_REPORT</c>): one bit per page, set when written.</summary>
    internal unsafe ulong[] ReportDmaLog(ulong iova, ulong length, ulong pageSize)
    {
        ulong pages = (length + pageSize - 1) / pageSize;
        var bitmap = new ulong[(pages + 63) / 64];
        fixed (ulong* p = bitmap)
        {
            GetFeature(VfioFeature.DmaLoggingReport, new vfio_device_feature_dma_logging_report
            {
                iova = iova,
                length = length,
                page_size = pageSize,
                bitmap = (ulong)p,
            });
        }
        return bitmap;
    }
}

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
