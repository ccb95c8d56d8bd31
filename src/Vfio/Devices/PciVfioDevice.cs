using System.Buffers.Binary;
using Vfio.Interop;

namespace Vfio;

/// <summary>What the registry read from sysfs about a PCI function bound to a vfio driver.</summary>
public sealed class PciDeviceContext : VfioDeviceContext
{
    internal PciDeviceContext(VfioRegistry registry, PciAddress address, int groupId, IommuGroupKind groupKind, string? kernelDriver,
        ushort vendorId, ushort deviceId, uint classCode, ushort subsystemVendorId, ushort subsystemId)
        : base(registry, address.ToString(), groupId, groupKind, PciVfioDevice.SetIdOf(address), kernelDriver)
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
/// Functions of one slot share a device set (their reset domain).
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
    public void EnableCommand(bool memorySpace = true, bool busMaster = true)
    {
        ushort command = ReadConfig16(PciConfig.Command);
        ushort wanted = (ushort)(command | (memorySpace ? PciConfig.CommandMemory : 0) | (busMaster ? PciConfig.CommandBusMaster : 0));
        if (wanted != command)
        {
            WriteConfig16(PciConfig.Command, wanted);
        }
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
