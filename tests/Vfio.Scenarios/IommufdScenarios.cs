using System.Globalization;
using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio.Scenarios;

/// <summary>
/// iommufd and the VFIO device cdev at uAPI level (<c>/dev/iommu</c>, <c>/dev/vfio/devices/vfioN</c>):
/// what the library's iommufd backend relies on, checked against the kernel. They need a kernel with
/// CONFIG_IOMMUFD and CONFIG_VFIO_DEVICE_CDEV and skip, saying so, on others (every Debian kernel);
/// they run in every mode of a kernel that has both, as the legacy scenarios do on it.
/// </summary>
internal static unsafe class IommufdScenarios
{
    /// <summary>A map at the IOVA given, readable and writable, as the library maps.</summary>
    internal const uint Fixed = IommufdUapi.IOMMU_IOAS_MAP_FIXED_IOVA | IommufdUapi.IOMMU_IOAS_MAP_READABLE | IommufdUapi.IOMMU_IOAS_MAP_WRITEABLE;

    /// <summary>Every iommufd scenario, in the order they run.</summary>
    public static IReadOnlyList<Scenario> All { get; } =
    [
        new("iommufd_ioas_iova_ranges", IovaRanges),
        new("iommufd_ioas_map_unmap", MapUnmap),
        new("iommufd_bind_excludes_the_group", BindExcludesTheGroup),
        new("iommufd_hw_info_and_rlimit_mode", HwInfoAndRlimitMode),
    ];

    /// <summary>
    /// IOMMU_IOAS_IOVA_RANGES, its EMSGSIZE protocol, and how an attach narrows the ranges (the MSI
    /// window, the alignment) and a detach widens them again; an IOAS with a device cannot be destroyed.
    /// </summary>
    public static void IovaRanges(ScenarioContext context)
    {
        context.SkipWithoutIommufd();
        using var files = new IommufdFiles(context, context.DeviceAddress);
        uint ioas = files.AllocIoas();

        var fresh = files.Ranges(ioas, out ulong alignment);
        context.Note("fresh IOAS: " + Describe(fresh) + ", alignment " + alignment);
        Check.Equal("0x0-0xffffffffffffffff", Describe(fresh), "a fresh IOAS's ranges");
        Check.Equal(1UL, alignment, "a fresh IOAS's alignment");

        files.OpenCdev();
        uint devid = files.Bind();
        uint pageTable = files.Attach(ioas);
        context.Note(FormattableString.Invariant($"bound as device {devid}, attached to page table {pageTable}"));
        Check.True(pageTable != ioas && pageTable != devid, "the attach did not answer the automatic page table's id");
        Check.Fails(files.Destroy(ioas), Errno.EBUSY, "IOMMU_DESTROY of an IOAS with an attached device");

        // Asked with no room: EMSGSIZE and the count; then with room for them all.
        var probe = new iommu_ioas_iova_ranges { size = (uint)sizeof(iommu_ioas_iova_ranges), ioas_id = ioas };
        Check.Fails(context.Kernel.Ioctl(files.Iommufd, IommufdUapi.IOMMU_IOAS_IOVA_RANGES, &probe), Errno.EMSGSIZE, "IOMMU_IOAS_IOVA_RANGES with an empty array");
        Check.True(probe.num_iovas >= 2, "the attached IOAS has fewer than 2 ranges: " + probe.num_iovas);
        var attached = files.Ranges(ioas, out alignment);
        context.Note("attached: " + Describe(attached) + ", alignment " + alignment);
        Check.Equal((int)probe.num_iovas, attached.Count, "ranges counted and ranges filled");
        Check.Equal(4096UL, alignment, "the alignment once VT-d's page table joined");
        Check.True(!attached.Any(r => r.start <= 0xfee00000 && r.last >= 0xfee00000), "the MSI window 0xfee00000 is still a valid IOVA");

        Check.Ok(files.Detach(), "VFIO_DEVICE_DETACH_IOMMUFD_PT");
        Check.Equal("0x0-0xffffffffffffffff", Describe(files.Ranges(ioas, out alignment)), "the ranges after the detach");
        Check.Ok(files.Destroy(ioas), "IOMMU_DESTROY of the IOAS after the detach");
    }

