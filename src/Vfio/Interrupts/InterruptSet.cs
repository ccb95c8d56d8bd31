using System.Runtime.InteropServices;
using System.Threading.Tasks.Sources;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio;

/// <summary>
/// Vectors of one interrupt index wired to eventfds (<c>VFIO_DEVICE_SET_IRQS</c>, trigger action),
/// awaited asynchronously: one poller thread per set waits on every vector's eventfd, and each wait
/// completes a reusable value-task source, so no allocation happens per interrupt. (The library's own
/// REQ and ERR notifiers share their registry's one thread instead, see <see cref="NotifierPoller"/>.)
/// </summary>
/// <remarks>
/// <para>
/// The set holds a reference on its device; disposing it disables the vectors and closes their
/// eventfds. When the device closes, sets still alive are revoked the same way and pending waits
/// fail with <see cref="ObjectDisposedException"/>.
/// </para>
/// <para>
/// A wait is decided under the set's lock (by an interrupt, its cancellation, or disposal, whichever
/// comes first). Nothing under the lock waits for another thread, and no continuation runs under it:
/// a queued continuation is completed there, an inline one after the lock is released. Stopping the poller never waits without
/// bound: its wake-up write is retried when interrupted, a full counter counts as signalled, and an
/// idle poller looks every <see cref="StopCheckInterval"/> whether it was stopped, so it stops even
/// when the wake-up could not be written.
/// </para>
/// </remarks>
public sealed class InterruptSet : IDisposable, IDeviceResource
{
    /// <summary>How often an idle poller wakes to see whether it was stopped (the fallback for a failed wake-up).</summary>
    internal static readonly TimeSpan StopCheckInterval = TimeSpan.FromSeconds(1);

    // How long disposing waits for the poller before leaving the eventfds for it to close when it
    // stops (a continuation running inline on it that blocks). Several stop checks long.
    internal static readonly TimeSpan StopWait = TimeSpan.FromSeconds(5);

    // The wake-up write is retried this often when a signal interrupts it.
    private const int InterruptedWriteRetries = 16;

    // Who closes the eventfds: disposal, unless it handed them to a poller that had not stopped yet.
    private const int PollerRunning = 0;
    private const int HandedToPoller = 1;
    private const int PollerExited = 2;

    [ThreadStatic]
    private static InterruptSet? t_poller;

    [ThreadStatic]
    private static bool t_pollerCall; // a call of the registry's notifier poller, for t_poller's set or for none

    private readonly VfioKernel _kernel;
    private readonly VfioDevice? _device;
    private readonly string _name;
    private readonly SafeFd[] _eventFds;
    private readonly SafeFd? _wake; // null for a notifier, which its registry's NotifierPoller polls
    private readonly Vector[] _vectors;
    private readonly Thread? _poller;
    private readonly Action<ulong>? _notify;
    private readonly Lock _lock = new(); // guards every vector and the any-waiter
    private readonly AnyWaiter _any;
    private DeviceReference _reference;
    private NotifierPoller.Entry? _notifier;
    private SafeFd? _resample;
    private int _state; // 0 live, 1 stopping
    private int _cleanup; // PollerRunning, HandedToPoller or PollerExited
    private volatile bool _inline;

    private InterruptSet(VfioKernel kernel, VfioDevice? device, string name, int index, int start, SafeFd[] eventFds, SafeFd? wake, Action<ulong>? notify)
    {
        _kernel = kernel;
        _device = device;
        _name = name;
        Index = index;
        Start = start;
        _eventFds = eventFds;
        _wake = wake;
        _notify = notify;
        _vectors = new Vector[eventFds.Length];
        for (int i = 0; i < _vectors.Length; i++)
        {
            _vectors[i] = new Vector(this);
        }
        _any = new AnyWaiter(this);
        if (wake is not null)
        {
            _poller = new Thread(Poll)
            {
                IsBackground = true,
                Name = $"vfio irq {name}/{index}",
            };
        }
    }

    /// <summary>The interrupt index (for PCI, see <see cref="PciIrq"/>).</summary>
    public int Index { get; }

    /// <summary>The first vector of the set.</summary>
    public int Start { get; }

    /// <summary>How many vectors the set has.</summary>
    public int Count => _vectors.Length;

