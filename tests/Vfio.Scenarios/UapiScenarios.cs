using System.Buffers.Binary;
using Vfio.Interop;
using static Vfio.Interop.VfioUapi;

namespace Vfio.Scenarios;

/// <summary>
/// The kernel's rules checked at the errno level, through the seam with the uAPI structs: what the
/// public API turns into typed exceptions must first be the kernel's exact answer.
/// </summary>
internal static unsafe class UapiScenarios
{
    /// <summary>Every uAPI-level scenario, in the order they run.</summary>
    public static IReadOnlyList<Scenario> All { get; } =
    [
        new("container_provider_as_the_kernel_says", ContainerProvider),
        new("group_status_not_viable", GroupStatusNotViable),
        new("set_container_not_viable_eperm", SetContainerNotViable),
        new("device_info_no_reset", DeviceInfoNoReset),
        new("region_info_all", RegionInfoAll),
        new("config_read_identity_and_capabilities", ConfigIdentityAndCapabilities),
        new("device_reset_einval", DeviceResetEinval),
        new("unknown_group_enoent", UnknownGroup),
        new("device_fd_without_container_einval", DeviceFdWithoutContainer),
        new("device_fd_without_iommu_einval", DeviceFdWithoutIommu),
        new("dma_map_overlap_eexist", DmaMapOverlap),
        new("dma_unmap_not_mapped", DmaUnmapNotMapped),
        new("dma_unmap_part_of_mapping_einval", DmaUnmapPartOfMapping),
        new("dma_map_outside_iova_ranges_einval", DmaMapOutsideIovaRanges),
    ];

    /// <summary>
    /// Which container serves /dev/vfio/vfio, as the library asks it (an iommufd ioctl on the container
    /// file), against the kernel's other facts: iommufd's compatibility container comes with /dev/iommu
    /// and without vfio_iommu_type1 (whose module folder, with its parameters, is there even when it is
    /// built in), and mode legacy-compat runs only on it. iommufd's container answers
    /// IOMMU_OPTION_RLIMIT_MODE with 1: pinned pages charged to the process, as type1 charges them.
    /// </summary>
    public static void ContainerProvider(ScenarioContext context)
    {
        var sysfs = new SysfsReader(context.Kernel);
        bool type1 = sysfs.Exists("module/vfio_iommu_type1");
        bool iommufd = context.Kernel.Stat(context.Kernel.Dev("iommu"), out _) == 0;
        bool compat = context.IommufdServesContainer;
        context.Note($"/dev/vfio/vfio served by {(compat ? "iommufd" : "vfio")}; vfio_iommu_type1 {(type1 ? "present" : "absent")}; /dev/iommu {(iommufd ? "present" : "absent")}");
        Check.Equal(!type1 && iommufd, compat, "iommufd serves /dev/vfio/vfio (the library's answer) as the kernel's modules and nodes say");
        if (context.Mode == ScenarioMode.LegacyCompat)
        {
            Check.True(compat, "mode legacy-compat runs on iommufd's compatibility container");
        }
        using var files = new VfioFiles(context);
        files.OpenContainer();
        var option = new iommu_option { size = (uint)sizeof(iommu_option), option_id = IommufdUapi.IOMMU_OPTION_RLIMIT_MODE, op = IommufdUapi.IOMMU_OPTION_OP_GET };
        int rc = context.Kernel.Ioctl(files.Container!, IommufdUapi.IOMMU_OPTION, &option);
        if (compat)
        {
            Check.Ok(rc, "IOMMU_OPTION_RLIMIT_MODE get on iommufd's compatibility container");
            Check.Equal(1UL, option.val64, "RLIMIT_MODE of iommufd's compatibility container (charged to the process)");
        }
        else
        {
            // vfio's container: a number its IOMMU driver does not know, and no driver yet (EINVAL).
            Check.Fails(rc, Errno.EINVAL, "IOMMU_OPTION on vfio's own container before VFIO_SET_IOMMU");
        }
    }

