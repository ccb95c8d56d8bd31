using System.Globalization;
using Vfio.Interop;
using static Vfio.Interop.VfioUapi;

namespace Vfio.Scenarios;

/// <summary>
/// vfio-pci's config space virtualisation (drivers/vfio/pci/vfio_pci_config.c), rule by rule: what
/// the device file's config region shows and where a write goes, read beside the function's own
/// registers as the host sees them (sysfs config). Each rule is one the simulated kernel once got
/// wrong or did not model; the functions are the machine's edu on the root bus, NVMe controller
/// (PCI Express, power management with No_Soft_Reset, MSI-X in BAR0) and modern virtio-rng
/// (vendor-specific capabilities).
/// </summary>
internal static class ConfigVirtualizationScenarios
{
    private const int Command = 0x04;
    private const ushort IntxDisable = 0x400;

    /// <summary>Every config virtualisation scenario, in the order they run.</summary>
    public static IReadOnlyList<Scenario> All { get; } =
    [
        new("pci_config_bars_are_virtual", BarsAreVirtual),
        new("pci_config_interrupt_line_is_virtual", InterruptLineIsVirtual),
        new("pci_config_intx_disable_is_virtual", IntxDisableIsVirtual),
        new("pci_config_status_takes_no_write", StatusTakesNoWrite),
        new("pci_config_msi_enable_written_without_msi", MsiEnableWrittenWithoutMsi),
        new("pci_config_msix_control_is_read_only", MsixControlIsReadOnly),
        new("pci_config_vendor_capability_written_through", VendorCapabilityWrittenThrough),
        new("pci_config_d3hot_refuses_bar_access", D3HotRefusesBarAccess),
        new("pci_config_express_control_virtual_fields", ExpressControlVirtualFields),
        new("pci_config_express_flr_resets_the_function", ExpressFlrResets),
        new("pci_config_msix_table_masked_and_hidden_from_pread", MsixTableMaskedAndHidden),
    ];

    /// <summary>BAR sizing is answered from vfio-pci's copy: the device's BARs never change; an unimplemented BAR and the ROM BAR read 0.</summary>
    public static void BarsAreVirtual(ScenarioContext context)
    {
        using (var edu = PciFunction.Open(context, context.DeviceAddress))
        {
            uint bar0 = edu.ReadConfig(0x10, 4);
            Check.Equal(edu.HostConfig(0x10, 4), bar0, "edu BAR0 as vfio-pci shows it and as the device has it");
            edu.WriteConfig(0x10, 4, 0xffff_ffff);
            edu.WriteConfig(0x14, 4, 0xffff_ffff);
            edu.WriteConfig(0x30, 4, 0xffff_ffff);
            Check.Equal(0xfff0_0000u, edu.ReadConfig(0x10, 4), "edu BAR0 after writing all ones (1 MiB, 32-bit memory)");
            Check.Equal(0u, edu.ReadConfig(0x14, 4), "edu BAR1 (unimplemented) after writing all ones");
            Check.Equal(0u, edu.ReadConfig(0x30, 4), "edu ROM BAR (none) after writing all ones");
            Check.Equal(bar0, edu.HostConfig(0x10, 4), "the device's own BAR0 after sizing");
            edu.WriteConfig(0x10, 4, bar0);
            Check.Equal(bar0, edu.ReadConfig(0x10, 4), "edu BAR0 written back");
            Check.Equal(0x010000edu, edu.ReadBar32(0, 0), "edu identification after sizing its BAR");
        }
        using var nvme = PciFunction.Open(context, FunctionResetScenarios.Nvme(context));
        uint low = nvme.ReadConfig(0x10, 4);
        uint high = nvme.ReadConfig(0x14, 4);
        nvme.WriteConfig(0x10, 4, 0xffff_ffff);
        nvme.WriteConfig(0x14, 4, 0xffff_ffff);
        Check.Equal(0xffff_c004u, nvme.ReadConfig(0x10, 4), "NVMe BAR0 low after writing all ones (16 KiB, 64-bit)");
        Check.Equal(0xffff_ffffu, nvme.ReadConfig(0x14, 4), "NVMe BAR0 high after writing all ones");
        Check.Equal(low, nvme.HostConfig(0x10, 4), "the NVMe controller's own BAR0 after sizing");
        nvme.WriteConfig(0x10, 4, low);
        nvme.WriteConfig(0x14, 4, high);
    }

