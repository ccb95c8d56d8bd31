using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Vfio.Interop;
using static Vfio.Interop.VfioUapi;

namespace Vfio.Scenarios;

/// <summary>
/// The first checks against a real kernel: the container, group and device basics of the legacy
/// VFIO interface, issued through the kernel seam with the uAPI structs. Each scenario opens what
/// it needs and closes it again, so any one can run alone.
/// </summary>
internal static unsafe partial class SmokeScenarios
{
    /// <summary>QEMU's edu device: PCI vendor and device id.</summary>
    public const ushort EduVendorId = 0x1234;
    public const ushort EduDeviceId = 0x11e8;

    /// <summary>Every smoke scenario, in the order they run.</summary>
    public static IReadOnlyList<Scenario> All { get; } =
    [
        new("api_version", ApiVersion),
        new("check_extension_type1", CheckExtensionType1),
        new("check_extension_type1v2", CheckExtensionType1v2),
        new("group_status_viable", GroupStatusViable),
        new("group_set_container", GroupSetContainer),
        new("set_iommu_type1v2", SetIommuType1v2),
        new("iommu_info_iova_ranges", IommuInfoIovaRanges),
        new("group_get_device_fd", GroupGetDeviceFd),
        new("device_info_pci", DeviceInfoPci),
        new("config_region_info", ConfigRegionInfo),
        new("config_read_ids", ConfigReadIds),
        new("second_group_open_ebusy", SecondGroupOpenBusy),
    ];

    public static void ApiVersion(ScenarioContext context)
    {
        using var files = new VfioFiles(context);
        SafeFd container = files.OpenContainer();
        int version = Check.Ok(context.Kernel.Ioctl(container, VFIO_GET_API_VERSION, 0), nameof(VFIO_GET_API_VERSION));
        Check.Equal(VFIO_API_VERSION, version, nameof(VFIO_GET_API_VERSION));
    }

    public static void CheckExtensionType1(ScenarioContext context) => CheckExtension(context, VFIO_TYPE1_IOMMU, nameof(VFIO_TYPE1_IOMMU));

    public static void CheckExtensionType1v2(ScenarioContext context) => CheckExtension(context, VFIO_TYPE1v2_IOMMU, nameof(VFIO_TYPE1v2_IOMMU));

    private static void CheckExtension(ScenarioContext context, int extension, string name)
    {
        using var files = new VfioFiles(context);
        SafeFd container = files.OpenContainer();
        int supported = Check.Ok(context.Kernel.Ioctl(container, VFIO_CHECK_EXTENSION, extension), nameof(VFIO_CHECK_EXTENSION) + " " + name);
        Check.True(supported > 0, nameof(VFIO_CHECK_EXTENSION) + " says " + name + " is not supported");
    }

    public static void GroupStatusViable(ScenarioContext context)
    {
        using var files = new VfioFiles(context);
        files.OpenGroup();
        vfio_group_status status = files.GroupStatus();
        Check.FlagsSet(status.flags, VFIO_GROUP_FLAGS_VIABLE, "group " + context.GroupId + " is not viable");
        Check.True((status.flags & VFIO_GROUP_FLAGS_CONTAINER_SET) == 0, "a freshly opened group already has a container");
    }

    public static void GroupSetContainer(ScenarioContext context)
    {
        using var files = new VfioFiles(context);
        files.OpenContainer();
        files.OpenGroup();
        files.SetContainer();
        Check.FlagsSet(files.GroupStatus().flags, VFIO_GROUP_FLAGS_VIABLE | VFIO_GROUP_FLAGS_CONTAINER_SET, "group status after VFIO_GROUP_SET_CONTAINER");
    }

    public static void SetIommuType1v2(ScenarioContext context)
    {
        using var files = new VfioFiles(context);
        files.OpenContainer();
        files.OpenGroup();
        files.SetContainer();
        files.SetIommu(VFIO_TYPE1v2_IOMMU);
    }

    public static void IommuInfoIovaRanges(ScenarioContext context)
    {
        using var files = new VfioFiles(context);
        files.OpenReadyContainer();
        ReadIovaRanges(files, context);
    }

