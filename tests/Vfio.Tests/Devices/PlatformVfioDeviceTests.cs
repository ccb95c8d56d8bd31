using Vfio.Testing;
using Vfio.Tests.Simulation;

namespace Vfio.Tests.Devices;

/// <summary>
/// Platform devices through vfio-platform on the simulated kernel: discovery, matching by compatible
/// entry, regions, level and edge interrupts, the reset rules, and unregistering while in use. The
/// first tests use a small driver for a timer block the way a driver author writes one.
/// </summary>
public abstract class PlatformVfioDeviceTests(VfioBackend backend) : KernelTest(backend)
{
    /// <summary>The tests on the legacy backend (a kernel that behaves as Linux 6.1).</summary>
    public sealed class Legacy() : PlatformVfioDeviceTests(VfioBackend.Legacy);

    /// <summary>The tests on the iommufd backend (a kernel that behaves as Linux 7.2).</summary>
    public sealed class Iommufd() : PlatformVfioDeviceTests(VfioBackend.Iommufd);

    private const string TimerName = "ff100000.timer";

    /// <summary>
    /// A timer block: writing 1 to CONTROL expires it (STATUS bit 0 set, COUNT incremented) and
    /// asserts its level-triggered interrupt; writing 1 to STATUS bit 0 clears the cause.
    /// </summary>
    private sealed class TimerModel : PlatformDeviceModel
    {
        public const ulong Control = 0x00;
        public const ulong Status = 0x04;
        public const ulong Count = 0x08;
        private uint _status;
        private uint _count;

        public TimerModel(bool hasResetHandler = true)
            : base("acme,timer-v2", "acme,timer")
        {
            HasResetHandler = hasResetHandler;
            AddRegion(0x1000);
            AddRegion(0x40, mappable: false);
            AddIrq(levelTriggered: true);
            AddIrq(levelTriggered: false);
        }

        protected override ulong ReadRegister(int region, ulong offset, int size) => (region, offset) switch
        {
            (0, Status) => _status,
            (0, Count) => _count,
            _ => base.ReadRegister(region, offset, size),
        };

        protected override void WriteRegister(int region, ulong offset, int size, ulong value)
        {
            switch ((region, offset))
            {
                case (0, Control) when (value & 1) != 0:
                    _status |= 1;
                    _count++;
                    RaiseInterrupt(0);
                    break;
                case (0, Status):
                    _status &= ~(uint)value;
                    if ((_status & 1) == 0)
                    {
                        LowerInterrupt(0);
                    }
                    break;
                default:
                    base.WriteRegister(region, offset, size, value);
                    break;
            }
        }

        protected override void OnReset()
        {
            base.OnReset();
            _status = 0;
            _count = 0;
        }
    }

    /// <summary>The driver's device: maps its registers and wires its interrupt on first open.</summary>
    private sealed class Timer(PlatformDeviceContext context) : PlatformVfioDevice(context)
    {
        private MmioRegion? _registers;
        private PlatformInterrupt? _expired;

        public MmioRegion Registers => _registers ?? throw new InvalidOperationException($"Timer {Name} is not open.");

        public PlatformInterrupt Expired => _expired ?? throw new InvalidOperationException($"Timer {Name} is not open.");

        /// <summary>Expires the timer and waits for its interrupt; returns how many times it expired since open.</summary>
        public async Task<uint> ExpireAsync(CancellationToken cancellationToken)
        {
            Registers.Write32(TimerModel.Control, 1);
            await Expired.WaitAsync(cancellationToken);
            Registers.Write32(TimerModel.Status, 1); // clear the cause, then let the line fire again
            Expired.Unmask();
            return Registers.Read32(TimerModel.Count);
        }

        protected override void OnFirstOpen()
        {
            _registers = OpenRegion(0);
            _expired = EnableInterrupt(0);
        }

        protected override void OnLastClose()
        {
            _expired?.Dispose();
            _expired = null;
            _registers?.Dispose();
            _registers = null;
        }
    }

