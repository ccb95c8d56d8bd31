namespace Vfio.Testing;

// Work a device does after the register access that started it: scheduled by the model, run on the
// kernel's terms (SimulatedKernel.DeviceWork), always with the model's lock held.
public abstract partial class DeviceModel
{
    // Guards the queue below; the innermost lock (taken under the Gate and under the kernel lock).
    private readonly Lock _workLock = new();
    private readonly List<DeviceWorkItem> _work = [];
    private bool _working;
    private TaskCompletionSource? _idle;
    private Exception? _workFailure;

    /// <summary>Work scheduled and not yet run, this model's.</summary>
    public int PendingWork
    {
        get
        {
            lock (_workLock)
            {
                return _work.Count;
            }
        }
    }

    /// <summary>
    /// Completes when every piece of work this model scheduled so far has run (and the work it
    /// scheduled in turn); fails with the first exception a piece of work threw. Under
    /// <see cref="DeviceWorkMode.Manual"/> that happens only as the test runs the work.
    /// </summary>
    /// <param name="cancellationToken">Stops waiting.</param>
    public Task WhenIdleAsync(CancellationToken cancellationToken = default)
    {
        Task idle;
        lock (_workLock)
        {
            if (_workFailure is { } failure)
            {
                return Task.FromException(new InvalidOperationException($"Work of the device model {GetType().Name} failed: {failure.Message}", failure));
            }
            if (_work.Count == 0 && !_working)
            {
                return Task.CompletedTask;
            }
            idle = (_idle ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).Task;
        }
        return idle.WaitAsync(cancellationToken);
    }

    /// <summary>Schedules <paramref name="work"/> to run later, with no delay; see <see cref="ScheduleWork(TimeSpan, Action)"/>.</summary>
    /// <param name="work">What the device does.</param>
    protected void ScheduleWork(Action work) => ScheduleWork(TimeSpan.Zero, work);

    /// <summary>
    /// Schedules <paramref name="work"/>, something the device does after the access that started
    /// it returned (completing a command, finishing a DMA transfer, raising the interrupt that says
    /// so), to run when the kernel's device clock has moved <paramref name="delay"/> on.
    /// </summary>
    /// <remarks>
    /// <para>The work runs with the model's lock held, like every hook: never at the same time as a
    /// hook or other work of this model, never under the kernel's lock, so it may raise interrupts,
    /// perform DMA and schedule more work. It runs on a thread-pool thread
    /// (<see cref="DeviceWorkMode.Background"/>, the default: as soon as possible, in the order
    /// scheduled, the delay not waited for), or on the test's thread when the test runs it
    /// (<see cref="DeviceWorkMode.Manual"/>: <see cref="SimulatedKernel.RunDeviceWork"/>,
    /// <see cref="SimulatedKernel.AdvanceDeviceTime"/>).</para>
    /// <para>A reset of the device does not cancel scheduled work; the work checks the device's state
    /// when it runs (a completion for a queue that no longer exists does nothing).</para>
    /// </remarks>
    /// <param name="delay">How much device time passes before it runs (0 or more).</param>
    /// <param name="work">What the device does.</param>
    /// <exception cref="InvalidOperationException">The model is not in a kernel.</exception>
    protected void ScheduleWork(TimeSpan delay, Action work)
    {
        ArgumentNullException.ThrowIfNull(work);
        ArgumentOutOfRangeException.ThrowIfLessThan(delay, TimeSpan.Zero);
        var kernel = Device?.Kernel ?? throw new InvalidOperationException("A device model schedules work once it is in a kernel (its hooks run there).");
        var item = kernel.NewDeviceWork(delay, work);
        bool start;
        lock (_workLock)
        {
            _work.Add(item);
            start = !_working && kernel.DeviceWork == DeviceWorkMode.Background;
            _working |= start;
        }
        if (start)
        {
            _ = Task.Run(DrainWork);
        }
    }

    /// <summary>The work of this model due by <paramref name="now"/> that comes first (earliest due, then first scheduled), or null.</summary>
    internal DeviceWorkItem? NextDueWork(TimeSpan now)
    {
        lock (_workLock)
        {
            if (_working)
            {
                return null; // a background drain owns the queue until it empties
            }
            DeviceWorkItem? next = null;
            foreach (var item in _work)
            {
                if (item.Due <= now && (next is null || item.Due < next.Due || (item.Due == next.Due && item.Sequence < next.Sequence)))
                {
                    next = item;
                }
            }
            return next;
        }
    }

    /// <summary>Runs one piece of work the kernel took from <see cref="NextDueWork"/>, under the Gate; a failure propagates to the caller.</summary>
    internal void RunWork(DeviceWorkItem item)
    {
        lock (_workLock)
        {
            if (!_work.Remove(item))
            {
                return;
            }
            _working = true;
        }
        try
        {
            lock (Gate)
            {
                item.Work();
            }
        }
        finally
        {
            FinishWork();
        }
    }

    /// <summary>The background worker: runs the queue in order until it is empty (or the kernel's mode became manual).</summary>
    private void DrainWork()
    {
        while (true)
        {
            DeviceWorkItem item;
            lock (_workLock)
            {
                if (_work.Count == 0 || Device?.Kernel.DeviceWork != DeviceWorkMode.Background)
                {
                    _working = false;
                    CompleteIdleLocked();
                    return;
                }
                item = _work[0];
                _work.RemoveAt(0);
            }
            try
            {
                lock (Gate)
                {
                    item.Work();
                }
            }
#pragma warning disable CA1031 // A background failure is kept and reported by WhenIdleAsync, never lost on the thread pool.
            catch (Exception e)
#pragma warning restore CA1031
            {
                lock (_workLock)
                {
                    _workFailure ??= e;
                }
            }
        }
    }

    private void FinishWork()
    {
        lock (_workLock)
        {
            _working = false;
            CompleteIdleLocked();
        }
    }

    /// <summary>Starts the background worker when work is waiting and none runs (the kernel turned background work on).</summary>
    internal void StartBackgroundWork()
    {
        lock (_workLock)
        {
            if (_working || _work.Count == 0)
            {
                return;
            }
            _working = true;
        }
        _ = Task.Run(DrainWork);
    }

    private void CompleteIdleLocked()
    {
        if (_work.Count > 0 || _working || _idle is not { } idle)
        {
            return;
        }
        _idle = null;
        if (_workFailure is { } failure)
        {
            idle.SetException(new InvalidOperationException($"Work of the device model {GetType().Name} failed: {failure.Message}", failure));
        }
        else
        {
            idle.SetResult();
        }
    }
}

/// <summary>One piece of scheduled device work.</summary>
internal sealed class DeviceWorkItem(Action work, TimeSpan due, long sequence)
{
    public Action Work { get; } = work;

    /// <summary>When it is due on the kernel's device clock.</summary>
    public TimeSpan Due { get; } = due;

    /// <summary>The kernel-wide order of scheduling, which breaks ties between equal due times.</summary>
    public long Sequence { get; } = sequence;
}