    /// <summary>True until disposed or revoked by the device's close.</summary>
    public bool IsLive => Volatile.Read(ref _state) == 0;

    /// <summary>
    /// When true, the continuation of a wait that an interrupt completes runs at once on the set's
    /// interrupt thread, inside the delivery, instead of being queued to the thread pool (the default,
    /// false). It saves a thread hand-off per interrupt, for handlers that do not block: while the
    /// continuation runs, no other interrupt of the set is delivered, and a handler that blocks on
    /// something only another interrupt of this set would bring deadlocks. Cancellations and disposal
    /// still complete waits on the thread pool; a continuation that captured a synchronization context
    /// still runs there. It can be changed at any time and applies to the next interrupt.
    /// </summary>
    public bool RunContinuationsInline
    {
        get => _inline;
        set => _inline = value;
    }

    /// <summary>True once <see cref="EnableResample"/> wired a resample eventfd to INTx.</summary>
    public bool Resampling => Volatile.Read(ref _resample) is not null;

    /// <summary>
    /// The set whose poller is making a kernel call on the current thread (its poll or read), or null.
    /// The simulated kernel leaves these calls out of its call numbering, so that a poller's timing
    /// never shifts which call a test fails, and fails them only when a test asks for a set's poller by
    /// name. A continuation running inline on a poller thread is not the poller's own call. The
    /// registry's notifier poller names the set of each read, and for its poll the first set it polls.
    /// </summary>
    internal static InterruptSet? CurrentPoller => t_poller;

    /// <summary>
    /// True while a poller makes a kernel call on the current thread: <see cref="CurrentPoller"/>'s,
    /// or the notifier poller's for no set (its wake-up, or a poll of nothing but the wake-up).
    /// </summary>
    internal static bool InPollerCall => t_pollerCall || t_poller is not null;

    /// <summary>
    /// Waits for vector <paramref name="vector"/> (0-based within the set) to fire. Returns how many
    /// times it fired since the last wait returned (eventfds coalesce); returns at once when it fired
    /// meanwhile. One wait per vector at a time.
    /// </summary>
    /// <param name="vector">The vector, from 0 to <see cref="Count"/> - 1.</param>
    /// <param name="cancellationToken">Stops waiting.</param>
    public ValueTask<ulong> WaitAsync(int vector, CancellationToken cancellationToken = default)
    {
        CheckVector(vector);
        return _vectors[vector].WaitAsync(cancellationToken);
    }

    /// <summary>
    /// Waits for any of the vectors and returns the first that fired (lowest first when several did),
    /// taking its count. A vector with its own <see cref="WaitAsync"/> pending goes to that wait
    /// instead. One such wait at a time; it allocates nothing once the set is warm.
    /// </summary>
    /// <param name="cancellationToken">Stops waiting.</param>
    public ValueTask<int> WaitAnyAsync(CancellationToken cancellationToken = default) => _any.WaitAsync(cancellationToken);

    /// <summary>Masks a vector (<c>VFIO_IRQ_SET_ACTION_MASK</c>): it stays pending in the device until unmasked.</summary>
    /// <param name="vector">The vector, 0-based within the set.</param>
    /// <exception cref="VfioException">The kernel refused: vfio-pci masks INTx only (ENOTTY for MSI and MSI-X).</exception>
    public void Mask(int vector) => SetAction(vector, VfioUapi.VFIO_IRQ_SET_ACTION_MASK, "mask");

    /// <summary>
    /// Unmasks a vector; for INTx, which the kernel masks when it fires, call it after handling each
    /// interrupt. With <see cref="EnableResample"/> on, it signals the resample eventfd (a write) instead
    /// of an ioctl.
    /// </summary>
    /// <param name="vector">The vector, 0-based within the set.</param>
    /// <exception cref="VfioException">The kernel refused: vfio-pci unmasks INTx only (ENOTTY for MSI and MSI-X).</exception>
    public void Unmask(int vector)
    {
        if (Volatile.Read(ref _resample) is { } resample)
        {
            CheckVector(vector);
            Span<byte> one = stackalloc byte[8];
            one[0] = 1;
            VfioErrors.Check(_kernel.Write(resample, one), "write (resample eventfd)", Device.ErrorTarget);
            return;
        }
        SetAction(vector, VfioUapi.VFIO_IRQ_SET_ACTION_UNMASK, "unmask");
    }

