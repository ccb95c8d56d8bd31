using Microsoft.Extensions.Logging;

namespace Vfio;

/// <summary>Settings of <see cref="PciBinding.BindAsync"/>, <see cref="PciBinding.RestoreAsync(VfioKernel, IEnumerable{PciBoundFunction}, PciBindOptions?, IProgress{PciBindingWait}?, CancellationToken)"/> and <see cref="PciBinding.UnbindAsync"/>.</summary>
public sealed record PciBindOptions
{
    /// <summary>
    /// Binds every other function of each device's IOMMU group too (except bridges, which vfio-pci never
    /// binds and the PCIe port driver does not block), so the group becomes viable. Without it, a group
    /// whose other members are bound to kernel drivers is refused, naming them.
    /// </summary>
    public bool WholeGroup { get; init; }

    /// <summary>The user to give the group node (and device cdevs) to once they appear; null leaves the owner (root).</summary>
    public int? NodeUserId { get; init; }

    /// <summary>The group to give the group node (and device cdevs) to; null leaves it.</summary>
    public int? NodeGroupId { get; init; }

    /// <summary>
    /// How long to wait for <c>/dev/vfio/N</c> (or the device's cdev) to appear after binding, and, when
    /// restoring, for the original driver to be allowed to probe (EBUSY while a process still holds the
    /// group attached to a container). Default: 10 s.
    /// </summary>
    public TimeSpan NodeTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Unbinds a device from vfio-pci even when its group is open in some process. The kernel then
    /// blocks the unbind until that process closes the device, asking it to (the device's REQ
    /// interrupt, every 10 s). Without it such a device is refused with <see cref="VfioBusyException"/>.
    /// </summary>
    public bool WaitForRelease { get; init; }

    /// <summary>How often a long wait reports progress (default: every second).</summary>
    public TimeSpan ProgressInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Where the steps are logged; nowhere when null.</summary>
    public ILoggerFactory? LoggerFactory { get; init; }
}

/// <summary>A function <see cref="PciBinding"/> handed to vfio-pci, and what it had before.</summary>
/// <param name="Address">The function's address.</param>
/// <param name="GroupId">Its IOMMU group (after binding: a no-IOMMU group gets its number then).</param>
/// <param name="OriginalDriver">The driver it was bound to before ("nvme"), or null when it had none.</param>
/// <param name="OriginalOverride">Its driver_override before, or null when unset.</param>
/// <param name="Changed">False when it was already bound to a vfio driver and nothing was done to it.</param>
/// <remarks>
/// The driver names become part of sysfs paths when the function is restored, so they are checked when
/// the record is made (from a binding record a file kept, say): a name that is not a driver name (one
/// path component, no '/', not '.' or '..') is refused with an <see cref="ArgumentException"/>.
/// </remarks>
public sealed record PciBoundFunction(PciAddress Address, int GroupId, string? OriginalDriver, string? OriginalOverride, bool Changed = true)
{
    /// <summary>The driver it was bound to before ("nvme"), or null when it had none.</summary>
    public string? OriginalDriver { get; init; } = OriginalDriver is null ? null : KernelNames.Check(KernelNameKind.Driver, OriginalDriver);

    /// <summary>Its driver_override before, or null when unset.</summary>
    public string? OriginalOverride { get; init; } = OriginalOverride is null ? null : KernelNames.Check(KernelNameKind.Driver, OriginalOverride);
}

/// <summary>A wait that is taking long: what is awaited and for how long so far.</summary>
/// <param name="What">What is awaited ("/dev/vfio/7 to appear", "the process holding group 7 to release 0000:00:06.0").</param>
/// <param name="Elapsed">How long it has been waited for.</param>
/// <param name="Limit">When it gives up, or null when it waits as long as the kernel does.</param>
public sealed record PciBindingWait(string What, TimeSpan Elapsed, TimeSpan? Limit);
