using Microsoft.Extensions.Logging;

namespace Vfio;

/// <summary>The library's log messages, source-generated; lifecycle events only, never the hot paths.</summary>
internal static partial class Log
{
    [LoggerMessage(1, LogLevel.Information, "Registered {Device} in group {GroupId} (set {DeviceSet})")]
    public static partial void Registered(ILogger logger, string device, int groupId, string deviceSet);

    [LoggerMessage(2, LogLevel.Information, "Unregistering {Device} in group {GroupId}; {References} references held")]
    public static partial void Unregistering(ILogger logger, string device, int groupId, int references);

    [LoggerMessage(3, LogLevel.Information, "Unregistered {Device} in group {GroupId} after {ElapsedMs} ms")]
    public static partial void Unregistered(ILogger logger, string device, int groupId, long elapsedMs);

    [LoggerMessage(4, LogLevel.Warning, "Unregistering {Device} in group {GroupId} was cancelled; the device stays registered")]
    public static partial void UnregisterCancelled(ILogger logger, string device, int groupId);

    [LoggerMessage(5, LogLevel.Information, "Asking holders of {Device} in group {GroupId} to release it (request {Count}, {References} references held)")]
    public static partial void ReleaseRequested(ILogger logger, string device, int groupId, int count, int references);

    [LoggerMessage(6, LogLevel.Warning, "The release request hook of {Device} in group {GroupId} threw")]
    public static partial void ReleaseRequestFailed(ILogger logger, string device, int groupId, Exception exception);

    [LoggerMessage(7, LogLevel.Warning, "The last-close hook of {Device} in group {GroupId} threw; the device is closed anyway")]
    public static partial void LastCloseFailed(ILogger logger, string device, int groupId, Exception exception);

    [LoggerMessage(10, LogLevel.Debug, "Opened group {GroupId} ({Kind})")]
    public static partial void GroupOpened(ILogger logger, int groupId, IommuGroupKind kind);

    [LoggerMessage(11, LogLevel.Debug, "Closed group {GroupId}")]
    public static partial void GroupClosed(ILogger logger, int groupId);

    [LoggerMessage(12, LogLevel.Debug, "Attached group {GroupId} to a container with IOMMU {IommuType}")]
    public static partial void GroupAttached(ILogger logger, int groupId, string iommuType);

    [LoggerMessage(13, LogLevel.Debug, "Detached group {GroupId} from its container")]
    public static partial void GroupDetached(ILogger logger, int groupId);

    [LoggerMessage(14, LogLevel.Debug, "Opened a container")]
    public static partial void ContainerOpened(ILogger logger);

    [LoggerMessage(15, LogLevel.Debug, "Closed a container")]
    public static partial void ContainerClosed(ILogger logger);

    [LoggerMessage(16, LogLevel.Warning, "Tearing down group {GroupId} failed")]
    public static partial void GroupTeardownFailed(ILogger logger, int groupId, Exception exception);

    [LoggerMessage(20, LogLevel.Information, "Driver {Driver} probed {Device} in group {GroupId}")]
    public static partial void Probed(ILogger logger, string driver, string device, int groupId);

    [LoggerMessage(21, LogLevel.Warning, "Driver {Driver} failed to set up {Device} in group {GroupId}; nothing was kept")]
    public static partial void ProbeFailed(ILogger logger, string driver, string device, int groupId, Exception exception);

    [LoggerMessage(22, LogLevel.Information, "Device {Device} in group {GroupId} is gone from vfio; removing it")]
    public static partial void Removed(ILogger logger, string device, int groupId);

    [LoggerMessage(700, LogLevel.Debug, "Migration of {Device}: arc {From} -> {To}")]
    public static partial void MigrationArc(ILogger logger, string device, string from, string to);

    [LoggerMessage(701, LogLevel.Warning, "Migration of {Device}: arc {From} -> {To} failed with errno {Errno}; the device is in {Now}")]
    public static partial void MigrationArcFailed(ILogger logger, string device, string from, string to, string now, int errno);

    [LoggerMessage(702, LogLevel.Information, "Migration of {Device}: saved {Bytes} bytes in {State}")]
    public static partial void MigrationSaved(ILogger logger, string device, long bytes, string state);

    [LoggerMessage(703, LogLevel.Information, "Migration of {Device}: wrote {Bytes} bytes into RESUMING")]
    public static partial void MigrationResumed(ILogger logger, string device, long bytes);

    [LoggerMessage(704, LogLevel.Debug, "Migration of {Device}: data session closed on entering {State}")]
    public static partial void MigrationSessionClosed(ILogger logger, string device, string state);
}