    public static void InterruptLineIsVirtual(ScenarioContext context)
    {
        using var edu = PciFunction.Open(context, context.DeviceAddress);
        uint line = edu.HostConfig(0x3c, 1);
        uint other = line == 0x05 ? 0x06u : 0x05u;
        edu.WriteConfig(0x3c, 1, other);
        edu.WriteConfig(0x3d, 1, 0x04);
        Check.Equal(other, edu.ReadConfig(0x3c, 1), "interrupt line as written");
        Check.Equal(line, edu.HostConfig(0x3c, 1), "the device's interrupt line");
        Check.Equal(1u, edu.ReadConfig(0x3d, 1), "interrupt pin after a write (read only)");
    }

    /// <summary>
    /// INTx disable is emulated: user space reads the bit from vfio-pci's copy, and vfio-pci masks INTx
    /// for it; with INTx not in use, the device's own bit is made to follow (vfio_pci_intx_mask and
    /// the unmask handler call pci_intx).
    /// </summary>
    public static void IntxDisableIsVirtual(ScenarioContext context)
    {
        using var edu = PciFunction.Open(context, context.DeviceAddress);
        uint command = edu.ReadConfig(Command, 2);
        Check.Equal(0u, command & IntxDisable, "INTx disable after the open (vfio-pci clears it at enable)");
        edu.WriteConfig(Command, 2, command | IntxDisable);
        Check.Equal(command | IntxDisable, edu.ReadConfig(Command, 2), "command register after setting INTx disable");
        Check.Equal((uint)IntxDisable, edu.HostConfig(Command, 2) & IntxDisable, "the device's INTx disable after setting it");
        edu.WriteConfig(Command, 2, command);
        Check.Equal(command, edu.ReadConfig(Command, 2), "command register written back");
        Check.Equal(0u, edu.HostConfig(Command, 2) & IntxDisable, "the device's INTx disable after clearing it");
    }

    public static void StatusTakesNoWrite(ScenarioContext context)
    {
        using var edu = PciFunction.Open(context, context.DeviceAddress);
        uint status = edu.ReadConfig(0x06, 2);
        edu.WriteConfig(0x06, 2, 0xffff);
        Check.Equal(status, edu.ReadConfig(0x06, 2), "status after writing all ones");
    }

    /// <summary>
    /// vfio_msi_config_write: with MSI not enabled through VFIO_DEVICE_SET_IRQS, an enable bit written
    /// to the MSI control is cleared, in vfio-pci's copy and in what it writes to the device.
    /// </summary>
    public static void MsiEnableWrittenWithoutMsi(ScenarioContext context)
    {
        using var edu = PciFunction.Open(context, context.DeviceAddress);
        int msi = edu.FindCapability(0x05);
        Check.True(msi != 0, "edu shows no MSI capability");
        uint control = edu.ReadConfig(msi + 2, 2);
        edu.WriteConfig(msi + 2, 1, (control & 0xff) | 1);
        Check.Equal(control, edu.ReadConfig(msi + 2, 2), "MSI control after writing its enable bit");
        Check.Equal(0u, edu.HostConfig(msi + 2, 2) & 1, "the device's MSI enable");
    }

    /// <summary>MSI-X control has no write function in vfio-pci: enable and function mask written through config space go nowhere.</summary>
    public static void MsixControlIsReadOnly(ScenarioContext context)
    {
        using var nvme = PciFunction.Open(context, FunctionResetScenarios.Nvme(context));
        int msix = nvme.FindCapability(0x11);
        Check.True(msix != 0, "the NVMe controller shows no MSI-X capability");
        uint control = nvme.ReadConfig(msix + 2, 2);
        nvme.WriteConfig(msix + 2, 2, control | 0xc000);
        Check.Equal(control, nvme.ReadConfig(msix + 2, 2), "MSI-X control after writing enable and mask");
        Check.Equal(control, nvme.HostConfig(msix + 2, 2), "the device's MSI-X control");
    }

