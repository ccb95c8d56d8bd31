using Vfio.Testing;

namespace Vfio.Tests.Devices;

/// <summary>The kernel's notifications to an open PCI device: REQ (give the device back) and ERR.</summary>
public abstract class PciVfioDeviceNotifierTests(VfioBackend backend) : KernelTest(backend)
{
    /// <summary>The tests on the legacy backend (a kernel that behaves as Linux 6.1).</summary>
    public sealed class Legacy() : PciVfioDeviceNotifierTests(VfioBackend.Legacy);

    /// <summary>The tests on the iommufd backend (a kernel that behaves as Linux 7.2).</summary>
    public sealed class Iommufd() : PciVfioDeviceNotifierTests(VfioBackend.Iommufd);

    [Fact]
    public async Task UnbindingAnOpenDeviceAsksItsHoldersAndFinishesOnceTheyRelease()
    {
        var sim = AddPci();
        var device = RegisterPci();
        var open = device.Open();
        var asked = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        device.WhenReleaseRequested = count => asked.TrySetResult(count);

        var unbind = Task.Run(sim.Unbind);

        (await asked.Task.WaitAsync(Guard)).Should().Be(0, "the first request of this open");
        Kernel.ReleaseRequests.Should().BeGreaterThan(0);
        unbind.IsCompleted.Should().BeFalse("the kernel waits for the device file to close");
        device.State.Should().Be(VfioDeviceState.Registered, "the kernel's request does not unregister anything by itself");

        open.Dispose();

        await unbind.WaitAsync(Guard);
        sim.DriverName.Should().BeNull();
        Logs.Named("KernelRequestedRelease").Should().NotBeEmpty();
    }

    [Fact]
    public async Task AHookThatReleasesFromInsideTheRequestLetsTheUnbindFinish()
    {
        var sim = AddPci();
        var device = RegisterPci();
        var open = device.Open();
        device.WhenReleaseRequested = _ => open.Dispose();

        await Task.Run(sim.Unbind).WaitAsync(Guard);

        device.IsOpen.Should().BeFalse();
        sim.DriverName.Should().BeNull();
    }

    [Fact]
    public void EveryOpenOfAPciDeviceWiresReqWithoutTakingAReference()
    {
        AddPci();
        var device = RegisterPci();
        int eventFdsBefore = Kernel.OpenFiles.Count(f => f.Kind == SimulatedFileKind.EventFd);

        using (device.Open())
        {
            device.ReferenceCount.Should().Be(2, "the registration and the open; the notifier holds none");
            Kernel.OpenFiles.Count(f => f.Kind == SimulatedFileKind.EventFd).Should().Be(eventFdsBefore + 2, "the REQ eventfd and the wake-up of the registry's notifier thread");
        }

        Kernel.OpenFiles.Count(f => f.Kind == SimulatedFileKind.EventFd).Should().Be(eventFdsBefore);
    }

    [Fact]
    public async Task OpenDevicesShareTheRegistrysNotifierThreadWhichDisposingTheRegistryStops()
    {
        AddPci();
        AddPci("0000:00:04.0", group: 6);
        var first = RegisterPci();
        var second = RegisterPci("0000:00:04.0");

        Thread thread;
        using (first.Open())
        using (second.Open())
        {
            Registry.Notifiers.Count.Should().Be(2, "each open device's REQ");
            thread = Registry.Notifiers.PollingThread!;
            thread.Name.Should().Be("vfio notifiers");
        }
        using (first.Open())
        {
            Registry.Notifiers.PollingThread.Should().BeSameAs(thread, "closing the devices left the thread idle, not stopped");
        }
        await Registry.DisposeAsync().AsTask().WaitAsync(Guard);

        thread.IsAlive.Should().BeFalse("disposing the registry stops and joins it");
        Registry.Notifiers.PollingThread.Should().BeNull();
    }

    [Fact]
    public async Task AnErrorOnAPciExpressFunctionRaisesErrorDetected()
    {
        var sim = AddPci(model: new PciDeviceModel(0x8086, 0x1234, 0x020000, isExpress: true));
        var device = RegisterPci();
        var reported = new TaskCompletionSource<ulong>(TaskCreationOptions.RunContinuationsAsynchronously);
        device.ErrorDetected += (sender, e) =>
        {
            sender.Should().BeSameAs(device);
            reported.TrySetResult(e.Count);
        };

        using (device.Open())
        {
            sim.Model.RaiseInterrupt(PciIrq.Err).Should().BeTrue("subscribing before the open wired ERR at the open");
            (await reported.Task.WaitAsync(Guard)).Should().Be(1);
        }
        sim.Model.RaiseInterrupt(PciIrq.Err).Should().BeFalse("nothing listens once the device is closed");
    }

    [Fact]
    public async Task SubscribingWhileOpenWiresErrAtOnce()
    {
        var sim = AddPci(model: new PciDeviceModel(0x8086, 0x1234, 0x020000, isExpress: true));
        var device = RegisterPci();
        using var open = device.Open();
        sim.Model.RaiseInterrupt(PciIrq.Err).Should().BeFalse("no one subscribed yet, and the kernel drops an error nobody listens for");
        var reported = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

        device.ErrorDetected += (_, _) => reported.TrySetResult();

        sim.Model.RaiseInterrupt(PciIrq.Err).Should().BeTrue();
        await reported.Task.WaitAsync(Guard);
    }

    [Fact]
    public async Task SubscribingToErrorsOfAConventionalPciFunctionWiresNothingAndKeepsTheReleaseRequest()
    {
        var sim = AddPci();
        var device = RegisterPci();
        var open = device.Open();
        int eventFds = Kernel.OpenFiles.Count(f => f.Kind == SimulatedFileKind.EventFd);
        int fired = 0;
        var asked = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        device.WhenReleaseRequested = _ => asked.TrySetResult();

        device.ErrorDetected += (_, _) => Interlocked.Increment(ref fired);

        Kernel.OpenFiles.Count(f => f.Kind == SimulatedFileKind.EventFd).Should().Be(eventFds, "ERR exists only on PCI Express: no eventfd is made for it");
        sim.Model.Invoking(model => model.RaiseInterrupt(PciIrq.Err)).Should().Throw<ArgumentOutOfRangeException>("a conventional function has no ERR interrupt");
        var unbind = Task.Run(sim.Unbind);
        await asked.Task.WaitAsync(Guard);
        open.Dispose();
        await unbind.WaitAsync(Guard);
        fired.Should().Be(0);
        Logs.Named("DeviceErrorReported").Should().BeEmpty();
        Kernel.OpenFiles.Count(f => f.Kind == SimulatedFileKind.EventFd).Should().Be(0);
    }
}