    /// <summary>IOMMU_IOAS_MAP at a fixed IOVA and IOMMU_IOAS_UNMAP: overlaps, reserved and unaligned IOVAs, whole mappings only, unmap-all.</summary>
    public static void MapUnmap(ScenarioContext context)
    {
        context.SkipWithoutIommufd();
        using var files = new IommufdFiles(context, context.DeviceAddress);
        uint ioas = files.AllocIoas();
        files.OpenCdev();
        files.Bind();
        files.Attach(ioas);
        var memory = files.Memory(0x4000);

        Check.Ok(files.Map(ioas, memory.Address, 0x4000, 0x100000), "IOMMU_IOAS_MAP of 16 KiB at 0x100000");
        Check.Fails(files.Map(ioas, memory.Address, 0x1000, 0x102000), Errno.EEXIST, "a map over part of the mapping");
        Check.Fails(files.Map(ioas, memory.Address, 0x1000, 0xfee00000), Errno.EINVAL, "a map in the MSI window VT-d reserves");
        Check.Fails(files.Map(ioas, memory.Address, 0x1000, 0x200800), Errno.EINVAL, "a map at an IOVA not 4 KiB aligned");
        Check.Fails(files.Unmap(ioas, 0x101000, 0x1000, out _), Errno.ENOENT, "an unmap that cuts the mapping");
        Check.Fails(files.Unmap(ioas, 0x300000, 0x1000, out _), Errno.ENOENT, "an unmap of a range with nothing mapped");
        Check.Ok(files.Map(ioas, memory.Address, 0x1000, 0x104000), "a map right after the first");
        Check.Ok(files.Unmap(ioas, 0x100000, 0x4000, out ulong unmapped), "the unmap of the first mapping");
        Check.Equal(0x4000UL, unmapped, "bytes unmapped");
        Check.Ok(files.Unmap(ioas, 0, ulong.MaxValue, out unmapped), "unmap all");
        Check.Equal(0x1000UL, unmapped, "bytes unmapped by unmap all");
        Check.Ok(files.Unmap(ioas, 0, ulong.MaxValue, out unmapped), "unmap all of an empty IOAS");
        Check.Equal(0UL, unmapped, "bytes unmapped by unmap all of an empty IOAS");
    }

    /// <summary>
    /// A group is used through its group file or through its devices' cdevs, never both: the bind is
    /// EBUSY while the group is open, the group's open EBUSY while a device is bound; a device file
    /// from the group cannot bind (EINVAL), and a device binds once (EINVAL).
    /// </summary>
    public static void BindExcludesTheGroup(ScenarioContext context)
    {
        context.SkipWithoutIommufd();
        using (var legacy = new VfioFiles(context))
        using (var files = new IommufdFiles(context, context.DeviceAddress))
        {
            legacy.OpenReadyContainer();
            SafeFd groupDevice = legacy.OpenDevice();
            Check.Fails(files.BindFile(groupDevice), Errno.EINVAL, "VFIO_DEVICE_BIND_IOMMUFD on a device file from the group");
            files.OpenCdev();
            Check.Fails(files.BindFile(files.Cdev!), Errno.EBUSY, "VFIO_DEVICE_BIND_IOMMUFD while the group is open");
        }
        using (var files = new IommufdFiles(context, context.DeviceAddress))
        {
            files.OpenCdev();
            files.Bind();
            Check.Fails(files.BindFile(files.Cdev!), Errno.EINVAL, "a second VFIO_DEVICE_BIND_IOMMUFD of the same file");
            Check.Fails(context.Kernel.Open(context.Kernel.Dev("vfio/" + context.GroupId.ToString(CultureInfo.InvariantCulture)), Flags.O_RDWR, out _), Errno.EBUSY,
                "open of the group while a device of it is bound");
            using SafeFd second = files.OpenAnotherCdev();
            Check.Fails(files.BindFile(second), Errno.EINVAL, "VFIO_DEVICE_BIND_IOMMUFD of a second file of a bound device");
        }
        // Once the cdev is closed the group opens again.
        using (var legacy = new VfioFiles(context))
        {
            legacy.OpenGroup();
        }
    }

