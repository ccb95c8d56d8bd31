using Vfio.Testing;

namespace Vfio.Tests.Registry;

/// <summary>The driver model: probing devices bound to vfio, creating them through matching drivers, removing them.</summary>
public class VfioRegistryTests : KernelTest
{
    private sealed class TestPciDriver(Func<PciDeviceContext, RecordingPciDevice>? create, params PciMatch[] matches)
        : PciDriver<RecordingPciDevice>("test-pci", matches)
    {
        public List<RecordingPciDevice> Created { get; } = [];

        protected internal override RecordingPciDevice CreateDevice(PciDeviceContext context)
        {
            var device = create?.Invoke(context) ?? new RecordingPciDevice(context);
            Created.Add(device);
            return device;
        }
    }

    private sealed class TestPlatformDevice(PlatformDeviceContext context) : PlatformVfioDevice(context);

    private sealed class TestPlatformDriver() : PlatformDriver<TestPlatformDevice>("test-platform", "acme,dma")
    {
        protected internal override TestPlatformDevice CreateDevice(PlatformDeviceContext context) => new(context);
    }

    private sealed class TestMdevDevice(MdevDeviceContext context) : MdevVfioDevice(context);

    private sealed class TestMdevDriver() : MdevDriver<TestMdevDevice>("test-mdev", "mtty-2")
    {
        protected internal override TestMdevDevice CreateDevice(MdevDeviceContext context) => new(context);
    }

    [Fact]
    public async Task ProbeCreatesAndRegistersAPciDeviceThroughADriverMatchingItsIds()
    {
        AddPci();
        AddPci("0000:00:05.0", group: 6, model: new PciDeviceModel(0x8086, 0x10d3, 0x020000));
        var driver = new TestPciDriver(null, PciMatch.Id(0x1234, 0x11e8));
        Registry.AddDriver(driver);

        var result = await Registry.ProbeAsync();

        var device = result.Registered.Should().ContainSingle().Which.Should().BeOfType<RecordingPciDevice>().Subject;
        device.Name.Should().Be("0000:00:03.0");
        device.VendorId.Should().Be(0x1234);
        device.GroupId.Should().Be(5);
        device.State.Should().Be(VfioDeviceState.Registered);
        Registry.TryFind<RecordingPciDevice>("0000:00:03.0", out var found).Should().BeTrue();
        found.Should().BeSameAs(device);
        Registry.Devices.Should().ContainSingle("the other function matches no driver");
        result.Failures.Should().BeEmpty();

        (await Registry.ProbeAsync()).Registered.Should().BeEmpty("a registered device is not created twice");
        driver.Created.Should().ContainSingle();
    }

    [Fact]
    public async Task AMatchingFunctionHeldByAKernelDriverIsReportedWithTheDriverAndWhatToDoAndLogged()
    {
        AddPci();
        AddPci("0000:00:04.1", group: 4, model: new PciDeviceModel(0x1234, 0x11e8, 0x00ff00), driver: "edu-host");
        AddPci("0000:00:04.2", group: 7, model: new PciDeviceModel(0x1234, 0x11e8, 0x00ff00), driver: null);
        AddPci("0000:00:05.0", group: 6, model: new PciDeviceModel(0x8086, 0x10d3, 0x020000), driver: "e1000e");
        Registry.AddDriver(new TestPciDriver(null, PciMatch.Id(0x1234, 0x11e8)));

        var result = await Registry.ProbeAsync();

        result.Registered.Should().ContainSingle().Which.Name.Should().Be("0000:00:03.0");
        result.NotOnVfio.Select(n => (n.Device, n.Driver, n.KernelDriver)).Should().Equal(
            ("0000:00:04.1", "test-pci", "edu-host"),
            ("0000:00:04.2", "test-pci", (string?)null));
        var held = result.NotOnVfio[0];
        held.Hint.Should().Contain("the kernel's edu-host driver holds it")
            .And.Contain("echo 0000:00:04.1 > /simulated/sys/bus/pci/devices/0000:00:04.1/driver/unbind")
            .And.Contain("echo vfio-pci > /simulated/sys/bus/pci/devices/0000:00:04.1/driver_override")
            .And.Contain("echo 0000:00:04.1 > /simulated/sys/bus/pci/drivers_probe");
        result.NotOnVfio[1].Hint.Should().Contain("no driver holds it").And.NotContain("unbind");
        Logs.Entries.Should().Contain(e => e.EventId.Id == 25 && e.Message.Contains("0000:00:04.1", StringComparison.Ordinal) && e.Message.Contains("edu-host", StringComparison.Ordinal));
    }

