using VirtioRngPlatform;

namespace Vfio.Scenarios;

/// <summary>
/// vfio-platform on a real kernel: QEMU's <c>-M microvm</c> describes its virtio-mmio transports as
/// ACPI platform devices (<c>LNRO0005</c>); one, with a virtio entropy device behind it, is bound to
/// vfio-platform through driver_override (with <c>vfio_platform.reset_required=0</c>: it has no
/// reset) in no-IOMMU mode (microvm has no IOMMU). Discovery and matching by ACPI id, its register
/// window and level-triggered interrupt, and the virtio-rng driver of samples/VirtioRngPlatform
/// reading random bytes through a virtqueue at physical addresses. Run in tests/vm/run-platform-tests.sh
/// and on the simulated kernel's <see cref="Testing.VirtioMmioRngModel"/>. The context's device
/// address is the platform device's name (LNRO0005:00), its group the no-IOMMU group.
/// </summary>
internal static class PlatformScenarios
{
    private const string AcpiId = "LNRO0005";
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    /// <summary>Every platform scenario, in the order they run.</summary>
    public static IReadOnlyList<Scenario> All { get; } =
    [
        new("platform_virtio_mmio_found_by_acpi_id", FoundByAcpiId),
        new("platform_virtio_mmio_region_and_level_interrupt", RegionAndLevelInterrupt),
        new("platform_virtio_rng_random_bytes_by_dma", RandomBytesByDma),
    ];

    private static VfioRegistry Registry(ScenarioContext context)
    {
        var registry = new VfioRegistry(context.Kernel);
        registry.AddDriver(new VirtioRngDriver());
        return registry;
    }

    private static async Task WithOpenDeviceAsync(ScenarioContext context, Func<VirtioRngDevice, Task> body)
    {
        var registry = Registry(context);
        await using (registry.ConfigureAwait(false))
        {
            var probe = await registry.ProbeAsync().ConfigureAwait(false);
            var device = probe.Registered.OfType<VirtioRngDevice>().FirstOrDefault(d => d.Name == context.DeviceAddress)
                ?? throw new ScenarioFailedException("the virtio-rng driver did not register " + context.DeviceAddress + string.Concat(probe.Failures.Select(f => "; " + f.Device + ": " + f.Error.Message)));
            using var open = device.Open();
            await body(device).ConfigureAwait(false);
        }
    }

    public static async Task FoundByAcpiId(ScenarioContext context)
    {
        var sysfs = new SysfsReader(context.Kernel);
        string dir = "bus/platform/devices/" + context.DeviceAddress;
        Check.Equal("acpi:" + AcpiId + ":", sysfs.ReadText(dir + "/modalias")?.Trim() ?? "none", "the device's modalias");
        Check.Equal("vfio-platform", sysfs.ReadText(dir + "/driver_override")?.Trim() ?? "none", "driver_override");
        Check.Equal("vfio-platform", sysfs.ReadLinkName(dir + "/driver") ?? "none", "the driver bound");
        Check.Equal("N", sysfs.ReadText("module/vfio_platform/parameters/reset_required")?.Trim() ?? "none", "vfio_platform's reset_required");
        Check.Equal("vfio-noiommu", sysfs.ReadText("kernel/iommu_groups/" + context.GroupId + "/name")?.Trim() ?? "none", "the group's name");

        await using var registry = Registry(context);
        var found = registry.DiscoverPlatform().SingleOrDefault(d => d.Name == context.DeviceAddress)
            ?? throw new ScenarioFailedException("DiscoverPlatform does not list " + context.DeviceAddress);
        Check.Equal(AcpiId, found.AcpiHid ?? "none", "the ACPI id discovered");
        Check.Equal(0, found.Compatible.Count, "compatible entries of an ACPI device");
        Check.True(found.GroupKind == IommuGroupKind.NoIommu, "the group kind discovered is " + found.GroupKind);
        Check.Equal(context.GroupId, found.GroupId, "the group discovered");
        var probe = await registry.ProbeAsync();
        var device = probe.Registered.OfType<VirtioRngDevice>().SingleOrDefault()
            ?? throw new ScenarioFailedException("the driver matching ACPI " + AcpiId + " did not take the device");
        Check.Equal(context.DeviceAddress, device.Name, "the device the driver took");
        Check.Equal(0, probe.Failures.Count, "probe failures");
        context.Note($"{device.Name}: ACPI {device.AcpiHid}, {device.GroupKind} group {device.GroupId}");
    }

    public static Task RegionAndLevelInterrupt(ScenarioContext context) => WithOpenDeviceAsync(context, device =>
    {
        Check.Equal(1, device.RegionCount, "regions");
        var region = device.GetRegions()[0];
        Check.Equal(0x200UL, region.Size, "region 0's size (QEMU's virtio-mmio window)");
        Check.True(region.Flags == (RegionAccess.Read | RegionAccess.Write), "region 0's flags are " + region.Flags + " (a window not page-aligned cannot be mapped)");
        Check.Equal(VirtioRngDevice.Magic, device.ReadRegister(0x000), "the magic value (\"virt\")");
        Check.Equal(2u, device.TransportVersion, "the transport version");
        Check.Equal(VirtioRngDevice.EntropyDeviceId, device.ReadRegister(0x008), "the virtio device id");
        Check.Equal(0x554d4551u, device.Vendor, "the vendor id (\"QEMU\")");

        Check.Equal(1, device.IrqCount, "interrupts");
        var irq = device.GetIrqs()[0];
        Check.True(irq.Trigger == IrqTrigger.Level && irq.Maskable && irq.Info.AutoMasked, $"interrupt 0 is {irq.Trigger}, maskable {irq.Maskable}, automasked {irq.Info.AutoMasked}");
        Check.Equal(1u, irq.Info.Count, "vectors of interrupt 0");

        // No reset handler (QEMU's DSDT has no _RST), which reset_required=0 allows.
        Check.True(!device.CanReset, "the device claims a reset");
        var reset = Check.Throws<VfioNotSupportedException>(device.Reset, "Reset of a device without a reset handler");
        context.Note("reset: " + reset.Message);
        return Task.CompletedTask;
    });

    public static Task RandomBytesByDma(ScenarioContext context) => WithOpenDeviceAsync(context, async device =>
    {
        using var timeout = new CancellationTokenSource(Timeout);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < 4; i++)
        {
            byte[] bytes = await device.ReadRandomAsync(64, timeout.Token).ConfigureAwait(false);
            Check.Equal(64, bytes.Length, "bytes of request " + i);
            Check.True(bytes.Any(b => b != 0), "request " + i + " gave only zeros");
            Check.True(seen.Add(Convert.ToHexString(bytes)), "request " + i + " gave the bytes of an earlier one");
        }
        Check.True(device.Interrupts >= 4, "interrupts counted for four requests: " + device.Interrupts);
        // The device found the buffers at the device addresses it was given: without an IOMMU, their
        // physical addresses (no other address would have reached them).
        var (queue, data) = device.DeviceAddresses;
        Check.True(queue != 0 && data != 0 && queue % 4096 == 0, FormattableString.Invariant($"the virtqueue at 0x{queue:x}, the buffer at 0x{data:x}"));
        context.Note(FormattableString.Invariant($"4 x 64 random bytes after {device.Interrupts} interrupts; queue at physical 0x{queue:x}"));
    });
}
