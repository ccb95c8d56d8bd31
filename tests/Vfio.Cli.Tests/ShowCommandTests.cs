using Vfio.Testing;

namespace Vfio.Cli.Tests;

/// <summary><c>vfio show</c>, on the simulated NVMe controller (the model agrees with QEMU's under Linux 6.1).</summary>
public sealed class ShowCommandTests : CliTest
{
    public ShowCommandTests()
    {
        AddNvme(driver: "vfio-pci");
    }

    [Fact]
    public async Task ShowOpensTheDeviceAndPrintsItsRegionsInterruptsCapabilitiesResetFeaturesAndBackend()
    {
        var result = await Run("show", "0000:00:06.0");

        result.ExitCode.Should().Be(0, result.Error);
        result.Error.Should().BeEmpty();
        string text = result.Output;
        text.Should().StartWith("0000:00:06.0  [1b36:0010]  class 010802  driver vfio-pci  group 7");
        text.Should().Contain("Backend:     iommufd, IOAS 1 (intel-vtd IOMMU, pinned memory charged to the user); device node " + Dev("vfio/devices/vfio0") + " (iommu)");
        text.Should().MatchRegex(@"\n  0      BAR0\s+16 KiB\s+0x0\s+read write mmap caps\s+MSI-X table mappable\n");
        text.Should().MatchRegex(@"\n  8      VGA\s+-\s+0x0\s+-\s+the device has none \(EINVAL\)\n");
        text.Should().MatchRegex(@"\n  7      config\s+4 KiB\s+0x70000000000\s+read write\n");
        text.Should().MatchRegex(@"\n  2      MSI-X\s+\d+\s+eventfd noresize\n");
        text.Should().MatchRegex(@"\n  4      REQ\s+1\s+eventfd noresize\n");
        text.Should().Contain("MSI-X").And.Contain("PCI Express");
        text.Should().Contain("Hot reset:   not possible:");
        text.Should().Contain("Migration:   not supported");
    }

    [Fact]
    public async Task WithBackendLegacyTheDeviceIsOpenedThroughItsGroupAndContainer()
    {
        var result = await Run("show", "0000:00:06.0", "--backend", "legacy");
        var json = await Run("show", "0000:00:06.0", "--backend", "legacy", "--json");

        result.ExitCode.Should().Be(0, result.Error);
        result.Output.Should().Contain("Backend:     legacy container with the type1v2 IOMMU; group node " + Dev("vfio/7") + " (iommu)");
        var backend = json.Json.GetProperty("backend");
        backend.GetProperty("interface").GetString().Should().Be("container");
        backend.GetProperty("container").GetString().Should().Be("vfio");
        backend.GetProperty("iommuType").GetString().Should().Be("type1v2");
        backend.GetProperty("groupNode").GetString().Should().Be(Dev("vfio/7"));
        backend.GetProperty("deviceNode").ValueKind.Should().Be(System.Text.Json.JsonValueKind.Null);
        backend.GetProperty("dmaMappingsAvailable").GetUInt32().Should().Be(65535);
    }

    [Fact]
    public async Task OnIommufdsCompatibilityContainerTheLegacyBackendSaysWhoServesIt()
    {
        Kernel.IommufdServesContainer = true;

        var result = await Run("show", "0000:00:06.0", "--backend", "legacy");
        var json = await Run("show", "0000:00:06.0", "--backend", "legacy", "--json");

        result.ExitCode.Should().Be(0, result.Error);
        result.Output.Should().Contain("Backend:     legacy container: iommufd's compatibility container, emulating the type1v2 IOMMU (no dirty page tracking); group node "
            + Dev("vfio/7") + " (iommu)");
        var backend = json.Json.GetProperty("backend");
        backend.GetProperty("interface").GetString().Should().Be("container");
        backend.GetProperty("container").GetString().Should().Be("iommufd-compat");
        backend.GetProperty("iommuType").GetString().Should().Be("type1v2");
        backend.GetProperty("dmaMappingsAvailable").GetUInt32().Should().Be(uint.MaxValue, "iommufd's DMA_AVAIL, which counts nothing");
    }

