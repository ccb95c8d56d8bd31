namespace Vfio;

/// <summary>
/// A migration arc failed. <see cref="CurrentState"/> is where the device was left (read back from
/// the kernel after the failure), so the caller knows what to do next.
/// </summary>
public sealed class VfioMigrationException : VfioException
{
    /// <inheritdoc cref="VfioException(string)"/>
    public VfioMigrationException(string message) : base(message) { }

    /// <inheritdoc cref="VfioException(string, Exception)"/>
    public VfioMigrationException(string message, Exception innerException) : base(message, innerException) { }

    /// <inheritdoc cref="VfioException()"/>
    public VfioMigrationException() { }

    internal VfioMigrationException(string message, VfioException cause, VfioMigrationState from, VfioMigrationState to,
        VfioMigrationState target, VfioMigrationState? current)
        : base(message, $"migration arc {MigrationPlanner.Name(from)} -> {MigrationPlanner.Name(to)} ({cause.Operation})", cause.Errno,
            new ErrorTarget(cause.GroupId, cause.Device, cause.RegionIndex), cause)
    {
        ArcFrom = from;
        ArcTo = to;
        Target = target;
        CurrentState = current;
        KernelErrno = cause.Errno;
    }

    /// <summary>The state the failed arc started from.</summary>
    public VfioMigrationState ArcFrom { get; }

    /// <summary>The state the failed arc was to reach.</summary>
    public VfioMigrationState ArcTo { get; }

    /// <summary>The state the caller asked for.</summary>
    public VfioMigrationState Target { get; }

    /// <summary>The state the device is in now, or null when even reading it failed (then reset the device).</summary>
    public VfioMigrationState? CurrentState { get; }

    /// <summary>The errno the kernel returned for the arc (the same as <see cref="VfioException.Errno"/>).</summary>
    public int KernelErrno { get; }

    /// <summary>True when only a device reset brings the device back (it is in ERROR, or its state is unknown).</summary>
    public bool RequiresReset => CurrentState is null or VfioMigrationState.Error;
}
