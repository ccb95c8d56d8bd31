namespace Vfio.Testing;

/// <summary>When the work device models schedule (<see cref="DeviceModel.ScheduleWork(TimeSpan, Action)"/>) runs.</summary>
public enum DeviceWorkMode
{
    /// <summary>
    /// As soon as possible, on a thread-pool thread, one piece at a time per model in the order
    /// scheduled; delays are not waited for. <see cref="DeviceModel.WhenIdleAsync"/> waits for it.
    /// </summary>
    Background,

    /// <summary>
    /// Only when the test says: <see cref="SimulatedKernel.RunDeviceWork"/> runs the work that is due
    /// on the kernel's device clock, <see cref="SimulatedKernel.AdvanceDeviceTime"/> moves the clock on
    /// and runs what came due, on the calling thread. A test can then see a driver wait for its device.
    /// </summary>
    Manual,
}