    public static void GroupStatusNotViable(ScenarioContext context)
    {
        var (device, group) = context.NotViable;
        using var files = new VfioFiles(context, device, group);
        files.OpenGroup();
        vfio_group_status status = files.GroupStatus();
        context.Note(FormattableString.Invariant($"group {group} status flags 0x{status.flags:x}"));
        Check.True((status.flags & VFIO_GROUP_FLAGS_VIABLE) == 0, "group " + group + " says it is viable although a function in it is bound to a host driver");
    }

    public static void SetContainerNotViable(ScenarioContext context)
    {
        var (device, group) = context.NotViable;
        using var files = new VfioFiles(context, device, group);
        files.OpenContainer();
        files.OpenGroup();
        int container = files.Container!.Value;
        int rc = context.Kernel.Ioctl(files.Group!, VFIO_GROUP_SET_CONTAINER, &container);
        if (context.IommufdServesContainer)
        {
            // iommufd's compatibility container takes any group (vfio_group_ioctl_set_container); the
            // ownership check comes when the device is bound to the iommufd, at VFIO_GROUP_GET_DEVICE_FD.
            Check.Ok(rc, nameof(VFIO_GROUP_SET_CONTAINER) + " of not viable group " + group + " on iommufd's compatibility container");
            Check.Fails(GetDeviceFd(context, files, device), Errno.EPERM, nameof(VFIO_GROUP_GET_DEVICE_FD) + " of " + device + " in not viable group " + group);
            return;
        }
        Check.Fails(rc, Errno.EPERM, nameof(VFIO_GROUP_SET_CONTAINER) + " of not viable group " + group);
    }

    public static void DeviceInfoNoReset(ScenarioContext context)
    {
        using var files = new VfioFiles(context);
        files.OpenReadyContainer();
        files.OpenDevice();
        vfio_device_info info = files.DeviceInfo();
        Check.Equal(VFIO_DEVICE_FLAGS_PCI, info.flags, "edu's device flags (PCI, no RESET)");
        Check.Equal(VFIO_PCI_NUM_REGIONS, info.num_regions, "num_regions");
        Check.Equal(VFIO_PCI_NUM_IRQS, info.num_irqs, "num_irqs");
    }

    public static void RegionInfoAll(ScenarioContext context)
    {
        using var files = new VfioFiles(context);
        files.OpenReadyContainer();
        SafeFd device = files.OpenDevice();
        const uint ReadWrite = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
        for (uint index = 0; index < VFIO_PCI_NUM_REGIONS; index++)
        {
            var info = new vfio_region_info { argsz = (uint)sizeof(vfio_region_info), index = index };
            int rc = context.Kernel.Ioctl(device, VFIO_DEVICE_GET_REGION_INFO, &info);
            context.Note(FormattableString.Invariant($"region {index}: rc {rc} flags 0x{info.flags:x} size 0x{info.size:x} offset 0x{info.offset:x}"));
            if (index == VFIO_PCI_VGA_REGION_INDEX)
            {
                Check.Fails(rc, Errno.EINVAL, "region info of the VGA region of a device without VGA");
                continue;
            }
            Check.Ok(rc, nameof(VFIO_DEVICE_GET_REGION_INFO) + " " + index);
            Check.Equal((ulong)index << 40, info.offset, FormattableString.Invariant($"region {index} offset"));
            switch (index)
            {
                case 0:
                    Check.Equal(1UL << 20, info.size, "BAR0 size");
                    Check.Equal(ReadWrite | VFIO_REGION_INFO_FLAG_MMAP, info.flags, "BAR0 flags");
                    break;
                case VFIO_PCI_CONFIG_REGION_INDEX:
                    Check.Equal(256UL, info.size, "config space size of a conventional PCI function");
                    Check.Equal(ReadWrite, info.flags, "config region flags");
                    break;
                default:
                    Check.Equal(0UL, info.size, FormattableString.Invariant($"region {index} size"));
                    Check.Equal(0u, info.flags, FormattableString.Invariant($"region {index} flags"));
                    break;
            }
        }
    }

