using System.Runtime.InteropServices;
using System.Text;
using Vfio.Interop;
using static Vfio.Interop.Interop;
using static Vfio.Interop.VfioUapi;

namespace Vfio.VmTests;

/// <summary>
/// The container, group and device files of one scenario, opened step by step through the seam
/// and closed in the order the kernel wants (device, group, container).
/// </summary>
internal sealed unsafe class VfioFiles : IDisposable
{
    private readonly ScenarioContext _context;

    public VfioFiles(ScenarioContext context) => _context = context;

    public VfioKernel Kernel => _context.Kernel;

    public SafeFd? Container { get; private set; }

    public SafeFd? Group { get; private set; }

    public SafeFd? Device { get; private set; }

    /// <summary>The path of the scenario's group file, /dev/vfio/N.</summary>
    public string GroupPath => Kernel.Dev("vfio/" + _context.GroupId.ToString(System.Globalization.CultureInfo.InvariantCulture));

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
        byte[] name = Encoding.UTF8.GetBytes(_context.DeviceAddress + "\0");
        int rc;
        fixed (byte* p = name)
        {
            rc = Kernel.Ioctl(Group!, VFIO_GROUP_GET_DEVICE_FD, p);
        }
        Check.Ok(rc, nameof(VFIO_GROUP_GET_DEVICE_FD) + " " + _context.DeviceAddress);
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

    public void Dispose()
    {
        Device?.Dispose();
        Group?.Dispose();
        Container?.Dispose();
    }
}