    /// <summary>
    /// Writes to a vendor-specific capability go straight to the device (vfio_raw_config_write):
    /// virtio's PCI configuration access capability takes its offset and length; a field the device
    /// does not make writable stays as it is.
    /// </summary>
    public static void VendorCapabilityWrittenThrough(ScenarioContext context)
    {
        using var virtio = PciFunction.Open(context, FunctionResetScenarios.VirtioRng(context));
        var vendor = virtio.FindCapabilities(0x09);
        context.Note("virtio vendor capabilities: " + string.Join(", ", vendor.Select(at => string.Create(CultureInfo.InvariantCulture, $"type {virtio.ReadConfig(at + 3, 1)}@0x{at:x2}"))));
        int access = vendor.FirstOrDefault(at => virtio.ReadConfig(at + 3, 1) == 5);
        int common = vendor.FirstOrDefault(at => virtio.ReadConfig(at + 3, 1) == 1);
        Check.True(access != 0 && common != 0, "virtio-rng shows no PCI configuration access or common configuration capability");

        virtio.WriteConfig(access + 8, 4, 0x1000);
        virtio.WriteConfig(access + 12, 4, 4);
        Check.Equal(0x1000u, virtio.ReadConfig(access + 8, 4), "the access capability's offset as written");
        Check.Equal(4u, virtio.HostConfig(access + 12, 4), "the device's copy of the access capability's length");
        uint offset = virtio.ReadConfig(common + 8, 4);
        virtio.WriteConfig(common + 8, 4, offset ^ 0x100);
        Check.Equal(offset, virtio.ReadConfig(common + 8, 4), "the common capability's offset (read only in the device)");
        virtio.WriteConfig(access + 8, 4, 0);
        virtio.WriteConfig(access + 12, 4, 0);
    }

    /// <summary>A power state written to the PM control register is vfio-pci's to set: in D3hot, BAR access is refused; D0 brings it back.</summary>
    public static void D3HotRefusesBarAccess(ScenarioContext context)
    {
        using var nvme = PciFunction.Open(context, FunctionResetScenarios.Nvme(context));
        int pm = nvme.FindCapability(0x01);
        Check.True(pm != 0, "the NVMe controller shows no power management capability");
        nvme.WriteConfig(Command, 2, nvme.ReadConfig(Command, 2) | 0x2);
        Span<byte> word = stackalloc byte[4];
        Check.Equal(4L, nvme.ReadRegion(0, 0, word), "pread of BAR0 in D0");

        nvme.WriteConfig(pm + 4, 2, 3);
        Check.Equal(3u, nvme.ReadConfig(pm + 4, 2) & 3, "power state after writing D3hot");
        Check.Equal(3u, nvme.HostConfig(pm + 4, 2) & 3, "the device's power state");
        Check.Fails((int)nvme.ReadRegion(0, 0, word), Errno.EIO, "pread of BAR0 in D3hot");
        nvme.WriteConfig(pm + 4, 2, 0);
        Check.Equal(0u, nvme.ReadConfig(pm + 4, 2) & 3, "power state after writing D0");
        Check.Equal(4L, nvme.ReadRegion(0, 0, word), "pread of BAR0 back in D0");
    }

    /// <summary>
    /// PCI Express device control: max payload size is virtual (the device keeps the kernel's), max
    /// read request is virtual and reaches the device no lower than its payload size, phantom
    /// functions cannot be enabled.
    /// </summary>
    public static void ExpressControlVirtualFields(ScenarioContext context)
    {
        using var nvme = PciFunction.Open(context, FunctionResetScenarios.Nvme(context));
        int express = nvme.FindCapability(0x10);
        Check.True(express != 0, "the NVMe controller shows no PCI Express capability");
        int control = express + 8;
        uint original = nvme.ReadConfig(control, 2);
        uint device = nvme.HostConfig(control, 2);
        context.Note(string.Create(CultureInfo.InvariantCulture, $"NVMe device control: 0x{original:x4} as shown, 0x{device:x4} in the device"));

        nvme.WriteConfig(control, 2, (original & ~0x70e0u) | 0x0020);
        Check.Equal((original & ~0x70e0u) | 0x0020, nvme.ReadConfig(control, 2), "device control after writing a 256-byte payload size");
        Check.Equal(device & 0xe0, nvme.HostConfig(control, 2) & 0xe0, "the device's payload size");

        nvme.WriteConfig(control, 2, (original & ~0x70e0u) | 0x2000);
        Check.Equal((original & ~0x70e0u) | 0x2000, nvme.ReadConfig(control, 2), "device control after writing a 512-byte read request size");
        context.Note(string.Create(CultureInfo.InvariantCulture, $"NVMe device control in the device after a 512-byte read request: 0x{nvme.HostConfig(control, 2):x4}"));

        nvme.WriteConfig(control, 2, original | 0x0200);
        Check.Equal(0u, nvme.ReadConfig(control, 2) & 0x0200, "phantom functions enable after writing it");
        nvme.WriteConfig(control, 2, original);
    }

