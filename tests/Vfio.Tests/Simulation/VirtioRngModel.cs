using Vfio.Testing;

namespace Vfio.Tests.Simulation;

/// <summary>
/// QEMU 7.2's modern virtio-rng on q35's root bus (<c>-device virtio-rng-pci,disable-legacy=on,iommu_platform=on</c>),
/// config space as the VM suite reads it: a conventional function (no power management, no PCI
/// Express), MSI-X with two vectors in BAR1, the virtio regions in a 16 KiB 64-bit BAR4, and five
/// vendor-specific capabilities (common, ISR, device, notify, PCI configuration access) linked after
/// MSI-X. The access capability's bar, offset, length and data are writable, as QEMU's wmask has them.
/// Of the virtio registers only the device feature window is modelled (common configuration at
/// BAR4 0x0: the select at 0x0, the 32 feature bits it selects at 0x4): VERSION_1 and, as
/// iommu_platform=on makes it, ACCESS_PLATFORM; the rest of BAR4 is plain memory.
/// </summary>
internal sealed class VirtioRngModel : PciDeviceModel
{
    public VirtioRngModel()
        : base(0x1af4, 0x1044, 0x00ff00)
    {
        Revision = 1;
        SubsystemVendorId = 0x1af4;
        SubsystemId = 0x1100;
        HasPowerManagement = false;
        DefineBar(1, 0x1000);
        DefineBar(4, 0x4000, PciBarKind.Memory64, prefetchable: true);
        MsixVectors = 2;
        MsixBar = 1;
        MsixPbaOffset = 0x800;
        PlaceCapability(0x11, 0x98);
        AddVendorCapability([5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], [0, 0xff, 0, 0, 0, .. Enumerable.Repeat((byte)0xff, 12)], offset: 0x84);
        AddVendorCapability(Cap(2, 0x3000, extra: 4), offset: 0x70); // notify, with its multiplier
        AddVendorCapability(Cap(4, 0x2000), offset: 0x60); // device configuration
        AddVendorCapability(Cap(3, 0x1000), offset: 0x50); // ISR
        AddVendorCapability(Cap(1, 0x0000), offset: 0x40); // common configuration
    }

    private uint _featureSelect;

    protected override ulong ReadBar(int bar, ulong offset, int size) => (bar, offset) switch
    {
        (4, 0x0) => _featureSelect,
        (4, 0x4) => _featureSelect == 1 ? 0x3u : 0u, // VIRTIO_F_VERSION_1 (32), VIRTIO_F_ACCESS_PLATFORM (33)
        _ => base.ReadBar(bar, offset, size),
    };

    protected override void WriteBar(int bar, ulong offset, int size, ulong value)
    {
        if (bar == 4 && offset == 0)
        {
            _featureSelect = (uint)value;
            return;
        }
        base.WriteBar(bar, offset, size, value);
    }

    /// <summary>A virtio_pci_cap after its length byte: cfg_type, bar 4, padding, offset, length 0x1000 (and the notify multiplier).</summary>
    private static byte[] Cap(byte type, uint offset, uint? extra = null)
    {
        var data = new byte[extra is null ? 13 : 17];
        data[0] = type;
        data[1] = 4;
        BitConverter.GetBytes(offset).CopyTo(data, 5);
        BitConverter.GetBytes(0x1000u).CopyTo(data, 9);
        if (extra is { } multiplier)
        {
            BitConverter.GetBytes(multiplier).CopyTo(data, 13);
        }
        return data;
    }
}
