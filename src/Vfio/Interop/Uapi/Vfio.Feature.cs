using System.Runtime.InteropServices;

namespace Vfio.Interop;

// <linux/vfio.h>: VFIO_DEVICE_FEATURE and its payloads (VF token, migration v2, low power, DMA logging).

internal static partial class VfioUapi
{
    /// <summary>
    /// Get, set or probe one feature, selected by the low 16 bits of flags. PROBE may be combined with
    /// GET and/or SET to ask whether those directions are supported; GET and SET are otherwise
    /// mutually exclusive. A probe needs no data.
    /// </summary>
    public static readonly nuint VFIO_DEVICE_FEATURE = Ioc._IO(VFIO_TYPE, VFIO_BASE + 17);
    public const uint VFIO_DEVICE_FEATURE_MASK = 0xffff;
    public const uint VFIO_DEVICE_FEATURE_GET = 1u << 16;
    public const uint VFIO_DEVICE_FEATURE_SET = 1u << 17;
    public const uint VFIO_DEVICE_FEATURE_PROBE = 1u << 18;

    // Feature numbers.
    /// <summary>SET only, on an SR-IOV PF with VFs enabled and none open: a 16-byte UUID shared with VF drivers.</summary>
    public const uint VFIO_DEVICE_FEATURE_PCI_VF_TOKEN = 0;
    /// <summary>GET: vfio_device_feature_migration. Success means RUNNING and ERROR are supported.</summary>
    public const uint VFIO_DEVICE_FEATURE_MIGRATION = 1;
    /// <summary>
    /// SET: move to a new vfio_device_mig_state (combinations walk the shortest path over the FSM
    /// arcs); an arc that opens a data session returns its fd. GET: current state, data_fd -1.
    /// </summary>
    public const uint VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE = 2;
    /// <summary>SET, no data. Disables access to mmapped regions until LOW_POWER_EXIT.</summary>
    public const uint VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY = 3;
    /// <summary>SET: vfio_device_low_power_entry_with_wakeup. Single shot; the eventfd signals the wake-up.</summary>
    public const uint VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP = 4;
    /// <summary>SET, no data. May itself signal the wake-up eventfd.</summary>
    public const uint VFIO_DEVICE_FEATURE_LOW_POWER_EXIT = 5;
    /// <summary>SET: vfio_device_feature_dma_logging_control. Only one START until the matching STOP.</summary>
    public const uint VFIO_DEVICE_FEATURE_DMA_LOGGING_START = 6;
    public const uint VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP = 7;
    /// <summary>GET: vfio_device_feature_dma_logging_report; reads and clears the log for the range.</summary>
    public const uint VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT = 8;
    /// <summary>GET: vfio_device_feature_mig_data_size, the estimated length of the STOP_COPY stream.</summary>
    [UapiSince("6.2", "VFIO_DEVICE_FEATURE_MIG_DATA_SIZE")]
    public const uint VFIO_DEVICE_FEATURE_MIG_DATA_SIZE = 9;

    // vfio_device_feature_migration.flags. At least STOP_COPY is set when the feature is supported.
    /// <summary>STOP, STOP_COPY and RESUMING are supported.</summary>
    public const ulong VFIO_MIGRATION_STOP_COPY = 1u << 0;
    /// <summary>With STOP_COPY: RUNNING_P2P is supported too.</summary>
    public const ulong VFIO_MIGRATION_P2P = 1u << 1;
    /// <summary>With STOP_COPY: PRE_COPY (and with P2P, PRE_COPY_P2P) are supported too.</summary>
    [UapiSince("6.2", "VFIO_MIGRATION_PRE_COPY")]
    public const ulong VFIO_MIGRATION_PRE_COPY = 1u << 2;

    /// <summary>
    /// On a PRE_COPY data fd: how much initial and dirty data remains to be read, so the user can decide
    /// when to move to STOP_COPY.
    /// </summary>
    [UapiSince("6.2", "VFIO_MIG_GET_PRECOPY_INFO")]
    public static readonly nuint VFIO_MIG_GET_PRECOPY_INFO = Ioc._IO(VFIO_TYPE, VFIO_BASE + 21);
}

/// <summary>flags selects the feature and the direction; the feature's payload follows at sizeof in data[].</summary>
[FlexibleArray("data", typeof(byte))]
[StructLayout(LayoutKind.Sequential)]
internal struct vfio_device_feature
{
    public uint argsz;
    public uint flags;
}

[StructLayout(LayoutKind.Sequential)]
internal struct vfio_device_feature_migration
{
    public ulong flags;
}

[StructLayout(LayoutKind.Sequential)]
internal struct vfio_device_feature_mig_state
{
    /// <summary>A <see cref="vfio_device_mig_state"/>.</summary>
    public uint device_state;
    /// <summary>The data session's fd after SET into a state that starts one; the caller closes it. -1 on GET.</summary>
    public int data_fd;
}

/// <summary>
/// The migration v2 device state machine. ERROR cannot be requested; a failed arc may leave the
/// device in it, and only VFIO_DEVICE_RESET leaves it (back to RUNNING). After a failed SET the
/// device may be in any state along the combination path. RUNNING_P2P (and the PRE_COPY states)
/// are optional and discovered through VFIO_DEVICE_FEATURE_MIGRATION.
/// </summary>
internal enum vfio_device_mig_state
{
    VFIO_DEVICE_STATE_ERROR = 0,
    VFIO_DEVICE_STATE_STOP = 1,
    VFIO_DEVICE_STATE_RUNNING = 2,
    VFIO_DEVICE_STATE_STOP_COPY = 3,
    VFIO_DEVICE_STATE_RESUMING = 4,
    VFIO_DEVICE_STATE_RUNNING_P2P = 5,
    [UapiSince("6.2", "VFIO_MIGRATION_PRE_COPY")]
    VFIO_DEVICE_STATE_PRE_COPY = 6,
    [UapiSince("6.2", "VFIO_MIGRATION_PRE_COPY")]
    VFIO_DEVICE_STATE_PRE_COPY_P2P = 7,
}

[StructLayout(LayoutKind.Sequential)]
internal struct vfio_device_low_power_entry_with_wakeup
{
    public int wakeup_eventfd;
    public uint reserved;
}

/// <summary>
/// page_size is a hint in, the granularity chosen out. ranges points to num_ranges
/// vfio_device_feature_dma_logging_range; the kernel guarantees at least as many as fit in one page.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal struct vfio_device_feature_dma_logging_control
{
    public ulong page_size;
    public uint num_ranges;
    public uint __reserved;
    public ulong ranges;
}

[StructLayout(LayoutKind.Sequential)]
internal struct vfio_device_feature_dma_logging_range
{
    public ulong iova;
    public ulong length;
}

/// <summary>
/// bitmap points to a user-zeroed array of u64, one bit per page_size unit of IOVA from iova. The
/// kernel only sets bits. After any error the log must be assumed corrupt (treat all memory dirty).
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal struct vfio_device_feature_dma_logging_report
{
    public ulong iova;
    public ulong length;
    public ulong page_size;
    public ulong bitmap;
}

[UapiSince("6.2", "VFIO_DEVICE_FEATURE_MIG_DATA_SIZE")]
[StructLayout(LayoutKind.Sequential)]
internal struct vfio_device_feature_mig_data_size
{
    public ulong stop_copy_length;
}

[UapiSince("6.2", "VFIO_MIG_GET_PRECOPY_INFO")]
[StructLayout(LayoutKind.Sequential)]
internal struct vfio_precopy_info
{
    public uint argsz;
    public uint flags;
    public ulong initial_bytes;
    public ulong dirty_bytes;
}
