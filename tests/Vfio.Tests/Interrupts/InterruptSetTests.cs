using Vfio.Interop;
using Vfio.Testing;

namespace Vfio.Tests.Interrupts;

/// <summary>Interrupt sets against the simulated kernel, which answers as vfio-pci of Linux 6.1.</summary>
public abstract class InterruptSetTests(VfioBackend backend) : KernelTest(backend)
{
    /// <summary>The tests on the legacy backend (a kernel that behaves as Linux 6.1).</summary>
    public sealed class Legacy() : InterruptSetTests(VfioBackend.Legacy);

    /// <summary>The tests on the iommufd backend (a kernel that behaves as Linux 7.2).</summary>
    public sealed class Iommufd() : InterruptSetTests(VfioBackend.Iommufd);

    private (SimulatedPciDevice Sim, RecordingPciDevice Device) Registered(bool express = false, int msi = 4, int msix = 8)
    {
        var model = new PciDeviceModel(0x1234, 0x11e8, 0x00ff00, express) { MsiVectors = msi, MsixVectors = msix };
        if (msix > 0)
        {
            model.DefineBar(0, 0x4000);
        }
        var sim = AddPci(model: model);
        return (sim, RegisterPci());
    }

    [Fact]
    public void EveryIndexOfAConventionalPciFunctionIsDescribedWithItsFlags()
    {
        var (_, device) = Registered();
        using var open = device.Open();

        var infos = device.GetIrqInfos();

        infos.Select(i => i.Index).Should().Equal(0, 1, 2, 3, 4);
        infos.Select(i => i.Count).Should().Equal(1u, 4u, 8u, 0u, 1u);
        infos[PciIrq.Intx].Should().Match<IrqInfo>(i => i.EventFd && i.Maskable && i.AutoMasked && !i.NoResize);
        infos[PciIrq.Msi].Should().Match<IrqInfo>(i => i.EventFd && !i.Maskable && !i.AutoMasked && i.NoResize);
        infos[PciIrq.Msix].Should().Match<IrqInfo>(i => i.EventFd && !i.Maskable && i.NoResize);
        infos[PciIrq.Err].Should().Match<IrqInfo>(i => !i.Supported && i.Flags == 0, "vfio-pci refuses ERR off PCI Express (EINVAL)");
        infos[PciIrq.Req].Should().Match<IrqInfo>(i => i.EventFd && i.NoResize && i.Count == 1);
        device.Invoking(d => d.GetIrqInfo(PciIrq.Err)).Should().Throw<VfioException>().Which.Errno.Should().Be(Errno.EINVAL);
    }

    [Fact]
    public async Task DisposingReturnsWhenTheWriteThatWakesThePollerFails()
    {
        var (_, device) = Registered();
        using var open = device.Open();
        int eventFds = Kernel.EventFdCount;
        var set = device.EnableInterrupts(PciIrq.Msi, count: 1);
        Kernel.FailNext(SimulatedCall.Write, Errno.EIO);

        await Task.Run(set.Dispose).WaitAsync(Guard);

        await set.Invoking(s => s.WaitAsync(0).AsTask()).Should().ThrowAsync<ObjectDisposedException>();
        Kernel.EventFdCount.Should().Be(eventFds, "the vector's eventfd and the poller's wake-up are closed");
    }

    [Fact]
    public void APciExpressFunctionHasOneErrVector()
    {
        var (_, device) = Registered(express: true);
        using var open = device.Open();

        var err = device.GetIrqInfo(PciIrq.Err);

        err.Count.Should().Be(1);
        err.EventFd.Should().BeTrue();
        err.NoResize.Should().BeTrue();
    }

    [Fact]
    public async Task VectorsOfARangeFireIndependently()
    {
        var (sim, device) = Registered();
        using var open = device.Open();
        using var set = device.EnableInterrupts(PciIrq.Msix, count: 3, start: 2);

        set.Start.Should().Be(2);
        set.Count.Should().Be(3);
        sim.Model.RaiseInterrupt(PciIrq.Msix, 1).Should().BeFalse("vector 1 is not part of the enabled block");
        sim.Model.RaiseInterrupt(PciIrq.Msix, 3).Should().BeTrue();
        sim.Model.RaiseInterrupt(PciIrq.Msix, 3).Should().BeTrue();

        (await set.WaitAsync(1).AsTask().WaitAsync(Guard)).Should().BeInRange(1UL, 2UL, "device vector 3 is set vector 1");
        set.WaitAsync(0).AsTask().IsCompleted.Should().BeFalse();
    }