    [Fact]
    public async Task ProbeMatchesAPciDriverByClass()
    {
        AddPci(model: new PciDeviceModel(0x144d, 0xa808, 0x010802));
        Registry.AddDriver(new TestPciDriver(null, PciMatch.Class(0x010800, 0xffff00)));

        var result = await Registry.ProbeAsync();

        result.Registered.Should().ContainSingle().Which.Should().BeOfType<RecordingPciDevice>().Which.ClassCode.Should().Be(0x010802);
    }

    [Fact]
    public async Task ProbeMatchesAPlatformDriverByCompatible()
    {
        Kernel.AddPlatformDevice("fe000000.dma", new PlatformDeviceModel("acme,dma"), iommuGroup: 9);
        Kernel.AddPlatformDevice("fe100000.uart", new PlatformDeviceModel("acme,uart"), iommuGroup: 10);
        Registry.AddDriver(new TestPlatformDriver());

        var result = await Registry.ProbeAsync();

        var device = result.Registered.Should().ContainSingle().Which.Should().BeOfType<TestPlatformDevice>().Subject;
        device.Name.Should().Be("fe000000.dma");
        device.Compatible.Should().Contain("acme,dma");
        device.GroupId.Should().Be(9);
        device.State.Should().Be(VfioDeviceState.Registered);
    }

    [Fact]
    public async Task ProbeMatchesAnMdevDriverByType()
    {
        var parent = Kernel.AddMdevParent("mtty0", "mtty",
            new SimulatedMdevType("2", 2, () => new PciDeviceModel(0x1234, 0x1234, 0x070000)),
            new SimulatedMdevType("1", 2, () => new PciDeviceModel(0x1234, 0x1234, 0x070000)));
        var uuid = Guid.Parse("83b8f4f2-509f-382f-3c1e-e6bfe0fa1001");
        parent.Create(uuid, "2");
        parent.Create(Guid.Parse("83b8f4f2-509f-382f-3c1e-e6bfe0fa1002"), "1");
        Registry.AddDriver(new TestMdevDriver());

        var result = await Registry.ProbeAsync();

        var device = result.Registered.Should().ContainSingle().Which.Should().BeOfType<TestMdevDevice>().Subject;
        device.Uuid.Should().Be(uuid);
        device.TypeId.Should().Be("mtty-2");
        device.GroupKind.Should().Be(IommuGroupKind.Emulated);
    }

    [Fact]
    public async Task NoMatchingDriverCreatesNothing()
    {
        AddPci();
        var driver = new TestPciDriver(null, PciMatch.Id(0x1234, 0x0001), PciMatch.Class(0x020000, 0xff0000));
        Registry.AddDriver(driver);

        var result = await Registry.ProbeAsync();

        result.Registered.Should().BeEmpty();
        result.Failures.Should().BeEmpty();
        driver.Created.Should().BeEmpty();
        Registry.Devices.Should().BeEmpty();
    }

    [Fact]
    public async Task ADriverThatThrowsBeforeConstructingLeavesNothingBehind()
    {
        AddPci();
        Registry.AddDriver(new TestPciDriver(_ => throw new InvalidOperationException("no such board"), PciMatch.Id(0x1234, 0x11e8)));

        var result = await Registry.ProbeAsync();

        result.Registered.Should().BeEmpty();
        var failure = result.Failures.Should().ContainSingle().Subject;
        failure.Device.Should().Be("0000:00:03.0");
        failure.Driver.Should().Be("test-pci");
        failure.Error.Should().BeOfType<InvalidOperationException>();
        Registry.Devices.Should().BeEmpty();
        Registry.DeviceSets.TryFind("device:0000:00:03.0", out _).Should().BeFalse();
        Logs.Named("ProbeFailed").Should().ContainSingle();
    }

