using System.Globalization;
using EduDriver;

namespace Vfio.Scenarios;

/// <summary>
/// Config space of the edu device as vfio-pci presents it: the header, the command register and
/// the capability lists. The expected values are QEMU 7.2's edu device (a conventional PCI function
/// with one 64-bit MSI capability at 0x40, added by msi_init, and nothing else), which is also what
/// the simulated edu model presents; passing here and in the VM shows that the two agree.
/// </summary>
internal static class PciScenarios
{
    /// <summary>Where QEMU puts the first capability: the first free byte after the 64-byte header.</summary>
    private const int MsiOffset = 0x40;

    /// <summary>Every config-space scenario, in the order they run.</summary>
    public static IReadOnlyList<Scenario> All { get; } =
    [
        new("pci_config_header", ConfigHeader),
        new("pci_capabilities_edu", Capabilities),
        new("pci_msi_control_is_virtual", MsiControlIsVirtual),
        new("pci_command_bus_master", CommandBusMaster),
        new("pci_region_access_past_the_end", RegionAccessPastTheEnd),
        new("pci_capabilities_nvme", NvmeCapabilities),
        new("probe_reports_a_match_held_by_a_kernel_driver", ProbeReportsAMatchHeldByAKernelDriver),
        new("pci_virtio_offers_access_platform", VirtioOffersAccessPlatform),
    ];

    /// <summary>
    /// A virtio device reaches memory through the IOMMU only when it offers VIRTIO_F_ACCESS_PLATFORM
    /// (bit 33), which QEMU's iommu_platform=on gives (docs/dma.md): the machine's virtio-rng does.
    /// Read from the common configuration the vendor capability of type 1 points at.
    /// </summary>
    public static void VirtioOffersAccessPlatform(ScenarioContext context)
    {
        using var virtio = PciFunction.Open(context, FunctionResetScenarios.VirtioRng(context));
        int common = virtio.FindCapabilities(0x09).FirstOrDefault(at => virtio.ReadConfig(at + 3, 1) == 1);
        Check.True(common != 0, "virtio-rng shows no common configuration capability");
        uint bar = virtio.ReadConfig(common + 4, 1);
        uint offset = virtio.ReadConfig(common + 8, 4);
        virtio.WriteConfig(0x04, 2, virtio.ReadConfig(0x04, 2) | 0x2);
        virtio.WriteBar32(bar, offset, 1); // device_feature_select: bits 32 to 63
        uint high = virtio.ReadBar32(bar, offset + 4);
        context.Note(string.Create(CultureInfo.InvariantCulture, $"virtio-rng features 32-63: 0x{high:x8} (common configuration in BAR{bar} at 0x{offset:x})"));
        Check.True((high & 0x1) != 0, "virtio-rng does not offer VIRTIO_F_VERSION_1");
        Check.True((high & 0x2) != 0, "virtio-rng does not offer VIRTIO_F_ACCESS_PLATFORM: started without iommu_platform=on, its DMA would bypass the IOMMU");
    }

    public static Task ConfigHeader(ScenarioContext context) => EduScenarios.WithOpenEduAsync(context, device =>
    {
        PciConfigHeader header = device.ReadConfigHeader();
        context.Note(string.Create(CultureInfo.InvariantCulture,
            $"header: {header.VendorId:x4}:{header.DeviceId:x4} class {header.ClassCode:x6} rev {header.RevisionId:x2} command {(ushort)header.Command:x4} status {header.Status:x4} pin {header.InterruptPin}"));
        Check.Equal((ushort)0x1234, header.VendorId, "vendor id");
        Check.Equal((ushort)0x11e8, header.DeviceId, "device id");
        Check.Equal(0x00ff00u, header.ClassCode, "class code");
        Check.Equal((byte)0x10, header.RevisionId, "revision");
        Check.Equal((byte)1, header.InterruptPin, "interrupt pin (INTA)");
        Check.True(!header.IsMultiFunction, "the edu function alone in its slot says it is multi-function");
        Check.True(header.HasCapabilityList, "the status register has no capability list bit");
        Check.Equal((byte)MsiOffset, header.CapabilitiesPointer, "capabilities pointer");
        Check.True(header.Command.HasFlag(PciCommand.MemorySpace | PciCommand.BusMaster), "the driver's first open left memory space or bus master off: " + header.Command);
        Check.Equal(256UL, device.GetRegionInfo(PciVfioDevice.ConfigRegion).Size, "config region size (a conventional function)");
        return Task.CompletedTask;
    });

