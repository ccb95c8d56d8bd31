using System.Buffers.Binary;
using Vfio.Interop;

namespace Vfio;

/// <summary>What the registry read from sysfs about a PCI function bound to a vfio driver.</summary>
public sealed class PciDeviceContext : VfioDeviceContext
{
    internal PciDeviceContext(VfioRegistry registry, PciAddress address, int groupId, IommuGroupKind groupKind, string? kernelDriver,
        ushort vendorId, ushort deviceId, uint classCode, ushort subsystemVendorId, ushort subsystemId, string setId)
        : base(registry, address.ToString(), groupId, groupKind, setId, kernelDriver)
    {
        Address = address;
        VendorId = vendorId;
        DeviceId = deviceId;
        ClassCode = classCode;
        SubsystemVendorId = subsystemVendorId;
        SubsystemId = subsystemId;
    }

    /// <summary>The function's address.</summary>
    public PciAddress Address { get; }

    /// <summary>The vendor id (<c>0x1234</c> for QEMU's edu device).</summary>
    public ushort VendorId { get; }

    /// <summary>The device id.</summary>
    public ushort DeviceId { get; }

    /// <summary>The 24-bit class code (base class, subclass, programming interface).</summary>
    public uint ClassCode { get; }

    /// <summary>The subsystem vendor id.</summary>
    public ushort SubsystemVendorId { get; }

    /// <summary>The subsystem id.</summary>
    public ushort SubsystemId { get; }
}

/// <summary>
/// A PCI function handed to user space by vfio-pci. Drivers for PCI devices derive from it.
/// Functions that share a reset domain share a device set, as vfio-pci forms them: the functions of a
/// slot that can be reset, else of a bus; a function on a root bus, or a virtual function, is alone.
/// </summary>
public abstract partial class PciVfioDevice : VfioDevice
{
    /// <summary>Initializes the device from what the registry discovered; does no kernel I/O.</summary>
    /// <param name="context">The discovered function.</param>
    protected PciVfioDevice(PciDeviceContext context)
        : base(context)
    {
        Address = context.Address;
        VendorId = context.VendorId;
        DeviceId = context.DeviceId;
        ClassCode = context.ClassCode;
    }

    /// <summary>The function's address.</summary>
    public PciAddress Address { get; }

    /// <summary>The vendor id.</summary>
    public ushort VendorId { get; }

    /// <summary>The device id.</summary>
    public ushort DeviceId { get; }

    /// <summary>The 24-bit class code.</summary>
    public uint ClassCode { get; }

    /// <summary>The region index of PCI config space.</summary>
    public const int ConfigRegion = (int)VfioUapi.VFIO_PCI_CONFIG_REGION_INDEX;

    /// <summary>Reads a byte of config space.</summary>
    /// <param name="offset">The offset in config space.</param>
    public byte ReadConfig8(int offset)
    {
        Span<byte> b = stackalloc byte[1];
        ReadRegion(ConfigRegion, (ulong)offset, b);
        return b[0];
    }

    /// <summary>Reads a 16-bit config register.</summary>
    /// <param name="offset">The offset in config space.</param>
    public ushort ReadConfig16(int offset)
    {
        Span<byte> b = stackalloc byte[2];
        ReadRegion(ConfigRegion, (ulong)offset, b);
        return BinaryPrimitives.ReadUInt16LittleEndian(b);
    }

    /// <summary>Reads a 32-bit config register.</summary>
    /// <param name="offset">The offset in config space.</param>
    public uint ReadConfig32(int offset)
    {
        Span<byte> b = stackalloc byte[4];
        ReadRegion(ConfigRegion, (ulong)offset, b);
        return BinaryPrimitives.ReadUInt32LittleEndian(b);
    }

    /// <summary>Writes a byte of config space.</summary>
    /// <param name="offset">The offset in config space.</param>
    /// <param name="value">The value.</param>
    public void WriteConfig8(int offset, byte value) => WriteRegion(ConfigRegion, (ulong)offset, [value]);

    /// <summary>Writes a 16-bit config register.</summary>
    /// <param name="offset">The offset in config space.</param>
    /// <param name="value">The value.</param>
    public void WriteConfig16(int offset, ushort value)
    {
        Span<byte> b = stackalloc byte[2];
        BinaryPrimitives.WriteUInt16LittleEndian(b, value);
        WriteRegion(ConfigRegion, (ulong)offset, b);
    }