    [Fact]
    public async Task ThroughIommufdTheBackendNamesNoContainer()
    {
        Kernel.IommufdServesContainer = true;

        var json = await Run("show", "0000:00:06.0", "--json");

        json.ExitCode.Should().Be(0, json.Error);
        json.Json.GetProperty("backend").GetProperty("interface").GetString().Should().Be("iommufd");
        json.Json.GetProperty("backend").GetProperty("container").ValueKind.Should().Be(System.Text.Json.JsonValueKind.Null);
    }

    [Fact]
    public async Task WithBackendIommufdOnAKernelWithoutItTheErrorSaysWhy()
    {
        Kernel.IommufdEnabled = false;

        var result = await Run("show", "0000:00:06.0", "--backend", "iommufd");

        result.ExitCode.Should().Be(1);
        result.Error.Should().Contain("0000:00:06.0").And.Contain("CONFIG_IOMMUFD");
    }

    [Fact]
    public async Task ShowWithJsonHasEveryRegionAndInterruptIndex()
    {
        var result = await Run("show", "0000:00:06.0", "--json");

        result.ExitCode.Should().Be(0, result.Error);
        var json = result.Json;
        json.GetProperty("device").GetProperty("address").GetString().Should().Be("0000:00:06.0");
        json.GetProperty("backend").GetProperty("interface").GetString().Should().Be("iommufd");
        json.GetProperty("backend").GetProperty("iommuType").GetString().Should().Be("intel-vtd");
        json.GetProperty("backend").GetProperty("deviceNode").GetString().Should().Be(Dev("vfio/devices/vfio0"));
        json.GetProperty("backend").GetProperty("ioas").GetUInt32().Should().Be(1);
        json.GetProperty("backend").GetProperty("lockedMemoryAccounting").GetString().Should().Be("user");
        json.GetProperty("backend").GetProperty("dmaMappingsAvailable").ValueKind.Should().Be(System.Text.Json.JsonValueKind.Null);
        json.GetProperty("backend").GetProperty("pageSizes").EnumerateArray().Select(p => p.GetUInt64()).Should().Contain(4096UL);
        json.GetProperty("info").GetProperty("flags").EnumerateArray().Select(f => f.GetString()).Should().Contain("pci");
        var regions = json.GetProperty("regions").EnumerateArray().ToList();
        regions.Should().HaveCount(json.GetProperty("info").GetProperty("regions").GetInt32());
        regions[0].GetProperty("name").GetString().Should().Be("BAR0");
        regions[0].GetProperty("size").GetUInt64().Should().Be(16384);
        regions[0].GetProperty("flags").EnumerateArray().Select(f => f.GetString()).Should().Equal("read", "write", "mmap", "caps");
        regions[0].GetProperty("msixMappable").GetBoolean().Should().BeTrue();
        regions[0].GetProperty("sparseAreas").ValueKind.Should().Be(System.Text.Json.JsonValueKind.Null);
        regions[8].GetProperty("unavailable").GetString().Should().Contain("EINVAL");
        regions[7].GetProperty("name").GetString().Should().Be("config");
        var irqs = json.GetProperty("irqs").EnumerateArray().Select(i => i.GetProperty("name").GetString()).ToList();
        irqs.Should().Equal("INTx", "MSI", "MSI-X", "ERR", "REQ");
        json.GetProperty("config").GetProperty("capabilities").EnumerateArray().Select(c => c.GetProperty("name").GetString())
            .Should().Contain(["MSI-X", "PCI Express"]);
        json.GetProperty("reset").GetProperty("hotReset").GetBoolean().Should().BeFalse();
        json.GetProperty("features").EnumerateArray().Select(f => f.GetProperty("name").GetString()).Should().Contain("low-power-entry");
        json.GetProperty("migration").GetProperty("supported").GetBoolean().Should().BeFalse();
    }

