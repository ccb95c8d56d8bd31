using Vfio.Testing;

namespace Vfio.Tests.Devices;

/// <summary>Device sets: the functions of a slot share one lock and open count; hooks run under the lock.</summary>
public abstract class DeviceSetTests(VfioBackend backend) : KernelTest(backend)
{
    /// <summary>The tests on the legacy backend (a kernel that behaves as Linux 6.1).</summary>
    public sealed class Legacy() : DeviceSetTests(VfioBackend.Legacy);

    /// <summary>The tests on the iommufd backend (a kernel that behaves as Linux 7.2).</summary>
    public sealed class Iommufd() : DeviceSetTests(VfioBackend.Iommufd);

    [Fact]
    public void FunctionsOfOneSlotShareTheSetAndItsOpenCount()
    {
        AddPci("0000:00:04.0", group: 7);
        AddPci("0000:00:04.1", group: 8);
        var f0 = RegisterPci("0000:00:04.0");
        var f1 = RegisterPci("0000:00:04.1");

        f0.Set.Should().BeSameAs(f1.Set);
        f0.Set.Id.Should().Be("pci-slot:0000:00:04");
        using (f0.Open())
        using (f1.Open())
        using (f1.Open())
        {
            f0.Set.OpenCount.Should().Be(3);
        }
        f0.Set.OpenCount.Should().Be(0);
    }

    [Fact]
    public void TheFirstOpenHookRunsUnderTheSetLock()
    {
        AddPci("0000:00:04.0", group: 7);
        var f0 = RegisterPci("0000:00:04.0");
        bool held = false;
        bool othersLockedOut = false;
        f0.DuringFirstOpen = () =>
        {
            held = f0.Set.Lock.IsHeldByCurrentThread;
            var other = new Thread(() =>
            {
                if (f0.Set.Lock.TryEnter())
                {
                    f0.Set.Lock.Exit();
                    return;
                }
                othersLockedOut = true;
            });
            other.Start();
            other.Join(Guard).Should().BeTrue();
        };

        using (f0.Open())
        {
            held.Should().BeTrue();
            othersLockedOut.Should().BeTrue();
        }
    }

    [Fact]
    public async Task HooksRunOnceUnderConcurrentOpensOfTheSlotsFunctions()
    {
        AddPci("0000:00:04.0", group: 7);
        AddPci("0000:00:04.1", group: 7);
        var functions = new[] { RegisterPci("0000:00:04.0"), RegisterPci("0000:00:04.1") };
        const int Threads = 8;
        const int Rounds = 25;
        int inHook = 0;
        int overlaps = 0;
        foreach (var f in functions)
        {
            f.DuringFirstOpen = () =>
            {
                if (Interlocked.Increment(ref inHook) != 1)
                {
                    Interlocked.Increment(ref overlaps);
                }
                Thread.Yield();
                Interlocked.Decrement(ref inHook);
            };
        }
        using var opened = new Barrier(Threads);
        using var closed = new Barrier(Threads);
        var errors = new System.Collections.Concurrent.ConcurrentQueue<Exception>();

        var workers = Enumerable.Range(0, Threads).Select(t => Task.Factory.StartNew(() =>
        {
            try
            {
                for (int round = 0; round < Rounds; round++)
                {
                    var reference = functions[t % 2].Open();
                    opened.SignalAndWait(Guard).Should().BeTrue();
                    reference.Dispose();
                    closed.SignalAndWait(Guard).Should().BeTrue();
                }
            }
            catch (Exception e)
            {
                errors.Enqueue(e);
                opened.RemoveParticipant();
                closed.RemoveParticipant();
            }
        }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default)).ToArray();

        await Task.WhenAll(workers).WaitAsync(Guard);
        errors.Should().BeEmpty();
        overlaps.Should().Be(0, "first-open hooks of one set never run at once");
        foreach (var f in functions)
        {
            f.FirstOpens.Should().Be(Rounds, "one first open per round, however many threads opened");
            f.LastCloses.Should().Be(Rounds);
            f.IsOpen.Should().BeFalse();
        }
        Kernel.OpenFileCountTotal.Should().Be(0);
        Kernel.FindDevice("0000:00:04.0")!.IsOpen.Should().BeFalse();
    }
}