    public static Task Capabilities(ScenarioContext context) => EduScenarios.WithOpenEduAsync(context, device =>
    {
        IReadOnlyList<PciCapability> capabilities = device.Capabilities;
        IReadOnlyList<PciExtendedCapability> extended = device.ExtendedCapabilities;
        context.Note("capabilities: " + string.Join(", ", capabilities.Select(c => string.Create(CultureInfo.InvariantCulture, $"{c.Id}@0x{c.Offset:x2}"))));
        context.Note("extended capabilities: " + extended.Count.ToString(CultureInfo.InvariantCulture));
        Check.Equal(1, capabilities.Count, "number of capabilities");
        Check.True(capabilities[0] == new PciCapability(PciCapabilityId.Msi, MsiOffset), "the capability is not MSI at 0x40: " + capabilities[0]);
        Check.Equal(0, extended.Count, "number of extended capabilities");
        Check.True(!device.TryFindCapability(PciCapabilityId.PciExpress, out _), "edu has a PCI Express capability");
        Check.True(device.ReadPowerManagementCapability() is null, "edu has a power management capability");
        Check.True(device.ReadMsixCapability() is null, "edu has an MSI-X capability");
        Check.True(device.ReadPciExpressCapability() is null, "edu has a PCI Express view");

        MsiCapability msi = device.ReadMsiCapability() ?? throw new ScenarioFailedException("no MSI view");
        context.Note(string.Create(CultureInfo.InvariantCulture, $"MSI control: 0x{msi.Control:x4}"));
        Check.True(msi.Is64Bit, "MSI is not 64-bit (QEMU's edu calls msi_init with msi64 set)");
        Check.True(!msi.PerVectorMasking, "MSI has per-vector masking (QEMU's edu has none)");
        Check.Equal(1, msi.MultipleMessageCapable, "MSI vectors asked for");
        Check.Equal(msi.MultipleMessageCapable, (int)device.GetIrqInfo(PciIrq.Msi).Count, "the MSI IRQ count and the capability");
        return Task.CompletedTask;
    });

    public static Task MsiControlIsVirtual(ScenarioContext context) => EduScenarios.WithOpenEduAsync(context, async device =>
    {
        // The driver's first open enabled MSI through VFIO_DEVICE_SET_IRQS, and MSI works...
        Check.Equal("MSI", device.InterruptMode, "interrupt mode");
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        Check.Equal(120u, await device.ComputeFactorialAsync(5, timeout.Token).ConfigureAwait(false), "5! by MSI");
        // ...yet the control register user space reads is vfio-pci's virtual copy, which only changes when written.
        MsiCapability msi = device.ReadMsiCapability() ?? throw new ScenarioFailedException("no MSI view");
        context.Note(string.Create(CultureInfo.InvariantCulture, $"MSI control while MSI is on: 0x{msi.Control:x4}"));
        Check.True(!msi.Enabled, "the MSI enable bit shows as set; vfio-pci was expected to virtualize it");
        Check.Equal(1, msi.MultipleMessageEnable, "MSI vectors enabled, as read");
    });

    public static Task CommandBusMaster(ScenarioContext context) => EduScenarios.WithOpenEduAsync(context, device =>
    {
        PciCommand before = device.Command;
        PciCommand cleared = device.UpdateCommand(PciCommand.None, PciCommand.BusMaster);
        Check.True(!cleared.HasFlag(PciCommand.BusMaster), "UpdateCommand returned bus master still set");
        Check.True(!device.Command.HasFlag(PciCommand.BusMaster), "bus master reads back set after clearing it");
        Check.True(device.Command.HasFlag(PciCommand.MemorySpace), "clearing bus master cleared memory space");
        device.UpdateCommand(PciCommand.BusMaster);
        Check.Equal((ushort)before, (ushort)device.Command, "command register after setting bus master again");
        Check.True(device.CheckLiveness(0x5a5a5a5a), "BAR0 stopped answering after the command register round trip");
        return Task.CompletedTask;
    });

    /// <summary>
    /// Below the public API (which checks bounds itself): vfio-pci refuses a config access that runs
    /// past config space with EFAULT, but cuts a BAR access short at the BAR's end.
    /// </summary>
    public static Task RegionAccessPastTheEnd(ScenarioContext context) => EduScenarios.WithOpenEduAsync(context, device =>
    {
        RegionInfo config = device.GetRegionInfo(PciVfioDevice.ConfigRegion);
        RegionInfo bar0 = device.GetRegionInfo(0);
        Span<byte> eight = stackalloc byte[8];
        Check.Equal(-Vfio.Errno.EFAULT, (int)context.Kernel.PRead(device.DeviceFd, eight, (long)(config.Offset + config.Size - 4)), "pread of 8 bytes at the last dword of config space");
        Check.Equal(4L, context.Kernel.PRead(device.DeviceFd, eight, (long)(bar0.Offset + bar0.Size - 4)), "pread of 8 bytes at the last dword of BAR0");
        return Task.CompletedTask;
    });

