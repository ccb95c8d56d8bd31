using System.Globalization;
using System.Runtime.InteropServices;
using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio;

/// <summary>A PCI function that a hot reset of a device also resets, as the kernel reports it.</summary>
/// <param name="Address">The function's address.</param>
/// <param name="GroupId">Its IOMMU group (read from sysfs in the dev-id form, where the kernel reports none; -1 when sysfs has none).</param>
public sealed record PciHotResetDependency(PciAddress Address, int GroupId)
{
    /// <summary>
    /// For a device opened through the iommufd backend, the kernel's dev-id form: the function's id in
    /// the registry's iommufd when it is bound there, 0 (<c>VFIO_PCI_DEVID_OWNED</c>) when it is not but
    /// a device of its group is, 0xffffffff (<c>VFIO_PCI_DEVID_NOT_OWNED</c>) when neither. Null in the
    /// group form (a device opened through the legacy backend).
    /// </summary>
    public uint? IommufdDeviceId { get; init; }

    /// <summary>In the dev-id form: the registry owns the function (bound to its iommufd, or through its group).</summary>
    internal bool OwnedThroughIommufd => IommufdDeviceId is uint id && id != unchecked((uint)VfioUapi.VFIO_PCI_DEVID_NOT_OWNED);

    /// <inheritdoc/>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"{Address} (group {GroupId})");
}

public abstract partial class PciVfioDevice
{
    // Functions behind one bridge; the kernel answers ENOSPC with the real count when it is more.
    private const int InitialDependencyCapacity = 8;
    private const int MaxDependencies = 256 * 8;

    /// <summary>
    /// The functions a hot reset of this device would reset, this one included
    /// (<c>VFIO_DEVICE_GET_PCI_HOT_RESET_INFO</c>): every function in its slot when the slot can be
    /// reset, otherwise every function on its bus and the buses below. For a device opened through the
    /// iommufd backend the kernel answers in its dev-id form (Linux 6.6 and later): each function's id
    /// in the registry's iommufd instead of its group (see <see cref="PciHotResetDependency.IommufdDeviceId"/>).
    /// </summary>
    /// <returns>The affected functions with their groups, in the kernel's order.</returns>
    /// <exception cref="InvalidOperationException">The device is not open.</exception>
    /// <exception cref="VfioNotSupportedException">
    /// Neither a slot nor a bus reset is possible (ENODEV): the device sits on a root bus with no
    /// parent bridge, or its bridge cannot reset the bus below it.
    /// </exception>
    public IReadOnlyList<PciHotResetDependency> GetHotResetDependencies() => QueryHotResetInfo(out _);

    private unsafe PciHotResetDependency[] QueryHotResetInfo(out uint flags)
    {
        var fd = DeviceFd;
        int capacity = InitialDependencyCapacity;
        while (true)
        {
            int size = sizeof(vfio_pci_hot_reset_info) + (capacity * sizeof(vfio_pci_dependent_device));
            var buffer = new byte[size];
            MemoryMarshal.Write(buffer, new vfio_pci_hot_reset_info { argsz = (uint)size });
            int rc;
            fixed (byte* p = buffer)
            {
                rc = Kernel.Ioctl(fd, VfioUapi.VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, p);
            }
            var info = MemoryMarshal.Read<vfio_pci_hot_reset_info>(buffer);
            // Too small: the kernel says how many functions there are in count (argsz stays as given).
            if (rc == -Errno.ENOSPC && info.count > capacity && info.count <= MaxDependencies)
            {
                capacity = (int)info.count;
                continue;
            }
            if (rc < 0)
            {
                throw HotResetError(-rc, "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO", devIds: false);
            }
            if (info.count > capacity)
            {
                throw new VfioException($"VFIO_DEVICE_GET_PCI_HOT_RESET_INFO ({ErrorTarget}) reported {info.count} functions for a buffer of {capacity}.");
            }
            var entries = MemoryMarshal.Cast<byte, vfio_pci_dependent_device>(buffer.AsSpan(sizeof(vfio_pci_hot_reset_info)));
            bool devIds = (info.flags & VfioUapi.VFIO_PCI_HOT_RESET_FLAG_DEV_ID) != 0;
            var result = new PciHotResetDependency[info.count];
            for (int i = 0; i < result.Length; i++)
            {
                var e = entries[i];
                var address = new PciAddress(e.segment, e.bus, (byte)(e.devfn >> 3), (byte)(e.devfn & 7));
                result[i] = devIds
                    ? new PciHotResetDependency(address, GroupOf(address)) { IommufdDeviceId = e.devid }
                    : new PciHotResetDependency(address, (int)e.group_id);
            }
            flags = info.flags;
            return result;
        }
    }

