namespace Vfio.Testing;

/// <summary>
/// The device clock and when device models' scheduled work runs (<see cref="DeviceModel.ScheduleWork(TimeSpan, Action)"/>).
/// </summary>
public sealed partial class SimulatedKernel
{
    private readonly Lock _clockLock = new(); // guards the device clock and the scheduling order; innermost
    private DeviceWorkMode _deviceWork = DeviceWorkMode.Background;
    private TimeSpan _deviceTime;
    private long _workSequence;

    /// <summary>
    /// When the work device models schedule runs: <see cref="DeviceWorkMode.Background"/> (the
    /// default) or <see cref="DeviceWorkMode.Manual"/>. Switching to background starts the work left waiting.
    /// </summary>
    public DeviceWorkMode DeviceWork
    {
        get => _deviceWork;
        set
        {
            if (!Enum.IsDefined(value))
            {
                throw new ArgumentOutOfRangeException(nameof(value), value, "Background or Manual.");
            }
            _deviceWork = value;
            if (value == DeviceWorkMode.Background)
            {
                foreach (var model in Models())
                {
                    model.StartBackgroundWork();
                }
            }
        }
    }

    /// <summary>The device clock: how much device time <see cref="AdvanceDeviceTime"/> has moved on (it moves only then).</summary>
    public TimeSpan DeviceTime
    {
        get
        {
            lock (_clockLock)
            {
                return _deviceTime;
            }
        }
    }

    /// <summary>How many pieces of device work are scheduled and have not run, every model's.</summary>
    public int PendingDeviceWork => Models().Sum(m => m.PendingWork);

    /// <summary>
    /// Runs, on the calling thread, every piece of device work that is due on the device clock (the
    /// earliest first, then in the order scheduled), including what that work schedules with no delay.
    /// Work that reschedules itself with no delay would run forever: give periodic work a delay.
    /// </summary>
    /// <returns>How many pieces ran.</returns>
    /// <exception cref="InvalidOperationException">The kernel runs device work in the background.</exception>
    public int RunDeviceWork()
    {
        if (DeviceWork != DeviceWorkMode.Manual)
        {
            throw new InvalidOperationException("Device work runs in the background; set DeviceWork to DeviceWorkMode.Manual to run it from the test.");
        }
        return RunDueWork(DeviceTime);
    }

    /// <summary>
    /// Moves the device clock on by <paramref name="by"/>, running the work that comes due on the way
    /// in the order it comes due, the clock standing at each piece's due time while it runs.
    /// </summary>
    /// <param name="by">How far (0 or more).</param>
    /// <returns>How many pieces ran.</returns>
    /// <exception cref="InvalidOperationException">The kernel runs device work in the background.</exception>
    public int AdvanceDeviceTime(TimeSpan by)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(by, TimeSpan.Zero);
        if (DeviceWork != DeviceWorkMode.Manual)
        {
            throw new InvalidOperationException("Device work runs in the background; set DeviceWork to DeviceWorkMode.Manual to move the device clock.");
        }
        TimeSpan target = DeviceTime + by;
        int ran = RunDueWork(target);
        lock (_clockLock)
        {
            _deviceTime = target;
        }
        return ran;
    }

    /// <summary>Dates a piece of work: due <paramref name="delay"/> from now on the device clock, after everything scheduled before it.</summary>
    internal void Stamp(ScheduledWork work, TimeSpan delay)
    {
        lock (_clockLock)
        {
            work.Due = _deviceTime + delay;
            work.Sequence = ++_workSequence;
        }
    }

    private int RunDueWork(TimeSpan until)
    {
        int ran = 0;
        while (true)
        {
            (DeviceModel Model, ScheduledWork Item)? next = null;
            foreach (var model in Models())
            {
                if (model.NextDueWork(until) is { } item
                    && (next is null || item.Due < next.Value.Item.Due || (item.Due == next.Value.Item.Due && item.Sequence < next.Value.Item.Sequence)))
                {
                    next = (model, item);
                }
            }
            if (next is not { } due)
            {
                return ran;
            }
            lock (_clockLock)
            {
                _deviceTime = TimeSpan.FromTicks(Math.Max(_deviceTime.Ticks, due.Item.Due.Ticks));
            }
            due.Model.RunWork(due.Item);
            ran++;
        }
    }

    /// <summary>Every device's model, taken under the kernel lock and used outside it.</summary>
    private List<DeviceModel> Models()
    {
        using (Enter())
        {
            return [.. _devices.Values.Select(d => d.Model).Distinct()];
        }
    }
}
