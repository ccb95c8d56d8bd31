namespace Vfio.Testing;

/// <summary>
/// A piece of device work a model runs later (<see cref="DeviceModel.ScheduleWork(TimeSpan, Action)"/>),
/// or makes once and schedules again and again (<see cref="DeviceModel.CreateWork"/>,
/// <see cref="DeviceModel.ScheduleWork(ScheduledWork, TimeSpan)"/>).
/// </summary>
public sealed class ScheduledWork
{
    internal ScheduledWork(DeviceModel owner, Action work)
    {
        Owner = owner;
        Work = work;
    }

    internal DeviceModel Owner { get; }

    internal Action Work { get; }

    // The owner's work lock guards these three.

    /// <summary>When it is due on the kernel's device clock.</summary>
    internal TimeSpan Due { get; set; }

    /// <summary>The kernel-wide order of scheduling, which breaks ties between equal due times.</summary>
    internal long Sequence { get; set; }

    /// <summary>Waiting in its model's queue.</summary>
    internal bool Scheduled { get; set; }
}
