using Vfio.Interop;

namespace Vfio.Testing;

/// <summary>
/// A container (vfio_container): the groups attached to it and, once VFIO_SET_IOMMU chose one, its
/// IOMMU driver. It lives while its file or any attached group holds it, as the kernel's kref does;
/// the last group leaving releases the driver and with it every DMA mapping.
/// </summary>
internal sealed class ContainerState
{
    public List<IommuGroupState> Groups { get; } = [];

    public Type1Iommu? Type1 { get; set; }

    public bool NoIommuDriver { get; set; }

    /// <summary>Whether the groups are no-IOMMU groups (set by the first group to join).</summary>
    public bool NoIommu { get; set; }

    public bool HasDriver => Type1 is not null || NoIommuDriver;

    /// <summary>
    /// Whether iommufd serves the file (drivers/iommu/iommufd/vfio_compat.c) rather than vfio's
    /// container.c: a group joining makes the IOAS its type1 emulation maps into, so the driver is
    /// there before VFIO_SET_IOMMU (see <see cref="SimulatedKernel.IommufdServesContainer"/>).
    /// </summary>
    public bool IommufdCompat { get; init; }
}

/// <summary>A file opened from <c>/dev/vfio/vfio</c>: each open is a new container.</summary>
internal sealed class ContainerFile : KernelFile
{
    // iommufd's compatibility container is an iommufd file, which answers iommufd's own ioctls too;
    // opened as /dev/vfio/vfio it charges pinned pages to the process, as type1 does
    // (iommufd_fops_open). Only IOMMU_OPTION is passed to it here; the IOAS commands are not simulated
    // on this file.
    private readonly IommufdContext? _iommufd;

    public ContainerFile(SimulatedKernel kernel, string path, bool iommufdCompat)
        : base(kernel, path)
    {
        Container = new ContainerState { IommufdCompat = iommufdCompat };
        _iommufd = iommufdCompat ? new IommufdContext(kernel, PinAccounting.Mm) : null;
    }

    public ContainerState Container { get; }

    public override SimulatedFileKind Kind => SimulatedFileKind.Container;

    public override int Ioctl(nuint request, nint argument)
    {
        using (Kernel.Enter())
        {
            if (_iommufd is not null && request == IommufdUapi.IOMMU_OPTION)
            {
                return _iommufd.Ioctl(request, argument);
            }
            if (request == VfioUapi.VFIO_GET_API_VERSION)
            {
                return VfioUapi.VFIO_API_VERSION;
            }
            if (request == VfioUapi.VFIO_CHECK_EXTENSION)
            {
                return Kernel.CheckExtensionLocked(Container, argument);
            }
            if (request == VfioUapi.VFIO_SET_IOMMU)
            {
                return Kernel.SetIommuLocked(Container, argument);
            }
            // Other ioctls pass through to the IOMMU driver; without one the container answers EINVAL.
            if (Container.Type1 is { } type1)
            {
                return type1.Ioctl(request, argument);
            }
            return Container.NoIommuDriver ? -Errno.ENOTTY : -Errno.EINVAL;
        }
    }
}
