using Microsoft.Extensions.Logging;

namespace Vfio;

// The log messages of the IOMMU modes without isolation and of dirty page tracking (660-669).
internal static partial class Log
{
    [LoggerMessage(660, LogLevel.Information, "Started dirty page tracking of the {IommuType} container ({PageSize} bytes per page)")]
    public static partial void DirtyTrackingStarted(ILogger logger, string iommuType, ulong pageSize);

    [LoggerMessage(661, LogLevel.Warning, "Stopping dirty page tracking failed (errno {Errno}); it stops when the container closes")]
    public static partial void DirtyTrackingStopFailed(ILogger logger, int errno);
}
