namespace Vfio;

/// <summary>What the registry read from sysfs about a mediated device.</summary>
public sealed class MdevDeviceContext : VfioDeviceContext
{
    internal MdevDeviceContext(VfioRegistry registry, Guid uuid, int groupId, string? kernelDriver, string typeId, string? parent)
        : base(registry, uuid.ToString("D"), groupId, IommuGroupKind.Emulated, "device:" + uuid.ToString("D"), kernelDriver)
    {
        Uuid = uuid;
        TypeId = typeId;
        Parent = parent;
    }

    /// <summary>The mediated device's UUID, which is also its name.</summary>
    public Guid Uuid { get; }

    /// <summary>The mdev type it was created from (<c>mtty-2</c>).</summary>
    public string TypeId { get; }

    /// <summary>The parent device that mediates it, if known.</summary>
    public string? Parent { get; }
}

/// <summary>
/// A mediated device: a virtual device a parent driver carves out of real hardware, in an emulated
/// IOMMU group of its own. Each mdev is a device set of its own.
/// </summary>
public abstract class MdevVfioDevice : VfioDevice
{
    /// <summary>Initializes the device from what the registry discovered; does no kernel I/O.</summary>
    /// <param name="context">The discovered device.</param>
    protected MdevVfioDevice(MdevDeviceContext context)
        : base(context)
    {
        Uuid = context.Uuid;
        TypeId = context.TypeId;
    }

    /// <summary>The mediated device's UUID.</summary>
    public Guid Uuid { get; }

    /// <summary>The mdev type it was created from.</summary>
    public string TypeId { get; }

    internal override string SysfsDirectory => "bus/mdev/devices/" + Name;
}