    /// <summary>IOMMU_GET_HW_INFO of a bound device (QEMU's intel-iommu: VT-d, no dirty tracking) and IOMMU_OPTION_RLIMIT_MODE.</summary>
    public static void HwInfoAndRlimitMode(ScenarioContext context)
    {
        context.SkipWithoutIommufd();
        using var files = new IommufdFiles(context, context.DeviceAddress);
        Check.Equal(0UL, files.RlimitMode(IommufdUapi.IOMMU_OPTION_OP_GET, 0), "IOMMU_OPTION_RLIMIT_MODE of a new iommufd (0: the user's locked_vm)");
        // Root has CAP_SYS_RESOURCE; the mode can change only while the context has no object.
        Check.Equal(0UL, files.RlimitMode(IommufdUapi.IOMMU_OPTION_OP_SET, 1), "setting IOMMU_OPTION_RLIMIT_MODE to 1");
        Check.Equal(1UL, files.RlimitMode(IommufdUapi.IOMMU_OPTION_OP_GET, 0), "IOMMU_OPTION_RLIMIT_MODE after setting it");
        uint ioas = files.AllocIoas();
        var option = new iommu_option { size = (uint)sizeof(iommu_option), option_id = IommufdUapi.IOMMU_OPTION_RLIMIT_MODE, op = IommufdUapi.IOMMU_OPTION_OP_SET };
        Check.Fails(context.Kernel.Ioctl(files.Iommufd, IommufdUapi.IOMMU_OPTION, &option), Errno.EBUSY, "setting IOMMU_OPTION_RLIMIT_MODE once an IOAS exists");

        files.OpenCdev();
        uint devid = files.Bind();
        files.Attach(ioas);
        byte[] data = new byte[64];
        var info = new iommu_hw_info { size = (uint)sizeof(iommu_hw_info), dev_id = devid, data_len = (uint)data.Length };
        fixed (byte* p = data)
        {
            info.data_uptr = (ulong)p;
            Check.Ok(context.Kernel.Ioctl(files.Iommufd, IommufdUapi.IOMMU_GET_HW_INFO, &info), "IOMMU_GET_HW_INFO");
        }
        context.Note(FormattableString.Invariant($"hw info: type {info.out_data_type}, data_len {info.data_len}, capabilities 0x{info.out_capabilities:x}, max_pasid_log2 {info.out_max_pasid_log2}"));
        Check.Equal(IommufdUapi.IOMMU_HW_INFO_TYPE_INTEL_VTD, info.out_data_type, "the IOMMU's type");
        Check.Equal((uint)sizeof(iommu_hw_info_vtd), info.data_len, "the length of VT-d's data");
        Check.True((info.out_capabilities & IommufdUapi.IOMMU_HW_CAP_DIRTY_TRACKING) == 0, "QEMU's intel-iommu claims dirty tracking");
        Check.True(data.AsSpan((int)info.data_len).IndexOfAnyExcept((byte)0) < 0, "the buffer past the data is not zeroed");
        info = new iommu_hw_info { size = (uint)sizeof(iommu_hw_info), dev_id = devid + 1000 };
        Check.Fails(context.Kernel.Ioctl(files.Iommufd, IommufdUapi.IOMMU_GET_HW_INFO, &info), Errno.ENOENT, "IOMMU_GET_HW_INFO of an id that names nothing");
    }

    private static string Describe(List<iommu_iova_range> ranges) =>
        string.Join(", ", ranges.Select(r => FormattableString.Invariant($"0x{r.start:x}-0x{r.last:x}")));
}