    [Fact]
    public async Task AFunctionNotOnVfioIsRefusedWithTheWayToBindIt()
    {
        AddNvme("0000:00:07.0", 8);

        var result = await Run("show", "0000:00:07.0");

        result.ExitCode.Should().Be(1);
        result.Error.Should().Contain("0000:00:07.0 is bound to nvme, not vfio-pci").And.Contain("vfio bind 0000:00:07.0");
    }

    [Fact]
    public async Task AFunctionWhoseGroupIsNotViableIsRefusedNamingTheDeviceInTheWay()
    {
        Kernel.AddPciDevice("0000:00:04.0", new EduDeviceModel(), 4);
        AddNvme("0000:00:04.1", 4);

        var result = await Run("show", "0000:00:04.0");

        result.ExitCode.Should().Be(1);
        result.Error.Should().Contain("Group 4 is not viable: 0000:00:04.1 is bound to nvme");
    }

    [Fact]
    public async Task AFunctionWhoseGroupAnotherProcessHasOpenIsRefusedSayingSo()
    {
        await using var registry = new VfioRegistry(Kernel, options: new VfioRegistryOptions { Backend = VfioBackend.Legacy });
        var device = new PlainDevice(registry.FindPci(PciAddress.Parse("0000:00:06.0")));
        registry.Register(device);
        using (device.Open())
        {
            var result = await Run("show", "0000:00:06.0");
            var legacy = await Run("show", "0000:00:06.0", "--backend", "legacy");

            result.ExitCode.Should().Be(1);
            result.Error.Should().Contain("EBUSY").And.Contain("Group 7 of 0000:00:06.0 is open through the legacy group API");
            legacy.ExitCode.Should().Be(1);
            legacy.Error.Should().Contain("EBUSY").And.Contain("Group 7 is already open");
        }
        await registry.UnregisterAsync(device);
        device.Dispose();
    }

    [Fact]
    public async Task SparseMmapAreasAreShownWithTheirOffsetsAndSizes()
    {
        var model = new PciDeviceModel(0x1af4, 0x1041, 0x020000);
        model.DefineBar(0, 0x4000);
        model.DefineSparseMmap(0, new SparseMmapArea(0, 0x1000), new SparseMmapArea(0x3000, 0x1000));
        Kernel.AddPciDevice("0000:00:08.0", model, 8);

        var text = await Run("show", "0000:00:08.0");
        var json = await Run("show", "0000:00:08.0", "--json");

        text.Output.Should().MatchRegex(@"\n  0      BAR0\s+16 KiB\s+0x0\s+read write mmap caps\s+sparse mmap: \[0x0 \+4 KiB\] \[0x3000 \+4 KiB\]\n");
        var areas = json.Json.GetProperty("regions")[0].GetProperty("sparseAreas").EnumerateArray().ToList();
        areas.Select(a => (a.GetProperty("offset").GetString(), a.GetProperty("size").GetUInt64())).Should().Equal(("0x0", 4096UL), ("0x3000", 4096UL));
    }

    [Fact]
    public async Task AnEduDeviceShowsItsMsiCapabilityAndTheFunctionsAHotResetWouldTouch()
    {
        Kernel.AddPciBridge("0000:00:1c.0", secondaryBus: 1);
        Kernel.AddPciDevice("0000:01:00.0", new EduDeviceModel(), 9);
        Kernel.AddPciDevice("0000:01:00.1", new EduDeviceModel(), 9);

        var result = await Run("show", "0000:01:00.0", "--json");

        result.ExitCode.Should().Be(0);
        result.Json.GetProperty("config").GetProperty("capabilities").EnumerateArray().Select(c => c.GetProperty("name").GetString()).Should().Contain("MSI");
        var reset = result.Json.GetProperty("reset");
        reset.GetProperty("hotReset").GetBoolean().Should().BeTrue();
        reset.GetProperty("hotResetAffects").EnumerateArray().Select(a => a.GetProperty("address").GetString()).Should().Equal("0000:01:00.0", "0000:01:00.1");
    }

    private sealed class PlainDevice(PciDeviceContext context) : PciVfioDevice(context);
}