    [Fact]
    public async Task ADriverWhosePreparationFailsAfterConstructionLeavesNothingBehind()
    {
        AddPci();
        RecordingPciDevice? constructed = null;
        Registry.AddDriver(new TestPciDriver(context =>
        {
            constructed = new RecordingPciDevice(context);
            throw new InvalidOperationException("the board did not answer");
        }, PciMatch.Id(0x1234, 0x11e8)));

        var result = await Registry.ProbeAsync();

        result.Failures.Should().ContainSingle().Which.Error.Message.Should().Be("the board did not answer");
        constructed.Should().NotBeNull();
        constructed!.Disposed.Should().BeTrue("the registry undoes the init of a device the driver could not return");
        constructed.State.Should().Be(VfioDeviceState.Disposed);
        Registry.Devices.Should().BeEmpty();
        Registry.DeviceSets.TryFind("device:0000:00:03.0", out _).Should().BeFalse("the device left its set");
    }

    [Fact]
    public async Task ADeviceUnboundFromVfioIsUnregisteredAndDisposedByTheNextProbe()
    {
        var sim = AddPci();
        Registry.AddDriver(new TestPciDriver(null, PciMatch.Id(0x1234, 0x11e8)));
        var device = (RecordingPciDevice)(await Registry.ProbeAsync()).Registered.Single();
        device.Open().Dispose();

        sim.Unbind();
        var result = await Registry.ProbeAsync();

        result.Removed.Should().Equal("0000:00:03.0");
        result.Registered.Should().BeEmpty();
        device.State.Should().Be(VfioDeviceState.Disposed);
        device.Disposed.Should().BeTrue();
        Registry.Devices.Should().BeEmpty();
        Logs.Named("Removed").Should().ContainSingle();
    }

    [Fact]
    public async Task DisposingTheRegistryUnregistersAndDisposesProbedDevices()
    {
        AddPci();
        var registry = NewRegistry();
        registry.AddDriver(new TestPciDriver(null, PciMatch.Id(0x1234, 0x11e8)));
        var device = (RecordingPciDevice)(await registry.ProbeAsync()).Registered.Single();

        await registry.DisposeAsync();

        device.State.Should().Be(VfioDeviceState.Disposed);
        registry.Devices.Should().BeEmpty();
    }

    // ---- One bad device never breaks discovery of all -------------------------------------------

    /// <summary>Replaces an attribute of a simulated device's sysfs folder with fixed text.</summary>
    private void SetAttribute(SimulatedDevice device, string name, string text) =>
        Kernel.Sysfs.Directory(device.SysfsRelative).Attribute(name, () => text);

    public static TheoryData<string, string, string> BrokenIds => new()
    {
        { "vendor", "\0\0", "vendor" },
        { "vendor", "0xffffffffff\n", "vendor" },
        { "vendor", "0x12345\n", "vendor" },
        { "device", "garbage\n", "device" },
        { "class", "0x1000000\n", "class" },
        { "subsystem_vendor", "\n", "subsystem_vendor" },
    };

    [Theory]
    [MemberData(nameof(BrokenIds))]
    public async Task AFunctionWithAnIdSysfsCannotGiveIsReportedAndTheOthersAreProbed(string attribute, string text, string named)
    {
        var broken = AddPci("0000:00:03.0", group: 5);
        AddPci("0000:00:04.0", group: 6);
        SetAttribute(broken, attribute, text);
        Registry.AddDriver(new TestPciDriver(null, PciMatch.Id(0x1234, 0x11e8)));

        var result = await Registry.ProbeAsync();

        result.Registered.Select(d => d.Name).Should().Equal("0000:00:04.0");
        var failure = result.Failures.Should().ContainSingle().Subject;
        failure.Device.Should().Be("0000:00:03.0");
        failure.Driver.Should().BeNull("no driver was chosen for a device that could not be described");
        var error = failure.Error.Should().BeAssignableTo<VfioException>().Subject;
        error.Device.Should().Be("0000:00:03.0");
        error.Message.Should().Contain(named).And.Contain("0000:00:03.0");
        Registry.DiscoverPci().Select(c => c.Name).Should().Equal(["0000:00:04.0"], "discovery returns the functions it could read");
        Logs.Named("DiscoveryFailed").Should().NotBeEmpty("discovery logs what it skipped");
    }

