using System.Runtime.InteropServices;
using System.Threading.Tasks.Sources;
using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio;

/// <summary>
/// Vectors of one interrupt index wired to eventfds (<c>VFIO_DEVICE_SET_IRQS</c>, trigger action),
/// awaited asynchronously: one poller thread per set waits on every vector's eventfd, and each wait
/// completes a reusable value-task source, so no allocation happens per interrupt.
/// </summary>
/// <remarks>
/// The set holds a reference on its device; disposing it disables the vectors and closes their
/// eventfds. When the device closes, sets still alive are revoked the same way and pending waits
/// fail with <see cref="ObjectDisposedException"/>.
/// </remarks>
public sealed class InterruptSet : IDisposable, IDeviceResource
{
    // How long closing waits for the poller before it writes the wake-up again, when a write failed.
    private const int WakeRetryMilliseconds = 100;

    [ThreadStatic]
    private static bool t_isPoller;

    private readonly VfioKernel _kernel;
    private readonly VfioDevice? _device;
    private readonly string _name;
    private readonly SafeFd[] _eventFds;
    private readonly SafeFd _wake;
    private readonly Vector[] _vectors;
    private readonly Thread _poller;
    private readonly Action<ulong>? _notify;
    private readonly Lock _lock = new(); // guards every vector and the any-waiter
    private readonly AnyWaiter _any;
    private DeviceReference _reference;
    private SafeFd? _resample;
    private int _state; // 0 live, 1 stopping

