using System.Runtime.InteropServices;
using Vfio.Interop;

namespace Vfio;

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
