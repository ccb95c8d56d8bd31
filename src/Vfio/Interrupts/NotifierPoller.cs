using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;
using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio;

/// <summary>
/// The one thread of a registry that polls the eventfds of the library's own notifiers (REQ and ERR,
/// see <see cref="InterruptSet.Notifier"/>) and queues each notification to the thread pool: opening
/// and closing a device then starts and joins no thread, and a process with many devices open has one
/// such thread, not one per device. Started with the first notifier, stopped when the registry is disposed;
/// while it has nothing to poll it waits on its lock with its wake-up eventfd closed, so a registry
/// with no device open holds no descriptor.
/// </summary>
/// <remarks>
/// <para>
/// Each pass the thread takes a fresh snapshot of the entries under the lock and polls their eventfds
/// and its wake-up eventfd. <see cref="Unregister"/> removes an entry, wakes the thread and waits until
/// it has taken a snapshot without the entry: from then on it never polls nor reads that eventfd, which
/// can then be closed (its number may be reused at once). The wait is bounded (<see cref="InterruptSet.StopWait"/>);
/// when it gives up, the eventfd is left for the thread to close at its next snapshot.
/// </para>
/// <para>
/// A notification runs on the thread pool, never on this thread (it may close the device), and only
/// while its entry is registered: none begins once <see cref="Unregister"/> returned. A failed wake-up
/// write is covered by the poll's timeout (<see cref="InterruptSet.StopCheckInterval"/>), after which the
/// thread takes a fresh snapshot anyway. The thread never takes the process down: a failed read or an
/// error on one eventfd drops that entry, a failed poll drops every entry and ends the thread (the next
/// registration starts another), each logged as the set's own poller failure.
/// </para>
/// </remarks>
/// <param name="kernel">The kernel whose eventfds it polls.</param>
/// <param name="logger">Where failures go.</param>
/// <param name="queue">Runs a notification; the thread pool when null (tests hold notifications back with it).</param>
internal sealed class NotifierPoller(VfioKernel kernel, ILogger logger, Action<Action>? queue = null) : IDisposable
{
    private static readonly Action<Action> ThreadPoolQueue = static work => ThreadPool.UnsafeQueueUserWorkItem(static run => run(), work, preferLocal: false);

    private readonly Action<Action> _queue = queue ?? ThreadPoolQueue;

    // Guards every field below, and is the monitor the handshake waits on. Taken under a device set's
    // lock (open and close); nothing but the thread's start is done under it, no syscall and no other lock.
    private readonly object _lock = new();
    private readonly List<Entry> _entries = [];
    private readonly List<SafeFd> _orphans = []; // eventfds whose unregister gave up waiting: closed at the next snapshot
    private Thread? _thread;
    private SafeFd? _wake;
    private long _version; // bumped by every change of _entries
    private long _seen; // the version of the thread's latest snapshot
    private bool _idle; // the thread waits for a registration, polling nothing
    private bool _disposed;

    /// <summary>The number of entries polled (for tests).</summary>
    internal int Count
    {
        get
        {
            lock (_lock)
            {
                return _entries.Count;
            }
        }
    }

    /// <summary>The polling thread, while it runs (for tests).</summary>
    internal Thread? PollingThread
    {
        get
        {
            lock (_lock)
            {
                return _thread;
            }
        }
    }

    /// <summary>
    /// Polls <paramref name="eventFd"/> for <paramref name="set"/> and calls <paramref name="notify"/>
    /// on the thread pool with the counter each time it is signalled, until <see cref="Unregister"/>.
    /// The caller keeps owning the eventfd until then.
    /// </summary>
    /// <exception cref="VfioException">The wake-up eventfd could not be created.</exception>
    /// <exception cref="ObjectDisposedException">The poller was disposed (its registry was).</exception>
    public Entry Register(InterruptSet set, SafeFd eventFd, Action<ulong> notify)
    {
        var entry = new Entry(set, eventFd, notify);
        SafeFd? created = null;
        bool wake;
        try
        {
            while (true)
            {
                lock (_lock)
                {
                    ObjectDisposedException.ThrowIf(_disposed, this);
                    if (_wake is null && created is not null)
                    {
                        _wake = created;
                        created = null;
                    }
                    if (_wake is not null)
                    {
                        _entries.Add(entry);
                        entry.Registered = true;
                        _version++;
                        // A thread just started, or idle, takes its snapshot without being woken, and
                        // from now on counts as busy: an unregister waits for that snapshot.
                        wake = !StartLocked() && !_idle;
                        _idle = false;
                        Monitor.PulseAll(_lock);
                        break;
                    }
                }
                // No syscall under the lock: the wake-up is made outside it, then installed.
                VfioErrors.Check(kernel.EventFd(0, Flags.EFD_NONBLOCK, out created), "eventfd (the notifier poller's wake-up)", set.ErrorTarget);
            }
        }
        finally
        {
            created?.Dispose(); // another registration installed one first
        }
        if (wake)
        {
            Wake(set);
        }
        return entry;
    }