    /// <summary>The FLR bit of device control resets the function (here: its MSI-X table clears) and reads 0.</summary>
    public static void ExpressFlrResets(ScenarioContext context)
    {
        using var nvme = PciFunction.Open(context, FunctionResetScenarios.Nvme(context));
        int express = nvme.FindCapability(0x10);
        nvme.WriteConfig(Command, 2, nvme.ReadConfig(Command, 2) | 0x2);
        var (bar, table) = FunctionResetScenarios.MsixTable(nvme);
        using var mapping = nvme.Map(bar, table + 0x10);
        PciFunction.WriteMapped32(mapping, (nuint)table + 8, 0xbeef);
        Check.Equal(0xbeefu, PciFunction.ReadMapped32(mapping, (nuint)table + 8), "message data as written");

        nvme.WriteConfig(express + 8, 2, nvme.ReadConfig(express + 8, 2) | 0x8000);

        Check.Equal(0u, nvme.ReadConfig(express + 8, 2) & 0x8000, "the FLR bit after writing it");
        Check.Equal(0u, PciFunction.ReadMapped32(mapping, (nuint)table + 8), "message data after the FLR");
        Check.Equal(1u, PciFunction.ReadMapped32(mapping, (nuint)table + 12), "vector control after the FLR (masked)");
    }

    /// <summary>
    /// The MSI-X table: a pread reads all ones and a pwrite is dropped (vfio-pci keeps the table to
    /// itself); through the mapping a reset device shows every vector masked, and the vectors user
    /// space gives an eventfd unmasked with a message the host programmed, masked again once MSI-X is off.
    /// </summary>
    public static void MsixTableMaskedAndHidden(ScenarioContext context)
    {
        using var nvme = PciFunction.Open(context, FunctionResetScenarios.Nvme(context));
        nvme.WriteConfig(Command, 2, nvme.ReadConfig(Command, 2) | 0x2);
        var (bar, table) = FunctionResetScenarios.MsixTable(nvme);
        Span<byte> entry = stackalloc byte[16];
        Check.Equal(16L, nvme.ReadRegion(bar, table, entry), "pread of MSI-X table entry 0");
        foreach (byte b in entry)
        {
            Check.Equal((byte)0xff, b, "a byte of the MSI-X table as pread shows it");
        }
        using var mapping = nvme.Map(bar, table + 0x20);
        Check.Equal(1u, PciFunction.ReadMapped32(mapping, (nuint)table + 12), "vector 0's control through the mapping (masked)");
        Check.Equal(1u, PciFunction.ReadMapped32(mapping, (nuint)table + 28), "vector 1's control through the mapping (masked)");

        Check.Ok(context.Kernel.EventFd(0, 0, out SafeFd trigger), "eventfd");
        using (trigger)
        {
            Check.Ok(nvme.SetIrqEventFds(VFIO_PCI_MSIX_IRQ_INDEX, 0, trigger.Value, -1), "MSI-X vector 0 with an eventfd, vector 1 without");
            uint addressLow = PciFunction.ReadMapped32(mapping, (nuint)table);
            context.Note(string.Create(CultureInfo.InvariantCulture, $"vector 0 after SET_IRQS: address 0x{PciFunction.ReadMapped32(mapping, (nuint)table + 4):x8}{addressLow:x8}, data 0x{PciFunction.ReadMapped32(mapping, (nuint)table + 8):x}"));
            Check.Equal(0u, PciFunction.ReadMapped32(mapping, (nuint)table + 12), "vector 0's control with an eventfd (unmasked)");
            Check.True(addressLow != 0, "the host programmed no message address for vector 0");
            Check.Equal(1u, PciFunction.ReadMapped32(mapping, (nuint)table + 28), "vector 1's control without an eventfd (masked)");
            Check.Ok(nvme.DisableIrqs(VFIO_PCI_MSIX_IRQ_INDEX), "MSI-X off");
            Check.Equal(1u, PciFunction.ReadMapped32(mapping, (nuint)table + 12), "vector 0's control with MSI-X off (masked)");
        }
    }
}
