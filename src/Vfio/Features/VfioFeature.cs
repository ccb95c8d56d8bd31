using System.Runtime.InteropServices;
using Vfio.Interop;

namespace Vfio;

/// <summary>
/// The device features of <c>VFIO_DEVICE_FEATURE</c> (the low 16 bits of its flags), with the kernel
/// that introduced each.
/// </summary>
public enum VfioFeature : ushort
{
    /// <summary>A VF token (a UUID) shared by an SR-IOV PF's driver with its VFs' drivers; SET only.</summary>
    PciVfToken = 0,

    /// <summary>Migration v2 support and its optional states (GET); Linux 5.18.</summary>
    Migration = 1,

    /// <summary>The migration state machine (GET the state, SET a new one); Linux 5.18.</summary>
    MigrationDeviceState = 2,

    /// <summary>Allow runtime low power (SET); vfio-pci, Linux 6.1.</summary>
    LowPowerEntry = 3,

    /// <summary>Allow runtime low power once, with a wake-up eventfd (SET); vfio-pci, Linux 6.1.</summary>
    LowPowerEntryWithWakeup = 4,

    /// <summary>Leave low power (SET); vfio-pci, Linux 6.1.</summary>
    LowPowerExit = 5,

    /// <summary>Start device DMA dirty logging (SET); Linux 6.1, drivers with log support (mlx5, pds).</summary>
    DmaLoggingStart = 6,

    /// <summary>Stop device DMA dirty logging (SET); Linux 6.1.</summary>
    DmaLoggingStop = 7,

    /// <summary>Read and clear the DMA dirty log for a range (GET); Linux 6.1.</summary>
    DmaLoggingReport = 8,

    /// <summary>The estimated STOP_COPY data length (GET); Linux 6.2 — unknown (ENOTTY) on 6.1.</summary>
    MigrationDataSize = 9,
}

/// <summary>The directions a feature is used in.</summary>
[Flags]
public enum VfioFeatureAccess
{
    /// <summary>Only whether the device knows the feature at all.</summary>
    None = 0,

    /// <summary><c>VFIO_DEVICE_FEATURE_GET</c>.</summary>
    Get = 1,

    /// <summary><c>VFIO_DEVICE_FEATURE_SET</c>.</summary>
    Set = 2,
}