    private sealed class TimerDriver(string name = "acme-timer", params string[] compatible)
        : PlatformDriver<Timer>(name, compatible.Length == 0 ? ["acme,timer"] : compatible)
    {
        protected internal override Timer CreateDevice(PlatformDeviceContext context) => new(context);
    }

    private sealed class GenericDevice(PlatformDeviceContext context) : PlatformVfioDevice(context);

    private sealed class GenericDriver(string name, params string[] compatible) : PlatformDriver<GenericDevice>(name, compatible)
    {
        protected internal override GenericDevice CreateDevice(PlatformDeviceContext context) => new(context);
    }

    private async Task<Timer> ProbeTimerAsync(TimerModel? model = null)
    {
        Kernel.AddPlatformDevice(TimerName, model ?? new TimerModel(), iommuGroup: 12);
        Registry.AddDriver(new TimerDriver());
        var result = await Registry.ProbeAsync();
        result.Failures.Should().BeEmpty();
        return result.Registered.Should().ContainSingle().Which.Should().BeOfType<Timer>().Subject;
    }

    [Fact]
    public async Task ADriverExpiresTheTimerAndHandlesEachLevelInterrupt()
    {
        var timer = await ProbeTimerAsync();
        using var cancel = new CancellationTokenSource(Guard);
        using (timer.Open())
        {
            timer.Registers.IsMapped.Should().BeTrue("a page-sized resource is mapped");
            timer.Expired.Trigger.Should().Be(IrqTrigger.Level);
            (await timer.ExpireAsync(cancel.Token)).Should().Be(1);
            (await timer.ExpireAsync(cancel.Token)).Should().Be(2, "the unmasked line fires again");
        }
        timer.IsOpen.Should().BeFalse();
    }

    [Fact]
    public async Task ALevelInterruptStaysMaskedAfterItFiresUntilUnmasked()
    {
        var timer = await ProbeTimerAsync();
        var model = (TimerModel)Kernel.FindDevice(TimerName)!.Model;
        using var cancel = new CancellationTokenSource(Guard);
        using (timer.Open())
        {
            timer.Registers.Write32(TimerModel.Control, 1);
            (await timer.Expired.WaitAsync(cancel.Token)).Should().Be(1);
            model.RaiseInterrupt(0).Should().BeFalse("the kernel masked the line when it fired");
            timer.Expired.Unmask();
            (await timer.Expired.WaitAsync(cancel.Token)).Should().Be(1, "the line still asserted fires once unmasked");
            timer.Expired.Mask();
            model.RaiseInterrupt(0).Should().BeFalse();
            timer.Expired.Unmask();
            (await timer.Expired.WaitAsync(cancel.Token)).Should().Be(1);
        }
    }

    [Fact]
    public async Task AnEdgeInterruptFiresEachTimeAndRefusesMasking()
    {
        var timer = await ProbeTimerAsync();
        var model = Kernel.FindDevice(TimerName)!.Model;
        using var cancel = new CancellationTokenSource(Guard);
        using (timer.Open())
        using (var edge = timer.EnableInterrupt(1))
        {
            edge.Trigger.Should().Be(IrqTrigger.Edge);
            edge.Info.Maskable.Should().BeFalse();
            model.RaiseInterrupt(1).Should().BeTrue();
            (await edge.WaitAsync(cancel.Token)).Should().Be(1);
            model.RaiseInterrupt(1).Should().BeTrue("an edge interrupt is never masked by the kernel");
            (await edge.WaitAsync(cancel.Token)).Should().Be(1);
            var mask = edge.Mask;
            mask.Should().Throw<VfioNotSupportedException>().WithMessage($"*1*{TimerName}*edge-triggered*");
            var unmask = edge.Unmask;
            unmask.Should().Throw<VfioNotSupportedException>();
            edge.ToString().Should().Be($"edge-triggered interrupt 1 of {TimerName}");
        }
    }

