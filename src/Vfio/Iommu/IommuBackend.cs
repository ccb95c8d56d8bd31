using Vfio.Interop;

namespace Vfio;

/// <summary>
/// How a device gets attached to an IOMMU address space and gets its device file: the one step of a
/// device's first open that depends on how the kernel exposes the IOMMU. A registry has one backend;
/// devices see only this class, DMA buffers only <see cref="IommuAddressSpace"/>.
/// </summary>
/// <remarks>
/// <para>Linux has two. The legacy one is <see cref="ContainerBackend"/> (the kernel's group.c and
/// container.c): open the group file <c>/dev/vfio/N</c> once per process, check it is viable, attach it
/// to a container (<c>VFIO_GROUP_SET_CONTAINER</c>, then <c>VFIO_SET_IOMMU</c> for the first group)
/// and obtain the device file with <c>VFIO_GROUP_GET_DEVICE_FD</c>; the container's type1 IOMMU is the
/// address space (<see cref="Type1AddressSpace"/>).</para>
/// <para>The iommufd backend goes beside it as a second subclass (the kernel's iommufd.c and
/// device_cdev.c), not as branches in this one: open <c>/dev/iommu</c> once and allocate an IOAS
/// (<c>IOMMU_IOAS_ALLOC</c>) as the address space, an <see cref="IommuAddressSpace"/> whose map and
/// unmap are <c>IOMMU_IOAS_MAP</c> / <c>IOMMU_IOAS_UNMAP</c>; for each device open its cdev
/// <c>/dev/vfio/devices/vfioX</c> (named in the device's <c>vfio-dev</c> sysfs folder), bind it to the
/// iommufd (<c>VFIO_DEVICE_BIND_IOMMUFD</c>) and attach it to the IOAS
/// (<c>VFIO_DEVICE_ATTACH_IOMMUFD_PT</c>). Its attachment has no group; detaching closes the cdev.</para>
/// </remarks>
internal abstract class IommuBackend
{
    /// <summary>
    /// Attaches a device that is opening to an address space and returns its device file. Runs under
    /// the device's set lock; nothing is left open or attached when it throws.
    /// </summary>
    public abstract DeviceAttachment Attach(VfioDevice device);

    /// <summary>
    /// Closes the device file, then undoes what <see cref="Attach"/> did (the kernel refuses to
    /// unset a group's container while a device file of it is open). Runs under the device's set lock.
    /// </summary>
    public abstract void Detach(DeviceAttachment attachment);
}

/// <summary>What <see cref="IommuBackend.Attach"/> gave an open device.</summary>
/// <param name="DeviceFd">The device file.</param>
/// <param name="AddressSpace">Where the device's DMA buffers are mapped.</param>
/// <param name="Group">The group the device file came through (legacy backend), or null.</param>
internal sealed record DeviceAttachment(SafeFd DeviceFd, IommuAddressSpace AddressSpace, IommuGroup? Group);
