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
    private readonly VfioDevice _device;
    private readonly SafeFd[] _eventFds;
    private readonly SafeFd _wake;
    private readonly Vector[] _vectors;
    private readonly Thread _poller;
    private DeviceReference _reference;
    private int _state; // 0 live, 1 stopping

    private InterruptSet(VfioDevice device, int index, int start, SafeFd[] eventFds, SafeFd wake, DeviceReference reference)
    {
        _device = device;
        Index = index;
        Start = start;
        _eventFds = eventFds;
        _wake = wake;
        _reference = reference;
        _vectors = new Vector[eventFds.Length];
        for (int i = 0; i < _vectors.Length; i++)
        {
            _vectors[i] = new Vector(this);
        }
        _poller = new Thread(Poll)
        {
            IsBackground = true,
            Name = $"vfio irq {device.Name}/{index}",
        };
    }

    /// <summary>The interrupt index (for PCI, see <see cref="PciIrq"/>).</summary>
    public int Index { get; }

    /// <summary>The first vector of the set.</summary>
    public int Start { get; }

    /// <summary>How many vectors the set has.</summary>
    public int Count => _vectors.Length;

    /// <summary>
    /// Waits for vector <paramref name="vector"/> (0-based within the set) to fire. Returns how many
    /// times it fired since the last wait returned (eventfds coalesce); returns at once when it fired
    /// meanwhile. One wait per vector at a time.
    /// </summary>
    /// <param name="vector">The vector, from 0 to <see cref="Count"/> - 1.</param>
    /// <param name="cancellationToken">Stops waiting.</param>
    public ValueTask<ulong> WaitAsync(int vector, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(vector);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(vector, _vectors.Length);
        return _vectors[vector].WaitAsync(cancellationToken);
    }

    /// <summary>Waits for any of the vectors and returns the first that fired (lowest first when several did).</summary>
    /// <param name="cancellationToken">Stops waiting.</param>
    public async ValueTask<int> WaitAnyAsync(CancellationToken cancellationToken = default)
    {
        for (int i = 0; i < _vectors.Length; i++)
        {
            if (_vectors[i].TryTake())
            {
                return i;
            }
        }
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var waits = new Task<ulong>[_vectors.Length];
        for (int i = 0; i < waits.Length; i++)
        {
            waits[i] = _vectors[i].WaitAsync(linked.Token).AsTask();
        }
        var first = await Task.WhenAny(waits).ConfigureAwait(false);
        await linked.CancelAsync().ConfigureAwait(false);
        int fired = Array.IndexOf(waits, first);
        await first.ConfigureAwait(false);
        // Counts that other vectors had taken when they completed alongside stay pending for them.
        for (int i = 0; i < waits.Length; i++)
        {
            if (i != fired)
            {
                try
                {
                    ulong n = await waits[i].ConfigureAwait(false);
                    _vectors[i].Return(n);
                }
                catch (OperationCanceledException)
                {
                }
            }
        }
        return fired;
    }

    /// <summary>Masks a vector (<c>VFIO_IRQ_SET_ACTION_MASK</c>): it stays pending in the device until unmasked.</summary>
    /// <param name="vector">The vector, 0-based within the set.</param>
    public void Mask(int vector) => SetAction(vector, VfioUapi.VFIO_IRQ_SET_ACTION_MASK, "mask");

    /// <summary>Unmasks a vector; for INTx, which the kernel masks when it fires, call it after handling each interrupt.</summary>
    /// <param name="vector">The vector, 0-based within the set.</param>
    public void Unmask(int vector) => SetAction(vector, VfioUapi.VFIO_IRQ_SET_ACTION_UNMASK, "unmask");

    /// <summary>Disables the vectors, stops waiting and releases the device reference.</summary>
    public void Dispose()
    {
        if (Revoke())
        {
            _device.ForgetResource(this);
        }
    }

    /// <inheritdoc/>
    public override string ToString() => $"interrupts {Index}[{Start}..{Start + Count}) of {_device.Name}";

    internal static InterruptSet Enable(VfioDevice device, int index, int start, int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(start);
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        var kernel = device.Kernel;
        var target = device.ErrorTarget;
        var info = IrqInfo.Query(kernel, device.DeviceFd, index, target);
        if (info.Count == 0)
        {
            throw new VfioNotSupportedException($"Device {device.Name} has no interrupts at index {index}.");
        }
        if ((uint)(start + count) > info.Count)
        {
            throw new ArgumentOutOfRangeException(nameof(count), count,
                $"Vectors [{start}, {start + count}) exceed the {info.Count} of interrupt index {index} of {device.Name}.");
        }
        if (!device.TryGet(out var reference))
        {
            throw new InvalidOperationException($"Device {device.Name} is being unregistered.");
        }
        var fds = new List<SafeFd>(count + 1);
        try
        {
            for (int i = 0; i <= count; i++)
            {
                VfioErrors.Check(kernel.EventFd(0, Flags.EFD_NONBLOCK, out var fd), "eventfd", target);
                fds.Add(fd);
            }
            var set = new InterruptSet(device, index, start, [.. fds.Take(count)], fds[count], reference);
            set.Trigger(enable: true);
            set._poller.Start();
            device.TrackResource(set);
            return set;
        }
        catch
        {
            foreach (var fd in fds)
            {
                fd.Dispose();
            }
            reference.Dispose();
            throw;
        }
    }

    bool IDeviceResource.Revoke() => Revoke();

    private bool Revoke()
    {
        if (Interlocked.Exchange(ref _state, 1) != 0)
        {
            return false;
        }
        try
        {
            Trigger(enable: false);
        }
        catch (VfioException)
        {
            // The device may already be going away; the eventfds are closed below regardless.
        }
        Span<byte> one = stackalloc byte[8];
        one[0] = 1;
        _ = _device.Kernel.Write(_wake, one);
        if (_poller.IsAlive && Thread.CurrentThread != _poller)
        {
            _poller.Join();
        }
        foreach (var vector in _vectors)
        {
            vector.Fail(new ObjectDisposedException(ToString(), "The interrupt set was disposed, or its device was closed."));
        }
        foreach (var fd in _eventFds)
        {
            fd.Dispose();
        }
        _wake.Dispose();
        _reference.Dispose();
        return true;
    }

    private unsafe void Trigger(bool enable)
    {
        int count = enable ? _eventFds.Length : 0;
        int size = sizeof(vfio_irq_set) + count * sizeof(int);
        byte* buffer = stackalloc byte[size];
        var set = (vfio_irq_set*)buffer;
        set->argsz = (uint)size;
        set->flags = (enable ? VfioUapi.VFIO_IRQ_SET_DATA_EVENTFD : VfioUapi.VFIO_IRQ_SET_DATA_NONE) | VfioUapi.VFIO_IRQ_SET_ACTION_TRIGGER;
        set->index = (uint)Index;
        set->start = enable ? (uint)Start : 0;
        set->count = (uint)count;
        var data = new Span<int>(buffer + sizeof(vfio_irq_set), count);
        for (int i = 0; i < count; i++)
        {
            data[i] = _eventFds[i].Value;
        }
        VfioErrors.Check(_device.Kernel.Ioctl(_device.DeviceFd, VfioUapi.VFIO_DEVICE_SET_IRQS, buffer), "VFIO_DEVICE_SET_IRQS", _device.ErrorTarget);
    }

    private unsafe void SetAction(int vector, uint action, string what)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(vector);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(vector, _vectors.Length);
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _state) != 0, this);
        var set = new vfio_irq_set
        {
            argsz = (uint)sizeof(vfio_irq_set),
            flags = VfioUapi.VFIO_IRQ_SET_DATA_NONE | action,
            index = (uint)Index,
            start = (uint)(Start + vector),
            count = 1,
        };
        VfioErrors.Check(_device.Kernel.Ioctl(_device.DeviceFd, VfioUapi.VFIO_DEVICE_SET_IRQS, &set), "VFIO_DEVICE_SET_IRQS (" + what + ")", _device.ErrorTarget);
    }

    private void Poll()
    {
        var kernel = _device.Kernel;
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
            int ready = kernel.Poll(fds, -1);
            if (ready == -Errno.EINTR)
            {
                continue;
            }
            if (ready < 0 || (fds[n].revents & Flags.POLLIN) != 0)
            {
                break;
            }
            for (int i = 0; i < n; i++)
            {
                if ((fds[i].revents & Flags.POLLIN) != 0 && kernel.Read(_eventFds[i], counter) == 8)
                {
                    _vectors[i].Return(MemoryMarshal.Read<ulong>(counter));
                }
            }
        }
    }

    /// <summary>One vector's pending count and its single reusable waiter.</summary>
    private sealed class Vector(InterruptSet owner) : IValueTaskSource<ulong>
    {
        private readonly Lock _lock = new();
        private ManualResetValueTaskSourceCore<ulong> _core = new() { RunContinuationsAsynchronously = true };
        private ulong _pending;
        private bool _waiting;
        private Exception? _failure;
        private CancellationTokenRegistration _cancellation;

        public ValueTask<ulong> WaitAsync(CancellationToken cancellationToken)
        {
            lock (_lock)
            {
                if (_failure is not null)
                {
                    return ValueTask.FromException<ulong>(_failure);
                }
                if (_pending > 0)
                {
                    ulong n = _pending;
                    _pending = 0;
                    return new ValueTask<ulong>(n);
                }
                if (_waiting)
                {
                    throw new InvalidOperationException($"A wait on a vector of {owner} is already pending.");
                }
                if (cancellationToken.IsCancellationRequested)
                {
                    return ValueTask.FromCanceled<ulong>(cancellationToken);
                }
                _core.Reset();
                _waiting = true;
                short version = _core.Version;
                if (cancellationToken.CanBeCanceled)
                {
                    _cancellation = cancellationToken.UnsafeRegister(static (state, token) => ((Vector)state!).Cancel(token), this);
                }
                return new ValueTask<ulong>(this, version);
            }
        }

        public bool TryTake()
        {
            lock (_lock)
            {
                if (_pending == 0)
                {
                    return false;
                }
                _pending = 0;
                return true;
            }
        }

        /// <summary>Counts interrupts: completes the pending wait, or keeps them for the next one.</summary>
        public void Return(ulong count)
        {
            lock (_lock)
            {
                if (_waiting)
                {
                    Complete(count);
                }
                else
                {
                    _pending += count;
                }
            }
        }

        public void Fail(Exception failure)
        {
            lock (_lock)
            {
                _failure = failure;
                if (_waiting)
                {
                    _waiting = false;
                    _cancellation.Dispose();
                    _core.SetException(failure);
                }
            }
        }

        public ulong GetResult(short token) => _core.GetResult(token);

        public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

        public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
            _core.OnCompleted(continuation, state, token, flags);

        private void Complete(ulong count)
        {
            _waiting = false;
            var registration = _cancellation;
            _cancellation = default;
            registration.Dispose();
            _core.SetResult(count);
        }

        private void Cancel(CancellationToken token)
        {
            lock (_lock)
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
}
