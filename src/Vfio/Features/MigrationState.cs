namespace Vfio;

/// <summary>The states of the migration v2 state machine (<c>enum vfio_device_mig_state</c>).</summary>
public enum VfioMigrationState
{
    /// <summary>The device failed an arc and could not return to a valid state; only a reset leaves it (to RUNNING).</summary>
    Error = 0,

    /// <summary>Stopped: no DMA, no interrupts, no change of internal or external state.</summary>
    Stop = 1,

    /// <summary>Running normally (the state after open and after reset).</summary>
    Running = 2,

    /// <summary>Stopped, with the device state readable from the data session (read until end of stream).</summary>
    StopCopy = 3,

    /// <summary>Stopped, loading a new internal state written to the data session.</summary>
    Resuming = 4,

    /// <summary>Running, but initiating no peer-to-peer DMA (optional: <see cref="VfioMigrationCapabilities.P2P"/>).</summary>
    RunningP2P = 5,

    /// <summary>Running while tracking state changes, the saving session open (optional: <see cref="VfioMigrationCapabilities.PreCopy"/>; Linux 6.2).</summary>
    PreCopy = 6,

    /// <summary>PRE_COPY without peer-to-peer DMA (needs both P2P and PRE_COPY; Linux 6.2).</summary>
    PreCopyP2P = 7,
}

/// <summary>What <c>VFIO_DEVICE_FEATURE_MIGRATION</c> says the device supports.</summary>
[Flags]
public enum VfioMigrationCapabilities : ulong
{
    /// <summary>No migration.</summary>
    None = 0,

    /// <summary>STOP, STOP_COPY and RESUMING (with RUNNING and ERROR, always there when migration is).</summary>
    StopCopy = 1,

    /// <summary>RUNNING_P2P as well.</summary>
    P2P = 2,

    /// <summary>PRE_COPY (and PRE_COPY_P2P with <see cref="P2P"/>); Linux 6.2.</summary>
    PreCopy = 4,
}

/// <summary>How far a migration data transfer is.</summary>
/// <param name="BytesTransferred">Bytes moved so far through the data session.</param>
/// <param name="EstimatedTotalBytes">
/// The device's estimate of the whole, when it gives one: MIG_DATA_SIZE in STOP_COPY and
/// VFIO_MIG_GET_PRECOPY_INFO in PRE_COPY (both Linux 6.2; null on 6.1 and while resuming).
/// </param>
public readonly record struct MigrationProgress(long BytesTransferred, long? EstimatedTotalBytes);
