namespace Vfio;

/// <summary>What the registry read from sysfs about a platform device bound to vfio-platform.</summary>
public sealed class PlatformDeviceContext : VfioDeviceContext
{
    internal PlatformDeviceContext(VfioRegistry registry, string name, int groupId, IommuGroupKind groupKind, string? kernelDriver, IReadOnlyList<string> compatible)
        : base(registry, name, groupId, groupKind, "device:" + name, kernelDriver)
    {
        Compatible = compatible;
    }

    /// <summary>The device tree compatible strings, most specific first.</summary>
    public IReadOnlyList<string> Compatible { get; }
}

/// <summary>
/// A platform (device tree or ACPI) device handed to user space by vfio-platform: regions and
/// interrupts, no config space. Each platform device is a device set of its own.
/// </summary>
public abstract class PlatformVfioDevice : VfioDevice
{
    /// <summary>Initializes the device from what the registry discovered; does no kernel I/O.</summary>
    /// <param name="context">The discovered device.</param>
    protected PlatformVfioDevice(PlatformDeviceContext context)
        : base(context)
    {
        Compatible = context.Compatible;
    }

    /// <summary>The device tree compatible strings, most specific first.</summary>
    public IReadOnlyList<string> Compatible { get; }
}
