using System.Runtime.InteropServices;
using System.Text;
using Vfio.Interop;
using static Vfio.Interop.Interop;
using static Vfio.Interop.VfioUapi;

namespace Vfio.Scenarios;

/// <summary>
/// The container, group and device files of one scenario, opened step by step through the seam
/// and closed in the order the kernel wants (device, group, container).
/// </summary>
internal sealed unsafe class VfioFiles : IDisposable
{
    private readonly ScenarioContext _context;
    private readonly string _deviceAddress;
    private readonly int _groupId;
    private readonly List<SafeMapping> _memory = [];

    /// <summary>The files of the context's device and group.</summary>
    public VfioFiles(ScenarioContext context)
        : this(context, context.DeviceAddress, context.GroupId)
    {
    }

    /// <summary>The files of another device and group of the machine.</summary>
    public VfioFiles(ScenarioContext context, string deviceAddress, int groupId)
    {
        _context = context;
        _deviceAddress = deviceAddress;
        _groupId = groupId;
    }

    public VfioKernel Kernel => _context.Kernel;

    public SafeFd? Container { get; private set; }

    public SafeFd? Group { get; private set; }

    public SafeFd? Device { get; private set; }

    /// <summary>The path of the scenario's group file, /dev/vfio/N.</summary>
    public string GroupPath => Kernel.Dev("vfio/" + _groupId.ToString(System.Globalization.CultureInfo.InvariantCulture));

    /// <summary>Opens /dev/vfio/vfio.</summary>
    public SafeFd OpenContainer()
    {
        Check.Ok(Kernel.Open(Kernel.Dev("vfio/vfio"), Flags.O_RDWR, out SafeFd fd), "open " + Kernel.Dev("vfio/vfio"));
        return Container = fd;
    }

    /// <summary>Opens the group file.</summary>
    public SafeFd OpenGroup()
    {
        Check.Ok(Kernel.Open(GroupPath, Flags.O_RDWR, out SafeFd fd), "open " + GroupPath);
        return Group = fd;
    }

    /// <summary>Reads the group's status.</summary>
    public vfio_group_status GroupStatus()
    {
        var status = new vfio_group_status { argsz = (uint)sizeof(vfio_group_status) };
        Check.Ok(Kernel.Ioctl(Group!, VFIO_GROUP_GET_STATUS, &status), nameof(VFIO_GROUP_GET_STATUS));
        return status;
    }

    /// <summary>Attaches the group to the container.</summary>
    public void SetContainer()
    {
        int container = Container!.Value;
        Check.Ok(Kernel.Ioctl(Group!, VFIO_GROUP_SET_CONTAINER, &container), nameof(VFIO_GROUP_SET_CONTAINER));
    }

    /// <summary>Sets the container's IOMMU model.</summary>
    public void SetIommu(int type) =>
        Check.Ok(Kernel.Ioctl(Container!, VFIO_SET_IOMMU, type), nameof(VFIO_SET_IOMMU));

    /// <summary>Container, group, group attached, type1v2 IOMMU set: ready for device fds and DMA.</summary>
    public void OpenReadyContainer()
    {
        OpenContainer();
        OpenGroup();
        SetContainer();
        SetIommu(VFIO_TYPE1v2_IOMMU);
    }

    /// <summary>Gets the device fd of the scenario's device from the group.</summary>
    public SafeFd OpenDevice()
    {
        byte[] name = Encoding.UTF8.GetBytes(_deviceAddress + "\0");
        int rc;
        fixed (byte* p = name)
        {
            rc = Kernel.Ioctl(Group!, VFIO_GROUP_GET_DEVICE_FD, p);
        }
        Check.Ok(rc, nameof(VFIO_GROUP_GET_DEVICE_FD) + " " + _deviceAddress);
        return Device = new SafeFd(Kernel, rc);
    }

    /// <summary>Reads the device's info.</summary>
    public vfio_device_info DeviceInfo()
    {
        var info = new vfio_device_info { argsz = (uint)sizeof(vfio_device_info) };
        Check.Ok(Kernel.Ioctl(Device!, VFIO_DEVICE_GET_INFO, &info), nameof(VFIO_DEVICE_GET_INFO));
        return info;
    }

    /// <summary>Reads the info of one region of the device.</summary>
    public vfio_region_info RegionInfo(uint index)
    {
        var info = new vfio_region_info { argsz = (uint)sizeof(vfio_region_info), index = index };
        Check.Ok(Kernel.Ioctl(Device!, VFIO_DEVICE_GET_REGION_INFO, &info), nameof(VFIO_DEVICE_GET_REGION_INFO) + " " + index);
        return info;
    }

    /// <summary>
    /// Issues an INFO ioctl whose answer may carry a capability chain: starts with the fixed
    /// struct and grows the buffer to the argsz the kernel asks for, then asks again.
    /// </summary>
    public byte[] InfoWithCaps<T>(SafeFd fd, nuint request, string name)
        where T : unmanaged
    {
        uint argsz = (uint)sizeof(T);
        for (int attempt = 0; attempt < 4; attempt++)
        {
            byte[] buffer = new byte[argsz];
            MemoryMarshal.Write(buffer, in argsz);
            fixed (byte* p = buffer)
            {
                Check.Ok(Kernel.Ioctl(fd, request, p), name);
            }
            uint wanted = MemoryMarshal.Read<uint>(buffer);
            if (wanted <= argsz)
            {
                return buffer;
            }
            argsz = wanted;
        }
        throw new ScenarioFailedException(name + " kept asking for a larger argsz (last " + argsz + ")");
    }

    /// <summary>Anonymous host memory for DMA mappings, unmapped at dispose (after the container closed).</summary>
    public SafeMapping Memory(ulong length)
    {
        Check.Ok(Kernel.Mmap(null, (nuint)length, Flags.PROT_READ | Flags.PROT_WRITE, Flags.MAP_PRIVATE | Flags.MAP_ANONYMOUS, 0, out SafeMapping mapping), "mmap of anonymous memory");
        _memory.Add(mapping);
        return mapping;
    }

    /// <summary>VFIO_IOMMU_MAP_DMA of host memory at an IOVA; returns the seam's result.</summary>
    public int MapDma(SafeMapping memory, ulong offset, ulong iova, ulong size)
    {
        var map = new vfio_iommu_type1_dma_map
        {
            argsz = (uint)sizeof(vfio_iommu_type1_dma_map),
            flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
            vaddr = (ulong)memory.Address + offset,
            iova = iova,
            size = size,
        };
        return Kernel.Ioctl(Container!, VFIO_IOMMU_MAP_DMA, &map);
    }

    /// <summary>VFIO_IOMMU_UNMAP_DMA; returns the seam's result and the size the kernel says it unmapped.</summary>
    public int UnmapDma(ulong iova, ulong size, out ulong unmapped)
    {
        var unmap = new vfio_iommu_type1_dma_unmap { argsz = (uint)sizeof(vfio_iommu_type1_dma_unmap), iova = iova, size = size };
        int rc = Kernel.Ioctl(Container!, VFIO_IOMMU_UNMAP_DMA, &unmap);
        unmapped = unmap.size;
        return rc;
    }

    public void Dispose()
    {
        Device?.Dispose();
        Group?.Dispose();
        Container?.Dispose();
        foreach (var memory in _memory)
        {
            memory.Dispose();
        }
    }
}
