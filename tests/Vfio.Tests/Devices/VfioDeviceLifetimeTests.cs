namespace Vfio.Tests.Devices;

/// <summary>Init, register, references, unregister with its completion, uninit: no kernel I/O involved.</summary>
public abstract class VfioDeviceLifetimeTests(VfioBackend backend) : KernelTest(backend)
{
    /// <summary>The tests on the legacy backend (a kernel that behaves as Linux 6.1).</summary>
    public sealed class Legacy() : VfioDeviceLifetimeTests(VfioBackend.Legacy);

    /// <summary>The tests on the iommufd backend (a kernel that behaves as Linux 7.2).</summary>
    public sealed class Iommufd() : VfioDeviceLifetimeTests(VfioBackend.Iommufd);


    [Fact]
    public void ConstructionPublishesNothing()
    {
        var registry = NewRegistry();
        using var device = new RecordingPciDevice(TestContexts.Pci(registry));

        device.State.Should().Be(VfioDeviceState.Initialized);
        device.ReferenceCount.Should().Be(0);
        registry.Devices.Should().BeEmpty();
        registry.TryFind<RecordingPciDevice>("0000:00:03.0", out _).Should().BeFalse();
        device.TryGet(out _).Should().BeFalse();
        device.Invoking(d => d.Open()).Should().Throw<InvalidOperationException>().WithMessage("*not registered*");
    }

    [Fact]
    public async Task RegisterIsTheLastStepAndStartsTheCountAtOne()
    {
        var registry = NewRegistry();
        var device = new RecordingPciDevice(TestContexts.Pci(registry));

        registry.Register(device);

        device.State.Should().Be(VfioDeviceState.Registered);
        device.ReferenceCount.Should().Be(1);
        registry.TryFind<RecordingPciDevice>("0000:00:03.0", out var found).Should().BeTrue();
        found.Should().BeSameAs(device);
        device.TryGet(out var reference).Should().BeTrue();
        device.ReferenceCount.Should().Be(2);
        reference.Dispose();
        device.ReferenceCount.Should().Be(1);

        await registry.UnregisterAsync(device);
        device.Dispose();
    }

    [Fact]
    public async Task UnregisterWaitsForTheLastReference()
    {
        var registry = NewRegistry();
        var device = new RecordingPciDevice(TestContexts.Pci(registry));
        registry.Register(device);
        device.TryGet(out var reference).Should().BeTrue();
        var asked = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        device.WhenReleaseRequested = _ => asked.TrySetResult();

        var unregister = registry.UnregisterAsync(device);
        await asked.Task.WaitAsync(Guard);

        unregister.IsCompleted.Should().BeFalse("a reference is still held");
        device.State.Should().Be(VfioDeviceState.Unregistering);
        registry.Devices.Should().NotContain(device);

        reference.Dispose();
        await unregister.WaitAsync(Guard);

        device.State.Should().Be(VfioDeviceState.Unregistered);
        device.ReferenceCount.Should().Be(0);
        device.Dispose();
        device.State.Should().Be(VfioDeviceState.Disposed);
    }

    [Fact]
    public async Task UnregisterWithNoReferenceHeldCompletesWithoutAsking()
    {
        var registry = NewRegistry(TimeSpan.FromHours(1));
        var device = new RecordingPciDevice(TestContexts.Pci(registry));
        registry.Register(device);

        await registry.UnregisterAsync(device).WaitAsync(Guard);

        device.Requests.Should().BeEmpty();
        device.State.Should().Be(VfioDeviceState.Unregistered);
    }

    [Fact]
    public async Task ReleaseIsRequestedRepeatedlyWithAGrowingCount()
    {
        var registry = NewRegistry(TimeSpan.FromMilliseconds(5));
        var device = new RecordingPciDevice(TestContexts.Pci(registry));
        registry.Register(device);
        device.TryGet(out var reference).Should().BeTrue();
        var thirdRequest = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        device.WhenReleaseRequested = count =>
        {
            if (count == 3)
            {
                thirdRequest.TrySetResult();
            }
        };

        var unregister = registry.UnregisterAsync(device);
        await thirdRequest.Task.WaitAsync(Guard);
        reference.Dispose();
        await unregister.WaitAsync(Guard);

        device.Requests.Should().StartWith([0, 1, 2, 3]).And.BeInAscendingOrder().And.OnlyHaveUniqueItems();
    }

    [Fact]
    public async Task TryGetFailsOnceUnregisteringBegan()
    {
        var registry = NewRegistry();
        var device = new RecordingPciDevice(TestContexts.Pci(registry));
        registry.Register(device);
        device.TryGet(out var held).Should().BeTrue();
        var asked = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        device.WhenReleaseRequested = _ => asked.TrySetResult();

        var unregister = registry.UnregisterAsync(device);
        await asked.Task.WaitAsync(Guard);

        device.ReferenceCount.Should().Be(1, "the holder's reference still counts");
        device.TryGet(out var late).Should().BeFalse();
        late.IsHeld.Should().BeFalse();
        device.Invoking(d => d.Open()).Should().Throw<InvalidOperationException>();

        held.Dispose();
        await unregister.WaitAsync(Guard);
        device.TryGet(out _).Should().BeFalse();
    }

    [Fact]
    public async Task CancellingUnregisterKeepsTheDeviceRegistered()
    {
        var registry = NewRegistry();
        var device = new RecordingPciDevice(TestContexts.Pci(registry));
        registry.Register(device);
        device.TryGet(out var held).Should().BeTrue();
        using var cancel = new CancellationTokenSource();
        device.WhenReleaseRequested = _ => cancel.Cancel();

        var act = () => registry.UnregisterAsync(device, cancel.Token);

        await act.Should().ThrowAsync<OperationCanceledException>();
        device.State.Should().Be(VfioDeviceState.Registered);
        device.ReferenceCount.Should().Be(2, "the registration reference is taken back and the holder's remains");
        registry.Devices.Should().Contain(device);
        device.TryGet(out var again).Should().BeTrue();
        again.Dispose();

        held.Dispose();
        device.WhenReleaseRequested = null;
        await registry.UnregisterAsync(device).WaitAsync(Guard);
        device.State.Should().Be(VfioDeviceState.Unregistered);
    }

