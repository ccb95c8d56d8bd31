using System.Collections.Concurrent;
using Vfio.Interop;
using Vfio.Testing;
using static Vfio.Interop.Interop;

namespace Vfio.Tests.Interrupts;

/// <summary>
/// The registry's one thread for the library's notifiers, against the simulated kernel's eventfds.
/// Each notifier's set is a detached set (it only names the notifier: in logs, and for the failures a
/// test arms on its poller); the eventfds polled are the test's own.
/// </summary>
public sealed class NotifierPollerTests : KernelTest, IAsyncLifetime
{
    private readonly List<IDisposable> _owned = [];

    private NotifierPoller NewPoller(Action<Action>? queue = null)
    {
        var poller = new NotifierPoller(Kernel, Logs.CreateLogger("notifiers"), queue);
        _owned.Add(poller);
        return poller;
    }

    private InterruptSet NewSet()
    {
        var set = InterruptSet.Detached(Kernel, 1);
        _owned.Add(set);
        return set;
    }

    private SafeFd NewEventFd()
    {
        Kernel.EventFd(0, Flags.EFD_NONBLOCK, out var fd).Should().Be(0);
        _owned.Add(fd); // closed after the test unless a test unregistered it (a second close does nothing)
        return fd;
    }

    private void Signal(SafeFd fd, ulong count = 1)
    {
        Span<byte> value = stackalloc byte[8];
        BitConverter.TryWriteBytes(value, count);
        Kernel.Write(fd, value).Should().Be(8);
    }

    /// <summary>A notifier whose notifications complete <see cref="Fired"/> (the first) and are counted.</summary>
    private sealed class Notifier(InterruptSet set, SafeFd fd)
    {
        private long _count;

        public InterruptSet Set { get; } = set;

        public SafeFd EventFd { get; } = fd;

        public TaskCompletionSource<(ulong Count, Thread Thread)> Fired { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public long Calls => Interlocked.Read(ref _count);

        public NotifierPoller.Entry? Entry { get; set; }

        public void Notify(ulong count)
        {
            Interlocked.Increment(ref _count);
            Fired.TrySetResult((count, Thread.CurrentThread));
        }
    }

    private Notifier Register(NotifierPoller poller)
    {
        var notifier = new Notifier(NewSet(), NewEventFd());
        notifier.Entry = poller.Register(notifier.Set, notifier.EventFd, notifier.Notify);
        return notifier;
    }

    [Fact]
    public async Task ANotificationRunsOnTheThreadPoolWithTheEventFdsCounter()
    {
        var poller = NewPoller();
        var notifier = Register(poller);

        Signal(notifier.EventFd, 3);

        var (count, thread) = await notifier.Fired.Task.WaitAsync(Guard);
        count.Should().Be(3);
        thread.IsThreadPoolThread.Should().BeTrue("a notification may close the device, which the poller thread must never do");
        thread.Should().NotBeSameAs(poller.PollingThread);
    }

    [Fact]
    public async Task OneThreadStartedWithTheFirstNotifierPollsThemAll()
    {
        var poller = NewPoller();
        poller.PollingThread.Should().BeNull("nothing is polled before the first notifier");

        var first = Register(poller);
        var thread = poller.PollingThread;
        var second = Register(poller);
        var third = Register(poller);

        thread.Should().NotBeNull();
        poller.PollingThread.Should().BeSameAs(thread);
        poller.Count.Should().Be(3);
        Signal(third.EventFd);
        Signal(first.EventFd);
        Signal(second.EventFd);
        await Task.WhenAll(first.Fired.Task, second.Fired.Task, third.Fired.Task).WaitAsync(Guard);
    }

    [Fact]
    public async Task AnUnregisteredEventFdIsClosedAndItsNumberReusedWithoutThePollerNoticing()
    {
        var poller = NewPoller();
        var stays = Register(poller);
        var leaves = Register(poller);
        int number = leaves.EventFd.Value;

        poller.Unregister(leaves.Entry!);

        leaves.EventFd.IsClosed.Should().BeTrue("unregistering closes the eventfd once the poller no longer polls it");
        using var reused = NewEventFd();
        reused.Value.Should().Be(number, "the simulated kernel hands out the lowest free number, as Linux does");
        Signal(reused);
        Signal(stays.EventFd);
        (await stays.Fired.Task.WaitAsync(Guard)).Count.Should().Be(1);
        leaves.Calls.Should().Be(0, "the poller never read the reused number for the notifier that left");
        Logs.Named("InterruptPollerFailed").Should().BeEmpty();
        poller.Count.Should().Be(1);
    }

    [Fact]
    public async Task ANotificationQueuedBeforeUnregisterButRunAfterItNeverReachesTheNotifier()
    {
        var queued = new BlockingCollection<Action>();
        var poller = NewPoller(queued.Add);
        var notifier = Register(poller);

        Signal(notifier.EventFd);
        queued.TryTake(out var delivery, Guard).Should().BeTrue("the poller read the signal and queued its notification");
        poller.Unregister(notifier.Entry!);
        delivery!();

        notifier.Calls.Should().Be(0);
        await Task.Yield();
    }

    [Fact]
    public async Task ANotificationCanUnregisterItsOwnNotifier()
    {
        var poller = NewPoller();
        var notifier = new Notifier(NewSet(), NewEventFd());
        var unregistered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        notifier.Entry = poller.Register(notifier.Set, notifier.EventFd, _ =>
        {
            poller.Unregister(notifier.Entry!); // as a REQ notification that closes the device
            unregistered.TrySetResult();
        });

        Signal(notifier.EventFd);

        await unregistered.Task.WaitAsync(Guard);
        notifier.EventFd.IsClosed.Should().BeTrue();
        poller.Count.Should().Be(0);
    }

