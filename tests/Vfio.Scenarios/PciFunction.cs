using System.Globalization;
using System.Runtime.InteropServices;
using Vfio.Interop;
using static Vfio.Interop.Interop;
using static Vfio.Interop.VfioUapi;

namespace Vfio.Scenarios;

/// <summary>
/// One PCI function of the machine opened below the library (container, group, device file), with
/// its config region and BARs read and written as raw preads and pwrites, beside the function's own
/// registers as the host reads them (sysfs <c>config</c>): what vfio-pci shows next to what the
/// device holds.
/// </summary>
internal sealed unsafe class PciFunction : IDisposable
{
    private readonly VfioFiles _files;

    private PciFunction(ScenarioContext context, string address, int group)
    {
        Context = context;
        Address = address;
        Group = group;
        _files = new VfioFiles(context, address, group);
    }

    public ScenarioContext Context { get; }

    public string Address { get; }

    public int Group { get; }

    public VfioKernel Kernel => Context.Kernel;

    public SafeFd Device => _files.Device!;

    public VfioFiles Files => _files;

    /// <summary>The functions bound to vfio-pci with these ids, by address.</summary>
    public static IReadOnlyList<string> Find(ScenarioContext context, ushort vendorId, ushort deviceId)
    {
        var sysfs = new SysfsReader(context.Kernel);
        return [.. sysfs.List("bus/pci/devices")
            .Where(a => sysfs.ReadHex("bus/pci/devices/" + a + "/vendor", 16) == vendorId && sysfs.ReadHex("bus/pci/devices/" + a + "/device", 16) == deviceId
                && sysfs.ReadLinkName("bus/pci/devices/" + a + "/driver") == "vfio-pci")
            .Order(StringComparer.Ordinal)];
    }

    /// <summary>The one function bound to vfio-pci with these ids; fails the scenario when the machine has none.</summary>
    public static string FindOne(ScenarioContext context, ushort vendorId, ushort deviceId, string what) =>
        Find(context, vendorId, deviceId) is [var first, ..]
            ? first
            : throw new ScenarioFailedException(string.Create(CultureInfo.InvariantCulture, $"the machine has no {what} ({vendorId:x4}:{deviceId:x4}) bound to vfio-pci"));

    /// <summary>Opens the function: a container with its group attached and type1v2 set, and the device file.</summary>
    public static PciFunction Open(ScenarioContext context, string address)
    {
        var sysfs = new SysfsReader(context.Kernel);
        string group = sysfs.ReadLinkName("bus/pci/devices/" + address + "/iommu_group")
            ?? throw new ScenarioFailedException(address + " has no IOMMU group");
        var function = new PciFunction(context, address, int.Parse(group, CultureInfo.InvariantCulture));
        try
        {
            function._files.OpenReadyContainer();
            function._files.OpenDevice();
            return function;
        }
        catch
        {
            function.Dispose();
            throw;
        }
    }

    /// <summary>The device file's info (flags, regions, irqs).</summary>
    public vfio_device_info Info => _files.DeviceInfo();

    /// <summary>sysfs reset_method: the reset methods the kernel found for the function, or null when it has none (the attribute is not there).</summary>
    public string? ResetMethod => new SysfsReader(Kernel).ReadText("bus/pci/devices/" + Address + "/reset_method");

    /// <summary>Reads 1, 2 or 4 bytes of the config region.</summary>
    public uint ReadConfig(int offset, int size)
    {
        Span<byte> bytes = stackalloc byte[4];
        var info = _files.RegionInfo(VFIO_PCI_CONFIG_REGION_INDEX);
        Check.Equal((long)size, Kernel.PRead(Device, bytes[..size], (long)info.offset + offset), string.Create(CultureInfo.InvariantCulture, $"pread of {size} config bytes at 0x{offset:x} of {Address}"));
        return MemoryMarshal.Read<uint>(bytes);
    }

    /// <summary>Writes 1, 2 or 4 bytes of the config region.</summary>
    public void WriteConfig(int offset, int size, uint value)
    {
        Span<byte> bytes = stackalloc byte[4];
        MemoryMarshal.Write(bytes, in value);
        var info = _files.RegionInfo(VFIO_PCI_CONFIG_REGION_INDEX);
        Check.Equal((long)size, Kernel.PWrite(Device, bytes[..size], (long)info.offset + offset), string.Create(CultureInfo.InvariantCulture, $"pwrite of {size} config bytes at 0x{offset:x} of {Address}"));
    }

    /// <summary>The function's own config registers as the host reads them (sysfs config, as root: all of it).</summary>
    public byte[] HostConfig()
    {
        string path = Kernel.Sys("bus/pci/devices/" + Address + "/config");
        Check.Ok(Kernel.Open(path, Flags.O_RDONLY, out SafeFd fd), "open " + path);
        using (fd)
        {
            var bytes = new byte[4096];
            long n = Kernel.PRead(fd, bytes, 0);
            Check.True(n >= 256, "sysfs config of " + Address + " gave " + n + " bytes");
            return bytes[..(int)n];
        }
    }

    /// <summary>1, 2 or 4 bytes of <see cref="HostConfig()"/>.</summary>
    public uint HostConfig(int offset, int size)
    {
        var bytes = HostConfig();
        uint value = 0;
        for (int i = size - 1; i >= 0; i--)
        {
            value = (value << 8) | bytes[offset + i];
        }
        return value;
    }

