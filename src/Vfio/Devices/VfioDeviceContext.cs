namespace Vfio;

/// <summary>
/// What the registry knows about a device before it is constructed: its name, IOMMU group and the
/// registry it will be registered with. Typed devices take the typed context in their constructor.
/// </summary>
public abstract class VfioDeviceContext
{
    private protected VfioDeviceContext(VfioRegistry registry, string name, int groupId, IommuGroupKind groupKind, string setId, string? kernelDriver)
    {
        Registry = registry;
        Name = name;
        GroupId = groupId;
        GroupKind = groupKind;
        SetId = setId;
        KernelDriver = kernelDriver;
    }

    /// <summary>The registry the device belongs to.</summary>
    public VfioRegistry Registry { get; }

    /// <summary>The device's name as the kernel knows it (a PCI address, a platform device name, an mdev UUID).</summary>
    public string Name { get; }

    /// <summary>The IOMMU group the device is in.</summary>
    public int GroupId { get; }

    /// <summary>The kind of that group.</summary>
    public IommuGroupKind GroupKind { get; }

    /// <summary>The kernel driver the device is bound to (vfio-pci, vfio-platform, ...), if any.</summary>
    public string? KernelDriver { get; }

    internal string SetId { get; }

    /// <summary>The device constructed from this context, if any, so that a failed probe can undo its init.</summary>
    internal VfioDevice? Constructed { get; set; }
}
