using System.Runtime.InteropServices;
using System.Text;
using Vfio.Interop;
using Vfio.Testing;
using static Vfio.Interop.Interop;

namespace Vfio.Tests.Simulation;

/// <summary>Drives the simulated kernel through the seam, as the library does.</summary>
internal static unsafe class Seam
{
    public static SafeFd Open(SimulatedKernel kernel, string path)
    {
        kernel.Open(path, Flags.O_RDWR, out var fd).Should().Be(0, "opening {0} succeeds", path);
        return fd;
    }

    public static int TryOpen(SimulatedKernel kernel, string path, out SafeFd fd) => kernel.Open(path, Flags.O_RDWR, out fd);

    public static SafeFd Container(SimulatedKernel kernel) => Open(kernel, kernel.Dev("vfio/vfio"));

    public static SafeFd Group(SimulatedKernel kernel, int id) => Open(kernel, kernel.Dev("vfio/" + id));

    public static int GroupStatus(SimulatedKernel kernel, SafeFd group, out uint flags)
    {
        var status = new vfio_group_status { argsz = (uint)sizeof(vfio_group_status) };
        int r = kernel.Ioctl(group, VfioUapi.VFIO_GROUP_GET_STATUS, &status);
        flags = status.flags;
        return r;
    }

    public static int SetContainer(SimulatedKernel kernel, SafeFd group, SafeFd container)
    {
        int fd = container.Value;
        return kernel.Ioctl(group, VfioUapi.VFIO_GROUP_SET_CONTAINER, &fd);
    }

    public static int SetContainer(SimulatedKernel kernel, SafeFd group, int fd) =>
        kernel.Ioctl(group, VfioUapi.VFIO_GROUP_SET_CONTAINER, &fd);

