using Vfio.Testing;

namespace Vfio.Tests.Simulation;

/// <summary>
/// Work a device model schedules (<see cref="DeviceModel.ScheduleWork(TimeSpan, Action)"/>): in the
/// background by default, or only when the test runs it on the kernel's device clock.
/// </summary>
public sealed class DeviceModelTests : IAsyncDisposable
{
    private readonly SimulatedKernel _kernel = new();

    public async ValueTask DisposeAsync()
    {
        _kernel.DeviceWork = DeviceWorkMode.Background;
        await Task.WhenAll(_kernel.FindDevice("0000:00:03.0").Model.WhenIdleAsync()).WaitAsync(TimeSpan.FromSeconds(30));
        _kernel.AssertNoLeaks();
    }

    /// <summary>A write to BAR0 0x0 schedules a completion that stores the value at 0x4, after the delay at 0x8 (in ms).</summary>
    private sealed class DelayedModel : PciDeviceModel
    {
        private uint _delay;

        public DelayedModel()
            : base(0x1234, 0x5678, 0x00ff00)
        {
            DefineBar(0, 0x1000);
            HasPowerManagement = false;
        }

        public List<uint> Completed { get; } = [];

        public bool GateHeldInWork { get; private set; }

        public Action? Also { get; set; }

        public void Start(uint value) => ScheduleFromOutside(value);

        protected override void WriteBar(int bar, ulong offset, int size, ulong value)
        {
            if (offset == 8)
            {
                _delay = (uint)value;
                return;
            }
            uint v = (uint)value;
            ScheduleWork(TimeSpan.FromMilliseconds(_delay), () => Complete(v));
        }

        private void ScheduleFromOutside(uint value) => ScheduleWork(() => Complete(value));

        private void Complete(uint value)
        {
            GateHeldInWork = Monitor.IsEntered(Gate);
            Completed.Add(value);
            Also?.Invoke();
        }
    }

    private DelayedModel Add()
    {
        var model = new DelayedModel();
        _kernel.AddPciDevice("0000:00:03.0", model, iommuGroup: 3);
        return model;
    }

    private void Write(Opened opened, ulong offset, uint value) =>
        Seam.WriteRegion(_kernel, opened.Device, 0, offset, BitConverter.GetBytes(value)).Should().Be(4);

    [Fact]
    public async Task BackgroundWorkRunsAfterTheWriteReturnsWithTheModelsLockHeld()
    {
        var model = Add();
        using var opened = Seam.OpenDevice(_kernel, 3, "0000:00:03.0");

        Write(opened, 0, 7);
        Write(opened, 0, 8);
        await model.WhenIdleAsync().WaitAsync(TimeSpan.FromSeconds(30));

        model.Completed.Should().Equal(7u, 8u);
        model.GateHeldInWork.Should().BeTrue();
        model.PendingWork.Should().Be(0);
    }

    [Fact]
    public void ManualWorkWaitsForTheTestAndRunsInDueOrderAsTheClockMoves()
    {
        _kernel.DeviceWork = DeviceWorkMode.Manual;
        var model = Add();
        using var opened = Seam.OpenDevice(_kernel, 3, "0000:00:03.0");

        Write(opened, 8, 100);
        Write(opened, 0, 1);
        Write(opened, 8, 10);
        Write(opened, 0, 2);
        Write(opened, 8, 0);
        Write(opened, 0, 3);

        model.Completed.Should().BeEmpty("nothing runs until the test says");
        model.WhenIdleAsync().IsCompleted.Should().BeFalse();
        _kernel.PendingDeviceWork.Should().Be(3);
        _kernel.RunDeviceWork().Should().Be(1, "only the work with no delay is due now");
        model.Completed.Should().Equal(3u);
        _kernel.AdvanceDeviceTime(TimeSpan.FromMilliseconds(50)).Should().Be(1);
        model.Completed.Should().Equal(3u, 2u);
        _kernel.DeviceTime.Should().Be(TimeSpan.FromMilliseconds(50));
        _kernel.AdvanceDeviceTime(TimeSpan.FromMilliseconds(50)).Should().Be(1);
        model.Completed.Should().Equal(3u, 2u, 1u);
        model.WhenIdleAsync().IsCompletedSuccessfully.Should().BeTrue();
    }

    [Fact]
    public void WorkScheduledByWorkRunsInTheSameAdvanceWhenItComesDue()
    {
        _kernel.DeviceWork = DeviceWorkMode.Manual;
        var model = Add();
        using var opened = Seam.OpenDevice(_kernel, 3, "0000:00:03.0");
        bool chained = false;
        model.Also = () =>
        {
            if (!chained)
            {
                chained = true;
                model.Start(99);
            }
        };

        Write(opened, 0, 1);
        _kernel.RunDeviceWork().Should().Be(2);

        model.Completed.Should().Equal(1u, 99u);
    }

    [Fact]
    public async Task SwitchingToBackgroundRunsTheWorkLeftWaiting()
    {
        _kernel.DeviceWork = DeviceWorkMode.Manual;
        var model = Add();
        using var opened = Seam.OpenDevice(_kernel, 3, "0000:00:03.0");
        Write(opened, 0, 5);

        _kernel.DeviceWork = DeviceWorkMode.Background;
        await model.WhenIdleAsync().WaitAsync(TimeSpan.FromSeconds(30));

        model.Completed.Should().Equal(5u);
    }

    [Fact]
    public async Task AFailureInBackgroundWorkFailsWhenIdle()
    {
        var model = Add();
        using var opened = Seam.OpenDevice(_kernel, 3, "0000:00:03.0");
        model.Also = () => throw new InvalidDataException("bad descriptor");

        Write(opened, 0, 1);
        var wait = () => model.WhenIdleAsync().WaitAsync(TimeSpan.FromSeconds(30));

        (await wait.Should().ThrowAsync<InvalidOperationException>()).WithMessage("*DelayedModel*bad descriptor*");
    }

    [Fact]
    public void AFailureInManualWorkReachesTheTest()
    {
        _kernel.DeviceWork = DeviceWorkMode.Manual;
        var model = Add();
        using var opened = Seam.OpenDevice(_kernel, 3, "0000:00:03.0");
        model.Also = () => throw new InvalidDataException("bad descriptor");
        Write(opened, 0, 1);

        var run = () => _kernel.RunDeviceWork();

        run.Should().Throw<InvalidDataException>();
        model.Also = null;
    }

    [Fact]
    public void RunningWorkFromTheTestInBackgroundModeIsRefused()
    {
        Add();

        var run = () => _kernel.RunDeviceWork();
        var advance = () => _kernel.AdvanceDeviceTime(TimeSpan.FromSeconds(1));

        run.Should().Throw<InvalidOperationException>().WithMessage("*DeviceWorkMode.Manual*");
        advance.Should().Throw<InvalidOperationException>();
    }

    [Fact]
    public void AModelOutsideAKernelCannotScheduleWork()
    {
        var model = new DelayedModel();
        _kernel.AddPciDevice("0000:00:03.0", new DelayedModel(), iommuGroup: 3);

        var start = () => model.Start(1);

        start.Should().Throw<InvalidOperationException>().WithMessage("*in a kernel*");
    }
}