/// <summary>
/// The iommufd and the device cdev of one scenario, opened step by step through the seam and closed
/// in the kernel's order (the cdev, which unbinds and detaches, then the iommufd).
/// </summary>
internal sealed unsafe class IommufdFiles : IDisposable
{
    private readonly ScenarioContext _context;
    private readonly string _deviceAddress;
    private readonly List<SafeMapping> _memory = [];

    /// <summary>Opens <c>/dev/iommu</c> for the device at <paramref name="deviceAddress"/>.</summary>
    public IommufdFiles(ScenarioContext context, string deviceAddress)
    {
        _context = context;
        _deviceAddress = deviceAddress;
        Check.Ok(Kernel.Open(Kernel.Dev("iommu"), Flags.O_RDWR, out SafeFd fd), "open " + Kernel.Dev("iommu"));
        Iommufd = fd;
    }

    public VfioKernel Kernel => _context.Kernel;

    public SafeFd Iommufd { get; }

    public SafeFd? Cdev { get; private set; }

    /// <summary>The device's cdev, from the one entry of its sysfs vfio-dev folder.</summary>
    public string CdevPath
    {
        get
        {
            string folder = Kernel.Sys("bus/pci/devices/" + _deviceAddress + "/vfio-dev");
            Check.Ok(Kernel.ListDirectory(folder, out string[] names), "list " + folder);
            string name = names.SingleOrDefault(n => n.StartsWith("vfio", StringComparison.Ordinal))
                ?? throw new ScenarioFailedException(folder + " holds no vfioN entry");
            return Kernel.Dev("vfio/devices/" + name);
        }
    }

    public uint AllocIoas()
    {
        var alloc = new iommu_ioas_alloc { size = (uint)sizeof(iommu_ioas_alloc) };
        Check.Ok(Kernel.Ioctl(Iommufd, IommufdUapi.IOMMU_IOAS_ALLOC, &alloc), "IOMMU_IOAS_ALLOC");
        return alloc.out_ioas_id;
    }

    public int Destroy(uint id)
    {
        var destroy = new iommu_destroy { size = (uint)sizeof(iommu_destroy), id = id };
        return Kernel.Ioctl(Iommufd, IommufdUapi.IOMMU_DESTROY, &destroy);
    }

    /// <summary>IOMMU_IOAS_IOVA_RANGES as the library asks: the count first, then an array that holds them.</summary>
    public List<iommu_iova_range> Ranges(uint ioas, out ulong alignment)
    {
        var cmd = new iommu_ioas_iova_ranges { size = (uint)sizeof(iommu_ioas_iova_ranges), ioas_id = ioas };
        int rc = Kernel.Ioctl(Iommufd, IommufdUapi.IOMMU_IOAS_IOVA_RANGES, &cmd);
        if (rc == -Errno.EMSGSIZE)
        {
            var ranges = new iommu_iova_range[cmd.num_iovas];
            fixed (iommu_iova_range* p = ranges)
            {
                cmd.allowed_iovas = (ulong)p;
                Check.Ok(Kernel.Ioctl(Iommufd, IommufdUapi.IOMMU_IOAS_IOVA_RANGES, &cmd), "IOMMU_IOAS_IOVA_RANGES with room for " + ranges.Length);
            }
            alignment = cmd.out_iova_alignment;
            return [.. ranges.AsSpan(0, (int)cmd.num_iovas)];
        }
        Check.Ok(rc, "IOMMU_IOAS_IOVA_RANGES");
        alignment = cmd.out_iova_alignment;
        return [];
    }

    public SafeFd OpenCdev() => Cdev = OpenAnotherCdev();

    public SafeFd OpenAnotherCdev()
    {
        string path = CdevPath;
        Check.Ok(Kernel.Open(path, Flags.O_RDWR, out SafeFd fd), "open " + path);
        return fd;
    }