    /// <summary>Writes a 32-bit config register.</summary>
    /// <param name="offset">The offset in config space.</param>
    /// <param name="value">The value.</param>
    public void WriteConfig32(int offset, uint value)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, value);
        WriteRegion(ConfigRegion, (ulong)offset, b);
    }

    /// <summary>
    /// Sets bits of the command register: memory space decoding (bit 1) and bus mastering
    /// (bit 2, needed for the device to DMA and to send MSIs).
    /// </summary>
    /// <param name="memorySpace">Enable memory space decoding.</param>
    /// <param name="busMaster">Enable bus mastering.</param>
    public void EnableCommand(bool memorySpace = true, bool busMaster = true) =>
        UpdateCommand((memorySpace ? PciCommand.MemorySpace : PciCommand.None) | (busMaster ? PciCommand.BusMaster : PciCommand.None));

    /// <summary>The command register (config offset 0x04), read from the device.</summary>
    /// <exception cref="InvalidOperationException">The device is not open.</exception>
    public PciCommand Command => (PciCommand)ReadConfig16(PciConfig.Command);

    /// <summary>
    /// Sets and clears bits of the command register with one read and (when something changes) one
    /// write. vfio-pci passes memory space, bus master and the other bits to the device, and
    /// virtualizes INTx disable (it masks INTx itself).
    /// </summary>
    /// <param name="set">The bits to set.</param>
    /// <param name="clear">The bits to clear.</param>
    /// <returns>The command register as written.</returns>
    public PciCommand UpdateCommand(PciCommand set, PciCommand clear = PciCommand.None)
    {
        ushort command = ReadConfig16(PciConfig.Command);
        ushort wanted = (ushort)((command | (ushort)set) & ~(ushort)clear);
        if (wanted != command)
        {
            WriteConfig16(PciConfig.Command, wanted);
        }
        return (PciCommand)wanted;
    }

    /// <summary>Reads the standard configuration header.</summary>
    /// <exception cref="InvalidOperationException">The device is not open.</exception>
    public PciConfigHeader ReadConfigHeader()
    {
        Span<byte> bytes = stackalloc byte[0x40];
        ReadRegion(ConfigRegion, 0, bytes);
        return new PciConfigSpace(bytes.ToArray()).Header;
    }

    /// <summary>
    /// The standard capability list (from config offset 0x34) as the device file presents it: vfio-pci
    /// hides capabilities it does not virtualize, so this can be shorter than lspci's list on the host.
    /// Read from the device on every call. A list that loops is cut where it comes back (and a warning logged).
    /// </summary>
    /// <exception cref="InvalidOperationException">The device is not open.</exception>
    public IReadOnlyList<PciCapability> Capabilities => ReadCapabilities(ReadConfigSpace());

    /// <summary>
    /// The extended capability list (from config offset 0x100; empty for a function with 256 bytes of
    /// config space) as the device file presents it: vfio-pci hides the capabilities it does not
    /// virtualize. Read from the device on every call. A list that loops is cut where it comes back.
    /// </summary>
    /// <exception cref="InvalidOperationException">The device is not open.</exception>
    public IReadOnlyList<PciExtendedCapability> ExtendedCapabilities => ReadExtendedCapabilities(ReadConfigSpace());

    /// <summary>Finds the first standard capability with an id.</summary>
    /// <param name="id">The capability id.</param>
    /// <param name="capability">The capability, when found.</param>
    /// <returns>False when the function has none (or vfio-pci hides it).</returns>
    public bool TryFindCapability(PciCapabilityId id, out PciCapability capability)
    {
        var found = Find(ReadCapabilities(ReadConfigSpace()), id);
        capability = found.GetValueOrDefault();
        return found.HasValue;
    }

    /// <summary>Finds the first extended capability with an id.</summary>
    /// <param name="id">The extended capability id.</param>
    /// <param name="capability">The capability, when found.</param>
    /// <returns>False when the function has none (or vfio-pci hides it).</returns>
    public bool TryFindExtendedCapability(PciExtendedCapabilityId id, out PciExtendedCapability capability)
    {
        foreach (var candidate in ReadExtendedCapabilities(ReadConfigSpace()))
        {
            if (candidate.Id == id)
            {
                capability = candidate;
                return true;
            }
        }
        capability = default;
        return false;
    }

    /// <summary>Reads the MSI capability.</summary>
    /// <returns>Its registers, or null when the function has no MSI capability.</returns>
    public MsiCapability? ReadMsiCapability() => ReadCapability(PciCapabilityId.Msi, static (config, offset) => config.Msi(offset));

    /// <summary>Reads the MSI-X capability.</summary>
    /// <returns>Its registers, or null when the function has no MSI-X capability.</returns>
    public MsixCapability? ReadMsixCapability() => ReadCapability(PciCapabilityId.MsiX, static (config, offset) => config.Msix(offset));

    /// <summary>Reads the PCI Express capability.</summary>
    /// <returns>Its registers, or null for a conventional PCI function.</returns>
    public PciExpressCapability? ReadPciExpressCapability() => ReadCapability(PciCapabilityId.PciExpress, static (config, offset) => config.PciExpress(offset));

    /// <summary>Reads the power management capability.</summary>
    /// <returns>Its registers, or null when the function has no power management capability.</returns>
    public PowerManagementCapability? ReadPowerManagementCapability() => ReadCapability(PciCapabilityId.PowerManagement, static (config, offset) => config.PowerManagement(offset));

    /// <summary>Reads config space once and, from it, the registers of the first capability with the id.</summary>
    /// <returns>The registers, or null when the function has no such capability.</returns>
    private T? ReadCapability<T>(PciCapabilityId id, Func<PciConfigSpace, int, T> read)
        where T : class
    {
        var config = ReadConfigSpace();
        return Find(ReadCapabilities(config), id) is { } cap ? read(config, cap.Offset) : null;
    }

    /// <summary>Reads the whole config region (256 bytes, or 4096 for PCI Express) in one pread.</summary>
    private PciConfigSpace ReadConfigSpace()
    {
        var info = GetRegionInfo(ConfigRegion);
        var bytes = new byte[(int)Math.Min(info.Size, 4096)];
        ReadRegion(ConfigRegion, 0, bytes);
        return new PciConfigSpace(bytes);
    }

    private List<PciCapability> ReadCapabilities(PciConfigSpace config)
    {
        var list = config.Capabilities(out int brokenAt);
        if (brokenAt >= 0)
        {
            Log.CapabilityListLoops(Logger, Name, "standard", brokenAt, list.Count);
        }
        return list;
    }

    private List<PciExtendedCapability> ReadExtendedCapabilities(PciConfigSpace config)
    {
        var list = config.ExtendedCapabilities(out int brokenAt);
        if (brokenAt >= 0)
        {
            Log.CapabilityListLoops(Logger, Name, "extended", brokenAt, list.Count);
        }
        return list;
    }

    private static PciCapability? Find(List<PciCapability> list, PciCapabilityId id)
    {
        foreach (var capability in list)
        {
            if (capability.Id == id)
            {
                return capability;
            }
        }
        return null;
    }
}