    [Fact]
    public void AFunctionWithAnIdTooWideIsNotCutTo16Bits()
    {
        var broken = AddPci("0000:00:03.0", group: 5);
        SetAttribute(broken, "vendor", "0x12345\n");

        var find = () => Registry.FindPci(PciAddress.Parse("0000:00:03.0"));

        find.Should().Throw<VfioException>().WithMessage("*0000:00:03.0*vendor*0x12345*16*");
    }

    [Fact]
    public async Task AFunctionWithoutAnIommuGroupLinkIsReportedAndTheOthersAreProbed()
    {
        var broken = AddPci("0000:00:03.0", group: 5);
        AddPci("0000:00:04.0", group: 6);
        Kernel.Sysfs.Remove(broken.SysfsRelative + "/iommu_group");
        Registry.AddDriver(new TestPciDriver(null, PciMatch.Id(0x1234, 0x11e8)));

        var result = await Registry.ProbeAsync();

        result.Registered.Select(d => d.Name).Should().Equal("0000:00:04.0");
        result.Failures.Should().ContainSingle().Which.Error.Should().BeOfType<VfioNotFoundException>()
            .Which.Message.Should().Contain("0000:00:03.0").And.Contain("no IOMMU group");
    }

    [Fact]
    public async Task AFunctionWhoseIommuGroupLinkNamesNoGroupIsReportedAsSuch()
    {
        var broken = AddPci("0000:00:03.0", group: 5);
        AddPci("0000:00:04.0", group: 6);
        Kernel.Sysfs.Directory(broken.SysfsRelative).Link("iommu_group", "kernel/iommu_groups/five");
        Registry.AddDriver(new TestPciDriver(null, PciMatch.Id(0x1234, 0x11e8)));

        var result = await Registry.ProbeAsync();

        result.Registered.Select(d => d.Name).Should().Equal("0000:00:04.0");
        result.Failures.Should().ContainSingle().Which.Error.Message.Should().Contain("iommu_group").And.Contain("'five'").And.NotContain("enable the IOMMU");
    }

    [Fact]
    public async Task ARegisteredDeviceWhoseSysfsBreaksIsNotTakenForGone()
    {
        var sim = AddPci();
        Registry.AddDriver(new TestPciDriver(null, PciMatch.Id(0x1234, 0x11e8)));
        var device = (await Registry.ProbeAsync()).Registered.Single();

        SetAttribute(sim, "vendor", "\0\0");
        var result = await Registry.ProbeAsync();

        result.Removed.Should().BeEmpty("a device still bound to vfio is present even when one of its attributes cannot be read");
        result.Failures.Should().BeEmpty("a registered device is not described again");
        device.State.Should().Be(VfioDeviceState.Registered);
    }

    [Fact]
    public async Task AnMdevWithABrokenGroupIsReportedAndTheOthersAreProbed()
    {
        var mtty = Kernel.AddMttyParent();
        var good = mtty.Create(Guid.Parse("83b8f4f2-509f-382f-3c1e-e6bfe0fa1001"), "2");
        var bad = mtty.Create(Guid.Parse("83b8f4f2-509f-382f-3c1e-e6bfe0fa1002"), "2");
        Kernel.Sysfs.Directory(bad.SysfsRelative).Link("iommu_group", "kernel/iommu_groups/x");
        Registry.AddDriver(new TestMdevDriver());

        var result = await Registry.ProbeAsync();

        result.Registered.Select(d => d.Name).Should().Equal(good.Name);
        result.Failures.Should().ContainSingle().Which.Device.Should().Be(bad.Name);
        Registry.DiscoverMdev().Select(m => m.Name).Should().Equal(good.Name);
    }