    [Fact]
    public void MsixCannotGrowWhileEnabledButCanAfterDisabling()
    {
        var (_, device) = Registered();
        using var open = device.Open();
        var first = device.EnableInterrupts(PciIrq.Msix, count: 2);

        var error = device.Invoking(d => d.EnableInterrupts(PciIrq.Msix, count: 2, start: 2)).Should().Throw<VfioException>().Which;

        error.Errno.Should().Be(Errno.EINVAL, "Linux 6.1 sizes MSI-X when it enables it");
        first.Dispose();
        using var bigger = device.EnableInterrupts(PciIrq.Msix, count: 4);
        bigger.Count.Should().Be(4);
    }

    [Fact]
    public void EnablingMoreVectorsThanTheHostCanAllocateFailsNamingHowManyItCould()
    {
        var (sim, device) = Registered();
        Kernel.HostIrqVectors = 3;
        using var open = device.Open();

        device.Invoking(d => d.EnableInterrupts(PciIrq.Msix, count: 4)).Should().Throw<VfioException>().WithMessage("*only 3 of the 4*");

        sim.Model.MsixEnabled.Should().BeFalse("nothing was enabled");
        Kernel.OpenFiles.Count(f => f.Kind == SimulatedFileKind.EventFd).Should().Be(2, "only the REQ notifier's eventfds are open");
        using var three = device.EnableInterrupts(PciIrq.Msix, count: 3);
        three.Count.Should().Be(3);
    }

    [Fact]
    public void MsiCannotBeEnabledWhileMsixIs()
    {
        var (_, device) = Registered();
        using var open = device.Open();
        using var msix = device.EnableInterrupts(PciIrq.Msix);

        device.Invoking(d => d.EnableInterrupts(PciIrq.Msi)).Should().Throw<VfioException>().Which.Errno.Should().Be(Errno.EINVAL);
    }

    [Fact]
    public void MsiAndMsixCannotBeMaskedThroughVfioPci()
    {
        var (_, device) = Registered();
        using var open = device.Open();
        using var msi = device.EnableInterrupts(PciIrq.Msi);

        msi.Invoking(s => s.Mask(0)).Should().Throw<VfioException>().Which.Errno.Should().Be(Errno.ENOTTY);
        msi.Invoking(s => s.Unmask(0)).Should().Throw<VfioException>().Which.Errno.Should().Be(Errno.ENOTTY);
        msi.Invoking(s => s.EnableResample()).Should().Throw<VfioNotSupportedException>();
    }

    [Fact]
    public async Task ADisabledVectorStaysPendingUntilEnabledAgain()
    {
        var (sim, device) = Registered();
        using var open = device.Open();
        using var set = device.EnableInterrupts(PciIrq.Msix, count: 4);

        set.DisableVectors(1, 2);
        sim.Model.RaiseInterrupt(PciIrq.Msix, 1).Should().BeFalse("vector 1 has no eventfd");
        sim.Model.RaiseInterrupt(PciIrq.Msix, 3).Should().BeTrue("vector 3 was left alone");
        var wait = set.WaitAsync(1).AsTask();
        wait.IsCompleted.Should().BeFalse();

        set.EnableVectors(1, 2);

        (await wait.WaitAsync(Guard)).Should().Be(1);
        (await set.WaitAsync(3).AsTask().WaitAsync(Guard)).Should().Be(1);
    }

    [Fact]
    public async Task IntxStaysMaskedAfterFiringUntilTheResampleEventFdIsSignalled()
    {
        var (sim, device) = Registered(msi: 0, msix: 0);
        using var open = device.Open();
        using var intx = device.EnableInterrupts(PciIrq.Intx);
        intx.EnableResample();
        intx.Resampling.Should().BeTrue();

        sim.Model.RaiseInterrupt(PciIrq.Intx).Should().BeTrue();
        (await intx.WaitAsync(0).AsTask().WaitAsync(Guard)).Should().Be(1);
        sim.Model.RaiseInterrupt(PciIrq.Intx).Should().BeFalse("the kernel masked INTx when it fired");
        var second = intx.WaitAsync(0).AsTask();
        second.IsCompleted.Should().BeFalse();

        long before = Kernel.CallCount;
        intx.Unmask(0);

        Kernel.CallCount.Should().Be(before + 1, "unmasking is one write to the resample eventfd");
        (await second.WaitAsync(Guard)).Should().Be(1, "the line still asserted fired again once unmasked");
    }

