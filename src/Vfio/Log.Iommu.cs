using Microsoft.Extensions.Logging;

namespace Vfio;

// The log messages of the IOMMU modes without isolation and of dirty page tracking (660-669).
internal static partial class Log
{
    [LoggerMessage(660, LogLevel.Information, "Started dirty page tracking of the {IommuType} container ({PageSize} bytes per page)")]
    public static partial void DirtyTrackingStarted(ILogger logger, string iommuType, ulong pageSize);

    [LoggerMessage(661, LogLevel.Warning, "Stopping dirty page tracking failed (errno {Errno}); it stops when the container closes")]
    public static partial void DirtyTrackingStopFailed(ILogger logger, int errno);

    [LoggerMessage(662, LogLevel.Warning, "Group {GroupId} is a no-IOMMU group: its devices do DMA with no IOMMU between them and memory. A device can read and write all of the machine's memory, not only its DMA buffers, which the library gives it by physical address; using the group taints the kernel. Use no-IOMMU mode only for trusted devices on machines without an IOMMU")]
    public static partial void NoIommuContainer(ILogger logger, int groupId);
}
