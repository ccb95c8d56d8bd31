using System.Runtime.InteropServices;
using Vfio.Interop;

namespace Vfio.Testing;

/// <summary>The kind of an IOMMU group, which decides its <c>/dev/vfio</c> node and what it may do.</summary>
public enum SimulatedGroupKind
{
    /// <summary>A group isolated by a real IOMMU: <c>/dev/vfio/N</c>.</summary>
    Iommu,

    /// <summary>A group without an IOMMU (unsafe no-IOMMU mode): <c>/dev/vfio/noiommu-N</c>.</summary>
    NoIommu,

    /// <summary>A group whose IOMMU is emulated by its parent driver (an mdev): <c>/dev/vfio/N</c>.</summary>
    Emulated,
}

/// <summary>
/// An IOMMU group and its vfio group (vfio_group): its devices, the one file that may be open on
/// it, its container and the count of users of that container (the group itself plus open devices).
/// </summary>
internal sealed class IommuGroupState(int id, SimulatedGroupKind kind)
{
    /// <summary>Drivers that manage DMA themselves (driver_managed_dma), so they do not make a group non-viable.</summary>
    public static readonly HashSet<string> DmaManagingDrivers = new(StringComparer.Ordinal)
    {
        "vfio-pci", "vfio-platform", "pci-stub", "pcieport",
    };

    public int Id { get; } = id;

    public SimulatedGroupKind Kind { get; } = kind;

    public List<SimulatedDevice> Devices { get; } = [];

    /// <summary>The group's single open file (the kernel's opened_file), or null.</summary>
    public GroupFile? OpenFile { get; set; }

    public ContainerState? Container { get; set; }

    public int ContainerUsers { get; set; }

    public string NodeName => Kind == SimulatedGroupKind.NoIommu ? "noiommu-" + SimulatedKernel.Decimal(Id) : SimulatedKernel.Decimal(Id);

    /// <summary>The <c>/dev/vfio</c> node exists while a device of the group is bound to a vfio driver.</summary>
    public bool HasNode => Devices.Any(d => d.IsVfioBound);

    /// <summary>Whether DMA ownership can be claimed: no device of the group is bound to a DMA-using kernel driver.</summary>
    public bool Viable => Kind != SimulatedGroupKind.Iommu
        || Devices.All(d => d.Driver is null || DmaManagingDrivers.Contains(d.Driver));

    public SimulatedDevice? VfioDevice(string name) => Devices.FirstOrDefault(d => d.IsVfioBound && d.Name == name);
}

/// <summary>The open file of a group node.</summary>
internal sealed class GroupFile(SimulatedKernel kernel, string path, IommuGroupState group) : KernelFile(kernel, path)
{
    public IommuGroupState Group { get; } = group;

    public override SimulatedFileKind Kind => SimulatedFileKind.Group;

    /// <summary>
    /// Runs when the descriptor and every device opened through it are closed: open devices hold the
    /// group file, so a group closed before its devices stays attached until they close.
    /// </summary>
    protected override void Release()
    {
        if (Group.Container is not null)
        {
            Kernel.DetachLocked(Group);
        }
        Group.OpenFile = null;
        Kernel.Wake();
    }

    public override unsafe int Ioctl(nuint request, nint argument)
    {
        using (Kernel.Enter())
        {
            if (request == VfioUapi.VFIO_GROUP_GET_STATUS)
            {
                var status = (vfio_group_status*)argument;
                if (status->argsz < sizeof(vfio_group_status))
                {
                    return -Errno.EINVAL;
                }
                if (!Group.HasNode)
                {
                    return -Errno.ENODEV;
                }
                uint flags = 0;
                if (Group.Container is not null)
                {
                    flags |= VfioUapi.VFIO_GROUP_FLAGS_CONTAINER_SET | VfioUapi.VFIO_GROUP_FLAGS_VIABLE;
                }
                else if (Group.Viable)
                {
                    flags |= VfioUapi.VFIO_GROUP_FLAGS_VIABLE;
                }
                status->flags = flags;
                return 0;
            }
            if (request == VfioUapi.VFIO_GROUP_SET_CONTAINER)
            {
                int fd = *(int*)argument;
                if (fd < 0)
                {
                    return -Errno.EINVAL;
                }
                var file = Kernel.FileLocked(fd);
                if (file is null)
                {
                    return -Errno.EBADF;
                }
                if (Group.Container is not null)
                {
                    return -Errno.EINVAL;
                }
                if (file is not ContainerFile container)
                {
                    return -Errno.EINVAL;
                }
                return Kernel.AttachLocked(container.Container, Group);
            }
            if (request == VfioUapi.VFIO_GROUP_UNSET_CONTAINER)
            {
                if (Group.Container is null)
                {
                    return -Errno.EINVAL;
                }
                if (Group.ContainerUsers != 1)
                {
                    return -Errno.EBUSY;
                }
                Kernel.DetachLocked(Group);
                return 0;
            }
            if (request == VfioUapi.VFIO_GROUP_GET_DEVICE_FD)
            {
                string? name = Marshal.PtrToStringUTF8(argument);
                var device = name is null ? null : Group.VfioDevice(name);
                if (device is null)
                {
                    return -Errno.ENODEV;
                }
                return Kernel.OpenDeviceLocked(this, device);
            }
            return -Errno.ENOTTY;
        }
    }
}