    /// <summary>pread of a region; returns the seam's result.</summary>
    public long ReadRegion(uint index, ulong offset, Span<byte> data) =>
        Kernel.PRead(Device, data, (long)(_files.RegionInfo(index).offset + offset));

    /// <summary>pwrite of a region; returns the seam's result.</summary>
    public long WriteRegion(uint index, ulong offset, ReadOnlySpan<byte> data) =>
        Kernel.PWrite(Device, data, (long)(_files.RegionInfo(index).offset + offset));

    /// <summary>Reads a 32-bit register of a BAR; fails the scenario unless the pread gives 4 bytes.</summary>
    public uint ReadBar32(uint bar, ulong offset)
    {
        Span<byte> bytes = stackalloc byte[4];
        Check.Equal(4L, ReadRegion(bar, offset, bytes), string.Create(CultureInfo.InvariantCulture, $"pread of BAR{bar}+0x{offset:x} of {Address}"));
        return MemoryMarshal.Read<uint>(bytes);
    }

    /// <summary>Writes a 32-bit register of a BAR; fails the scenario unless the pwrite takes 4 bytes.</summary>
    public void WriteBar32(uint bar, ulong offset, uint value)
    {
        Span<byte> bytes = stackalloc byte[4];
        MemoryMarshal.Write(bytes, in value);
        Check.Equal(4L, WriteRegion(bar, offset, bytes), string.Create(CultureInfo.InvariantCulture, $"pwrite of BAR{bar}+0x{offset:x} of {Address}"));
    }

    /// <summary>mmap of the start of a region (shared, read and write); the caller disposes the mapping before the function.</summary>
    public SafeMapping Map(uint index, ulong length)
    {
        var info = _files.RegionInfo(index);
        Check.Ok(Kernel.Mmap(Device, (nuint)length, Flags.PROT_READ | Flags.PROT_WRITE, Flags.MAP_SHARED, (long)info.offset, out SafeMapping mapping),
            "mmap of region " + index + " of " + Address);
        return mapping;
    }

    /// <summary>A 32-bit read through a mapping of a region (a trapped one on the simulated kernel).</summary>
    public static uint ReadMapped32(SafeMapping mapping, nuint offset) =>
        mapping.IsTrapped ? (uint)mapping.ReadTrapped(offset, 4) : Volatile.Read(ref *(uint*)(mapping.Address + (nint)offset));

    /// <summary>A 32-bit write through a mapping of a region.</summary>
    public static void WriteMapped32(SafeMapping mapping, nuint offset, uint value)
    {
        if (mapping.IsTrapped)
        {
            mapping.WriteTrapped(offset, 4, value);
        }
        else
        {
            Volatile.Write(ref *(uint*)(mapping.Address + (nint)offset), value);
        }
    }

    /// <summary>VFIO_DEVICE_SET_IRQS with eventfds (a negative one for none) from vector <paramref name="start"/>; the seam's result.</summary>
    public int SetIrqEventFds(uint index, uint start, params int[] fds)
    {
        int size = sizeof(vfio_irq_set) + (fds.Length * 4);
        byte* buffer = stackalloc byte[size];
        *(vfio_irq_set*)buffer = new vfio_irq_set
        {
            argsz = (uint)size,
            flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
            index = index,
            start = start,
            count = (uint)fds.Length,
        };
        fds.CopyTo(new Span<int>(buffer + sizeof(vfio_irq_set), fds.Length));
        return Kernel.Ioctl(Device, VFIO_DEVICE_SET_IRQS, buffer);
    }

    /// <summary>VFIO_DEVICE_SET_IRQS with no data and count 0: the index's interrupts off.</summary>
    public int DisableIrqs(uint index)
    {
        var set = new vfio_irq_set { argsz = (uint)sizeof(vfio_irq_set), flags = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, index = index };
        return Kernel.Ioctl(Device, VFIO_DEVICE_SET_IRQS, &set);
    }

    /// <summary>The offset of the first capability with <paramref name="id"/> in the standard list vfio-pci shows; 0 when there is none.</summary>
    public int FindCapability(byte id)
    {
        if ((ReadConfig(0x06, 2) & 0x10) == 0)
        {
            return 0;
        }
        int offset = (int)ReadConfig(0x34, 1) & ~3;
        for (int loops = 48; offset >= 0x40 && loops-- > 0; offset = (int)ReadConfig(offset + 1, 1) & ~3)
        {
            if (ReadConfig(offset, 1) == id)
            {
                return offset;
            }
        }
        return 0;
    }

    /// <summary>The offsets of the capabilities with <paramref name="id"/> in the standard list vfio-pci shows.</summary>
    public IReadOnlyList<int> FindCapabilities(byte id)
    {
        var found = new List<int>();
        if ((ReadConfig(0x06, 2) & 0x10) == 0)
        {
            return found;
        }
        int offset = (int)ReadConfig(0x34, 1) & ~3;
        for (int loops = 48; offset >= 0x40 && loops-- > 0; offset = (int)ReadConfig(offset + 1, 1) & ~3)
        {
            if (ReadConfig(offset, 1) == id)
            {
                found.Add(offset);
            }
        }
        return found;
    }

    public void Dispose() => _files.Dispose();
}