    [Fact]
    public async Task TheDeviceDescribesItsRegionsAndInterruptsWithoutConfigSpace()
    {
        var timer = await ProbeTimerAsync();
        using (timer.Open())
        {
            timer.Info!.IsPlatform.Should().BeTrue();
            timer.Info.IsPci.Should().BeFalse();
            timer.CanReset.Should().BeTrue();
            timer.RegionCount.Should().Be(2);
            timer.IrqCount.Should().Be(2);
            var regions = timer.GetRegions();
            regions.Select(r => r.Size).Should().Equal(0x1000UL, 0x40UL);
            regions[0].Flags.Should().Be(RegionAccess.Read | RegionAccess.Write | RegionAccess.Mmap);
            regions[1].Flags.Should().Be(RegionAccess.Read | RegionAccess.Write);
            timer.GetIrqs().Select(i => i.Trigger).Should().Equal(IrqTrigger.Level, IrqTrigger.Edge);
            var beyond = () => timer.EnableInterrupt(2);
            beyond.Should().Throw<ArgumentOutOfRangeException>().WithMessage($"*{TimerName} has 2 interrupts*");
        }
        var closed = () => timer.RegionCount;
        closed.Should().Throw<InvalidOperationException>().WithMessage($"*{TimerName} is not open*");
    }

    [Fact]
    public async Task ARegionTooSmallToMapIsReachedThroughTheDeviceFile()
    {
        var timer = await ProbeTimerAsync();
        using (timer.Open())
        using (var small = timer.OpenRegion(1))
        {
            small.IsMapped.Should().BeFalse();
            small.Write32(0x10, 0xdeadbeef);
            small.Read32(0x10).Should().Be(0xdeadbeef);
            timer.Registers.Write32(0x20, 0x12345678);
            timer.Registers.Read32(0x20).Should().Be(0x12345678, "the mapped region is the device's memory");
        }
    }

    [Fact]
    public void DiscoveryListsDevicesBoundToVfioPlatformWithEveryCompatibleEntry()
    {
        Kernel.AddPlatformDevice(TimerName, new TimerModel(), iommuGroup: 12);
        var uart = new PlatformDeviceModel("acme,uart");
        uart.AddRegion(0x1000);
        Kernel.AddPlatformDevice("ff200000.serial", uart, iommuGroup: 13, driver: "acme-uart");

        var found = Registry.DiscoverPlatform().Should().ContainSingle().Subject;
        found.Name.Should().Be(TimerName);
        found.Compatible.Should().Equal("acme,timer-v2", "acme,timer");
        found.AcpiHid.Should().BeNull();
        found.KernelDriver.Should().Be("vfio-platform");
        found.GroupId.Should().Be(12);
    }

    [Fact]
    public async Task AnAcpiDeviceIsDiscoveredAndMatchedByItsHardwareId()
    {
        var model = new PlatformDeviceModel { AcpiHid = "AMDI8001" };
        model.AddRegion(0x1000);
        Kernel.AddPlatformDevice("AMDI8001:00", model, iommuGroup: 4);
        var found = Registry.DiscoverPlatform().Should().ContainSingle().Subject;
        found.AcpiHid.Should().Be("AMDI8001");
        found.Compatible.Should().BeEmpty();

        Registry.AddDriver(new GenericDriver("by-compatible", "amd,xgbe-seattle-v1a"));
        Registry.AddDriver(new GenericDriver("by-acpi") { AcpiIds = ["AMDI8001"] });
        var result = await Registry.ProbeAsync();
        var device = result.Registered.Should().ContainSingle().Which.Should().BeOfType<GenericDevice>().Subject;
        device.AcpiHid.Should().Be("AMDI8001");
        Registry.Drivers.Should().HaveCount(2);
        Logs.Named("Probed").Should().ContainSingle().Which.Message.Should().Contain("by-acpi");
    }