    public static void ConfigIdentityAndCapabilities(ScenarioContext context)
    {
        using var files = new VfioFiles(context);
        files.OpenReadyContainer();
        SafeFd device = files.OpenDevice();
        long config = (long)files.RegionInfo(VFIO_PCI_CONFIG_REGION_INDEX).offset;
        Span<byte> header = stackalloc byte[64];
        Check.Equal(64L, context.Kernel.PRead(device, header, config), "bytes read from the config header");
        Check.Equal(EduVendor, BinaryPrimitives.ReadUInt16LittleEndian(header), "vendor id");
        Check.Equal(EduDevice, BinaryPrimitives.ReadUInt16LittleEndian(header[2..]), "device id");
        Check.Equal((byte)0x10, header[0x08], "revision");
        Check.Equal(0x00ff00u, (uint)(header[0x09] | (header[0x0a] << 8) | (header[0x0b] << 16)), "class code");
        Check.Equal((byte)0, (byte)(header[0x0e] & 0x7f), "header type");
        Check.Equal((byte)1, header[0x3d], "interrupt pin");
        Check.True((BinaryPrimitives.ReadUInt16LittleEndian(header[0x06..]) & 0x10) != 0, "status lacks the capability list bit");

        var capabilities = new List<string>();
        Span<byte> cap = stackalloc byte[2];
        for (int offset = header[0x34], hops = 0; offset != 0 && hops < 48; hops++)
        {
            Check.Equal(2L, context.Kernel.PRead(device, cap, config + offset), "bytes read from a capability");
            capabilities.Add(FormattableString.Invariant($"0x{cap[0]:x2}@0x{offset:x2}"));
            offset = cap[1] & 0xfc;
        }
        string list = string.Join(' ', capabilities);
        context.Note("capabilities: " + list);
        Check.Equal("0x05@0x40", list, "capability list (MSI only)");
    }

    public static void DeviceResetEinval(ScenarioContext context)
    {
        using var files = new VfioFiles(context);
        files.OpenReadyContainer();
        SafeFd device = files.OpenDevice();
        Check.Fails(context.Kernel.Ioctl(device, VFIO_DEVICE_RESET, 0), Errno.EINVAL, nameof(VFIO_DEVICE_RESET) + " of a device without reset");
    }

    public static void UnknownGroup(ScenarioContext context)
    {
        string path = context.Kernel.Dev("vfio/9999");
        int rc = context.Kernel.Open(path, Interop.Interop.Flags.O_RDWR, out SafeFd fd);
        if (rc >= 0)
        {
            fd.Dispose();
        }
        Check.Fails(rc, Errno.ENOENT, "open " + path);
    }

    public static void DeviceFdWithoutContainer(ScenarioContext context)
    {
        using var files = new VfioFiles(context);
        files.OpenGroup();
        Check.Fails(GetDeviceFd(context, files), Errno.EINVAL, nameof(VFIO_GROUP_GET_DEVICE_FD) + " before VFIO_GROUP_SET_CONTAINER");
    }

    public static void DeviceFdWithoutIommu(ScenarioContext context)
    {
        using var files = new VfioFiles(context);
        files.OpenContainer();
        files.OpenGroup();
        files.SetContainer();
        if (context.IommufdServesContainer)
        {
            // iommufd's compatibility container makes its IOAS when the group joins it, so the device
            // opens before any VFIO_SET_IOMMU.
            Check.Ok(GetDeviceFd(context, files), nameof(VFIO_GROUP_GET_DEVICE_FD) + " before VFIO_SET_IOMMU on iommufd's compatibility container");
            return;
        }
        Check.Fails(GetDeviceFd(context, files), Errno.EINVAL, nameof(VFIO_GROUP_GET_DEVICE_FD) + " before VFIO_SET_IOMMU");
    }

    public static void DmaMapOverlap(ScenarioContext context)
    {
        using var files = new VfioFiles(context);
        files.OpenReadyContainer();
        var memory = files.Memory(0x4000);
        Check.Ok(files.MapDma(memory, 0, 0x100000, 0x2000), "VFIO_IOMMU_MAP_DMA of [0x100000, 0x102000)");
        Check.Fails(files.MapDma(memory, 0x2000, 0x101000, 0x2000), Errno.EEXIST, "VFIO_IOMMU_MAP_DMA of [0x101000, 0x103000) over it");
        Check.Fails(files.MapDma(memory, 0x2000, 0x100000, 0x1000), Errno.EEXIST, "VFIO_IOMMU_MAP_DMA of the same IOVA again");
        Check.Ok(files.UnmapDma(0x100000, 0x2000, out ulong unmapped), "VFIO_IOMMU_UNMAP_DMA");
        Check.Equal(0x2000UL, unmapped, "bytes unmapped");
    }

