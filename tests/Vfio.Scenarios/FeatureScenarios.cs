using System.Runtime.InteropServices;
using Vfio.Interop;
using static Vfio.Interop.VfioUapi;

namespace Vfio.Scenarios;

/// <summary>
/// VFIO_DEVICE_FEATURE on the edu device at the errno level: the core's header checks, the migration
/// and DMA logging features a device without them answers with ENOTTY, MIG_DATA_SIZE unknown to 6.1,
/// and vfio-pci's low power entry and exit.
/// </summary>
internal static unsafe class FeatureScenarios
{
    /// <summary>Every feature scenario, in the order they run.</summary>
    public static IReadOnlyList<Scenario> All { get; } =
    [
        new("feature_header_checks_einval", HeaderChecks),
        new("feature_migration_enotty", MigrationNotSupported),
        new("feature_dma_logging_and_data_size_enotty", LoggingAndDataSizeNotSupported),
        new("feature_low_power_entry_exit", LowPowerEntryExit),
        new("feature_public_api_edu", PublicApi),
    ];

    /// <summary>The same answers through the public API: a clear not-supported error, low power on and off.</summary>
    public static Task PublicApi(ScenarioContext context) => EduScenarios.WithOpenEduAsync(context, device =>
    {
        Check.True(!device.ProbeFeature(VfioFeature.Migration, VfioFeatureAccess.Get), "edu claims migration");
        try
        {
            device.GetMigration();
            throw new ScenarioFailedException("GetMigration succeeded on edu");
        }
        catch (VfioNotSupportedException e)
        {
            context.Note(e.Message);
            Check.Equal(Errno.ENOTTY, e.Errno, "GetMigration's errno");
            Check.True(e.Message.StartsWith("Feature MIGRATION is not supported by this device", StringComparison.Ordinal), "message: " + e.Message);
        }
        Check.True(!device.ProbeFeature(VfioFeature.MigrationDataSize), "Linux 6.1 knows MIG_DATA_SIZE");
        Check.True(device.ProbeFeature(VfioFeature.LowPowerEntry, VfioFeatureAccess.Set), "vfio-pci lacks LOW_POWER_ENTRY");
        device.EnterLowPower();
        device.ExitLowPower();
        Check.Equal(0x010000edu, device.ReadIdentification(), "identification after low power");
        return Task.CompletedTask;
    });

    public static void HeaderChecks(ScenarioContext context) => WithDevice(context, device =>
    {
        Check.Fails(Feature(context, device, VFIO_DEVICE_FEATURE_MIGRATION | VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_SET, 8), Errno.EINVAL, "GET|SET without PROBE");
        Check.Fails(Feature(context, device, VFIO_DEVICE_FEATURE_MIGRATION | VFIO_DEVICE_FEATURE_GET | (1u << 19), 8), Errno.EINVAL, "an unknown flag bit");
        Check.Fails(Feature(context, device, VFIO_DEVICE_FEATURE_MIGRATION | VFIO_DEVICE_FEATURE_GET, 8, argsz: 4), Errno.EINVAL, "argsz smaller than the header");
    });

    public static void MigrationNotSupported(ScenarioContext context) => WithDevice(context, device =>
    {
        Check.Fails(Feature(context, device, VFIO_DEVICE_FEATURE_MIGRATION | VFIO_DEVICE_FEATURE_PROBE, 0), Errno.ENOTTY, "PROBE MIGRATION");
        Check.Fails(Feature(context, device, VFIO_DEVICE_FEATURE_MIGRATION | VFIO_DEVICE_FEATURE_GET, 8), Errno.ENOTTY, "GET MIGRATION");
        Check.Fails(Feature(context, device, VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE | VFIO_DEVICE_FEATURE_GET, 8), Errno.ENOTTY, "GET MIG_DEVICE_STATE");
    });

    public static void LoggingAndDataSizeNotSupported(ScenarioContext context) => WithDevice(context, device =>
    {
        Check.Fails(Feature(context, device, VFIO_DEVICE_FEATURE_DMA_LOGGING_START | VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_SET, 0), Errno.ENOTTY, "PROBE DMA_LOGGING_START");
        Check.Fails(Feature(context, device, VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT | VFIO_DEVICE_FEATURE_GET, 32), Errno.ENOTTY, "GET DMA_LOGGING_REPORT");
        Check.Fails(Feature(context, device, VFIO_DEVICE_FEATURE_MIG_DATA_SIZE | VFIO_DEVICE_FEATURE_GET, 8), Errno.ENOTTY, "GET MIG_DATA_SIZE");
    });

    public static void LowPowerEntryExit(ScenarioContext context) => WithDevice(context, device =>
    {
        Check.Ok(Feature(context, device, VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY | VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_SET, 0), "PROBE|SET LOW_POWER_ENTRY");
        Check.Fails(Feature(context, device, VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY | VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_GET, 0), Errno.EINVAL, "PROBE|GET LOW_POWER_ENTRY");
        Check.Fails(Feature(context, device, VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP | VFIO_DEVICE_FEATURE_SET, 8, wakeupFd: -1), Errno.EINVAL, "LOW_POWER_ENTRY_WITH_WAKEUP with eventfd -1");
        Check.Ok(Feature(context, device, VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY | VFIO_DEVICE_FEATURE_SET, 0), "SET LOW_POWER_ENTRY");
        Check.Fails(Feature(context, device, VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY | VFIO_DEVICE_FEATURE_SET, 0), Errno.EINVAL, "SET LOW_POWER_ENTRY twice");
        Check.Ok(Feature(context, device, VFIO_DEVICE_FEATURE_LOW_POWER_EXIT | VFIO_DEVICE_FEATURE_SET, 0), "SET LOW_POWER_EXIT");
        Check.Ok(Feature(context, device, VFIO_DEVICE_FEATURE_LOW_POWER_EXIT | VFIO_DEVICE_FEATURE_SET, 0), "SET LOW_POWER_EXIT when not in low power");
    });

    private static void WithDevice(ScenarioContext context, Action<SafeFd> body)
    {
        using var files = new VfioFiles(context);
        files.OpenReadyContainer();
        body(files.OpenDevice());
    }

    // A vfio_device_feature header and `data` bytes of payload (zeroes, or a wake-up eventfd number).
    private static int Feature(ScenarioContext context, SafeFd device, uint flags, int data, uint? argsz = null, int? wakeupFd = null)
    {
        Span<byte> buffer = stackalloc byte[8 + Math.Max(data, 8)];
        buffer.Clear();
        MemoryMarshal.Write(buffer, new vfio_device_feature { argsz = argsz ?? (uint)(8 + data), flags = flags });
        if (wakeupFd is int fd)
        {
            MemoryMarshal.Write(buffer[8..], fd);
        }
        fixed (byte* p = buffer)
        {
            return context.Kernel.Ioctl(device, VFIO_DEVICE_FEATURE, p);
        }
    }
}