    [Fact]
    public async Task TheDriverOfTheMostSpecificCompatibleEntryWinsWhateverTheOrderDriversWereAdded()
    {
        Kernel.AddPlatformDevice(TimerName, new TimerModel(), iommuGroup: 12);
        Registry.AddDriver(new GenericDriver("generic-timer", "acme,timer"));
        Registry.AddDriver(new TimerDriver("timer-v2", "acme,timer-v2"));
        var result = await Registry.ProbeAsync();
        result.Registered.Should().ContainSingle().Which.Should().BeOfType<Timer>();
    }

    [Fact]
    public async Task TwoDriversForTheSameEntryLeaveTheDeviceToTheFirstAdded()
    {
        Kernel.AddPlatformDevice(TimerName, new TimerModel(), iommuGroup: 12);
        Registry.AddDriver(new GenericDriver("first", "acme,timer"));
        Registry.AddDriver(new TimerDriver("second", "acme,timer"));
        var result = await Registry.ProbeAsync();
        result.Registered.Should().ContainSingle().Which.Should().BeOfType<GenericDevice>();
    }

    [Fact]
    public async Task ADriverMayListSeveralCompatibleEntriesAndADeviceNoDriverMatchesIsLeftAlone()
    {
        Kernel.AddPlatformDevice(TimerName, new TimerModel(), iommuGroup: 12);
        var uart = new PlatformDeviceModel("acme,uart");
        uart.AddRegion(0x1000);
        Kernel.AddPlatformDevice("ff200000.serial", uart, iommuGroup: 13);
        Registry.AddDriver(new TimerDriver("timers", "other,timer", "acme,timer"));
        var result = await Registry.ProbeAsync();
        result.Registered.Should().ContainSingle().Which.Name.Should().Be(TimerName);
        result.Failures.Should().BeEmpty();
        Registry.TryFind<GenericDevice>("ff200000.serial", out _).Should().BeFalse();
    }

    [Fact]
    public async Task ADeviceWithoutAResetHandlerIsReportedNamingTheDeviceAndTheModuleParameter()
    {
        var device = Kernel.AddPlatformDevice(TimerName, new TimerModel(hasResetHandler: false), iommuGroup: 12);
        device.Driver.Should().BeNull("vfio-platform refuses it while reset_required is Y");
        Registry.DiscoverPlatform().Should().BeEmpty();
        Registry.AddDriver(new TimerDriver());

        var result = await Registry.ProbeAsync();

        result.Registered.Should().BeEmpty();
        var failure = result.Failures.Should().ContainSingle().Subject;
        failure.Device.Should().Be(TimerName);
        failure.Driver.Should().Be("acme-timer");
        var error = failure.Error.Should().BeOfType<VfioNotFoundException>().Subject;
        error.Errno.Should().Be(Errno.ENOENT);
        error.Device.Should().Be(TimerName);
        error.Message.Should().Contain(TimerName).And.Contain("\"acme,timer-v2\"").And.Contain("no reset handler")
            .And.Contain("reset_required=0");
        Logs.Named("PlatformRefused").Should().ContainSingle();
    }

    [Fact]
    public async Task ARefusedDeviceWithoutAnIommuGroupIsReportedAsSuchAndTheProbeGoesOn()
    {
        Kernel.AddPlatformDevice(TimerName, new TimerModel(hasResetHandler: false), iommuGroup: 12);
        Kernel.Sysfs.Remove("devices/platform/" + TimerName + "/iommu_group");
        Kernel.AddPlatformDevice("ff300000.timer", new TimerModel(), iommuGroup: 14);
        Registry.AddDriver(new TimerDriver());

        var result = await Registry.ProbeAsync();

        result.Registered.Should().ContainSingle().Which.Name.Should().Be("ff300000.timer");
        result.Failures.Should().ContainSingle().Which.Error.Should().BeOfType<VfioNotFoundException>()
            .Which.Message.Should().Contain(TimerName).And.Contain("no IOMMU group");
    }