    [Fact]
    public async Task ManyThreadsTakingAndReleasingReferencesWhileUnregisterRuns()
    {
        var registry = NewRegistry(TimeSpan.FromMilliseconds(1));
        var device = new RecordingPciDevice(TestContexts.Pci(registry));
        registry.Register(device);
        const int Threads = 8;
        const int MaxIterations = 200_000;
        var started = new CountdownEvent(Threads);
        var errors = new System.Collections.Concurrent.ConcurrentQueue<Exception>();
        Task<int>? unregister = null;
        int acquiredAfterCompletion = 0;

        var workers = Enumerable.Range(0, Threads).Select(_ => Task.Factory.StartNew(() =>
        {
            started.Signal();
            int taken = 0;
            try
            {
                for (int i = 0; i < MaxIterations; i++)
                {
                    bool done = unregister?.IsCompleted == true;
                    if (device.TryGet(out var reference))
                    {
                        if (done)
                        {
                            Interlocked.Increment(ref acquiredAfterCompletion);
                        }
                        taken++;
                        reference.Dispose();
                    }
                    else if (done)
                    {
                        break;
                    }
                }
            }
            catch (Exception e)
            {
                errors.Enqueue(e);
            }
            return taken;
        }, TaskCreationOptions.LongRunning)).ToArray();

        started.Wait(Guard).Should().BeTrue();
        unregister = registry.UnregisterAsync(device).ContinueWith(t => { t.GetAwaiter().GetResult(); return 0; }, TaskScheduler.Default);
        await unregister.WaitAsync(Guard);
        int[] taken = await Task.WhenAll(workers).WaitAsync(Guard);

        errors.Should().BeEmpty();
        acquiredAfterCompletion.Should().Be(0);
        device.ReferenceCount.Should().Be(0);
        device.State.Should().Be(VfioDeviceState.Unregistered);
        taken.Sum().Should().BeGreaterThan(0);
        device.TryGet(out _).Should().BeFalse();
    }

    [Fact]
    public void DisposeUndoesInitWhenRegisterWasNeverReached()
    {
        var registry = NewRegistry();
        var device = new RecordingPciDevice(TestContexts.Pci(registry, "0000:00:04.0"));
        registry.DeviceSets.TryFind("pci-slot:0000:00:04", out _).Should().BeTrue();

        device.Dispose();

        device.Disposed.Should().BeTrue();
        device.State.Should().Be(VfioDeviceState.Disposed);
        registry.DeviceSets.TryFind("pci-slot:0000:00:04", out _).Should().BeFalse("the last member left the set");
        registry.Invoking(r => r.Register(device)).Should().Throw<InvalidOperationException>();
    }

    [Fact]
    public async Task DisposeUndoesInitAfterAFailedRegister()
    {
        var registry = NewRegistry();
        var first = new RecordingPciDevice(TestContexts.Pci(registry));
        registry.Register(first);
        var twin = new RecordingPciDevice(TestContexts.Pci(registry));

        registry.Invoking(r => r.Register(twin)).Should().Throw<InvalidOperationException>().WithMessage("*already registered*");

        twin.State.Should().Be(VfioDeviceState.Initialized);
        twin.ReferenceCount.Should().Be(0);
        twin.Dispose();
        twin.Disposed.Should().BeTrue();
        first.Set.MemberCount.Should().Be(1);

        await registry.UnregisterAsync(first);
        first.Dispose();
    }

    [Fact]
    public async Task ARegisteredDeviceCannotBeDisposed()
    {
        var registry = NewRegistry();
        var device = new RecordingPciDevice(TestContexts.Pci(registry));
        registry.Register(device);

        device.Invoking(d => d.Dispose()).Should().Throw<InvalidOperationException>().WithMessage("*unregister*");

        await registry.UnregisterAsync(device);
        device.Dispose();
    }

    [Fact]
    public void ADeviceOfAnotherRegistryIsRefused()
    {
        var mine = NewRegistry();
        var theirs = NewRegistry();
        using var device = new RecordingPciDevice(TestContexts.Pci(theirs));

        mine.Invoking(r => r.Register(device)).Should().Throw<InvalidOperationException>().WithMessage("*another registry*");
    }

    [Fact]
    public void FunctionsOfOneSlotShareADeviceSet()
    {
        var registry = NewRegistry();
        using var f0 = new RecordingPciDevice(TestContexts.Pci(registry, "0000:00:04.0"));
        using var f1 = new RecordingPciDevice(TestContexts.Pci(registry, "0000:00:04.1"));
        using var other = new RecordingPciDevice(TestContexts.Pci(registry, "0000:00:05.0"));

        f0.Set.Should().BeSameAs(f1.Set);
        f0.Set.MemberCount.Should().Be(2);
        other.Set.Should().NotBeSameAs(f0.Set);
    }

    [Fact]
    public void ADisposedReferenceReleasesOnce()
    {
        var registry = NewRegistry();
        var device = new RecordingPciDevice(TestContexts.Pci(registry));
        registry.Register(device);
        device.TryGet(out var reference).Should().BeTrue();

        reference.Dispose();
        reference.Dispose();

        device.ReferenceCount.Should().Be(1);
        reference.IsHeld.Should().BeFalse();
    }
}
