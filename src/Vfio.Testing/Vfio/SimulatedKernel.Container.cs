using Vfio.Interop;

namespace Vfio.Testing;

public sealed partial class SimulatedKernel
{
    private static readonly SimulatedIovaRange[] DefaultIovaRanges =
    [
        // Intel VT-d with 39-bit addresses: everything but the interrupt range at 0xfee00000.
        new(0, 0xfedf_ffff),
        new(0xfef0_0000, 0x7f_ffff_ffff),
    ];

    private IReadOnlyList<SimulatedIovaRange> _iovaRanges = DefaultIovaRanges;

    /// <summary>
    /// The most DMA mappings one container may hold (the type1 driver's <c>dma_entry_limit</c>
    /// module parameter, 65535 by default). Applies to containers whose IOMMU is set afterwards.
    /// </summary>
    public int DmaEntryLimit { get; set; } = ushort.MaxValue;

    /// <summary>The IOMMU page sizes as a bitmap (4 KiB, 2 MiB and 1 GiB by default); the smallest is the map granularity.</summary>
    public ulong IommuPageSizes { get; set; } = 0x4020_1000;

    /// <summary>The usable IOVA ranges reported by VFIO_IOMMU_GET_INFO and enforced by VFIO_IOMMU_MAP_DMA.</summary>
    public IReadOnlyList<SimulatedIovaRange> IovaRanges
    {
        get => _iovaRanges;
        set
        {
            ArgumentNullException.ThrowIfNull(value);
            _iovaRanges = [.. value];
        }
    }

    /// <summary>
    /// Whether the vfio module was loaded with <c>enable_unsafe_noiommu_mode</c>: the no-IOMMU driver
    /// answers VFIO_CHECK_EXTENSION(VFIO_NOIOMMU_IOMMU) and no-IOMMU groups can be used.
    /// </summary>
    public bool UnsafeNoIommuMode { get; set; }

    private bool _iommufdServesContainer;

    /// <summary>
    /// Whether iommufd provides <c>/dev/vfio/vfio</c> (CONFIG_IOMMUFD_VFIO_CONTAINER with
    /// CONFIG_VFIO_CONTAINER off, as the VM suite's vfio-compat kernel): containers opened afterwards
    /// behave as drivers/iommu/iommufd/vfio_compat.c, and sysfs has no vfio_iommu_type1 module, nor its
    /// <c>dma_entry_limit</c>. As there, the file answers iommufd's IOMMU_OPTION (RLIMIT_MODE 1: charged
    /// to the process); VFIO_CHECK_EXTENSION says yes to type1, type1v2 and VFIO_UNMAP_ALL only;
    /// VFIO_GROUP_SET_CONTAINER takes a group that is not viable (its device then fails to open with
    /// EPERM); the group's joining makes the IOAS, so devices open and DMA maps before VFIO_SET_IOMMU;
    /// VFIO_IOMMU_GET_INFO reports DMA_AVAIL (always u32's maximum: no count of mappings) and the IOVA
    /// ranges, no migration capability; VFIO_IOMMU_DIRTY_PAGES is ENOTTY and an unmap with a dirty
    /// bitmap EINVAL; an unmap cutting a mapping is ENOENT. Not simulated: iommufd's IOAS commands on
    /// the container file, the IOAS outliving the last group, and no-IOMMU groups in it (they get
    /// vfio's no-IOMMU driver as before).
    /// </summary>
    public bool IommufdServesContainer
    {
        get
        {
            using (Enter())
            {
                return _iommufdServesContainer;
            }
        }
        set
        {
            using (Enter())
            {
                _iommufdServesContainer = value;
                if (value)
                {
                    Sysfs.Remove("module/vfio_iommu_type1");
                }
                else
                {
                    ShowType1ModuleLocked();
                }
            }
        }
    }

    // vfio_iommu_driver_allowed as CHECK_EXTENSION applies it: an empty container asks every driver
    // (in unsafe mode the no-IOMMU driver answers VFIO_NOIOMMU_IOMMU), one with groups only its kind's.
    private static bool DriverAllowed(ContainerState container, bool noIommuDriver) =>
        container.Groups.Count == 0 || container.NoIommu == noIommuDriver;

    private int NoIommuCheckExtension(nint extension) =>
        UnsafeNoIommuMode && extension == VfioUapi.VFIO_NOIOMMU_IOMMU ? 1 : 0;

    // A compatibility container holding no-IOMMU groups is left to vfio's no-IOMMU driver (not simulated as iommufd's).
    private static bool EmulatesType1(ContainerState container) =>
        container.IommufdCompat && !(container.Groups.Count > 0 && container.NoIommu);