    /// <summary>
    /// Wires a resample eventfd to the set's INTx vector (<c>VFIO_IRQ_SET_DATA_EVENTFD</c> with
    /// <c>VFIO_IRQ_SET_ACTION_UNMASK</c>): from then on the kernel unmasks INTx whenever it is signalled,
    /// and <see cref="Unmask"/> signals it. It stays wired until the set is disposed.
    /// </summary>
    /// <exception cref="VfioNotSupportedException">The set is not an automasked (INTx) index.</exception>
    /// <exception cref="VfioBusyException">The device already has a resample eventfd (EBUSY).</exception>
    public unsafe void EnableResample()
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _state) != 0, this);
        var device = Device;
        var info = IrqInfo.Query(_kernel, device.DeviceFd, Index, device.ErrorTarget);
        if (!info.AutoMasked)
        {
            throw new VfioNotSupportedException($"Interrupt index {Index} of {device.Name} is not automasked: only INTx takes a resample eventfd.");
        }
        if (Volatile.Read(ref _resample) is not null)
        {
            return;
        }
        VfioErrors.Check(_kernel.EventFd(0, Flags.EFD_NONBLOCK, out var fd), "eventfd", device.ErrorTarget);
        try
        {
            int value = fd.Value;
            SetIrqs(VfioUapi.VFIO_IRQ_SET_DATA_EVENTFD | VfioUapi.VFIO_IRQ_SET_ACTION_UNMASK, Start, new ReadOnlySpan<int>(&value, 1), "VFIO_DEVICE_SET_IRQS (resample)");
        }
        catch
        {
            fd.Dispose();
            throw;
        }
        Volatile.Write(ref _resample, fd);
    }

    /// <summary>
    /// Detaches vectors from their eventfds (each set to -1), leaving the index enabled: the device's
    /// messages for them go nowhere until <see cref="EnableVectors"/>. The range is within the set.
    /// </summary>
    /// <param name="vector">The first vector, 0-based within the set.</param>
    /// <param name="count">How many.</param>
    public void DisableVectors(int vector, int count = 1) => AttachVectors(vector, count, attach: false);

    /// <summary>Wires vectors detached by <see cref="DisableVectors"/> to their eventfds again.</summary>
    /// <param name="vector">The first vector, 0-based within the set.</param>
    /// <param name="count">How many.</param>
    public void EnableVectors(int vector, int count = 1) => AttachVectors(vector, count, attach: true);

    /// <summary>Disables the vectors, stops waiting and releases the device reference.</summary>
    public void Dispose()
    {
        if (Revoke())
        {
            _device?.ForgetResource(this);
        }
    }

    /// <inheritdoc/>
    public override string ToString() => $"interrupts {Index}[{Start}..{Start + Count}) of {_name}";

    internal static InterruptSet Enable(VfioDevice device, int index, int start, int count) =>
        Enable(device, index, start, count, holdReference: true, notify: null)!;

    /// <summary>
    /// One vector whose every signal calls <paramref name="notify"/> on the thread pool, holding no
    /// device reference: the library's own notifiers (REQ, ERR), which live exactly as long as the
    /// device file. It has no poller thread of its own: the registry's <see cref="NotifierPoller"/>
    /// polls its eventfd. Null when the index has no vector.
    /// </summary>
    internal static InterruptSet? Notifier(VfioDevice device, int index, Action<ulong> notify) =>
        Enable(device, index, 0, 1, holdReference: false, notify);

    /// <summary>
    /// A set on bare eventfds of <paramref name="kernel"/>, with no device: nothing is wired in a kernel;
    /// whoever writes to <see cref="EventFdOf"/> fires the vector. For measuring the wake-up path.
    /// </summary>
    internal static InterruptSet Detached(VfioKernel kernel, int count)
    {
        var fds = CreateEventFds(kernel, count + 1, default);
        var set = new InterruptSet(kernel, null, "detached", -1, 0, [.. fds.Take(count)], fds[count], null);
        set._poller!.Start();
        return set;
    }

    internal SafeFd EventFdOf(int vector) => _eventFds[vector];

    /// <summary>Whom an error of the set names.</summary>
    internal ErrorTarget ErrorTarget => _device?.ErrorTarget ?? default;

    /// <summary>Marks the notifier poller's next kernel calls on this thread as its own, for <paramref name="set"/> or for none.</summary>
    internal static void EnterPollerCall(InterruptSet? set)
    {
        t_poller = set;
        t_pollerCall = true;
    }

    /// <summary>Ends <see cref="EnterPollerCall"/>.</summary>
    internal static void LeavePollerCall()
    {
        t_poller = null;
        t_pollerCall = false;
    }

    private static InterruptSet? Enable(VfioDevice device, int index, int start, int count, bool holdReference, Action<ulong>? notify)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(start);
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        var kernel = device.Kernel;
        var target = device.ErrorTarget;
        // A notifier on an index the kernel refuses to describe (ERR off PCI Express) is simply absent.
        var info = notify is null ? IrqInfo.Query(kernel, device.DeviceFd, index, target) : IrqInfo.QueryOrNone(kernel, device.DeviceFd, index, target);
        if (info.Count == 0 && notify is not null)
        {
            return null;
        }
        if (info.Count == 0)
        {
            throw new VfioNotSupportedException($"Device {device.Name} has no interrupts at index {index}.");
        }
        if ((uint)(start + count) > info.Count)
        {
            throw new ArgumentOutOfRangeException(nameof(count), count,
                $"Vectors [{start}, {start + count}) exceed the {info.Count} of interrupt index {index} of {device.Name}.");
        }
        DeviceReference reference = default;
        if (holdReference && !device.TryGet(out reference))
        {
            throw new InvalidOperationException($"Device {device.Name} is being unregistered.");
        }
        List<SafeFd>? fds = null;
        InterruptSet? set = null;
        try
        {
            // A notifier has no poller of its own (so no wake-up eventfd): the registry's polls it.
            fds = CreateEventFds(kernel, notify is null ? count + 1 : count, target);
            set = new InterruptSet(kernel, device, device.Name, index, start, [.. fds.Take(count)], notify is null ? fds[count] : null, notify)
            {
                _reference = reference,
            };
            if (notify is not null)
            {
                set._notifier = device.Registry.Notifiers.Register(set, fds[0], notify);
            }
            set.Trigger(enable: true);
            set._poller?.Start();
            device.TrackResource(set);
            return set;
        }
        catch
        {
            int polled = 0;
            if (set?._notifier is { } notifier)
            {
                device.Registry.Notifiers.Unregister(notifier); // closes its eventfd once no longer polled
                polled = 1;
            }
            foreach (var fd in (fds ?? []).Skip(polled))
            {
                fd.Dispose();
            }
            reference.Dispose();
            throw;
        }
    }

    /// <summary><paramref name="count"/> eventfds (the vectors', then a poller's wake-up); none left open on failure.</summary>
    private static List<SafeFd> CreateEventFds(VfioKernel kernel, int count, ErrorTarget target)
    {
        var fds = new List<SafeFd>(count);
        try
        {
            for (int i = 0; i < count; i++)
            {
                VfioErrors.Check(kernel.EventFd(0, Flags.EFD_NONBLOCK, out var fd), "eventfd", target);
                fds.Add(fd);
            }
            return fds;
        }
        catch
        {
            foreach (var fd in fds)
            {
                fd.Dispose();
            }
            throw;
        }
    }

    private VfioDevice Device => _device ?? throw new InvalidOperationException("A detached interrupt set is wired to no device.");

    bool IDeviceResource.Revoke() => Revoke();

    private bool Revoke()
    {
        if (Interlocked.Exchange(ref _state, 1) != 0)
        {
            return false;
        }
        if (_device is not null)
        {
            try
            {
                Trigger(enable: false);
            }
            catch (VfioException)
            {
                // The device may already be going away; the eventfds are closed below regardless.
            }
        }
        if (_wake is not null)
        {
            WakeUp(_kernel, _wake, ToString(), Logger);
        }
        FailWaiters(new ObjectDisposedException(ToString(), "The interrupt set was disposed, or its device was closed."));
        if (_notifier is not null)
        {
            // The registry's poller closes the eventfd once it no longer polls it.
            _device!.Registry.Notifiers.Unregister(_notifier);
            _reference.Dispose();
            return true;
        }
        var poller = _poller!;
        // On the poller itself (a continuation running inline disposed the set) there is nothing to
        // wait for: the poller touches no eventfd once it is back from the continuation.
        bool stopped = Thread.CurrentThread == poller || !poller.IsAlive || poller.Join(StopWait);
        if (stopped || Interlocked.Exchange(ref _cleanup, HandedToPoller) == PollerExited)
        {
            CloseEventFds();
        }
        else
        {
            Log.InterruptThreadStuck(Logger, ToString(), (long)StopWait.TotalMilliseconds);
        }
        _reference.Dispose();
        return true;
    }

    /// <summary>
    /// Signals a poller's wake-up eventfd <paramref name="wake"/> (this set's, or the notifier poller's,
    /// on behalf of <paramref name="set"/>): retried when interrupted; EAGAIN means the counter is full,
    /// so the poller is signalled already. Any other failure is logged, and the poller then sees what
    /// changed at its next stop check.
    /// </summary>
    internal static void WakeUp(VfioKernel kernel, SafeFd wake, string set, ILogger logger)
    {
        Span<byte> one = stackalloc byte[8];
        one[0] = 1;
        for (int attempt = 0; ; attempt++)
        {
            long written = kernel.Write(wake, one);
            if (written == one.Length || written == -Errno.EAGAIN)
            {
                return;
            }
            if (written != -Errno.EINTR || attempt == InterruptedWriteRetries)
            {
                Log.InterruptWakeFailed(logger, set, Errno.Name(written < 0 ? (int)-written : Errno.EIO), (long)StopCheckInterval.TotalMilliseconds);
                return;
            }
        }
    }

    /// <summary>Fails every pending and later wait with <paramref name="failure"/>.</summary>
    private void FailWaiters(Exception failure)
    {
        var vectors = new Waiter<ulong>.Completion[_vectors.Length];
        Waiter<int>.Completion any;
        lock (_lock)
        {
            for (int i = 0; i < _vectors.Length; i++)
            {
                vectors[i] = _vectors[i].FailLocked(failure);
            }
            any = _any.FailLocked(failure);
        }
        foreach (var completion in vectors)
        {
            completion.Signal();
        }
        any.Signal();
    }

    private void CloseEventFds()
    {
        foreach (var fd in _eventFds)
        {
            fd.Dispose();
        }
        // Disabling INTx also detached the resample eventfd in the kernel (vfio_intx_disable).
        Interlocked.Exchange(ref _resample, null)?.Dispose();
        _wake?.Dispose();
    }

    private ILogger Logger => _device?.Registry.Logger ?? NullLogger.Instance;

    // Disabling uses DATA_NONE with count 0, which vfio-pci takes as "disable the whole index".
    private void Trigger(bool enable)
    {
        if (!enable)
        {
            SetIrqs(VfioUapi.VFIO_IRQ_SET_DATA_NONE | VfioUapi.VFIO_IRQ_SET_ACTION_TRIGGER, 0, [], "VFIO_DEVICE_SET_IRQS");
            return;
        }
        Span<int> data = _eventFds.Length <= 256 ? stackalloc int[_eventFds.Length] : new int[_eventFds.Length];
        for (int i = 0; i < data.Length; i++)
        {
            data[i] = _eventFds[i].Value;
        }
        SetIrqs(VfioUapi.VFIO_IRQ_SET_DATA_EVENTFD | VfioUapi.VFIO_IRQ_SET_ACTION_TRIGGER, Start, data, "VFIO_DEVICE_SET_IRQS");
    }

    private void AttachVectors(int vector, int count, bool attach)
    {
        CheckVector(vector);
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(count, _vectors.Length - vector);
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _state) != 0, this);
        Span<int> data = count <= 256 ? stackalloc int[count] : new int[count];
        for (int i = 0; i < count; i++)
        {
            data[i] = attach ? _eventFds[vector + i].Value : -1;
        }
        SetIrqs(VfioUapi.VFIO_IRQ_SET_DATA_EVENTFD | VfioUapi.VFIO_IRQ_SET_ACTION_TRIGGER, Start + vector, data,
            attach ? "VFIO_DEVICE_SET_IRQS (enable vectors)" : "VFIO_DEVICE_SET_IRQS (disable vectors)");
    }

    private void SetAction(int vector, uint action, string what)
    {
        CheckVector(vector);
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _state) != 0, this);
        SetIrqs(VfioUapi.VFIO_IRQ_SET_DATA_NONE | action, Start + vector, [], "VFIO_DEVICE_SET_IRQS (" + what + ")", count: 1);
    }

    /// <summary>One <c>VFIO_DEVICE_SET_IRQS</c>: the header, then <paramref name="fds"/> (count is their number unless given).</summary>
    private unsafe void SetIrqs(uint flags, int start, ReadOnlySpan<int> fds, string operation, int? count = null)
    {
        var device = Device;
        int size = sizeof(vfio_irq_set) + fds.Length * sizeof(int);
        byte* buffer = stackalloc byte[size];
        var set = (vfio_irq_set*)buffer;
        set->argsz = (uint)size;
        set->flags = flags;
        set->index = (uint)Index;
        set->start = (uint)start;
        set->count = (uint)(count ?? fds.Length);
        fds.CopyTo(new Span<int>(buffer + sizeof(vfio_irq_set), fds.Length));
        int r = VfioErrors.Check(_kernel.Ioctl(device.DeviceFd, VfioUapi.VFIO_DEVICE_SET_IRQS, buffer), operation, device.ErrorTarget);
        if (r > 0)
        {
            // vfio_msi_enable returns how many vectors the host could allocate when it could not allocate them all.
            throw new VfioException(
                $"{operation} on {device.Name}: the host could allocate only {r} of the {start + set->count} vectors of interrupt index {Index}; enable at most {r}.");
        }
    }

    private void CheckVector(int vector)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(vector);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(vector, _vectors.Length);
    }

    private void Poll()
    {
        try
        {
            PollUntilStopped();
        }
        finally
        {
            t_poller = null;
            if (Interlocked.Exchange(ref _cleanup, PollerExited) == HandedToPoller)
            {
                CloseEventFds();
            }
        }
    }

    private void PollUntilStopped()
    {
        int n = _eventFds.Length;
        var fds = new PollFd[n + 1];
        Span<byte> counter = stackalloc byte[8];
        int timeout = (int)StopCheckInterval.TotalMilliseconds;
        while (Volatile.Read(ref _state) == 0)
        {
            for (int i = 0; i < n; i++)
            {
                fds[i] = new PollFd { fd = _eventFds[i].Value, events = Flags.POLLIN };
            }
            fds[n] = new PollFd { fd = _wake!.Value, events = Flags.POLLIN };
            t_poller = this;
            int ready = _kernel.Poll(fds, timeout);
            if (ready == 0 || ready == -Errno.EINTR)
            {
                continue;
            }
            if (ready < 0)
            {
                FailPoller("poll", -ready);
                return;
            }
            if (fds[n].revents != 0)
            {
                return; // woken to stop
            }
            for (int i = 0; i < n && Volatile.Read(ref _state) == 0; i++)
            {
                short revents = fds[i].revents;
                if ((revents & (Flags.POLLERR | Flags.POLLNVAL)) != 0)
                {
                    FailPoller("poll", (revents & Flags.POLLNVAL) != 0 ? Errno.EBADF : Errno.EIO);
                    return;
                }
                if ((revents & Flags.POLLIN) == 0)
                {
                    continue;
                }
                t_poller = this;
                long read = _kernel.Read(_eventFds[i], counter);
                t_poller = null;
                if (read == counter.Length)
                {
                    Deliver(i, MemoryMarshal.Read<ulong>(counter));
                }
                else if (read != -Errno.EAGAIN && read != -Errno.EINTR)
                {
                    // EAGAIN: nothing left to take; EINTR: interrupted. Either way the next poll says.
                    FailPoller("read", read < 0 ? (int)-read : Errno.EIO);
                    return;
                }
            }
        }
    }

    private void Deliver(int vector, ulong fired)
    {
        if (_notify is { } notify)
        {
            // On the thread pool, never here: the notification may close the device, whose
            // close joins this thread while holding the device set's lock.
            ThreadPool.UnsafeQueueUserWorkItem(static state => state.notify(state.fired), (notify, fired), preferLocal: false);
        }
        else
        {
            Fire(vector, fired);
        }
    }

    /// <summary>The poller cannot go on: every pending and later wait fails with the kernel's error, which names the set.</summary>
    private void FailPoller(string call, int errno)
    {
        t_poller = null;
        if (Volatile.Read(ref _state) != 0)
        {
            return; // stopped meanwhile: the eventfds were closed under the call
        }
        var error = VfioErrors.Create(errno, call + " (the eventfds of " + ToString() + ")", _device?.ErrorTarget ?? default,
            "No interrupt of this set is delivered any more: dispose it and enable the interrupts again");
        Log.InterruptPollerFailed(Logger, ToString(), error);
        FailWaiters(error);
    }

    /// <summary>Counts interrupts of one vector: its own wait first, then the any-wait, else pending.</summary>
    private void Fire(int vector, ulong count)
    {
        Waiter<ulong>.Completion own;
        Waiter<int>.Completion any = default;
        bool inline = _inline;
        lock (_lock)
        {
            own = _vectors[vector].TryDecideLocked(count, inline);
            if (!own.Decided)
            {
                any = _any.TryDecideLocked(vector, inline);
                if (!any.Decided)
                {
                    _vectors[vector].Pending += count;
                }
            }
        }
        own.Signal();
        any.Signal();
    }

    /// <summary>Takes the lowest pending vector's count; the lock is held.</summary>
    private int TakeAnyPendingLocked()
    {
        LockAssert.Held(_lock);
        for (int i = 0; i < _vectors.Length; i++)
        {
            if (_vectors[i].Pending > 0)
            {
                _vectors[i].Pending = 0;
                return i;
            }
        }
        return -1;
    }

    /// <summary>
    /// A single reusable waiter of <typeparamref name="T"/>. A wait is decided under the set's lock by
    /// the first of its interrupt, its cancellation or a failure; nothing under the lock waits for
    /// another thread (a cancellation registration is only unregistered, which never waits for a
    /// running callback), and a continuation never runs under the lock: a queued one is completed
    /// there, an inline one by <see cref="Completion.Signal"/> after the lock is released.
    /// </summary>
    private abstract class Waiter<T>(InterruptSet owner) : IValueTaskSource<T>
    {
        private ManualResetValueTaskSourceCore<T> _core = new() { RunContinuationsAsynchronously = true };
        private bool _armed; // a wait is pending and not yet decided; the lock guards it
        private int _signaller; // the thread between deciding a wait inline and signalling it, 0 when none
        private Exception? _failure;
        private CancellationToken _token;
        private CancellationTokenRegistration _registration;

        protected InterruptSet Owner => owner;

        public T GetResult(short token) => _core.GetResult(token);

        public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

        public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
            _core.OnCompleted(continuation, state, token, flags);

        /// <summary>Returns a value already there (<see cref="TryTakeLocked"/>), or arms the waiter; takes the lock.</summary>
        public ValueTask<T> WaitAsync(CancellationToken cancellationToken)
        {
            WaitForSignaller();
            lock (owner._lock)
            {
                if (_failure is not null)
                {
                    return ValueTask.FromException<T>(_failure);
                }
                if (TryTakeLocked(out var value))
                {
                    return new ValueTask<T>(value);
                }
                if (_armed)
                {
                    throw new InvalidOperationException($"A wait of this kind on {owner} is already pending.");
                }
                if (cancellationToken.IsCancellationRequested)
                {
                    return ValueTask.FromCanceled<T>(cancellationToken);
                }
                _core.Reset();
                _armed = true;
                _token = cancellationToken;
                short version = _core.Version;
                if (cancellationToken.CanBeCanceled)
                {
                    // A token cancelled meanwhile runs the callback here, on this thread (the lock is reentrant).
                    _registration = cancellationToken.UnsafeRegister(static (state, token) => ((Waiter<T>)state!).Cancel(token), this);
                }
                return new ValueTask<T>(this, version);
            }
        }

        /// <summary>Decides the pending wait, if one is, with <paramref name="result"/>; the lock is held.</summary>
        protected Completion TryDecideCoreLocked(T result, bool inline)
        {
            LockAssert.Held(owner._lock);
            return _armed ? DecideLocked(result, null, inline) : default;
        }

        /// <summary>Fails the pending wait, if one is, and every later one; the lock is held.</summary>
        public Completion FailLocked(Exception failure)
        {
            LockAssert.Held(owner._lock);
            _failure = failure;
            return _armed ? DecideLocked(default!, failure, inline: false) : default;
        }

        /// <summary>Takes what fired before the wait began; the lock is held.</summary>
        protected abstract bool TryTakeLocked(out T value);

        private Completion DecideLocked(T result, Exception? error, bool inline)
        {
            LockAssert.Held(owner._lock);
            _armed = false;
            var registration = _registration;
            _registration = default;
            _token = default;
            if (!inline)
            {
                // The continuation is queued, so nothing foreign runs here: completing under the lock
                // orders the completion before any re-arm, as a new wait takes the lock first.
                registration.Unregister(); // never waits for a callback already running
                Complete(result, error, runContinuationsAsynchronously: true);
                return new Completion(null, result, error, default, decided: true);
            }
            Volatile.Write(ref _signaller, Environment.CurrentManagedThreadId);
            return new Completion(this, result, error, registration, decided: true);
        }

        private void Complete(T result, Exception? error, bool runContinuationsAsynchronously)
        {
            _core.RunContinuationsAsynchronously = runContinuationsAsynchronously;
            if (error is null)
            {
                _core.SetResult(result);
            }
            else
            {
                _core.SetException(error);
            }
        }

        /// <summary>
        /// The cancellation callback, on the thread that cancels. A callback of an earlier wait, late
        /// because that wait was decided while it ran, finds no wait for its token and does nothing.
        /// </summary>
        private void Cancel(CancellationToken token)
        {
            Completion completion = default;
            lock (owner._lock)
            {
                if (_armed && _token == token)
                {
                    completion = DecideLocked(default!, new OperationCanceledException(token), inline: false);
                }
            }
            completion.Signal();
        }

        /// <summary>
        /// Re-arming the core while an earlier wait is decided inline but not yet signalled would lose
        /// that signal, so a new wait lets the signalling thread finish first: a few instructions (the
        /// continuation, when registered, runs inside the signal on that very thread), unless this
        /// thread is the signaller itself (an inline continuation re-arming after the core is done with it).
        /// </summary>
        private void WaitForSignaller()
        {
            int me = Environment.CurrentManagedThreadId;
            SpinWait spin = default;
            for (int signaller; (signaller = Volatile.Read(ref _signaller)) != 0 && signaller != me;)
            {
                spin.SpinOnce();
            }
        }

        /// <summary>
        /// A wait decided under the set's lock. A wait whose continuation is queued was completed under
        /// the lock already; one whose continuation runs inline is completed by <see cref="Signal"/>,
        /// once the lock is released, since the continuation runs inside the completion.
        /// </summary>
        public readonly struct Completion(Waiter<T>? waiter, T result, Exception? error, CancellationTokenRegistration registration, bool decided)
        {
            public bool Decided => decided;

            public void Signal()
            {
                if (waiter is null)
                {
                    return;
                }
                // Unregister never waits for a callback already running; that callback finds the wait decided.
                registration.Unregister();
                waiter.Complete(result, error, runContinuationsAsynchronously: false);
                Interlocked.CompareExchange(ref waiter._signaller, 0, Environment.CurrentManagedThreadId);
            }
        }
    }

    /// <summary>One vector's pending count and its single reusable waiter.</summary>
    private sealed class Vector(InterruptSet owner) : Waiter<ulong>(owner)
    {
        public ulong Pending { get; set; }

        public Completion TryDecideLocked(ulong count, bool inline) => TryDecideCoreLocked(count, inline);

        protected override bool TryTakeLocked(out ulong value)
        {
            LockAssert.Held(Owner._lock);
            value = Pending;
            Pending = 0;
            return value > 0;
        }
    }

    /// <summary>The set's single reusable any-vector waiter.</summary>
    private sealed class AnyWaiter(InterruptSet owner) : Waiter<int>(owner)
    {
        public Completion TryDecideLocked(int vector, bool inline) => TryDecideCoreLocked(vector, inline);

        protected override bool TryTakeLocked(out int value)
        {
            value = Owner.TakeAnyPendingLocked();
            return value >= 0;
        }
    }
}
