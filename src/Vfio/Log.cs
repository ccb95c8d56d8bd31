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

    [LoggerMessage(8, LogLevel.Error, "An {Kind}reference to {Device} in group {GroupId} was released twice: a copy of a DeviceReference was disposed after the reference it copies. The second release was ignored; dispose only one copy. At:\n{Stack}")]
    public static partial void DeviceReferenceReleasedTwice(ILogger logger, string device, int groupId, string kind, string stack);

    [LoggerMessage(10, LogLevel.Debug, "Opened group {GroupId} ({Kind})")]
    public static partial void GroupOpened(ILogger logger, int groupId, IommuGroupKind kind);

    [LoggerMessage(11, LogLevel.Debug, "Closed group {GroupId}")]
    public static partial void GroupClosed(ILogger logger, int groupId);

    [LoggerMessage(12, LogLevel.Debug, "Attached group {GroupId} to a container with IOMMU {IommuType}")]
    public static partial void GroupAttached(ILogger logger, int groupId, string iommuType);

    [LoggerMessage(13, LogLevel.Debug, "Detached group {GroupId} from its container")]
    public static partial void GroupDetached(ILogger logger, int groupId);

    [LoggerMessage(14, LogLevel.Debug, "Opened a container: {Provider}")]
    public static partial void ContainerOpened(ILogger logger, string provider);

    [LoggerMessage(15, LogLevel.Debug, "Closed a container")]
    public static partial void ContainerClosed(ILogger logger);

    [LoggerMessage(17, LogLevel.Debug, "Group {GroupId} does not fit an open container ({Errno}); trying the next, or a new one")]
    public static partial void GroupIncompatible(ILogger logger, int groupId, string errno);

    [LoggerMessage(16, LogLevel.Warning, "Tearing down group {GroupId} failed")]
    public static partial void GroupTeardownFailed(ILogger logger, int groupId, Exception exception);

    [LoggerMessage(30, LogLevel.Information, "{Path} {Presence}; the VFIO backend for devices with a VFIO cdev: {Backend}")]
    private static partial void IommufdPresence(ILogger logger, string path, string presence, VfioBackend backend);

    public static void IommufdPresence(ILogger logger, string path, bool present, VfioBackend? forced) =>
        IommufdPresence(logger, path, present ? "exists" : "does not exist",
            forced ?? (present ? VfioBackend.Iommufd : VfioBackend.Legacy));

    [LoggerMessage(31, LogLevel.Debug, "Opening {Device} through the {Backend} backend ({Why})")]
    public static partial void BackendChosen(ILogger logger, string device, VfioBackend backend, string why);

    [LoggerMessage(32, LogLevel.Debug, "Opened {Path} and allocated IOAS {IoasId}; pinned memory is charged to the {Accounting}")]
    private static partial void IoasAllocated(ILogger logger, string path, uint ioasId, string accounting);

    public static void IoasAllocated(ILogger logger, uint ioasId, LockedMemoryAccounting accounting) =>
        IoasAllocated(logger, "/dev/iommu", ioasId, accounting == LockedMemoryAccounting.Process ? "process (IOMMU_OPTION_RLIMIT_MODE 1)" : "user (IOMMU_OPTION_RLIMIT_MODE 0)");

    [LoggerMessage(33, LogLevel.Debug, "Bound {Device} ({Path}) to the iommufd as device {DeviceId} and attached it to IOAS {IoasId} (page table {PageTable})")]
    public static partial void CdevAttached(ILogger logger, string device, string path, uint deviceId, uint ioasId, uint pageTable);

    [LoggerMessage(34, LogLevel.Debug, "Detached {Path} from IOAS {IoasId} and closed it")]
    public static partial void CdevDetached(ILogger logger, string path, uint ioasId);

    [LoggerMessage(35, LogLevel.Warning, "Tearing down {Path} failed; closing it undoes the rest")]
    public static partial void CdevTeardownFailed(ILogger logger, string path, Exception exception);

    [LoggerMessage(36, LogLevel.Debug, "Destroyed IOAS {IoasId} and closed the iommufd")]
    public static partial void IoasDestroyed(ILogger logger, uint ioasId);

    [LoggerMessage(37, LogLevel.Warning, "Tearing down IOAS {IoasId} failed; closing the iommufd drops what is left")]
    public static partial void IoasTeardownFailed(ILogger logger, uint ioasId, Exception exception);

    [LoggerMessage(20, LogLevel.Information, "Driver {Driver} probed {Device} in group {GroupId}")]
    public static partial void Probed(ILogger logger, string driver, string device, int groupId);

    [LoggerMessage(21, LogLevel.Warning, "Driver {Driver} failed to set up {Device} in group {GroupId}; nothing was kept")]
    public static partial void ProbeFailed(ILogger logger, string driver, string device, int groupId, Exception exception);

    [LoggerMessage(22, LogLevel.Information, "Device {Device} in group {GroupId} is gone from vfio; removing it")]
    public static partial void Removed(ILogger logger, string device, int groupId);

    [LoggerMessage(23, LogLevel.Warning, "Discovery left out {Device}: {Reason}")]
    public static partial void DiscoveryFailed(ILogger logger, string device, string reason, Exception exception);

    [LoggerMessage(24, LogLevel.Error, "Disposing the registry gave up after {ElapsedMs} ms; still held: {Holders}")]
    public static partial void DisposeGaveUp(ILogger logger, long elapsedMs, string holders);

    [LoggerMessage(25, LogLevel.Information, "Driver {Driver} matches {Device}, which is not bound to vfio-pci but to {KernelDriver}: {Hint}")]
    public static partial void MatchNotOnVfio(ILogger logger, string driver, string device, string kernelDriver, string hint);

    [LoggerMessage(550, LogLevel.Information, "The kernel asks for {Device} in group {GroupId} back (REQ signal {Count}); asking its holders to release it")]
    public static partial void KernelRequestedRelease(ILogger logger, string device, int groupId, int count);

    [LoggerMessage(551, LogLevel.Warning, "The kernel reported an error on {Device} in group {GroupId} ({Count} ERR signals)")]
    public static partial void DeviceErrorReported(ILogger logger, string device, int groupId, ulong count);

    [LoggerMessage(552, LogLevel.Warning, "An ErrorDetected handler of {Device} in group {GroupId} threw")]
    public static partial void ErrorHandlerFailed(ILogger logger, string device, int groupId, Exception exception);

    [LoggerMessage(560, LogLevel.Warning, "Waking the interrupt thread of {Set} failed ({Errno}); it sees what changed at its next stop check, within {IntervalMs} ms")]
    public static partial void InterruptWakeFailed(ILogger logger, string set, string errno, long intervalMs);

    [LoggerMessage(561, LogLevel.Error, "The interrupt thread of {Set} did not stop within {WaitMs} ms (a continuation running inline on it blocks?); its eventfds are closed when it stops")]
    public static partial void InterruptThreadStuck(ILogger logger, string set, long waitMs);

    [LoggerMessage(562, LogLevel.Error, "The interrupt thread of {Set} stopped: the kernel refused its call; every wait of the set now fails")]
    public static partial void InterruptPollerFailed(ILogger logger, string set, Exception exception);

    [LoggerMessage(563, LogLevel.Error, "The notifier thread did not let go of {Set} within {WaitMs} ms; its eventfd is closed when the thread next looks")]
    public static partial void NotifierThreadStuck(ILogger logger, string set, long waitMs);

    [LoggerMessage(570, LogLevel.Error, "munmap of {Region} at 0x{Address:x} ({Length} bytes) failed ({Errno}); the range stays mapped (all-ones, no longer reaching the device) until the region's next Dispose retries it")]
    public static partial void RegionUnmapFailed(ILogger logger, string region, nint address, ulong length, string errno);

    [LoggerMessage(571, LogLevel.Error, "Mapping {Region} again after its device's memory came back failed; it keeps reading all-ones until the memory is enabled again")]
    public static partial void RegionRemapFailed(ILogger logger, string region, Exception exception);

    [LoggerMessage(572, LogLevel.Error, "Putting all-ones in place of {Region} at its revoke failed ({Errno}); it was unmapped instead")]
    public static partial void RegionRevokeFailed(ILogger logger, string region, string errno);

    [LoggerMessage(600, LogLevel.Debug, "Hot reset of {Device} affects {Count} functions in groups {Groups}")]
    public static partial void HotResetScope(ILogger logger, string device, int count, string groups);

    [LoggerMessage(601, LogLevel.Information, "Hot reset of {Device} done; reset {Devices}")]
    public static partial void HotResetDone(ILogger logger, string device, string devices);

    [LoggerMessage(602, LogLevel.Warning, "Hot reset of {Device} refused: {Missing}")]
    public static partial void HotResetNotOwned(ILogger logger, string device, string missing);

    [LoggerMessage(850, LogLevel.Warning, "Platform device {Device} in group {GroupId} is assigned to vfio-platform but not bound: {Reason}")]
    public static partial void PlatformRefused(ILogger logger, string device, int groupId, string reason);

    [LoggerMessage(650, LogLevel.Debug, "Mapped DMA buffer 0x{Iova:x}+0x{Length:x} for {Device}")]
    public static partial void DmaMapped(ILogger logger, string device, ulong iova, ulong length);

    [LoggerMessage(651, LogLevel.Debug, "Unmapped DMA buffer 0x{Iova:x}+0x{Length:x}")]
    public static partial void DmaUnmapped(ILogger logger, ulong iova, ulong length);

    [LoggerMessage(652, LogLevel.Debug, "The address space's last user is leaving: unmapping its {Count} DMA buffers")]
    public static partial void DmaUnmappingAll(ILogger logger, int count);

    [LoggerMessage(653, LogLevel.Warning, "Unmapping DMA buffer 0x{Iova:x}+0x{Length:x} failed; its address space unmaps it again when its last user leaves, and the kernel drops it with the IOMMU in any case")]
    public static partial void DmaUnmapFailed(ILogger logger, ulong iova, ulong length, Exception exception);

    [LoggerMessage(655, LogLevel.Error, "munmap of the memory of DMA buffer 0x{Iova:x}+0x{Length:x} of {Device} failed ({Errno}); it stays mapped in this process (the device no longer reaches it) until the buffer's next Dispose retries it")]
    public static partial void DmaMemoryUnmapFailed(ILogger logger, ulong iova, ulong length, string device, string errno);

    [LoggerMessage(654, LogLevel.Information, "No free 2 MiB hugepages for a DMA buffer of {Device}; using 4 KiB pages instead")]
    public static partial void HugePagesFallback(ILogger logger, string device);

    [LoggerMessage(500, LogLevel.Warning, "The {Kind} capability list of {Device} loops back to offset {Offset:x}; using the {Count} capabilities before it")]
    public static partial void CapabilityListLoops(ILogger logger, string device, string kind, int offset, int count);

    [LoggerMessage(800, LogLevel.Information, "Created mdev {Uuid} of type {Type} on parent {Parent}")]
    public static partial void MdevCreated(ILogger logger, string uuid, string type, string parent);

    [LoggerMessage(801, LogLevel.Information, "Removed mdev {Uuid} of type {Type} on parent {Parent}")]
    public static partial void MdevRemoved(ILogger logger, string uuid, string type, string parent);

    [LoggerMessage(802, LogLevel.Warning, "Setting up mdev {Uuid} of type {Type} on parent {Parent} failed; it was removed again")]
    public static partial void MdevCreateFailed(ILogger logger, string uuid, string type, string parent, Exception exception);

    [LoggerMessage(803, LogLevel.Error, "Removing mdev {Uuid} failed; it is left in sysfs")]
    public static partial void MdevRemoveFailed(ILogger logger, string uuid, Exception exception);

    [LoggerMessage(804, LogLevel.Debug, "Mdev {Uuid} was gone already when it was to be removed")]
    public static partial void MdevAlreadyGone(ILogger logger, string uuid);

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
