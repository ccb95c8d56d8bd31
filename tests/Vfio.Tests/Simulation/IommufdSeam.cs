using Vfio.Interop;
using Vfio.Testing;
using static Vfio.Interop.Interop;

namespace Vfio.Tests.Simulation;

/// <summary>Drives <c>/dev/iommu</c> and the VFIO device cdev through the seam, struct by struct.</summary>
internal static unsafe class IommufdSeam
{
    public const uint ReadWrite = IommufdUapi.IOMMU_IOAS_MAP_READABLE | IommufdUapi.IOMMU_IOAS_MAP_WRITEABLE;
    public const uint Fixed = IommufdUapi.IOMMU_IOAS_MAP_FIXED_IOVA | ReadWrite;

    public static SafeFd Open(SimulatedKernel kernel) => Seam.Open(kernel, kernel.Dev("iommu"));

    public static uint AllocIoas(SimulatedKernel kernel, SafeFd iommufd)
    {
        var alloc = new iommu_ioas_alloc { size = (uint)sizeof(iommu_ioas_alloc) };
        kernel.Ioctl(iommufd, IommufdUapi.IOMMU_IOAS_ALLOC, &alloc).Should().Be(0);
        return alloc.out_ioas_id;
    }

    public static int Destroy(SimulatedKernel kernel, SafeFd iommufd, uint id)
    {
        var destroy = new iommu_destroy { size = (uint)sizeof(iommu_destroy), id = id };
        return kernel.Ioctl(iommufd, IommufdUapi.IOMMU_DESTROY, &destroy);
    }

    public static int Map(SimulatedKernel kernel, SafeFd iommufd, uint ioas, ulong userVa, ulong length, ref ulong iova, uint flags = Fixed)
    {
        var map = new iommu_ioas_map { size = (uint)sizeof(iommu_ioas_map), flags = flags, ioas_id = ioas, user_va = userVa, length = length, iova = iova };
        int r = kernel.Ioctl(iommufd, IommufdUapi.IOMMU_IOAS_MAP, &map);
        iova = map.iova;
        return r;
    }

    public static int MapAt(SimulatedKernel kernel, SafeFd iommufd, uint ioas, ulong userVa, ulong length, ulong iova, uint flags = Fixed) =>
        Map(kernel, iommufd, ioas, userVa, length, ref iova, flags);

    public static int Unmap(SimulatedKernel kernel, SafeFd iommufd, uint ioas, ulong iova, ulong length, out ulong unmapped)
    {
        var unmap = new iommu_ioas_unmap { size = (uint)sizeof(iommu_ioas_unmap), ioas_id = ioas, iova = iova, length = length };
        int r = kernel.Ioctl(iommufd, IommufdUapi.IOMMU_IOAS_UNMAP, &unmap);
        unmapped = unmap.length;
        return r;
    }

    public static int IovaRanges(SimulatedKernel kernel, SafeFd iommufd, uint ioas, iommu_iova_range[] output, out uint count, out ulong alignment)
    {
        fixed (iommu_iova_range* p = output)
        {
            var ranges = new iommu_ioas_iova_ranges
            {
                size = (uint)sizeof(iommu_ioas_iova_ranges),
                ioas_id = ioas,
                num_iovas = (uint)output.Length,
                allowed_iovas = (ulong)p,
            };
            int r = kernel.Ioctl(iommufd, IommufdUapi.IOMMU_IOAS_IOVA_RANGES, &ranges);
            count = ranges.num_iovas;
            alignment = ranges.out_iova_alignment;
            return r;
        }
    }

    public static int AllowIovas(SimulatedKernel kernel, SafeFd iommufd, uint ioas, params iommu_iova_range[] allowed)
    {
        fixed (iommu_iova_range* p = allowed)
        {
            var allow = new iommu_ioas_allow_iovas { size = (uint)sizeof(iommu_ioas_allow_iovas), ioas_id = ioas, num_iovas = (uint)allowed.Length, allowed_iovas = (ulong)p };
            return kernel.Ioctl(iommufd, IommufdUapi.IOMMU_IOAS_ALLOW_IOVAS, &allow);
        }
    }

    public static int Option(SimulatedKernel kernel, SafeFd iommufd, uint option, ushort op, uint objectId, ref ulong value)
    {
        var cmd = new iommu_option { size = (uint)sizeof(iommu_option), option_id = option, op = op, object_id = objectId, val64 = value };
        int r = kernel.Ioctl(iommufd, IommufdUapi.IOMMU_OPTION, &cmd);
        value = cmd.val64;
        return r;
    }

    public static SafeFd OpenCdev(SimulatedKernel kernel, string name) => Seam.Open(kernel, kernel.Dev("vfio/devices/" + name));

    public static int Bind(SimulatedKernel kernel, SafeFd device, SafeFd iommufd, out uint devid) => Bind(kernel, device, iommufd.Value, out devid);

    public static int Bind(SimulatedKernel kernel, SafeFd device, int iommufd, out uint devid)
    {
        var bind = new vfio_device_bind_iommufd { argsz = (uint)sizeof(vfio_device_bind_iommufd), iommufd = iommufd };
        int r = kernel.Ioctl(device, VfioUapi.VFIO_DEVICE_BIND_IOMMUFD, &bind);
        devid = bind.out_devid;
        return r;
    }

    public static int Attach(SimulatedKernel kernel, SafeFd device, ref uint ptId)
    {
        var attach = new vfio_device_attach_iommufd_pt { argsz = (uint)sizeof(vfio_device_attach_iommufd_pt), pt_id = ptId };
        int r = kernel.Ioctl(device, VfioUapi.VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach);
        ptId = attach.pt_id;
        return r;
    }

    public static int Detach(SimulatedKernel kernel, SafeFd device)
    {
        var detach = new vfio_device_detach_iommufd_pt { argsz = (uint)sizeof(vfio_device_detach_iommufd_pt) };
        return kernel.Ioctl(device, VfioUapi.VFIO_DEVICE_DETACH_IOMMUFD_PT, &detach);
    }

    /// <summary>The backend's open sequence: iommufd, IOAS, cdev, bind, attach to the IOAS.</summary>
    public static CdevOpened OpenDevice(SimulatedKernel kernel, string cdev)
    {
        var iommufd = Open(kernel);
        uint ioas = AllocIoas(kernel, iommufd);
        var device = OpenCdev(kernel, cdev);
        Bind(kernel, device, iommufd, out uint devid).Should().Be(0);
        uint pt = ioas;
        Attach(kernel, device, ref pt).Should().Be(0);
        return new CdevOpened(iommufd, device, ioas, devid, pt);
    }
}

/// <summary>A device bound to an iommufd and attached to an IOAS; closed device first, as the backend will.</summary>
internal sealed record CdevOpened(SafeFd Iommufd, SafeFd Device, uint Ioas, uint DevId, uint Hwpt) : IDisposable
{
    public void Dispose()
    {
        Device.Dispose();
        Iommufd.Dispose();
    }
}
