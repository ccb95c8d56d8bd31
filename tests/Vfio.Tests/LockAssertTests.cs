namespace Vfio.Tests;

/// <summary>
/// The lock rules check themselves in the test runs: a method that requires a lock and runs without
/// it fails its Debug.Assert, and that failure fails the test (<see cref="DebugAsserts"/>).
/// </summary>
public class LockAssertTests
{
    [Fact]
    public void HeldFailsWhenTheCallingThreadDoesNotHoldTheLock()
    {
        var gate = new Lock();
        using (DebugAsserts.Expect())
        {
            var check = () => LockAssert.Held(gate);

            check.Should().Throw<DebugAssertFailedException>()
                .WithMessage("*HeldFailsWhenTheCallingThreadDoesNotHoldTheLock requires gate to be held by the calling thread*");
        }
    }

    [Fact]
    public void HeldPassesUnderTheLockAndNotHeldFailsThere()
    {
        var gate = new Lock();
        lock (gate)
        {
            LockAssert.Held(gate);
            using (DebugAsserts.Expect())
            {
                var check = () => LockAssert.NotHeld(gate);

                check.Should().Throw<DebugAssertFailedException>().WithMessage("*must not run under gate*");
            }
        }
        LockAssert.NotHeld(gate);
    }

    [Fact]
    public async Task AnotherThreadHoldingTheLockDoesNotCount()
    {
        var gate = new Lock();
        using var held = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        var holder = Task.Run(() =>
        {
            lock (gate)
            {
                held.Set();
                release.Wait();
            }
        });
        held.Wait();
        using (DebugAsserts.Expect())
        {
            var check = () => LockAssert.Held(gate);

            check.Should().Throw<DebugAssertFailedException>();
        }
        release.Set();
        await holder;
    }

    [Fact]
    public void ADeviceSetsOpenCountChangesOnlyUnderTheSetsLock()
    {
        var set = new DeviceSet("pci-slot:0000:00:03");
        using (DebugAsserts.Expect())
        {
            var unlocked = () => set.OpenCount = 1;

            unlocked.Should().Throw<DebugAssertFailedException>().WithMessage("*requires Lock to be held*");
        }
        lock (set.Lock)
        {
            set.OpenCount = 1;
        }
        set.OpenCount.Should().Be(1);
    }

    [Fact]
    public void ASimulatedKernelLockedMethodRunsOnlyUnderTheKernelLock()
    {
        var kernel = new Vfio.Testing.SimulatedKernel();
        using (DebugAsserts.Expect())
        {
            var unlocked = () => kernel.FindDeviceLocked("0000:00:03.0");

            unlocked.Should().Throw<DebugAssertFailedException>().WithMessage("*FindDeviceLocked requires the simulated kernel's lock*");
        }
        using (kernel.Enter())
        {
            kernel.FindDeviceLocked("0000:00:03.0").Should().BeNull();
        }
    }
}
