namespace Vfio.Testing;

/// <summary>
/// What the VFIO core calls in a driver with migration v2 (the kernel's <c>vfio_migration_ops</c> and
/// <c>vfio_log_ops</c>): the core decodes VFIO_DEVICE_FEATURE and checks the flags
/// (<see cref="DeviceFeatures"/>), a model implements only the driver's part. Models of vendor
/// drivers (<see cref="MigratableDeviceModel"/>) and of the kernel's mtty sample
/// (<see cref="MttyDeviceModel"/>) implement it. Every call takes the model's lock itself.
/// </summary>
internal interface IMigrationDriver
{
    /// <summary>The device's <c>migration_flags</c>: VFIO_DEVICE_FEATURE_MIGRATION's answer.</summary>
    VfioMigrationCapabilities Capabilities { get; }

    /// <summary>Whether the driver has <c>migration_get_data_size</c> (VFIO_DEVICE_FEATURE_MIG_DATA_SIZE, Linux 6.2).</summary>
    bool ReportsDataSize { get; }

    /// <summary>Whether the driver has <c>log_ops</c> (VFIO_DEVICE_FEATURE_DMA_LOGGING_*); ENOTTY otherwise.</summary>
    bool SupportsDmaLogging { get; }

    /// <summary><c>migration_get_state</c>.</summary>
    int GetMigrationState(out VfioMigrationState state);

    /// <summary><c>migration_set_state</c>: walks the arcs to <paramref name="target"/>; a file when the last arc opened a data session.</summary>
    int SetMigrationState(VfioMigrationState target, out KernelFile? file);

    /// <summary><c>migration_get_data_size</c>: the bytes STOP_COPY will produce.</summary>
    int GetMigrationDataSize(out ulong length);

    /// <summary><c>log_start</c>: may change <paramref name="pageSize"/> to the granularity it chose.</summary>
    int StartDmaLogging(IReadOnlyList<(ulong Iova, ulong Length)> ranges, ref ulong pageSize);

    /// <summary><c>log_stop</c>.</summary>
    int StopDmaLogging();

    /// <summary><c>log_read_and_clear</c>: sets the bits of the pages written in the range.</summary>
    int ReportDmaLogging(ulong iova, ulong length, ulong pageSize, Span<ulong> bitmap);
}

/// <summary>Finds the migration driver of a device model, if it has one.</summary>
internal static class MigrationDrivers
{
    /// <summary>The model's migration driver, or null when the device has no migration (the core then answers ENOTTY).</summary>
    public static IMigrationDriver? Of(DeviceModel model) => model switch
    {
        IMigrationDriver driver => driver,
        MigratableDeviceModel migratable => new Migratable(migratable),
        _ => null,
    };

    /// <summary><see cref="MigratableDeviceModel"/>'s driver calls, which it keeps internal.</summary>
    private sealed class Migratable(MigratableDeviceModel model) : IMigrationDriver
    {
        public VfioMigrationCapabilities Capabilities => model.Capabilities;

        public bool ReportsDataSize => model.ReportsDataSize;

        public bool SupportsDmaLogging => model.SupportsDmaLogging;

        public int GetMigrationState(out VfioMigrationState state) => model.GetMigrationState(out state);

        public int SetMigrationState(VfioMigrationState target, out KernelFile? file) => model.SetMigrationState(target, out file);

        public int GetMigrationDataSize(out ulong length) => model.GetMigrationDataSize(out length);

        public int StartDmaLogging(IReadOnlyList<(ulong Iova, ulong Length)> ranges, ref ulong pageSize) => model.StartDmaLogging(ranges, ref pageSize);

        public int StopDmaLogging() => model.StopDmaLogging();

        public int ReportDmaLogging(ulong iova, ulong length, ulong pageSize, Span<ulong> bitmap) => model.ReportDmaLogging(iova, length, pageSize, bitmap);
    }
}