    public static void DmaUnmapNotMapped(ScenarioContext context)
    {
        using var files = new VfioFiles(context);
        files.OpenReadyContainer();
        int rc = files.UnmapDma(0x200000, 0x1000, out ulong unmapped);
        context.Note(FormattableString.Invariant($"unmap of nothing: rc {rc}, size 0x{unmapped:x}"));
        Check.Ok(rc, "VFIO_IOMMU_UNMAP_DMA of an IOVA range with nothing mapped");
        Check.Equal(0UL, unmapped, "bytes unmapped where nothing was mapped");
    }

    public static void DmaUnmapPartOfMapping(ScenarioContext context)
    {
        using var files = new VfioFiles(context);
        files.OpenReadyContainer();
        var memory = files.Memory(0x2000);
        Check.Ok(files.MapDma(memory, 0, 0x300000, 0x2000), "VFIO_IOMMU_MAP_DMA");
        if (context.IommufdServesContainer)
        {
            // iommufd refuses to split a mapping too, with ENOENT (iopt_unmap_iova_range).
            Check.Fails(files.UnmapDma(0x301000, 0x1000, out _), Errno.ENOENT, "VFIO_IOMMU_UNMAP_DMA of the second half of a mapping (iommufd's compatibility container)");
        }
        else
        {
            Check.Fails(files.UnmapDma(0x301000, 0x1000, out _), Errno.EINVAL, "VFIO_IOMMU_UNMAP_DMA of the second half of a mapping (type1v2)");
        }
        Check.Ok(files.UnmapDma(0x300000, 0x2000, out ulong unmapped), "VFIO_IOMMU_UNMAP_DMA of the whole mapping");
        Check.Equal(0x2000UL, unmapped, "bytes unmapped");
    }

    public static void DmaMapOutsideIovaRanges(ScenarioContext context)
    {
        using var files = new VfioFiles(context);
        files.OpenReadyContainer();
        if (context.IommufdServesContainer)
        {
            // type1 learns a group's reserved regions (the MSI window) when the group joins the
            // container; iommufd when the device attaches: before a device is open, iommufd's
            // compatibility container reports one range over all 64 bits.
            files.OpenDevice();
        }
        List<vfio_iova_range> ranges = SmokeScenarios.ReadIovaRanges(files, context);
        ulong? outside = null;
        for (int i = 0; i + 1 < ranges.Count && outside is null; i++)
        {
            if (ranges[i + 1].start - ranges[i].end > 0x1000)
            {
                outside = (ranges[i].end + 1 + 0xfff) & ~0xfffUL;
            }
        }
        if (outside is null && ranges[^1].end < ulong.MaxValue - 0x2000)
        {
            outside = (ranges[^1].end + 1 + 0xfff) & ~0xfffUL;
        }
        Check.True(outside is not null, "the IOVA ranges leave no gap to map into");
        context.Note(FormattableString.Invariant($"mapping at 0x{outside:x}, outside the valid ranges"));
        var memory = files.Memory(0x1000);
        Check.Fails(files.MapDma(memory, 0, outside!.Value, 0x1000), Errno.EINVAL, FormattableString.Invariant($"VFIO_IOMMU_MAP_DMA at 0x{outside:x}"));
    }

    private const ushort EduVendor = 0x1234;
    private const ushort EduDevice = 0x11e8;

    private static int GetDeviceFd(ScenarioContext context, VfioFiles files, string? device = null)
    {
        byte[] name = System.Text.Encoding.UTF8.GetBytes((device ?? context.DeviceAddress) + "\0");
        int rc;
        fixed (byte* p = name)
        {
            rc = context.Kernel.Ioctl(files.Group!, VFIO_GROUP_GET_DEVICE_FD, p);
        }
        if (rc >= 0)
        {
            new SafeFd(context.Kernel, rc).Dispose();
        }
        return rc;
    }
}