    /// <summary>
    /// Resets the slot or bus this device sits on (<c>VFIO_DEVICE_PCI_HOT_RESET</c>), which resets every
    /// function of <see cref="GetHotResetDependencies"/>. The library first proves that it owns each
    /// of them, as the kernel requires: the function must be bound to a vfio driver, and its group open
    /// in this registry (a device of the group opened through it). Then, for a device opened through
    /// the legacy backend, it passes the open group files to the kernel; for one opened through the
    /// iommufd backend the ownership is the iommufd's (each function bound to it, or in a group a device
    /// bound to it is in), and the file array is empty.
    /// </summary>
    /// <remarks>
    /// While it runs, the device sets of the affected functions are locked (in the order of their
    /// ids, so two hot resets cannot deadlock) and their groups are held open: no affected device
    /// runs its first-open or last-close hook, and no affected group closes, during the reset. The
    /// kernel saves and restores each function's config space around the reset; device-internal
    /// state is lost, DMA mappings and interrupt eventfds stay, mapped BARs fault back in on access.
    /// Do not call it from <see cref="VfioDevice.OnFirstOpen"/> or <see cref="VfioDevice.OnLastClose"/>.
    /// </remarks>
    /// <exception cref="InvalidOperationException">The device is not open.</exception>
    /// <exception cref="VfioNotSupportedException">Neither a slot nor a bus reset is possible (ENODEV).</exception>
    /// <exception cref="VfioHotResetNotOwnedException">An affected function or group is not owned; each is named.</exception>
    /// <exception cref="VfioException">The kernel refused the reset.</exception>
    public void HotReset()
    {
        var dependencies = QueryHotResetInfo(out uint flags);
        // The sets of the affected functions this registry has devices for (a function's set is the
        // kernel's: its slot's, its bus's, or its own; see SysfsDiscovery.PciSetId).
        var sets = new SortedDictionary<string, DeviceSet>(StringComparer.Ordinal) { [Set.Id] = Set };
        foreach (var dependency in dependencies)
        {
            if (Registry.TryFind<VfioDevice>(dependency.Address.ToString(), out var affected))
            {
                sets.TryAdd(affected.Set.Id, affected.Set);
            }
        }
        var locked = new List<DeviceSet>(sets.Count);
        try
        {
            foreach (var set in sets.Values)
            {
                set.Lock.Enter();
                locked.Add(set);
            }
            if ((flags & VfioUapi.VFIO_PCI_HOT_RESET_FLAG_DEV_ID) != 0)
            {
                HotResetByDeviceIdLocked(dependencies);
            }
            else
            {
                HotResetByGroupsLocked(dependencies);
            }
        }
        finally
        {
            for (int i = locked.Count - 1; i >= 0; i--)
            {
                locked[i].Lock.Exit();
            }
        }
    }