    /// <summary>
    /// Stops polling <paramref name="entry"/> and closes its eventfd once the thread no longer polls or
    /// reads it: at once, when the thread took a snapshot without it within <see cref="InterruptSet.StopWait"/>
    /// (or is idle or not running, or this is the thread); otherwise at its next snapshot, and the
    /// wait is logged. No notification of the entry begins after this returns. Idempotent.
    /// </summary>
    public void Unregister(Entry entry)
    {
        long version;
        Thread? thread;
        lock (_lock)
        {
            if (!entry.Registered)
            {
                return;
            }
            entry.Registered = false;
            entry.Live = false;
            _entries.Remove(entry);
            version = ++_version;
            // An idle thread polls nothing; a thread that is not this one takes a fresh snapshot.
            thread = _idle || _thread == Thread.CurrentThread ? null : _thread;
        }
        if (thread is not null)
        {
            Wake(entry.Set);
            lock (_lock)
            {
                long deadline = Environment.TickCount64 + (long)InterruptSet.StopWait.TotalMilliseconds;
                long left;
                while (_thread == thread && _seen < version && (left = deadline - Environment.TickCount64) > 0)
                {
                    Monitor.Wait(_lock, (int)left);
                }
                if (_thread == thread && _seen < version)
                {
                    _orphans.Add(entry.EventFd);
                    Log.NotifierThreadStuck(logger, entry.Set.ToString(), (long)InterruptSet.StopWait.TotalMilliseconds);
                    return;
                }
            }
        }
        entry.EventFd.Dispose();
    }

