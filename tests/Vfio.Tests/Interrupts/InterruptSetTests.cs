using Vfio.Interop;
using Vfio.Testing;

namespace Vfio.Tests.Interrupts;

/// <summary>Interrupt sets against the simulated kernel, which answers as vfio-pci of Linux 6.1.</summary>
public class InterruptSetTests : KernelTest
{
    private (SimulatedPciDevice Sim, RecordingPciDevice Device) Registered(bool express = false, int msi = 4, int msix = 8)
    {
        var model = new PciDeviceModel(0x1234, 0x11e8, 0x00ff00, express) { MsiVectors = msi, MsixVectors = msix };
        if (msix > 0)
        {
            model.DefineBar(0, msix > 512 ? 0x10000UL : 0x4000);
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

    [Fact]
    public async Task WaitsRacingTheirInterruptsAndTheirCancellationsAlwaysComplete()
    {
        // Each round raises vectors 0 to 63 while their waits' tokens are cancelled from 63 down, so the
        // poller's deliveries and the cancellations cross once per round, at a vector of the seed's choosing.
        const int Vectors = 64;
        var (sim, device) = Registered(msix: Vectors);
        using var open = device.Open();
        using var msix = device.EnableInterrupts(PciIrq.Msix, count: Vectors);
        using var race = new Race(seed: 1001, Guard, 400, 8000);
        var cancels = new CancellationTokenSource[Vectors];
        var waits = new Task<ulong>[Vectors];
        int fired = 0;
        int cancelled = 0;

        for (int round = 0; round < 400; round++)
        {
            ArmWaits(msix, cancels, waits);

            race.Round(
                () => RaiseEach(sim, Vectors),
                () => CancelFromTheTop(cancels));

            for (int v = 0; v < Vectors; v++)
            {
                try
                {
                    (await waits[v].WaitAsync(Guard)).Should().Be(1);
                    fired++;
                }
                catch (OperationCanceledException)
                {
                    cancelled++;
                    (await msix.WaitAsync(v).AsTask().WaitAsync(Guard)).Should().Be(1, "the interrupt of a cancelled wait stays pending for the next");
                }
                cancels[v].Dispose();
            }
        }

        fired.Should().BePositive("some waits must see their interrupt win");
        cancelled.Should().BePositive("some waits must see their cancellation win");
    }

    [Fact]
    public async Task DisposingASetWhoseWakeUpWriteIsInterruptedReturns()
    {
        var (_, device) = Registered();
        using var open = device.Open();
        var msi = device.EnableInterrupts(PciIrq.Msi);
        var wait = msi.WaitAsync(0).AsTask();
        int eventFds = Kernel.EventFdCount;
        Kernel.FailNext(SimulatedCall.Write, Errno.EINTR);

        await Task.Run(msi.Dispose).WaitAsync(Guard);

        await wait.Invoking(t => t.WaitAsync(Guard)).Should().ThrowAsync<ObjectDisposedException>();
        Kernel.EventFdCount.Should().Be(eventFds - 2, "the vector's and the poller's eventfds are closed");
    }

    [Fact]
    public async Task DisposingASetWhoseWakeUpWriteFailsReturnsAndLogsIt()
    {
        var (_, device) = Registered();
        using var open = device.Open();
        var msi = device.EnableInterrupts(PciIrq.Msi);
        int eventFds = Kernel.EventFdCount;
        for (int i = 0; i < 20; i++)
        {
            Kernel.FailNext(SimulatedCall.Write, Errno.EIO);
        }

        await Task.Run(msi.Dispose).WaitAsync(Guard);

        Kernel.ClearFailures();
        Kernel.EventFdCount.Should().Be(eventFds - 2, "the poller stopped by itself and its eventfds were closed");
        Logs.Named("InterruptWakeFailed").Should().ContainSingle().Which.Message.Should().Contain(msi.ToString());
    }

    [Fact]
    public async Task ClosingADeviceWhoseNotifierWakeUpWouldBlockReturnsAndTheDeviceOpensAgain()
    {
        var (_, device) = Registered();
        var open = device.Open();
        Kernel.FailNext(SimulatedCall.Write, Errno.EAGAIN);

        await Task.Run(open.Dispose).WaitAsync(Guard);

        device.IsOpen.Should().BeFalse();
        var again = await Task.Run(device.Open).WaitAsync(Guard);
        again.Dispose();
    }

    [Fact]
    public async Task AnInterruptedPollOfThePollerIsRetried()
    {
        var (sim, device) = Registered();
        using var open = device.Open();
        using var msi = device.EnableInterrupts(PciIrq.Msi);
        Kernel.FailNextPollerCall(msi, SimulatedCall.Poll, Errno.EINTR);
        Kernel.FailNextPollerCall(msi, SimulatedCall.Read, Errno.EAGAIN);

        sim.Model.RaiseInterrupt(PciIrq.Msi).Should().BeTrue();
        (await msi.WaitAsync(0).AsTask().WaitAsync(Guard)).Should().Be(1);
        sim.Model.RaiseInterrupt(PciIrq.Msi).Should().BeTrue();
        (await msi.WaitAsync(0).AsTask().WaitAsync(Guard)).Should().Be(1, "the failed poll and read were retried");
    }

    [Fact]
    public async Task AFailedPollOfThePollerFailsTheWaitsNamingTheSet()
    {
        var (sim, device) = Registered();
        using var open = device.Open();
        using var msi = device.EnableInterrupts(PciIrq.Msi);
        Kernel.FailNextPollerCall(msi, SimulatedCall.Poll, Errno.ENOMEM);

        sim.Model.RaiseInterrupt(PciIrq.Msi).Should().BeTrue();
        var first = msi.WaitAsync(0).AsTask();
        var waits = new List<ulong>();
        var error = await FluentActions.Awaiting(async () =>
        {
            waits.Add(await first.WaitAsync(Guard));
            waits.Add(await msi.WaitAsync(0).AsTask().WaitAsync(Guard));
        }).Should().ThrowAsync<VfioException>();

        error.Which.Errno.Should().Be(Errno.ENOMEM);
        error.Which.Message.Should().Contain("poll").And.Contain(device.Name);
        waits.Should().BeSubsetOf([1UL]);
        await msi.Awaiting(s => s.WaitAsync(0).AsTask()).Should().ThrowAsync<VfioException>("a set whose poller stopped fails every later wait at once");
    }

    [Fact]
    public async Task AContinuationRunsOnThePoolByDefaultAndInlineOnThePollerWhenAskedFor()
    {
        var (sim, device) = Registered();
        using var open = device.Open();
        using var msi = device.EnableInterrupts(PciIrq.Msi);

        async Task<string?> ThreadAfterWait()
        {
            await msi.WaitAsync(0).ConfigureAwait(false);
            return Thread.CurrentThread.Name;
        }

        msi.RunContinuationsInline.Should().BeFalse("the default queues continuations to the thread pool");
        var pooled = ThreadAfterWait();
        sim.Model.RaiseInterrupt(PciIrq.Msi).Should().BeTrue();
        (await pooled.WaitAsync(Guard)).Should().NotStartWith("vfio irq");

        msi.RunContinuationsInline = true;
        var inline = ThreadAfterWait();
        sim.Model.RaiseInterrupt(PciIrq.Msi).Should().BeTrue();
        (await inline.WaitAsync(Guard)).Should().StartWith("vfio irq", "the continuation ran on the set's interrupt thread");
    }

    [Fact]
    public async Task AnInlineHandlerRearmsItsWaitFromInsideTheContinuationAndCountsEveryInterrupt()
    {
        var (sim, device) = Registered();
        using var open = device.Open();
        using var msi = device.EnableInterrupts(PciIrq.Msi);
        msi.RunContinuationsInline = true;
        const int Interrupts = 2000;

        async Task<ulong> Handler()
        {
            ulong seen = 0;
            while (seen < Interrupts)
            {
                seen += await msi.WaitAsync(0).ConfigureAwait(false);
            }
            return seen;
        }

        var handler = Handler();
        for (int i = 0; i < Interrupts; i++)
        {
            sim.Model.RaiseInterrupt(PciIrq.Msi).Should().BeTrue();
        }

        (await handler.WaitAsync(Guard)).Should().Be(Interrupts, "eventfds coalesce, but every signal is counted once");
    }

    [Fact]
    public async Task InterruptsCancellationsAndDisposeRacingEachOtherEndEveryWait()
    {
        // Disposing fails every pending wait in one sweep while the interrupts are delivered from
        // vector 0 up and the tokens cancelled from the top down: the three cross inside the sweep.
        const int Vectors = 256;
        var (sim, device) = Registered(msix: Vectors);
        using var open = device.Open();
        using var race = new Race(seed: 1002, Guard, 400, 30_000, 400);
        var cancels = new CancellationTokenSource[Vectors];
        var waits = new Task<ulong>[Vectors];
        int fired = 0;
        int cancelled = 0;
        int disposed = 0;

        for (int round = 0; round < 60; round++)
        {
            var msix = device.EnableInterrupts(PciIrq.Msix, count: Vectors);
            msix.RunContinuationsInline = round % 2 == 1;
            ArmWaits(msix, cancels, waits);
            var any = msix.WaitAnyAsync().AsTask();

            race.Round(
                () => RaiseEach(sim, Vectors),
                () => CancelFromTheTop(cancels),
                msix.Dispose);

            foreach (var wait in waits)
            {
                try
                {
                    // More than 1 when a raise of the round before, made while its set was going, stayed pending in the device.
                    (await wait.WaitAsync(Guard)).Should().BePositive();
                    fired++;
                }
                catch (OperationCanceledException)
                {
                    cancelled++;
                }
                catch (ObjectDisposedException)
                {
                    disposed++;
                }
            }
            try
            {
                (await any.WaitAsync(Guard)).Should().BeInRange(0, Vectors - 1, "an interrupt whose own wait was cancelled goes to the any-wait");
            }
            catch (ObjectDisposedException)
            {
            }
            msix.IsLive.Should().BeFalse();
            foreach (var cancel in cancels)
            {
                cancel.Dispose();
            }
        }

        (fired + cancelled + disposed).Should().Be(60 * Vectors, "every wait ended: fired, cancelled or disposed");
        disposed.Should().BePositive("a set disposed at the start of a round fails the waits nothing else ended");
        Kernel.EventFdCount.Should().Be(2, "only the REQ notifier's eventfds are left");
    }

    [Fact]
    public async Task DisposingASetWhileItsWaitsAreCancelledEndsEveryWait()
    {
        // Disposing disables the vectors in the device and fails the pending waits in one sweep from
        // vector 0 up. The tokens are cancelled from the top down as soon as the set stops being live,
        // so the cancellations run into the sweep.
        const int Vectors = 2048;
        var (_, device) = Registered(msix: Vectors);
        using var open = device.Open();
        using var race = new Race(seed: 1003, Guard, 2_000, 2_000);
        var cancels = new CancellationTokenSource[Vectors];
        var waits = new Task<ulong>[Vectors];
        int cancelled = 0;
        int disposed = 0;

        const int Rounds = 5;
        for (int round = 0; round < Rounds; round++)
        {
            var msix = device.EnableInterrupts(PciIrq.Msix, count: Vectors);
            ArmWaits(msix, cancels, waits);

            race.Round(
                () =>
                {
                    var spin = default(SpinWait);
                    while (msix.IsLive)
                    {
                        spin.SpinOnce();
                    }
                    CancelFromTheTop(cancels);
                },
                msix.Dispose);

            foreach (var wait in waits)
            {
                var error = await wait.Invoking(t => t.WaitAsync(Guard)).Should().ThrowAsync<Exception>();
                if (error.Which is OperationCanceledException)
                {
                    cancelled++;
                }
                else
                {
                    error.Which.Should().BeOfType<ObjectDisposedException>();
                    disposed++;
                }
            }
            foreach (var cancel in cancels)
            {
                cancel.Dispose();
            }
        }

        (cancelled + disposed).Should().Be(Rounds * Vectors, "every wait ended, cancelled or disposed (which of the two wins depends on the machine's timing)");
    }

    /// <summary>A wait on every vector of <paramref name="set"/>, each with its own token.</summary>
    private static void ArmWaits(InterruptSet set, CancellationTokenSource[] cancels, Task<ulong>[] waits)
    {
        for (int v = 0; v < waits.Length; v++)
        {
            cancels[v] = new CancellationTokenSource();
            waits[v] = set.WaitAsync(v, cancels[v].Token).AsTask();
        }
    }

    /// <summary>Raises MSI-X vectors 0 to <paramref name="count"/> - 1, in that order.</summary>
    private static void RaiseEach(SimulatedPciDevice sim, int count)
    {
        for (int v = 0; v < count; v++)
        {
            sim.Model.RaiseInterrupt(PciIrq.Msix, v);
        }
    }

    /// <summary>Cancels the tokens from the last vector's down, against the poller's order.</summary>
    private static void CancelFromTheTop(CancellationTokenSource[] cancels)
    {
        for (int v = cancels.Length - 1; v >= 0; v--)
        {
            cancels[v].Cancel();
        }
    }
}