    [Fact]
    public async Task AnUnboundDeviceAssignedToVfioPlatformIsReportedWithWhatToDoWhenResetIsNotTheReason()
    {
        Kernel.PlatformResetRequired = false;
        var device = Kernel.AddPlatformDevice(TimerName, new TimerModel(), iommuGroup: 12, driver: null);
        device.Driver.Should().BeNull();
        Seam.WriteText(Kernel, Kernel.Sys("bus/platform/devices/" + TimerName + "/driver_override"), "vfio-platform").Should().BeGreaterThan(0);
        Registry.AddDriver(new TimerDriver());

        var notBound = (await Registry.ProbeAsync()).Failures.Should().ContainSingle().Which.Error;
        notBound.Should().BeOfType<VfioNotFoundException>().Which.Message.Should()
            .Contain(TimerName).And.Contain("/sys/bus/platform/drivers/vfio-platform/bind").And.NotContain("reset_required");

        Kernel.Sysfs.Remove("module/vfio_platform");
        var notLoaded = (await Registry.ProbeAsync()).Failures.Should().ContainSingle().Which.Error;
        notLoaded.Message.Should().Contain(TimerName).And.Contain("modprobe vfio-platform");
    }

    [Fact]
    public async Task WithResetNotRequiredADeviceWithoutResetHandlerOpensButCannotBeReset()
    {
        Kernel.PlatformResetRequired = false;
        var timer = await ProbeTimerAsync(new TimerModel(hasResetHandler: false));
        using var cancel = new CancellationTokenSource(Guard);
        using (timer.Open())
        {
            timer.CanReset.Should().BeFalse();
            var reset = timer.Reset;
            reset.Should().Throw<VfioNotSupportedException>().WithMessage($"*{TimerName}*RESET*");
            (await timer.ExpireAsync(cancel.Token)).Should().Be(1);
        }
    }

    [Fact]
    public async Task ResetPutsTheRegistersBack()
    {
        var timer = await ProbeTimerAsync();
        using var cancel = new CancellationTokenSource(Guard);
        using (timer.Open())
        {
            (await timer.ExpireAsync(cancel.Token)).Should().Be(1);
            timer.Reset();
            timer.Registers.Read32(TimerModel.Count).Should().Be(0);
        }
    }

    [Fact]
    public async Task AResetThatFailsRefusesTheOpenWithAnErrorNamingTheModuleParameter()
    {
        var model = new TimerModel { ResetErrno = Errno.EINVAL };
        var timer = await ProbeTimerAsync(model);
        var open = () => timer.Open();
        var error = open.Should().Throw<VfioException>().Which;
        error.Errno.Should().Be(Errno.EINVAL);
        error.Device.Should().Be(TimerName);
        error.Message.Should().Contain(TimerName).And.Contain("reset_required");
        timer.IsOpen.Should().BeFalse();
        Registry.Groups.Should().BeEmpty("nothing opened on the way stays open");

        model.ResetErrno = 0;
        using (timer.Open())
        {
            timer.IsOpen.Should().BeTrue();
        }
    }

    [Fact]
    public async Task UnregisteringWaitsUntilTheRegionTheInterruptAndTheOpenReferenceAreReleased()
    {
        var timer = await ProbeTimerAsync();
        var open = timer.Open();
        var edge = timer.EnableInterrupt(1);
        var small = timer.OpenRegion(1);
        timer.ReferenceCount.Should().BeGreaterThan(3);

        var unregistering = Registry.UnregisterAsync(timer);
        timer.State.Should().Be(VfioDeviceState.Unregistering);
        timer.TryGet(out _).Should().BeFalse("no new reference once unregistering began");
        unregistering.IsCompleted.Should().BeFalse("the open reference, the region and the interrupt are still held");

        small.Dispose();
        edge.Dispose();
        unregistering.IsCompleted.Should().BeFalse("the device is still open");
        open.Dispose();
        await unregistering.WaitAsync(Guard);
        timer.State.Should().Be(VfioDeviceState.Unregistered);
        Kernel.FindDevice(TimerName)!.IsOpen.Should().BeFalse();
        timer.Dispose();
    }
}
