using Vfio.Interop;

namespace Vfio;

/// <summary>
/// How a device gets attached to an IOMMU address space and gets its device file: the one step of a
/// device's first open that depends on how the kernel exposes the IOMMU. The registry chooses one
/// backend per device (<see cref="VfioRegistry.SelectBackend"/>); devices see only this class, DMA
/// buffers only <see cref="IommuAddressSpace"/>.
/// </summary>
/// <remarks>
/// <para>Linux has two, side by side here as in the kernel. The legacy one is <see cref="ContainerBackend"/>
/// (the kernel's group.c and container.c): open the group file <c>/dev/vfio/N</c> once per process,
/// check it is viable, attach it to a container (<c>VFIO_GROUP_SET_CONTAINER</c>, then
/// <c>VFIO_SET_IOMMU</c> for the first group) and obtain the device file with
/// <c>VFIO_GROUP_GET_DEVICE_FD</c>; the container's type1 IOMMU is the address space
/// (<see cref="Type1AddressSpace"/>).</para>
/// <para>The other is <see cref="IommufdBackend"/> (the kernel's iommufd.c and device_cdev.c): open
/// <c>/dev/iommu</c> once and allocate an IOAS (<c>IOMMU_IOAS_ALLOC</c>) as the address space
/// (<see cref="IommufdAddressSpace"/>); for each device open its cdev <c>/dev/vfio/devices/vfioN</c>,
/// bind it to the iommufd (<c>VFIO_DEVICE_BIND_IOMMUFD</c>) and attach it to the IOAS
/// (<c>VFIO_DEVICE_ATTACH_IOMMUFD_PT</c>). Its attachment has no group.</para>
/// </remarks>
internal abstract class IommuBackend
{
    /// <summary>Which backend this is.</summary>
    public abstract VfioBackend Kind { get; }

    /// <summary>
    /// Attaches a device that is opening to an address space and returns its device file. Runs under
    /// the device's set lock; nothing is left open or attached when it throws.
    /// </summary>
    /// <param name="device">The device.</param>
    /// <param name="cdevPath">Its cdev, which the registry found when it chose the iommufd backend; null for the legacy one.</param>
    public abstract DeviceAttachment Attach(VfioDevice device, string? cdevPath);

    /// <summary>
    /// Closes the device file, then undoes what <see cref="Attach"/> did (the kernel refuses to
    /// unset a group's container while a device file of it is open). Runs under the device's set
    /// lock; never throws (failures are logged).
    /// </summary>
    public abstract void Detach(DeviceAttachment attachment);
}

/// <summary>What <see cref="IommuBackend.Attach"/> gave an open device.</summary>
/// <param name="Backend">The backend that made it, which undoes it.</param>
/// <param name="Device">The device.</param>
/// <param name="DeviceFd">The device file.</param>
/// <param name="AddressSpace">Where the device's DMA buffers are mapped.</param>
/// <param name="Group">The group the device file came through (legacy backend), or null.</param>
internal sealed record DeviceAttachment(IommuBackend Backend, VfioDevice Device, SafeFd DeviceFd, IommuAddressSpace AddressSpace, IommuGroup? Group)
{
    /// <summary>The device's id in the iommufd (iommufd backend), 0 otherwise.</summary>
    public uint IommufdDeviceId { get; init; }

    /// <summary>The cdev the device file was opened from (iommufd backend), or null.</summary>
    public string? CdevPath { get; init; }
}