    internal int CheckExtensionLocked(ContainerState container, nint extension)
    {
        AssertLocked();
        if (EmulatesType1(container) && extension != VfioUapi.VFIO_NOIOMMU_IOMMU)
        {
            // iommufd_vfio_check_extension: the cache-coherency question needs the IOAS a group makes.
            return (int)extension switch
            {
                VfioUapi.VFIO_TYPE1_IOMMU or VfioUapi.VFIO_TYPE1v2_IOMMU or VfioUapi.VFIO_UNMAP_ALL => 1,
                VfioUapi.VFIO_DMA_CC_IOMMU => container.Type1 is null ? -Errno.ENODEV : 1,
                _ => 0,
            };
        }
        if (container.Type1 is { } type1)
        {
            return Type1Iommu.CheckExtension(type1, extension);
        }
        if (container.NoIommuDriver)
        {
            return NoIommuCheckExtension(extension);
        }
        // No driver yet: the first registered driver (allowed for these groups) that says yes.
        if (DriverAllowed(container, noIommuDriver: false) && Type1Iommu.CheckExtension(null, extension) > 0)
        {
            return Type1Iommu.CheckExtension(null, extension);
        }
        return DriverAllowed(container, noIommuDriver: true) ? NoIommuCheckExtension(extension) : 0;
    }

    internal int SetIommuLocked(ContainerState container, nint type)
    {
        AssertLocked();
        if (EmulatesType1(container) && type != VfioUapi.VFIO_NOIOMMU_IOMMU)
        {
            // iommufd_vfio_set_iommu: type1 or type1v2 on the IOAS a group made (ENODEV before any);
            // nothing to set up, so it may be repeated.
            if (type is not (VfioUapi.VFIO_TYPE1_IOMMU or VfioUapi.VFIO_TYPE1v2_IOMMU))
            {
                return -Errno.EINVAL;
            }
            return container.Type1 is null ? -Errno.ENODEV : 0;
        }
        // Only a group in the container gives the privilege to enable an IOMMU, and there is no unset.
        if (container.Groups.Count == 0 || container.HasDriver)
        {
            return -Errno.EINVAL;
        }
        int result = -Errno.ENODEV;
        if (DriverAllowed(container, noIommuDriver: false) && Type1Iommu.CheckExtension(null, type) > 0)
        {
            if (type is VfioUapi.VFIO_TYPE1_IOMMU or VfioUapi.VFIO_TYPE1v2_IOMMU)
            {
                container.Type1 = new Type1Iommu(this, container, type == VfioUapi.VFIO_TYPE1v2_IOMMU);
                return 0;
            }
            result = -Errno.EINVAL; // the driver knows the extension but cannot open with it
        }
        if (DriverAllowed(container, noIommuDriver: true) && NoIommuCheckExtension(type) > 0)
        {
            container.NoIommuDriver = true;
            return 0;
        }
        return result;
    }

    /// <summary>VFIO_GROUP_SET_CONTAINER's checks and attach (vfio_container_attach_group); the lock is held.</summary>
    internal int AttachLocked(ContainerState container, IommuGroupState group)
    {
        AssertLocked();
        bool noIommu = group.Kind == SimulatedGroupKind.NoIommu;
        // Real groups and no-IOMMU groups cannot mix.
        if (container.Groups.Count > 0 && container.NoIommu != noIommu)
        {
            return -Errno.EPERM;
        }
        // Claiming DMA ownership fails while a device of the group is bound to a kernel driver; iommufd's
        // container claims it only when a device binds (VFIO_GROUP_GET_DEVICE_FD).
        if (group.Kind == SimulatedGroupKind.Iommu && !group.Viable && !container.IommufdCompat)
        {
            return -Errno.EPERM;
        }
        group.Container = container;
        group.ContainerUsers = 1;
        container.NoIommu = noIommu;
        container.Groups.Add(group);
        // iommufd_vfio_compat_ioas_create: the first group makes the IOAS the type1 emulation maps into.
        if (EmulatesType1(container) && container.Type1 is null)
        {
            container.Type1 = new Type1Iommu(this, container, v2: true);
        }
        Wake();
        return 0;
    }

    /// <summary>vfio_group_detach_container; the lock is held.</summary>
    internal void DetachLocked(IommuGroupState group)
    {
        AssertLocked();
        var container = group.Container!;
        container.Groups.Remove(group);
        group.Container = null;
        group.ContainerUsers = 0;
        // The last group leaving deprivileges the container: its IOMMU driver goes, with the mappings.
        if (container.Groups.Count == 0)
        {
            container.Type1?.Clear();
            container.Type1 = null;
            container.NoIommuDriver = false;
        }
        Wake();
    }

    private IEnumerable<ContainerState> LiveContainersLocked
    {
        get
        {
            AssertLocked();
            return _groups.Values.Select(g => g.Container).OfType<ContainerState>().Distinct();
        }
    }
}
