namespace Vfio;

/// <summary>What the registry read from sysfs about a PCI function bound to a vfio driver.</summary>
public sealed class PciDeviceContext : VfioDeviceContext
{
    internal PciDeviceContext(VfioRegistry registry, PciAddress address, int groupId, IommuGroupKind groupKind, string? kernelDriver,
        ushort vendorId, ushort deviceId, uint classCode, ushort subsystemVendorId, ushort subsystemId)
        : base(registry, address.ToString(), groupId, groupKind, "pci-slot:" + address.SlotName, kernelDriver)
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
public abstract class PciVfioDevice : VfioDevice
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
}
