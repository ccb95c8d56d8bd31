namespace Vfio.Testing;

// Work a device does after the register access that started it: scheduled by the model, run on the
// kernel's terms (SimulatedKernel.DeviceWork), always with the model's lock held.
public abstract partial class DeviceModel
{
    // Guards the queue below and each ScheduledWork's scheduling state; taken under the Gate, before
    // the kernel's device clock lock (never the other way round).
    private readonly Lock _workLock = new();
    private readonly List<ScheduledWork> _work = [];
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
                return Task.FromException(WorkFailed(failure));
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
    /// when it runs (a completion for a queue that no longer exists does nothing). Work scheduled from
    /// a hot path (a doorbell) is better made once with <see cref="CreateWork"/> and scheduled with
    /// <see cref="ScheduleWork(ScheduledWork, TimeSpan)"/>, which allocates nothing.</para>
    /// </remarks>
    /// <param name="delay">How much device time passes before it runs (0 or more).</param>
    /// <param name="work">What the device does.</param>
    /// <exception cref="InvalidOperationException">The model is not in a kernel.</exception>
    protected void ScheduleWork(TimeSpan delay, Action work)
    {
        ArgumentNullException.ThrowIfNull(work);
        Schedule(new ScheduledWork(this, work), delay);
    }

    /// <summary>
    /// Makes a piece of work the model schedules again and again (a pass over its queues after each
    /// doorbell, say) with <see cref="ScheduleWork(ScheduledWork, TimeSpan)"/>.
    /// </summary>
    /// <param name="work">What the device does each time.</param>
    protected ScheduledWork CreateWork(Action work)
    {
        ArgumentNullException.ThrowIfNull(work);
        return new ScheduledWork(this, work);
    }

    /// <summary>
    /// Schedules work made by <see cref="CreateWork"/>, as <see cref="ScheduleWork(TimeSpan, Action)"/>
    /// does, unless it is scheduled already and has not started: then nothing changes (the run to come
    /// sees whatever asked for it again). Allocates nothing.
    /// </summary>
    /// <param name="work">Work of this model.</param>
    /// <param name="delay">How much device time passes before it runs (0 or more).</param>
    /// <exception cref="InvalidOperationException">The model is not in a kernel.</exception>
    protected void ScheduleWork(ScheduledWork work, TimeSpan delay = default)
    {
        ArgumentNullException.ThrowIfNull(work);
        if (!ReferenceEquals(work.Owner, this))
        {
            throw new ArgumentException("The work belongs to another model.", nameof(work));
        }
        Schedule(work, delay);
    }

    private void Schedule(ScheduledWork work, TimeSpan delay)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(delay, TimeSpan.Zero);
        var kernel = Device?.Kernel ?? throw new InvalidOperationException("A device model schedules work once it is in a kernel (its hooks run there).");
        bool start;
        lock (_workLock)
        {
            if (work.Scheduled)
            {
                return;
            }
            kernel.Stamp(work, delay);
            work.Scheduled = true;
            _work.Add(work);
            start = !_working && kernel.DeviceWork == DeviceWorkMode.Background;
            _working |= start;
        }
        if (start)
        {
            QueueDrain();
        }
    }

    /// <summary>The work of this model due by <paramref name="now"/> that comes first (earliest due, then first scheduled), or null.</summary>
    internal ScheduledWork? NextDueWork(TimeSpan now)
    {
        lock (_workLock)
        {
            if (_working)
            {
                return null; // a background drain owns the queue until it empties
            }
            ScheduledWork? next = null;
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
    internal void RunWork(ScheduledWork item)
    {
        lock (_workLock)
        {
            if (!_work.Remove(item))
            {
                return;
            }
            item.Scheduled = false;
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
            lock (_workLock)
            {
                _working = false;
                CompleteIdleLocked();
            }
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
        QueueDrain();
    }

    private void QueueDrain() => ThreadPool.UnsafeQueueUserWorkItem(_drain, preferLocal: false);

    /// <summary>The background worker: runs the queue in order until it is empty (or the kernel's mode became manual).</summary>
    private void DrainWork()
    {
        while (true)
        {
            ScheduledWork item;
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
                item.Scheduled = false;
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

    private void CompleteIdleLocked()
    {
        if (_work.Count > 0 || _working || _idle is not { } idle)
        {
            return;
        }
        _idle = null;
        if (_workFailure is { } failure)
        {
            idle.SetException(WorkFailed(failure));
        }
        else
        {
            idle.SetResult();
        }
    }

    private InvalidOperationException WorkFailed(Exception failure) =>
        new($"Work of the device model {GetType().Name} failed: {failure.Message}", failure);

    /// <summary>The model's own thread-pool work item, so that starting the background worker allocates nothing.</summary>
    private sealed class WorkDrain(DeviceModel model) : IThreadPoolWorkItem
    {
        public void Execute() => model.DrainWork();
    }
}