    /// <summary>VFIO_IOMMU_GET_INFO with its capability chain checked; returns the valid IOVA ranges.</summary>
    public static List<vfio_iova_range> ReadIovaRanges(VfioFiles files, ScenarioContext context)
    {
        byte[] buffer = files.InfoWithCaps<vfio_iommu_type1_info>(files.Container!, VFIO_IOMMU_GET_INFO, nameof(VFIO_IOMMU_GET_INFO));
        vfio_iommu_type1_info info = MemoryMarshal.Read<vfio_iommu_type1_info>(buffer);
        Check.FlagsSet(info.flags, VFIO_IOMMU_INFO_PGSIZES | VFIO_IOMMU_INFO_CAPS, nameof(vfio_iommu_type1_info));
        Check.True((info.iova_pgsizes & 0x1000) != 0, FormattableString.Invariant($"iova_pgsizes 0x{info.iova_pgsizes:x} lacks 4 KiB pages"));
        Check.True(info.cap_offset >= sizeof(vfio_iommu_type1_info), FormattableString.Invariant($"cap_offset {info.cap_offset} lies inside the fixed struct"));

        int rangesAt = -1;
        var seen = new HashSet<uint>();
        for (uint offset = info.cap_offset; offset != 0;)
        {
            Check.True(offset + sizeof(vfio_info_cap_header) <= buffer.Length && seen.Add(offset),
                FormattableString.Invariant($"capability chain broken at offset {offset} (buffer {buffer.Length} bytes)"));
            vfio_info_cap_header header = MemoryMarshal.Read<vfio_info_cap_header>(buffer.AsSpan((int)offset));
            context.Note(FormattableString.Invariant($"iommu info capability id {header.id} version {header.version} at {offset}"));
            if (header.id == VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE)
            {
                rangesAt = (int)offset;
            }
            offset = header.next;
        }
        Check.True(rangesAt >= 0, "no VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE capability");

        Check.True(rangesAt + sizeof(vfio_iommu_type1_info_cap_iova_range) <= buffer.Length, "IOVA range capability truncated");
        var cap = MemoryMarshal.Read<vfio_iommu_type1_info_cap_iova_range>(buffer.AsSpan(rangesAt));
        Check.True(cap.nr_iovas > 0, "IOVA range capability lists no ranges");
        int first = rangesAt + sizeof(vfio_iommu_type1_info_cap_iova_range);
        Check.True(first + (cap.nr_iovas * sizeof(vfio_iova_range)) <= buffer.Length,
            FormattableString.Invariant($"{cap.nr_iovas} IOVA ranges do not fit in {buffer.Length} bytes"));
        ReadOnlySpan<vfio_iova_range> ranges = MemoryMarshal.Cast<byte, vfio_iova_range>(
            buffer.AsSpan(first, (int)cap.nr_iovas * sizeof(vfio_iova_range)));
        ulong previousEnd = 0;
        for (int i = 0; i < ranges.Length; i++)
        {
            vfio_iova_range range = ranges[i];
            context.Note(FormattableString.Invariant($"iova range [0x{range.start:x}, 0x{range.end:x}]"));
            Check.True(range.start <= range.end, FormattableString.Invariant($"IOVA range {i} is empty or reversed"));
            Check.True(i == 0 || range.start > previousEnd, FormattableString.Invariant($"IOVA range {i} overlaps or precedes range {i - 1}"));
            previousEnd = range.end;
        }
        return [.. ranges];
    }

    public static void GroupGetDeviceFd(ScenarioContext context)
    {
        using var files = new VfioFiles(context);
        files.OpenReadyContainer();
        SafeFd device = files.OpenDevice();
        Check.True(!device.IsInvalid, "device fd is invalid");
    }

    public static void DeviceInfoPci(ScenarioContext context)
    {
        using var files = new VfioFiles(context);
        files.OpenReadyContainer();
        files.OpenDevice();
        vfio_device_info info = files.DeviceInfo();
        context.Note(FormattableString.Invariant($"device flags 0x{info.flags:x}, {info.num_regions} regions, {info.num_irqs} irqs"));
        Check.FlagsSet(info.flags, VFIO_DEVICE_FLAGS_PCI, nameof(vfio_device_info));
        Check.True(info.num_regions >= VFIO_PCI_NUM_REGIONS, FormattableString.Invariant($"num_regions {info.num_regions} < VFIO_PCI_NUM_REGIONS"));
        Check.True(info.num_irqs >= VFIO_PCI_NUM_IRQS, FormattableString.Invariant($"num_irqs {info.num_irqs} < VFIO_PCI_NUM_IRQS"));
    }

    public static void ConfigRegionInfo(ScenarioContext context)
    {
        using var files = new VfioFiles(context);
        files.OpenReadyContainer();
        files.OpenDevice();
        vfio_region_info region = files.RegionInfo(VFIO_PCI_CONFIG_REGION_INDEX);
        context.Note(FormattableString.Invariant($"config region flags 0x{region.flags:x} size 0x{region.size:x} offset 0x{region.offset:x}"));
        Check.Equal(VFIO_PCI_CONFIG_REGION_INDEX, region.index, "region index");
        Check.FlagsSet(region.flags, VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE, "config region");
        Check.True(region.size >= 256, FormattableString.Invariant($"config region is {region.size} bytes, less than PCI's 256"));
    }

    public static void ConfigReadIds(ScenarioContext context)
    {
        using var files = new VfioFiles(context);
        files.OpenReadyContainer();
        SafeFd device = files.OpenDevice();
        vfio_region_info region = files.RegionInfo(VFIO_PCI_CONFIG_REGION_INDEX);
        Span<byte> ids = stackalloc byte[4];
        long n = context.Kernel.PRead(device, ids, (long)region.offset);
        Check.Ok((int)Math.Min(n, 0), "pread of config space");
        Check.Equal(4L, n, "bytes read from config space");
        Check.Equal(EduVendorId, BinaryPrimitives.ReadUInt16LittleEndian(ids), "vendor id");
        Check.Equal(EduDeviceId, BinaryPrimitives.ReadUInt16LittleEndian(ids[2..]), "device id");
    }

    public static void SecondGroupOpenBusy(ScenarioContext context)
    {
        using var files = new VfioFiles(context);
        files.OpenGroup();
        int rc = context.Kernel.Open(files.GroupPath, Interop.Interop.Flags.O_RDWR, out SafeFd second);
        if (rc >= 0)
        {
            second.Dispose();
        }
        Check.Fails(rc, Errno.EBUSY, "a second open of " + files.GroupPath);
    }
}
