using System.Globalization;
using System.Runtime.InteropServices;
using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio;

/// <summary>A PCI function that a hot reset of a device also resets, as the kernel reports it.</summary>
/// <param name="Address">The function's address.</param>
/// <param name="GroupId">Its IOMMU group.</param>
public sealed record PciHotResetDependency(PciAddress Address, int GroupId)
{
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
    /// reset, otherwise every function on its bus and the buses below.
    /// </summary>
    /// <returns>The affected functions with their groups, in the kernel's order.</returns>
    /// <exception cref="InvalidOperationException">The device is not open.</exception>
    /// <exception cref="VfioNotSupportedException">
    /// Neither a slot nor a bus reset is possible (ENODEV): the device sits on a root bus with no
    /// parent bridge, or its bridge cannot reset the bus below it.
    /// </exception>
    public unsafe IReadOnlyList<PciHotResetDependency> GetHotResetDependencies()
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
                throw HotResetError(-rc, "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO");
            }
            if (info.count > capacity)
            {
                throw new VfioException($"VFIO_DEVICE_GET_PCI_HOT_RESET_INFO ({ErrorTarget}) reported {info.count} functions for a buffer of {capacity}.");
            }
            var entries = MemoryMarshal.Cast<byte, vfio_pci_dependent_device>(buffer.AsSpan(sizeof(vfio_pci_hot_reset_info)));
            var result = new PciHotResetDependency[info.count];
            for (int i = 0; i < result.Length; i++)
            {
                var e = entries[i];
                result[i] = new PciHotResetDependency(new PciAddress(e.segment, e.bus, (byte)(e.devfn >> 3), (byte)(e.devfn & 7)), (int)e.group_id);
            }
            return result;
        }
    }

    /// <summary>
    /// Resets the slot or bus this device sits on (<c>VFIO_DEVICE_PCI_HOT_RESET</c>), which resets every
    /// function of <see cref="GetHotResetDependencies"/>. The library first proves that it owns each
    /// of them: its group must be open in this registry (a device of the group opened through it),
    /// and the function must be bound to a vfio driver, as the kernel requires. Then it passes the
    /// open group files to the kernel.
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
        var dependencies = GetHotResetDependencies();
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
            HotResetLocked(dependencies);
        }
        finally
        {
            for (int i = locked.Count - 1; i >= 0; i--)
            {
                locked[i].Lock.Exit();
            }
        }
    }

    private unsafe void HotResetLocked(IReadOnlyList<PciHotResetDependency> dependencies)
    {
        LockAssert.Held(Set.Lock);
        var groupIds = dependencies.Select(d => d.GroupId).Append(GroupId).Distinct().Order().ToList();
        Log.HotResetScope(Registry.Logger, Name, dependencies.Count, string.Join(",", groupIds));
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
                    : Registry.Sysfs.ReadLinkName(SysfsDiscovery.PciDir(dependency.Address) + "/driver", ErrorTarget) switch
                    {
                        null => "it is bound to no driver",
                        string d when !SysfsDiscovery.IsVfioDriver(d) => "it is bound to " + d,
                        _ => null,
                    };
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
                int rc;
                var affected = SuspendAffectedRegions(dependencies);
                try
                {
                    fixed (byte* p = buffer)
                    {
                        rc = Kernel.Ioctl(fd, VfioUapi.VFIO_DEVICE_PCI_HOT_RESET, p);
                    }
                }
                finally
                {
                    foreach (var device in affected)
                    {
                        device.ResumeMappedRegions();
                    }
                }
                if (rc < 0)
                {
                    throw HotResetError(-rc, "VFIO_DEVICE_PCI_HOT_RESET");
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

    private VfioException HotResetError(int errno, string operation)
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
            Errno.EINVAL => "The kernel wants a file of every affected group and every affected function bound to vfio-pci",
            Errno.EBUSY => "A device of the reset scope was being accessed by another thread (the kernel only tries its locks); retry",
            _ => null,
        };
        return VfioErrors.Create(errno, operation, ErrorTarget, hint);
    }
}
