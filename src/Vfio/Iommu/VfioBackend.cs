namespace Vfio;

/// <summary>
/// How the library reaches a device and its IOMMU: the two ways Linux offers user space.
/// </summary>
/// <remarks>
/// A registry chooses per device (see <see cref="VfioRegistryOptions.Backend"/>): the iommufd backend
/// for a device that has a VFIO device cdev when <c>/dev/iommu</c> exists, the legacy backend
/// otherwise. Drivers work the same on both; what differs is described in docs/iommufd.md.
/// </remarks>
public enum VfioBackend
{
    /// <summary>
    /// The group and container API every kernel has: the group file <c>/dev/vfio/N</c> attached to a
    /// container <c>/dev/vfio/vfio</c> with the type1 IOMMU, the device file from
    /// <c>VFIO_GROUP_GET_DEVICE_FD</c>. No-IOMMU devices always use it.
    /// </summary>
    Legacy,

    /// <summary>
    /// The device cdev <c>/dev/vfio/devices/vfioN</c> bound to an iommufd (<c>/dev/iommu</c>) and
    /// attached to an IO address space (IOAS) that the registry's devices share. Needs a kernel built
    /// with <c>CONFIG_IOMMUFD</c> and <c>CONFIG_VFIO_DEVICE_CDEV</c> (Linux 6.6 and later).
    /// </summary>
    Iommufd,
}
