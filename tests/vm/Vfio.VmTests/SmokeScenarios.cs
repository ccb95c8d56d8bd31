using Vfio.Interop;

namespace Vfio.VmTests;

/// <summary>The first checks against a real kernel: container, group and device basics.</summary>
internal static class SmokeScenarios
{
    private const uint VFIO_TYPE = ';';
    private const uint VFIO_BASE = 100;

    /// <summary>Every smoke scenario, in the order they run.</summary>
    public static IReadOnlyList<Scenario> All { get; } =
    [
        new("api_version", ApiVersion),
    ];

    private static void ApiVersion(ScenarioContext context)
    {
        int rc = context.Kernel.Open(context.Kernel.Dev("vfio/vfio"), Interop.Interop.Flags.O_RDWR, out SafeFd container);
        if (rc < 0)
        {
            throw new ScenarioFailedException("open /dev/vfio/vfio: " + Errno.Name(-rc));
        }
        using (container)
        {
            int version = context.Kernel.Ioctl(container, Ioc._IO(VFIO_TYPE, VFIO_BASE + 0), 0);
            if (version != 0)
            {
                throw new ScenarioFailedException("VFIO_GET_API_VERSION returned " + version);
            }
        }
    }
}