    public static int GetDeviceFd(SimulatedKernel kernel, SafeFd group, string name, out SafeFd device)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(name + "\0");
        fixed (byte* p = bytes)
        {
            int r = kernel.Ioctl(group, VfioUapi.VFIO_GROUP_GET_DEVICE_FD, p);
            device = r >= 0 ? new SafeFd(kernel, r) : null!;
            return r;
        }
    }

    /// <summary>Container, group (set, IOMMU type1v2) and device, in the library's order.</summary>
    public static Opened OpenDevice(SimulatedKernel kernel, int groupId, string name)
    {
        var container = Container(kernel);
        var group = Group(kernel, groupId);
        SetContainer(kernel, group, container).Should().Be(0);
        kernel.Ioctl(container, VfioUapi.VFIO_SET_IOMMU, VfioUapi.VFIO_TYPE1v2_IOMMU).Should().Be(0);
        GetDeviceFd(kernel, group, name, out var device).Should().BeGreaterThan(0);
        return new Opened(container, group, device);
    }

    public static string ReadText(SimulatedKernel kernel, string path)
    {
        kernel.Open(path, Flags.O_RDONLY, out var fd).Should().Be(0, "{0} opens", path);
        using (fd)
        {
            var buffer = new byte[4096];
            long n = kernel.Read(fd, buffer);
            n.Should().BeGreaterThanOrEqualTo(0);
            return Encoding.UTF8.GetString(buffer, 0, (int)n);
        }
    }

    public static long WriteText(SimulatedKernel kernel, string path, string text)
    {
        int r = kernel.Open(path, Flags.O_WRONLY, out var fd);
        if (r < 0)
        {
            return r;
        }
        using (fd)
        {
            return kernel.Write(fd, Encoding.UTF8.GetBytes(text));
        }
    }

    public static vfio_region_info RegionInfo(SimulatedKernel kernel, SafeFd device, uint index)
    {
        var info = new vfio_region_info { argsz = (uint)sizeof(vfio_region_info), index = index };
        kernel.Ioctl(device, VfioUapi.VFIO_DEVICE_GET_REGION_INFO, &info).Should().Be(0);
        return info;
    }

    /// <summary>Reads 1, 2 or 4 bytes of the device file's config region (pread at index 7).</summary>
    public static uint ReadConfig(SimulatedKernel kernel, SafeFd device, int offset, int size)
    {
        Span<byte> bytes = stackalloc byte[4];
        kernel.PRead(device, bytes[..size], (7L << 40) + offset).Should().Be(size, "the config read at 0x{0:x} succeeds", offset);
        return MemoryMarshal.Read<uint>(bytes);
    }

    /// <summary>Writes 1, 2 or 4 bytes of the device file's config region (pwrite at index 7).</summary>
    public static void WriteConfig(SimulatedKernel kernel, SafeFd device, int offset, int size, uint value)
    {
        Span<byte> bytes = stackalloc byte[4];
        MemoryMarshal.Write(bytes, in value);
        kernel.PWrite(device, bytes[..size], (7L << 40) + offset).Should().Be(size, "the config write at 0x{0:x} succeeds", offset);
    }

    /// <summary>A pread of a region at index &lt;&lt; 40; the seam's result.</summary>
    public static long ReadRegion(SimulatedKernel kernel, SafeFd device, int index, ulong offset, Span<byte> data) =>
        kernel.PRead(device, data, ((long)index << 40) + (long)offset);

    /// <summary>A pwrite of a region at index &lt;&lt; 40; the seam's result.</summary>
    public static long WriteRegion(SimulatedKernel kernel, SafeFd device, int index, ulong offset, ReadOnlySpan<byte> data) =>
        kernel.PWrite(device, data, ((long)index << 40) + (long)offset);

    public static SafeFd EventFd(SimulatedKernel kernel, int flags = 0)
    {
        kernel.EventFd(0, flags, out var fd).Should().Be(0);
        return fd;
    }

    public static int SetIrqEventFds(SimulatedKernel kernel, SafeFd device, uint index, uint start, params int[] fds)
    {
        int size = sizeof(vfio_irq_set) + (fds.Length * 4);
        byte* buffer = stackalloc byte[size];
        var set = (vfio_irq_set*)buffer;
        *set = new vfio_irq_set
        {
            argsz = (uint)size,
            flags = VfioUapi.VFIO_IRQ_SET_DATA_EVENTFD | VfioUapi.VFIO_IRQ_SET_ACTION_TRIGGER,
            index = index,
            start = start,
            count = (uint)fds.Length,
        };
        for (int i = 0; i < fds.Length; i++)
        {
            ((int*)(buffer + sizeof(vfio_irq_set)))[i] = fds[i];
        }
        return kernel.Ioctl(device, VfioUapi.VFIO_DEVICE_SET_IRQS, buffer);
    }

    public static int SetIrqs(SimulatedKernel kernel, SafeFd device, uint index, uint flags, uint start, uint count)
    {
        var set = new vfio_irq_set { argsz = (uint)sizeof(vfio_irq_set), flags = flags, index = index, start = start, count = count };
        return kernel.Ioctl(device, VfioUapi.VFIO_DEVICE_SET_IRQS, &set);
    }

    public static ulong ReadCounter(SimulatedKernel kernel, SafeFd eventFd)
    {
        Span<byte> buffer = stackalloc byte[8];
        long n = kernel.Read(eventFd, buffer);
        return n == 8 ? MemoryMarshal.Read<ulong>(buffer) : (ulong)n;
    }

    public static SafeMapping Anonymous(SimulatedKernel kernel, nuint length)
    {
        kernel.Mmap(null, length, Flags.PROT_READ | Flags.PROT_WRITE, Flags.MAP_PRIVATE | Flags.MAP_ANONYMOUS, 0, out var mapping).Should().Be(0);
        return mapping;
    }

    public static int Map(SimulatedKernel kernel, SafeFd container, ulong vaddr, ulong iova, ulong size, uint flags = 3)
    {
        var map = new vfio_iommu_type1_dma_map { argsz = (uint)sizeof(vfio_iommu_type1_dma_map), flags = flags, vaddr = vaddr, iova = iova, size = size };
        return kernel.Ioctl(container, VfioUapi.VFIO_IOMMU_MAP_DMA, &map);
    }

    public static int Unmap(SimulatedKernel kernel, SafeFd container, ulong iova, ulong size, out ulong unmapped, uint flags = 0)
    {
        var unmap = new vfio_iommu_type1_dma_unmap { argsz = (uint)sizeof(vfio_iommu_type1_dma_unmap), flags = flags, iova = iova, size = size };
        int r = kernel.Ioctl(container, VfioUapi.VFIO_IOMMU_UNMAP_DMA, &unmap);
        unmapped = unmap.size;
        return r;
    }
}

/// <summary>An opened device with its group and container, closed in the library's order.</summary>
internal sealed record Opened(SafeFd Container, SafeFd Group, SafeFd Device) : IDisposable
{
    public void Dispose()
    {
        Device.Dispose();
        Group.Dispose();
        Container.Dispose();
    }
}