    [Fact]
    public async Task RegistrationsAndUnregistrationsRacingWithSignalsLeaveNothingAndNeverPollAClosedEventFd()
    {
        var poller = NewPoller();
        var stays = Register(poller);
        var sets = Enumerable.Range(0, 4).Select(_ => NewSet()).ToArray();

        await Task.WhenAll(sets.Select(set => Task.Run(() =>
        {
            for (int i = 0; i < 100; i++)
            {
                var fd = NewEventFd();
                var entry = poller.Register(set, fd, _ => { });
                Signal(fd);
                poller.Unregister(entry);
                fd.IsClosed.Should().BeTrue();
            }
        }))).WaitAsync(Guard);

        Signal(stays.EventFd);
        await stays.Fired.Task.WaitAsync(Guard);
        poller.Count.Should().Be(1);
        Logs.Named("InterruptPollerFailed").Should().BeEmpty("no closed or reused eventfd was polled or read");
    }

    [Fact]
    public async Task DisposingWithNotifiersLeftStopsTheThreadAndLeavesTheirEventFdsToUnregister()
    {
        var poller = NewPoller();
        var left = Register(poller);
        var thread = poller.PollingThread!;

        poller.Dispose();

        thread.IsAlive.Should().BeFalse("disposal joins the thread");
        poller.PollingThread.Should().BeNull();
        left.EventFd.IsClosed.Should().BeFalse("the eventfd is still its notifier's");
        Signal(left.EventFd);
        poller.Unregister(left.Entry!);
        left.EventFd.IsClosed.Should().BeTrue();
        left.Calls.Should().Be(0);
        poller.Invoking(p => p.Register(left.Set, NewEventFd(), _ => { })).Should().Throw<ObjectDisposedException>();
        await Task.Yield();
    }

    [Fact]
    public async Task AFailedReadDropsThatNotifierAloneAndIsLoggedNamingItsSet()
    {
        var poller = NewPoller();
        var failing = Register(poller);
        var other = Register(poller);
        Kernel.FailNextPollerCall(failing.Set, SimulatedCall.Read, Errno.EIO);

        Signal(failing.EventFd);
        Signal(other.EventFd);

        await other.Fired.Task.WaitAsync(Guard);
        failing.Calls.Should().Be(0);
        poller.Count.Should().Be(1, "the failed notifier is no longer polled");
        var failure = Logs.Named("InterruptPollerFailed").Should().ContainSingle().Subject;
        failure.Message.Should().Contain(failing.Set.ToString());
        failure.Exception.Should().BeOfType<VfioException>().Which.Errno.Should().Be(Errno.EIO);
        poller.Unregister(failing.Entry!);
        failing.EventFd.IsClosed.Should().BeTrue();
    }

    [Fact]
    public async Task AFailedPollDropsEveryNotifierEndsTheThreadAndTheNextRegistrationStartsAnother()
    {
        var poller = NewPoller();
        var first = Register(poller);
        var second = Register(poller);
        var thread = poller.PollingThread!;
        Kernel.FailNextPollerCall(first.Set, SimulatedCall.Poll, Errno.ENOMEM);

        Signal(second.EventFd); // ends the poll under way, if it had begun; the next one fails
        thread.Join(Guard).Should().BeTrue("the poller ends when its poll fails");

        Logs.Named("InterruptPollerFailed").Select(e => e.Message).Should().SatisfyRespectively(
            m => m.Should().Contain(first.Set.ToString()),
            m => m.Should().Contain(second.Set.ToString()));
        poller.Count.Should().Be(0);
        var third = Register(poller);
        poller.PollingThread.Should().NotBeNull().And.NotBeSameAs(thread);
        Signal(third.EventFd);
        await third.Fired.Task.WaitAsync(Guard);
        poller.Unregister(first.Entry!);
        poller.Unregister(second.Entry!);
    }

    [Fact]
    public async Task AnIdlePollerHoldsNoDescriptorAndWakesForTheNextRegistration()
    {
        var poller = NewPoller();
        var notifier = new Notifier(NewSet(), NewEventFd());
        int eventFds = Kernel.EventFdCount;
        notifier.Entry = poller.Register(notifier.Set, notifier.EventFd, notifier.Notify);
        Kernel.EventFdCount.Should().Be(eventFds + 1, "the poller's wake-up");

        poller.Unregister(notifier.Entry!);

        Kernel.EventFdCount.Should().Be(eventFds - 1, "the notifier's eventfd is closed, and with nothing to poll the wake-up too");
        var thread = poller.PollingThread;
        var next = Register(poller);
        poller.PollingThread.Should().BeSameAs(thread, "the idle thread serves the next notifier");
        Signal(next.EventFd);
        await next.Fired.Task.WaitAsync(Guard);
    }

    [Fact]
    public async Task AFailedWakeUpIsCoveredByThePollTimeout()
    {
        var poller = NewPoller();
        var stays = Register(poller);
        var leaves = Register(poller);
        Kernel.FailNext(SimulatedCall.Write, Errno.EIO);

        await Task.Run(() => poller.Unregister(leaves.Entry!)).WaitAsync(Guard);

        leaves.EventFd.IsClosed.Should().BeTrue();
        Logs.Named("InterruptWakeFailed").Should().ContainSingle().Which.Message.Should().Contain(leaves.Set.ToString());
        Signal(stays.EventFd);
        await stays.Fired.Task.WaitAsync(Guard);
    }

    // The pollers and sets first, then the base's checks (nothing left open among them).
    async Task IAsyncLifetime.DisposeAsync()
    {
        foreach (var owned in _owned)
        {
            owned.Dispose();
        }
        await base.DisposeAsync();
    }
}