    // ---- Names that become paths ---------------------------------------------------------------

    [Theory]
    [InlineData("../../bus/pci")]
    [InlineData("mtty/mdev_supported_types")]
    [InlineData("..")]
    [InlineData(".")]
    [InlineData("mtty\n")]
    public void FindMdevParentRefusesANameThatIsNotOneDeviceName(string name)
    {
        Kernel.AddMttyParent();

        var find = () => Registry.FindMdevParent(name);

        find.Should().Throw<ArgumentException>().WithMessage("*not a device name*");
    }

    [Fact]
    public void DiscoverySkipsAListingEntryThatIsNotAName()
    {
        Kernel.AddMttyParent();
        Kernel.Sysfs.Directory("class/mdev_bus").Link("..", "class");

        Registry.DiscoverMdevParents().Select(p => p.Name).Should().Equal("mtty");
    }

    // ---- Disposal that waits for holders -----------------------------------------------------------

    [Fact]
    public async Task DisposeGivesUpAtItsTimeoutNamingWhoStillHoldsWhatAndALaterDisposeFinishes()
    {
        AddPci(model: new EduDeviceModel());
        var registry = NewRegistry(disposeTimeout: TimeSpan.FromMilliseconds(300));
        var device = RegisterPci(registry: registry);
        var open = device.Open();
        var region = device.OpenRegion(0);
        var msi = device.EnableInterrupts(PciIrq.Msi);
        var buffer = device.AllocateDmaBuffer(4096);

        var dispose = () => registry.DisposeAsync().AsTask().WaitAsync(Guard);

        var error = (await dispose.Should().ThrowAsync<VfioBusyException>()).Which;
        error.Message.Should().Contain("0000:00:03.0 (group 5)").And.Contain("1 of them open")
            .And.Contain("region 0").And.Contain("interrupts 1").And.Contain("DMA buffer 0x")
            .And.NotContain("interrupts 4", "the library's own REQ notifier is no holder");
        Logs.Named("DisposeGaveUp").Should().ContainSingle().Which.Message.Should().Contain("0000:00:03.0");
        device.Requests.Should().NotBeEmpty("the holders were asked to let go");
        device.State.Should().Be(VfioDeviceState.Registered, "a device still held stays registered");
        device.ReadConfig16(PciConfig.VendorId).Should().Be(0x1234, "and usable");
        registry.Invoking(r => r.Register(CreatePci("0000:00:03.0", registry))).Should().Throw<ObjectDisposedException>("a registry being disposed takes no new device");

        buffer.Dispose();
        msi.Dispose();
        region.Dispose();
        open.Dispose();
        await registry.DisposeAsync().AsTask().WaitAsync(Guard);

        device.State.Should().Be(VfioDeviceState.Unregistered);
        registry.Groups.Should().BeEmpty();
    }

    [Fact]
    public async Task DisposeCanBeCancelledAndSaysWhoStillHoldsTheDevice()
    {
        AddPci();
        var registry = NewRegistry(disposeTimeout: Timeout.InfiniteTimeSpan);
        var device = RegisterPci(registry: registry);
        device.TryGet(out var held).Should().BeTrue();
        using var cancel = new CancellationTokenSource();
        device.WhenReleaseRequested = count =>
        {
            if (count == 2)
            {
                cancel.Cancel();
            }
        };

        var dispose = () => registry.DisposeAsync(cancel.Token).WaitAsync(Guard);

        (await dispose.Should().ThrowAsync<OperationCanceledException>()).Which.Message.Should().Contain("0000:00:03.0 (group 5): 1 reference, 0 of them open");
        held.Dispose();
        await registry.DisposeAsync().AsTask().WaitAsync(Guard);
        device.State.Should().Be(VfioDeviceState.Unregistered);
    }
}