    // The group form (Linux 6.1's, and a device opened through its group since): the files of every
    // affected group prove the ownership; the groups stay pinned open until the reset returned.
    private unsafe void HotResetByGroupsLocked(PciHotResetDependency[] dependencies)
    {
        LockAssert.Held(Set.Lock);
        var groupIds = dependencies.Select(d => d.GroupId).Append(GroupId).Distinct().Order().ToList();
        Log.HotResetScope(Registry.Logger, Name, dependencies.Length, string.Join(",", groupIds));
        var pinned = new List<IommuGroup>(groupIds.Count);
        try
        {
            var missingGroups = new List<int>();
            foreach (int id in groupIds)
            {
                if (Registry.LegacyBackend.TryPinGroup(id, out var group))
                {
                    pinned.Add(group);
                }
                else
                {
                    missingGroups.Add(id);
                }
            }
            var unowned = new List<string>();
            foreach (var dependency in dependencies)
            {
                string? why = missingGroups.Contains(dependency.GroupId)
                    ? $"group {dependency.GroupId} is not open in this registry"
                    : NotVfioBound(dependency.Address);
                if (why is not null)
                {
                    unowned.Add($"{dependency}: {why}");
                }
            }
            if (unowned.Count > 0)
            {
                throw NotOwned(unowned, missingGroups);
            }

            var fd = DeviceFd;
            int count = pinned.Count;
            int size = sizeof(vfio_pci_hot_reset) + (count * sizeof(int));
            var buffer = new byte[size];
            MemoryMarshal.Write(buffer, new vfio_pci_hot_reset { argsz = (uint)size, count = (uint)count });
            var handles = new bool[count];
            try
            {
                var fds = MemoryMarshal.Cast<byte, int>(buffer.AsSpan(sizeof(vfio_pci_hot_reset)));
                for (int i = 0; i < count; i++)
                {
                    pinned[i].Fd.DangerousAddRef(ref handles[i]);
                    fds[i] = (int)pinned[i].Fd.DangerousGetHandle();
                }
                int rc = WithAffectedRegionsSuspended(dependencies, () =>
                {
                    fixed (byte* p = buffer)
                    {
                        return Kernel.Ioctl(fd, VfioUapi.VFIO_DEVICE_PCI_HOT_RESET, p);
                    }
                });
                if (rc < 0)
                {
                    throw HotResetError(-rc, "VFIO_DEVICE_PCI_HOT_RESET", devIds: false);
                }
            }
            finally
            {
                for (int i = 0; i < count; i++)
                {
                    if (handles[i])
                    {
                        pinned[i].Fd.DangerousRelease();
                    }
                }
            }
            Log.HotResetDone(Registry.Logger, Name, string.Join(", ", dependencies.Select(d => d.Address)));
        }
        finally
        {
            foreach (var group in pinned)
            {
                Registry.LegacyBackend.ReleaseGroup(group, pinned: true);
            }
        }
    }

    // The dev-id form (Linux 6.6 and later, a device opened through its cdev): the kernel proves the
    // ownership through the registry's iommufd and takes an empty file array. The device sets are
    // locked, so no affected device bound to the iommufd closes (and lets go of its group) meanwhile.
    private unsafe void HotResetByDeviceIdLocked(PciHotResetDependency[] dependencies)
    {
        LockAssert.Held(Set.Lock);
        Log.HotResetScope(Registry.Logger, Name, dependencies.Length, string.Join(",", dependencies.Select(d => d.GroupId).Append(GroupId).Distinct().Order()));
        var unowned = new List<string>();
        var missingGroups = new List<int>();
        foreach (var dependency in dependencies.Where(d => !d.OwnedThroughIommufd))
        {
            string? why = NotVfioBound(dependency.Address);
            if (why is null)
            {
                why = $"neither it nor a device of group {dependency.GroupId} is open through this registry's iommufd";
                if (!missingGroups.Contains(dependency.GroupId))
                {
                    missingGroups.Add(dependency.GroupId);
                }
            }
            unowned.Add($"{dependency}: {why}");
        }
        if (unowned.Count > 0)
        {
            throw NotOwned(unowned, missingGroups);
        }
        int rc = WithAffectedRegionsSuspended(dependencies, () =>
        {
            var reset = new vfio_pci_hot_reset { argsz = (uint)sizeof(vfio_pci_hot_reset), count = 0 };
            return Kernel.Ioctl(DeviceFd, VfioUapi.VFIO_DEVICE_PCI_HOT_RESET, &reset);
        });
        if (rc < 0)
        {
            throw HotResetError(-rc, "VFIO_DEVICE_PCI_HOT_RESET", devIds: true);
        }
        Log.HotResetDone(Registry.Logger, Name, string.Join(", ", dependencies.Select(d => d.Address)));
    }