    [Fact]
    public unsafe void ASecondResampleEventFdIsBusy()
    {
        var (_, device) = Registered(msi: 0, msix: 0);
        using var open = device.Open();
        using var intx = device.EnableInterrupts(PciIrq.Intx);
        intx.EnableResample();
        Kernel.EventFd(0, 0, out var other).Should().Be(0);
        using (other)
        {
            byte* buffer = stackalloc byte[sizeof(vfio_irq_set) + 4];
            var set = (vfio_irq_set*)buffer;
            *set = new vfio_irq_set
            {
                argsz = (uint)(sizeof(vfio_irq_set) + 4),
                flags = VfioUapi.VFIO_IRQ_SET_DATA_EVENTFD | VfioUapi.VFIO_IRQ_SET_ACTION_UNMASK,
                index = PciIrq.Intx,
                count = 1,
            };
            *(int*)(buffer + sizeof(vfio_irq_set)) = other.Value;

            Kernel.Ioctl(device.DeviceFd, VfioUapi.VFIO_DEVICE_SET_IRQS, buffer).Should().Be(-Errno.EBUSY, "vfio_virqfd_enable keeps one unmask eventfd");
        }
    }

    [Fact]
    public async Task WaitAnyReturnsTheLowestVectorThatFiredAndKeepsTheOthers()
    {
        var (sim, device) = Registered();
        using var open = device.Open();
        using var set = device.EnableInterrupts(PciIrq.Msix, count: 4);

        var any = set.WaitAnyAsync().AsTask();
        any.IsCompleted.Should().BeFalse();
        sim.Model.RaiseInterrupt(PciIrq.Msix, 2).Should().BeTrue();
        (await any.WaitAsync(Guard)).Should().Be(2);

        sim.Model.RaiseInterrupt(PciIrq.Msix, 3).Should().BeTrue();
        sim.Model.RaiseInterrupt(PciIrq.Msix, 1).Should().BeTrue();
        (await set.WaitAsync(3).AsTask().WaitAsync(Guard)).Should().Be(1);
        (await set.WaitAnyAsync().AsTask().WaitAsync(Guard)).Should().Be(1);
        set.WaitAnyAsync().AsTask().IsCompleted.Should().BeFalse("every count was taken");
    }

    [Fact]
    public async Task WaitAnyIsCancelledByItsTokenAndCanWaitAgain()
    {
        var (sim, device) = Registered();
        using var open = device.Open();
        using var set = device.EnableInterrupts(PciIrq.Msix, count: 2);
        using var cancel = new CancellationTokenSource();

        var any = set.WaitAnyAsync(cancel.Token).AsTask();
        await cancel.CancelAsync();

        await any.Invoking(t => t.WaitAsync(Guard)).Should().ThrowAsync<OperationCanceledException>();
        var again = set.WaitAnyAsync().AsTask();
        sim.Model.RaiseInterrupt(PciIrq.Msix, 1).Should().BeTrue();
        (await again.WaitAsync(Guard)).Should().Be(1);
    }

    [Fact]
    public async Task ClosingTheDeviceFailsAPendingWaitAny()
    {
        var (_, device) = Registered();
        var open = device.Open();
        var set = device.EnableInterrupts(PciIrq.Msi);
        var any = set.WaitAnyAsync().AsTask();

        open.Dispose();

        await any.Invoking(t => t.WaitAsync(Guard)).Should().ThrowAsync<ObjectDisposedException>();
        set.Dispose();
    }

    [Fact]
    public void TheLibraryKeepsReqAndErrForItself()
    {
        var (_, device) = Registered(express: true);
        using var open = device.Open();

        device.Invoking(d => d.EnableInterrupts(PciIrq.Req)).Should().Throw<InvalidOperationException>().WithMessage("*OnReleaseRequested*");
        device.Invoking(d => d.EnableInterrupts(PciIrq.Err)).Should().Throw<InvalidOperationException>().WithMessage("*ErrorDetected*");
    }

    [Fact]
    public async Task CallsOfInterruptPollersAreNeitherCountedNorFailed()
    {
        var (sim, device) = Registered();
        using var open = device.Open();
        using var set = device.EnableInterrupts(PciIrq.Msi);
        Kernel.FailCall(1, Errno.EIO);
        long before = Kernel.CallCount;

        sim.Model.RaiseInterrupt(PciIrq.Msi).Should().BeTrue();
        (await set.WaitAsync(0).AsTask().WaitAsync(Guard)).Should().Be(1, "the poller's poll and read were not failed");

        Kernel.CallCount.Should().Be(before, "the poller's calls are not counted");
        device.Invoking(d => d.GetIrqInfo(PciIrq.Msi)).Should().Throw<VfioException>("the armed failure is still the next counted call")
            .Which.Errno.Should().Be(Errno.EIO);
    }
}