    private InterruptSet(VfioKernel kernel, VfioDevice? device, string name, int index, int start, SafeFd[] eventFds, SafeFd wake, Action<ulong>? notify)
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
        _poller = new Thread(Poll)
        {
            IsBackground = true,
            Name = $"vfio irq {name}/{index}",
        };
    }

    /// <summary>The interrupt index (for PCI, see <see cref="PciIrq"/>).</summary>
    public int Index { get; }

    /// <summary>The first vector of the set.</summary>
    public int Start { get; }

    /// <summary>How many vectors the set has.</summary>
    public int Count => _vectors.Length;

    /// <summary>True once <see cref="EnableResample"/> wired a resample eventfd to INTx.</summary>
    public bool Resampling => Volatile.Read(ref _resample) is not null;

    /// <summary>
    /// True on the library's interrupt poller threads. The simulated kernel leaves their calls out of
    /// its call numbering, so that a poller's timing never shifts which call a test fails.
    /// </summary>
    internal static bool IsPollerThread => t_isPoller;

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
    /// device file. Null when the index has no vector.
    /// </summary>
    internal static InterruptSet? Notifier(VfioDevice device, int index, Action<ulong> notify) =>
        Enable(device, index, 0, 1, holdReference: false, notify);

    /// <summary>
    /// A set on bare eventfds of <paramref name="kernel"/>, with no device: nothing is wired in a kernel;
    /// whoever writes to <see cref="EventFdOf"/> fires the vector. For measuring the wake-up path.
    /// </summary>
    internal static InterruptSet Detached(VfioKernel kernel, int count)
    {
        var fds = CreateEventFds(kernel, count, default);
        var set = new InterruptSet(kernel, null, "detached", -1, 0, [.. fds.Take(count)], fds[count], null);
        set._poller.Start();
        return set;
    }

    internal SafeFd EventFdOf(int vector) => _eventFds[vector];

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
        try
        {
            fds = CreateEventFds(kernel, count, target);
            var set = new InterruptSet(kernel, device, device.Name, index, start, [.. fds.Take(count)], fds[count], notify)
            {
                _reference = reference,
            };
            set.Trigger(enable: true);
            set._poller.Start();
            device.TrackResource(set);
            return set;
        }
        catch
        {
            foreach (var fd in fds ?? [])
            {
                fd.Dispose();
            }
            reference.Dispose();
            throw;
        }
    }

    /// <summary>One eventfd per vector, then the poller's wake-up eventfd; none left open on failure.</summary>
    private static List<SafeFd> CreateEventFds(VfioKernel kernel, int count, ErrorTarget target)
    {
        var fds = new List<SafeFd>(count + 1);
        try
        {
            for (int i = 0; i <= count; i++)
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
        // Wake the poller so that it sees the state and exits. The write cannot fail on a live eventfd
        // the poller drains; should it fail all the same, it is made again until the poller is gone, so
        // that closing never hangs on it.
        Span<byte> one = stackalloc byte[8];
        one[0] = 1;
        bool woken = _kernel.Write(_wake, one) >= 0;
        if (Thread.CurrentThread != _poller)
        {
            while (!_poller.Join(woken ? Timeout.Infinite : WakeRetryMilliseconds))
            {
                woken = _kernel.Write(_wake, one) >= 0;
            }
        }
        var failure = new ObjectDisposedException(ToString(), "The interrupt set was disposed, or its device was closed.");
        lock (_lock)
        {
            foreach (var vector in _vectors)
            {
                vector.FailLocked(failure);
            }
            _any.FailLocked(failure);
        }
        foreach (var fd in _eventFds)
        {
            fd.Dispose();
        }
        // Disabling INTx above also detached the resample eventfd in the kernel (vfio_intx_disable).
        Interlocked.Exchange(ref _resample, null)?.Dispose();
        _wake.Dispose();
        _reference.Dispose();
        return true;
    }

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
        t_isPoller = true;
        int n = _eventFds.Length;
        var fds = new PollFd[n + 1];
        Span<byte> counter = stackalloc byte[8];
        while (Volatile.Read(ref _state) == 0)
        {
            for (int i = 0; i < n; i++)
            {
                fds[i] = new PollFd { fd = _eventFds[i].Value, events = Flags.POLLIN };
            }
            fds[n] = new PollFd { fd = _wake.Value, events = Flags.POLLIN };
            int ready = _kernel.Poll(fds, -1);
            if (ready == -Errno.EINTR)
            {
                continue;
            }
            if (ready < 0 || (fds[n].revents & Flags.POLLIN) != 0)
            {
                break;
            }
            for (int i = 0; i < n && Volatile.Read(ref _state) == 0; i++)
            {
                if ((fds[i].revents & Flags.POLLIN) != 0 && _kernel.Read(_eventFds[i], counter) == 8)
                {
                    ulong fired = MemoryMarshal.Read<ulong>(counter);
                    if (_notify is { } notify)
                    {
                        // On the thread pool, never here: the notification may close the device, whose
                        // close joins this thread while holding the device set's lock.
                        ThreadPool.UnsafeQueueUserWorkItem(static state => state.notify(state.fired), (notify, fired), preferLocal: false);
                    }
                    else
                    {
                        Fire(i, fired);
                    }
                }
            }
        }
    }

    /// <summary>Counts interrupts of one vector: its own wait first, then the any-wait, else pending.</summary>
    private void Fire(int vector, ulong count)
    {
        lock (_lock)
        {
            if (_vectors[vector].TryCompleteLocked(count) || _any.TryCompleteLocked(vector))
            {
                return;
            }
            _vectors[vector].Pending += count;
        }
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

    /// <summary>A single reusable waiter of <typeparamref name="T"/>, completed under the set's lock.</summary>
    private abstract class Waiter<T>(InterruptSet owner) : IValueTaskSource<T>
    {
        private ManualResetValueTaskSourceCore<T> _core = new() { RunContinuationsAsynchronously = true };
        private bool _waiting;
        private Exception? _failure;
        private CancellationTokenRegistration _cancellation;

        protected InterruptSet Owner => owner;

        public T GetResult(short token) => _core.GetResult(token);

        public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

        public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
            _core.OnCompleted(continuation, state, token, flags);

        public void FailLocked(Exception failure)
        {
            LockAssert.Held(owner._lock);
            _failure = failure;
            if (_waiting)
            {
                _waiting = false;
                _cancellation.Dispose();
                _core.SetException(failure);
            }
        }

        /// <summary>Completes the pending wait, if one is; the lock is held.</summary>
        protected bool TryCompleteCoreLocked(T result)
        {
            LockAssert.Held(owner._lock);
            if (!_waiting)
            {
                return false;
            }
            _waiting = false;
            var registration = _cancellation;
            _cancellation = default;
            registration.Dispose();
            _core.SetResult(result);
            return true;
        }

        /// <summary>Returns a value already there (<see cref="TryTakeLocked"/>), or arms the waiter; takes the lock.</summary>
        public ValueTask<T> WaitAsync(CancellationToken cancellationToken)
        {
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
                if (_waiting)
                {
                    throw new InvalidOperationException($"A wait of this kind on {owner} is already pending.");
                }
                if (cancellationToken.IsCancellationRequested)
                {
                    return ValueTask.FromCanceled<T>(cancellationToken);
                }
                _core.Reset();
                _waiting = true;
                short version = _core.Version;
                if (cancellationToken.CanBeCanceled)
                {
                    _cancellation = cancellationToken.UnsafeRegister(static (state, token) => ((Waiter<T>)state!).Cancel(token), this);
                }
                return new ValueTask<T>(this, version);
            }
        }

        /// <summary>Takes what fired before the wait began; the lock is held.</summary>
        protected abstract bool TryTakeLocked(out T value);

        private void Cancel(CancellationToken token)
        {
            lock (owner._lock)
            {
                if (_waiting)
                {
                    _waiting = false;
                    _cancellation = default;
                    _core.SetException(new OperationCanceledException(token));
                }
            }
        }
    }

    /// <summary>One vector's pending count and its single reusable waiter.</summary>
    private sealed class Vector(InterruptSet owner) : Waiter<ulong>(owner)
    {
        public ulong Pending { get; set; }

        public bool TryCompleteLocked(ulong count) => TryCompleteCoreLocked(count);

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
        public bool TryCompleteLocked(int vector) => TryCompleteCoreLocked(vector);

        protected override bool TryTakeLocked(out int value)
        {
            value = Owner.TakeAnyPendingLocked();
            return value >= 0;
        }
    }
}