    /// <summary>VFIO_DEVICE_BIND_IOMMUFD of the cdev; returns the device's id.</summary>
    public uint Bind()
    {
        var bind = new vfio_device_bind_iommufd { argsz = 16, iommufd = Iommufd.Value };
        Check.Ok(Kernel.Ioctl(Cdev!, VfioUapi.VFIO_DEVICE_BIND_IOMMUFD, &bind), "VFIO_DEVICE_BIND_IOMMUFD");
        return bind.out_devid;
    }

    /// <summary>VFIO_DEVICE_BIND_IOMMUFD of any device file; returns the seam's result.</summary>
    public int BindFile(SafeFd device)
    {
        var bind = new vfio_device_bind_iommufd { argsz = 16, iommufd = Iommufd.Value };
        return Kernel.Ioctl(device, VfioUapi.VFIO_DEVICE_BIND_IOMMUFD, &bind);
    }

    /// <summary>VFIO_DEVICE_ATTACH_IOMMUFD_PT to an IOAS; returns the page table's id.</summary>
    public uint Attach(uint ioas)
    {
        var attach = new vfio_device_attach_iommufd_pt { argsz = 12, pt_id = ioas };
        Check.Ok(Kernel.Ioctl(Cdev!, VfioUapi.VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach), "VFIO_DEVICE_ATTACH_IOMMUFD_PT");
        return attach.pt_id;
    }

    public int Detach()
    {
        var detach = new vfio_device_detach_iommufd_pt { argsz = 8 };
        return Kernel.Ioctl(Cdev!, VfioUapi.VFIO_DEVICE_DETACH_IOMMUFD_PT, &detach);
    }

    public int Map(uint ioas, nint userVa, ulong length, ulong iova)
    {
        var map = new iommu_ioas_map { size = (uint)sizeof(iommu_ioas_map), flags = IommufdScenarios.Fixed, ioas_id = ioas, user_va = (ulong)userVa, length = length, iova = iova };
        return Kernel.Ioctl(Iommufd, IommufdUapi.IOMMU_IOAS_MAP, &map);
    }

    public int Unmap(uint ioas, ulong iova, ulong length, out ulong unmapped)
    {
        var unmap = new iommu_ioas_unmap { size = (uint)sizeof(iommu_ioas_unmap), ioas_id = ioas, iova = iova, length = length };
        int rc = Kernel.Ioctl(Iommufd, IommufdUapi.IOMMU_IOAS_UNMAP, &unmap);
        unmapped = unmap.length;
        return rc;
    }

    /// <summary>IOMMU_OPTION_RLIMIT_MODE: get (returns the mode) or set (returns 0); fails the scenario when refused.</summary>
    public ulong RlimitMode(ushort op, ulong value)
    {
        var option = new iommu_option { size = (uint)sizeof(iommu_option), option_id = IommufdUapi.IOMMU_OPTION_RLIMIT_MODE, op = op, val64 = value };
        Check.Ok(Kernel.Ioctl(Iommufd, IommufdUapi.IOMMU_OPTION, &option), "IOMMU_OPTION (RLIMIT_MODE)");
        return op == IommufdUapi.IOMMU_OPTION_OP_GET ? option.val64 : 0;
    }

    /// <summary>Anonymous host memory for mappings, unmapped at dispose (after the iommufd closed).</summary>
    public SafeMapping Memory(ulong length)
    {
        Check.Ok(Kernel.Mmap(null, (nuint)length, Flags.PROT_READ | Flags.PROT_WRITE, Flags.MAP_PRIVATE | Flags.MAP_ANONYMOUS | Flags.MAP_POPULATE, 0, out SafeMapping mapping), "mmap of anonymous memory");
        _memory.Add(mapping);
        return mapping;
    }

    public void Dispose()
    {
        Cdev?.Dispose();
        Iommufd.Dispose();
        foreach (var memory in _memory)
        {
            memory.Dispose();
        }
    }
}