    /// <summary>
    /// The capability lists of a PCI Express function: QEMU 7.2's NVMe controller bound to vfio-pci
    /// (the one the NVMe sample drives), found by its class code. Its MSI-X table and pending bit
    /// array sit in BAR0 after the doorbells, which is where the simulated NVMe model puts them too.
    /// </summary>
    public static async Task NvmeCapabilities(ScenarioContext context)
    {
        await using var registry = new VfioRegistry(context.Kernel);
        PciDeviceContext? found = registry.DiscoverPci().FirstOrDefault(d => d.ClassCode == NvmeClassCode && d.KernelDriver == "vfio-pci");
        if (found is null)
        {
            throw new ScenarioFailedException("no NVMe controller (class 0x010802) bound to vfio-pci on this machine");
        }
        var device = new PlainPciDevice(found);
        registry.Register(device);
        using (device.Open())
        {
            IReadOnlyList<PciCapability> capabilities = device.Capabilities;
            IReadOnlyList<PciExtendedCapability> extended = device.ExtendedCapabilities;
            context.Note($"{found.Name}: capabilities " + string.Join(", ", capabilities.Select(c => string.Create(CultureInfo.InvariantCulture, $"{c.Id}@0x{c.Offset:x2}"))));
            context.Note($"{found.Name}: extended capabilities " + string.Join(", ", extended.Select(c => string.Create(CultureInfo.InvariantCulture, $"{c.Id}v{c.Version}@0x{c.Offset:x3}"))));

            MsixCapability msix = device.ReadMsixCapability() ?? throw new ScenarioFailedException("no MSI-X capability");
            context.Note(string.Create(CultureInfo.InvariantCulture,
                $"MSI-X: {msix.TableSize} vectors, table BAR{msix.TableBar}+0x{msix.TableOffset:x}, PBA BAR{msix.PendingBitArrayBar}+0x{msix.PendingBitArrayOffset:x}"));
            Check.Equal(65, msix.TableSize, "MSI-X table size (QEMU's msix_qsize default)");
            Check.Equal((int)device.GetIrqInfo(PciIrq.Msix).Count, msix.TableSize, "the MSI-X IRQ count and the capability");
            Check.Equal(0, msix.TableBar, "MSI-X table BAR");
            Check.Equal(0, msix.PendingBitArrayBar, "MSI-X PBA BAR");
            Check.True(msix.TableOffset >= 0x1000, "the MSI-X table overlaps the controller's registers");
            Check.True(msix.PendingBitArrayOffset >= msix.TableOffset + (uint)(16 * msix.TableSize), "the PBA overlaps the MSI-X table");
            Check.True(!msix.Enabled, "MSI-X reads as enabled before anyone enabled it");

            PciExpressCapability express = device.ReadPciExpressCapability() ?? throw new ScenarioFailedException("no PCI Express capability");
            context.Note(string.Create(CultureInfo.InvariantCulture,
                $"PCI Express: version {express.Version}, {express.PortType}, FLR {express.SupportsFunctionLevelReset}, link x{express.LinkWidth} speed {express.LinkSpeed}"));
            Check.Equal(2, express.Version, "PCI Express capability version");
            Check.True(capabilities.Count(c => c.Id == PciCapabilityId.MsiX) == 1, "MSI-X is listed more than once");
            Check.Equal(256UL * 16, device.GetRegionInfo(PciVfioDevice.ConfigRegion).Size, "config region size (a PCI Express function has 4 KiB)");
        }
        await registry.UnregisterAsync(device).ConfigureAwait(false);
    }

    /// <summary>
    /// A driver for NVMe controllers probes the machine: the controller bound to vfio-pci is registered,
    /// the one the kernel's nvme driver holds is reported with that driver and the writes that would
    /// hand it over, and the probe leaves it alone.
    /// </summary>
    public static async Task ProbeReportsAMatchHeldByAKernelDriver(ScenarioContext context)
    {
        await using var registry = new VfioRegistry(context.Kernel);
        registry.AddDriver(new PlainNvmeDriver());
        ProbeResult result = await registry.ProbeAsync().ConfigureAwait(false);
        foreach (var skipped in result.NotOnVfio)
        {
            context.Note("not on vfio: " + skipped.Hint);
        }
        Check.True(result.Registered.Any(d => d.Name == FunctionResetScenarios.Nvme(context)), "the NVMe controller bound to vfio-pci was not registered");
        var held = result.NotOnVfio.FirstOrDefault(n => n.KernelDriver == "nvme")
            ?? throw new ScenarioFailedException("no NVMe controller held by the kernel's nvme driver was reported");
        Check.Equal("plain-nvme", held.Driver, "the matching driver");
        Check.True(held.Hint.Contains("driver_override", StringComparison.Ordinal) && held.Hint.Contains(held.Device + "/driver/unbind", StringComparison.Ordinal),
            "the hint does not say how to hand the controller over: " + held.Hint);
        Check.True(!registry.TryFind<PlainPciDevice>(held.Device, out _), held.Device + " was registered though the kernel's nvme driver holds it");
    }

    private sealed class PlainNvmeDriver() : PciDriver<PlainPciDevice>("plain-nvme", PciMatch.Class(NvmeClassCode))
    {
        protected internal override PlainPciDevice CreateDevice(PciDeviceContext context) => new(context);
    }

    private const uint NvmeClassCode = 0x010802;

    /// <summary>A PCI function with no driver logic of its own: enough to read its config space.</summary>
    private sealed class PlainPciDevice(PciDeviceContext context) : PciVfioDevice(context);
}