    /// <summary>
    /// Stops the thread and waits for it (at most <see cref="InterruptSet.StopWait"/>; the thread closes
    /// the wake-up eventfd as it ends). Entries left are no longer polled and get no further
    /// notification; their eventfds stay their sets' to close through <see cref="Unregister"/>.
    /// </summary>
    public void Dispose()
    {
        Thread? thread;
        List<SafeFd> closing = [];
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }
            _disposed = true;
            _version++;
            foreach (var entry in _entries)
            {
                entry.Live = false;
            }
            _entries.Clear();
            thread = _thread;
            if (thread is null)
            {
                TakeClosingLocked(closing);
            }
            Monitor.PulseAll(_lock);
        }
        Close(closing);
        if (thread is null)
        {
            return;
        }
        Wake(null);
        if (thread != Thread.CurrentThread && !thread.Join(InterruptSet.StopWait))
        {
            Log.NotifierThreadStuck(logger, "every notifier (disposing the registry)", (long)InterruptSet.StopWait.TotalMilliseconds);
        }
    }

    /// <summary>Starts the thread unless it runs; false when it was running already.</summary>
    private bool StartLocked()
    {
        if (_thread is not null)
        {
            return false;
        }
        _thread = new Thread(Run) { IsBackground = true, Name = "vfio notifiers" };
        _thread.Start();
        return true;
    }

    private void Run()
    {
        List<SafeFd> closing = [];
        try
        {
            PollUntilDisposed();
        }
        finally
        {
            InterruptSet.EnterPollerCall(null);
            lock (_lock)
            {
                _thread = null;
                _idle = false;
                if (_disposed || _entries.Count == 0)
                {
                    TakeClosingLocked(closing);
                }
                else
                {
                    StartLocked(); // registered after the failed poll's snapshot: a fresh thread polls them
                }
                Monitor.PulseAll(_lock);
            }
            Close(closing);
            InterruptSet.LeavePollerCall();
        }
    }

    private void PollUntilDisposed()
    {
        Entry[] entries = [];
        long snapshot = -1;
        var fds = new PollFd[1];
        Span<byte> counter = stackalloc byte[8];
        int timeout = (int)InterruptSet.StopCheckInterval.TotalMilliseconds;
        List<SafeFd> closing = [];
        while (true)
        {
            SafeFd? wake;
            lock (_lock)
            {
                // Idle while there is nothing to poll, the wake-up closed: a registration pulses.
                while (!_disposed && _entries.Count == 0 && _wake is null && _orphans.Count == 0)
                {
                    _idle = true;
                    _seen = snapshot = _version;
                    entries = [];
                    Monitor.PulseAll(_lock);
                    Monitor.Wait(_lock);
                }
                _idle = false;
                if (_disposed)
                {
                    return;
                }
                if (snapshot != _version)
                {
                    entries = [.. _entries];
                    snapshot = _version;
                    fds = new PollFd[entries.Length + 1];
                }
                closing.AddRange(_orphans); // in no snapshot from this one on
                _orphans.Clear();
                wake = _wake;
                if (entries.Length == 0)
                {
                    // Nothing to poll: the wake-up is closed before the snapshot counts as taken, so
                    // that a registry with no device open holds no descriptor.
                    _wake = null;
                    if (wake is not null)
                    {
                        closing.Add(wake);
                    }
                }
                else
                {
                    _seen = snapshot;
                    Monitor.PulseAll(_lock);
                }
            }
            InterruptSet.EnterPollerCall(null);
            Close(closing);
            if (entries.Length == 0)
            {
                continue;
            }
            int n = entries.Length;
            for (int i = 0; i < n; i++)
            {
                fds[i] = new PollFd { fd = entries[i].EventFd.Value, events = Flags.POLLIN };
            }
            fds[n] = new PollFd { fd = wake!.Value, events = Flags.POLLIN };
            // A poll stands for every set it polls; a test fails it by naming the first one's.
            InterruptSet.EnterPollerCall(entries[0].Set);
            int ready = kernel.Poll(fds, timeout);
            if (ready == 0 || ready == -Errno.EINTR)
            {
                continue;
            }
            if (ready < 0)
            {
                foreach (var entry in entries)
                {
                    Fail(entry, "poll", -ready);
                }
                return; // the thread ends; a later registration starts another
            }
            if (fds[n].revents != 0)
            {
                InterruptSet.EnterPollerCall(null);
                kernel.Read(wake, counter); // resets the wake-up; EAGAIN when another pass took it
            }
            for (int i = 0; i < n; i++)
            {
                var entry = entries[i];
                short revents = fds[i].revents;
                if ((revents & (Flags.POLLERR | Flags.POLLNVAL)) != 0)
                {
                    Fail(entry, "poll", (revents & Flags.POLLNVAL) != 0 ? Errno.EBADF : Errno.EIO);
                    continue;
                }
                if ((revents & Flags.POLLIN) == 0)
                {
                    continue;
                }
                InterruptSet.EnterPollerCall(entry.Set);
                long read = kernel.Read(entry.EventFd, counter);
                if (read == counter.Length)
                {
                    Deliver(entry, MemoryMarshal.Read<ulong>(counter));
                }
                else if (read != -Errno.EAGAIN && read != -Errno.EINTR)
                {
                    // EAGAIN: nothing left to take; EINTR: interrupted. Either way the next poll says.
                    Fail(entry, "read", read < 0 ? (int)-read : Errno.EIO);
                }
            }
        }
    }

    private void Deliver(Entry entry, ulong fired) =>
        // On the thread pool, never here: the notification may close the device, which unregisters here.
        _queue(() =>
        {
            if (entry.Live)
            {
                entry.Notify(fired);
            }
        });

    /// <summary>Drops an entry whose eventfd the kernel refused (as a set's own poller stops), logged; its set closes it.</summary>
    private void Fail(Entry entry, string call, int errno)
    {
        lock (_lock)
        {
            if (!_entries.Remove(entry))
            {
                return; // unregistered meanwhile: its failure is no news
            }
            _version++;
        }
        var error = VfioErrors.Create(errno, call + " (the eventfd of " + entry.Set + ")", entry.Set.ErrorTarget,
            "Its notifications stop until the device is opened again");
        Log.InterruptPollerFailed(logger, entry.Set.ToString(), error);
    }

    /// <summary>
    /// Signals the wake-up eventfd; a failure is covered by the poll's timeout. The reference taken
    /// under the lock keeps the descriptor's number from being reused should the thread close it meanwhile.
    /// </summary>
    private void Wake(InterruptSet? set)
    {
        SafeFd? wake;
        bool added = false;
        lock (_lock)
        {
            wake = _wake;
            wake?.DangerousAddRef(ref added);
        }
        if (wake is null)
        {
            return;
        }
        try
        {
            InterruptSet.WakeUp(kernel, wake, set?.ToString() ?? "the notifier poller", logger);
        }
        finally
        {
            if (added)
            {
                wake.DangerousRelease();
            }
        }
    }

    /// <summary>Moves the orphaned eventfds and the wake-up into <paramref name="closing"/>, once the thread is gone.</summary>
    private void TakeClosingLocked(List<SafeFd> closing)
    {
        closing.AddRange(_orphans);
        _orphans.Clear();
        if (_wake is not null)
        {
            closing.Add(_wake);
            _wake = null;
        }
    }

    private static void Close(List<SafeFd> fds)
    {
        foreach (var fd in fds)
        {
            fd.Dispose();
        }
        fds.Clear();
    }

    /// <summary>One notifier's eventfd and callback.</summary>
    internal sealed class Entry(InterruptSet set, SafeFd eventFd, Action<ulong> notify)
    {
        public InterruptSet Set { get; } = set;

        public SafeFd EventFd { get; } = eventFd;

        public Action<ulong> Notify { get; } = notify;

        /// <summary>Notifications may begin: until unregistered or the poller is disposed (written under the poller's lock).</summary>
        public volatile bool Live = true;

        /// <summary>From <see cref="Register"/> to <see cref="Unregister"/> (guarded by the poller's lock).</summary>
        public bool Registered { get; set; }
    }
}