    // Why the function is not the kernel's to reset for us (bound to no driver, or to a host one), or null.
    private string? NotVfioBound(PciAddress address) =>
        Registry.Sysfs.ReadLinkName(SysfsDiscovery.PciDir(address) + "/driver", ErrorTarget) switch
        {
            null => "it is bound to no driver",
            string d when !SysfsDiscovery.IsVfioDriver(d) => "it is bound to " + d,
            _ => null,
        };

    // The function's IOMMU group from sysfs, or -1.
    private int GroupOf(PciAddress address) =>
        int.TryParse(Registry.Sysfs.ReadLinkName(SysfsDiscovery.PciDir(address) + "/iommu_group", ErrorTarget), NumberStyles.None, CultureInfo.InvariantCulture, out int id) ? id : -1;

    /// <summary>
    /// Runs the reset ioctl (either form) with the mapped regions of every affected open device
    /// suspended (all-ones in place while the functions reset), and resumes them after, whatever it returned.
    /// </summary>
    private int WithAffectedRegionsSuspended(IReadOnlyList<PciHotResetDependency> dependencies, Func<int> reset)
    {
        var affected = SuspendAffectedRegions(dependencies);
        try
        {
            return reset();
        }
        finally
        {
            foreach (var device in affected)
            {
                device.ResumeMappedRegions();
            }
        }
    }

    /// <summary>
    /// Suspends the mapped regions of every open device of this registry the hot reset resets (this one
    /// and its dependencies); their sets are locked, so none opens or closes meanwhile. On a failure,
    /// the ones already suspended are resumed and the reset is not done.
    /// </summary>
    private List<VfioDevice> SuspendAffectedRegions(IReadOnlyList<PciHotResetDependency> dependencies)
    {
        var affected = new List<VfioDevice>();
        try
        {
            foreach (string name in dependencies.Select(d => d.Address.ToString()).Append(Name).Distinct())
            {
                if (Registry.TryFind<VfioDevice>(name, out var device) && device.IsOpen)
                {
                    device.SuspendMappedRegions();
                    affected.Add(device);
                }
            }
            return affected;
        }
        catch
        {
            foreach (var device in affected)
            {
                device.ResumeMappedRegions();
            }
            throw;
        }
    }

    private VfioHotResetNotOwnedException NotOwned(List<string> unowned, List<int> missingGroups)
    {
        string what = string.Join("; ", unowned);
        Log.HotResetNotOwned(Registry.Logger, Name, what);
        string todo = missingGroups.Count > 0
            ? $"Open a device of group{(missingGroups.Count > 1 ? "s" : "")} {string.Join(", ", missingGroups)} through this registry, bind every listed function to vfio-pci, and retry"
            : "Bind every listed function to vfio-pci and retry";
        return new VfioHotResetNotOwnedException(
            $"Hot reset of {Name} would reset functions this registry does not own: {what}. {todo}.",
            Name, unowned, missingGroups);
    }

    private VfioException HotResetError(int errno, string operation, bool devIds)
    {
        if (errno == Errno.ENODEV)
        {
            return new VfioNotSupportedException(
                $"{operation} ({ErrorTarget}) failed: ENODEV. {Name} cannot be hot reset: neither its slot nor its bus can be reset "
                + "(it sits on a root bus with no parent bridge, or its bridge cannot reset the bus below it). Use Reset() where Info.CanReset says so",
                operation, errno, ErrorTarget);
        }
        string? hint = errno switch
        {
            Errno.EINVAL when devIds => "The kernel wants every affected function bound to vfio-pci and owned through this registry's iommufd (bound to it, or in a group a device bound to it is in)",
            Errno.EINVAL => "The kernel wants a file of every affected group and every affected function bound to vfio-pci",
            Errno.EBUSY => "A device of the reset scope was being accessed by another thread (the kernel only tries its locks); retry",
            _ => null,
        };
        return VfioErrors.Create(errno, operation, ErrorTarget, hint);
    }
}
