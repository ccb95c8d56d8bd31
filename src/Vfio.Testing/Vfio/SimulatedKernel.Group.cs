using System.Runtime.InteropServices;
using Vfio.Interop;

namespace Vfio.Testing;

public sealed partial class SimulatedKernel
{
    private readonly Dictionary<int, IommuGroupState> _groups = [];

    internal IEnumerable<IommuGroupState> GroupsLocked
    {
        get
        {
            AssertLocked();
            return _groups.Values;
        }
    }

    internal IommuGroupState GroupLocked(int id, SimulatedGroupKind kind)
    {
        AssertLocked();
        if (!_groups.TryGetValue(id, out var group))
        {
            if (kind == SimulatedGroupKind.Iommu && _iommu != SimulatedIommuState.On)
            {
                throw new InvalidOperationException($"The IOMMU is {_iommu}: a device cannot have an IOMMU group (use SimulatedGroupKind.NoIommu with UnsafeNoIommuMode).");
            }
            group = new IommuGroupState(id, kind);
            _groups.Add(id, group);
            Sysfs.Directory("kernel/iommu_groups/" + Decimal(id) + "/devices");
            Sysfs.Directory("kernel/iommu_groups/" + Decimal(id)).Attribute("type", () => kind == SimulatedGroupKind.Iommu ? "DMA\n" : "identity\n");
            if (kind != SimulatedGroupKind.Iommu)
            {
                // vfio_noiommu_group_alloc names the group it makes for a no-IOMMU device, and for an
                // emulated (mdev) device, "vfio-noiommu".
                Sysfs.Directory("kernel/iommu_groups/" + Decimal(id)).Attribute("name", () => "vfio-noiommu\n");
            }
        }
        else if (group.Kind != kind)
        {
            throw new InvalidOperationException($"IOMMU group {id} is a {group.Kind} group, not {kind}.");
        }
        return group;
    }

    private int OpenGroupLocked(string name, string path, out KernelFile? file)
    {
        AssertLocked();
        file = null;
        var group = _groups.Values.FirstOrDefault(g => g.HasNode && g.NodeName == name);
        if (group is null)
        {
            return -Errno.ENOENT;
        }
        if (group.Kind == SimulatedGroupKind.NoIommu && !UnsafeNoIommuMode)
        {
            return -Errno.ENOENT;
        }
        // Not while a device of the group is bound to an iommufd through its cdev (vfio_group_fops_open).
        if (GroupHasBoundCdevLocked(group))
        {
            return -Errno.EBUSY;
        }
        // One open file per group: the file is the handle on the group.
        if (group.OpenFile is not null)
        {
            return -Errno.EBUSY;
        }
        var groupFile = new GroupFile(this, path, group);
        group.OpenFile = groupFile;
        file = groupFile;
        return 0;
    }

    /// <summary>VFIO_GROUP_GET_DEVICE_FD after the name matched (vfio_device_open); the lock is held.</summary>
    internal int OpenDeviceLocked(GroupFile groupFile, SimulatedDevice device)
    {
        AssertLocked();
        var group = groupFile.Group;
        if (device.OpenCount == 0)
        {
            if (group.Container is null || !group.Container.HasDriver)
            {
                return -Errno.EINVAL;
            }
            // iommufd's compatibility container claims the group's DMA when the device binds.
            if (group.Container.IommufdCompat && group.Kind == SimulatedGroupKind.Iommu && !group.Viable)
            {
                return -Errno.EPERM;
            }
            int opened = device.OpenDeviceLocked();
            if (opened < 0)
            {
                return opened;
            }
            // The first open of a device holds the group file and counts as a container user.
            groupFile.Get();
            group.ContainerUsers++;
            device.FirstOpenLocked();
        }
        device.OpenCount++;
        return Files.Install(new DeviceFile(this, "anon_inode:[vfio-device] " + device.Name, device));
    }

    /// <summary>The last device file closed (vfio_device_last_close); the lock is held.</summary>
    internal void LastCloseLocked(SimulatedDevice device)
    {
        AssertLocked();
        var group = device.Group;
        device.LastCloseLocked();
        group.ContainerUsers--;
        group.OpenFile!.Put();
        Wake();
    }
}