/// <summary>Offsets and bits of the PCI configuration header.</summary>
public static class PciConfig
{
    /// <summary>Vendor id (16 bits).</summary>
    public const int VendorId = 0x00;

    /// <summary>Device id (16 bits).</summary>
    public const int DeviceId = 0x02;

    /// <summary>Command register (16 bits).</summary>
    public const int Command = 0x04;

    /// <summary>Status register (16 bits).</summary>
    public const int Status = 0x06;

    /// <summary>Revision id (8 bits).</summary>
    public const int RevisionId = 0x08;

    /// <summary>Class code (24 bits, from 0x09).</summary>
    public const int ClassCode = 0x09;

    /// <summary>Header type (8 bits).</summary>
    public const int HeaderType = 0x0e;

    /// <summary>First base address register.</summary>
    public const int Bar0 = 0x10;

    /// <summary>Subsystem vendor id (16 bits).</summary>
    public const int SubsystemVendorId = 0x2c;

    /// <summary>Subsystem id (16 bits).</summary>
    public const int SubsystemId = 0x2e;

    /// <summary>Pointer to the first capability (8 bits).</summary>
    public const int CapabilitiesPointer = 0x34;

    /// <summary>Interrupt line (8 bits).</summary>
    public const int InterruptLine = 0x3c;

    /// <summary>Interrupt pin (8 bits).</summary>
    public const int InterruptPin = 0x3d;

    /// <summary>Command: memory space decoding.</summary>
    public const ushort CommandMemory = 1 << 1;

    /// <summary>Command: bus mastering.</summary>
    public const ushort CommandBusMaster = 1 << 2;

    /// <summary>Command: INTx disabled.</summary>
    public const ushort CommandIntxDisable = 1 << 10;

    /// <summary>Status: a capability list is present.</summary>
    public const ushort StatusCapabilityList = 1 << 4;
}
