namespace Vfio;

// The registry's sysfs discovery, as its public API: Discover enumerates, Find throws when absent.
// The reading itself is SysfsDiscovery's. A device whose sysfs cannot be read, or does not read as the
// kernel writes it, never hides the others: Discover leaves it out and logs why (ProbeAsync reports it
// in ProbeResult.Failures), Find throws a VfioException naming it and saying what was read.
public sealed partial class VfioRegistry
{
    /// <summary>
    /// The PCI functions bound to a vfio driver, as sysfs describes them. A function whose sysfs cannot
    /// be read (or has no IOMMU group) is left out and logged as a warning; <see cref="FindPci"/> or
    /// <see cref="ProbeAsync"/> says what is wrong with it.
    /// </summary>
    public IReadOnlyList<PciDeviceContext> DiscoverPci() => Discovery.Pci([]);

    /// <summary>Finds one PCI function in sysfs and describes it, whatever it is bound to.</summary>
    /// <param name="address">The function's address.</param>
    /// <exception cref="VfioNotFoundException">No such function, or it has no IOMMU group.</exception>
    /// <exception cref="VfioException">Its sysfs cannot be read, or does not read as the kernel writes it; the message says what was read.</exception>
    public PciDeviceContext FindPci(PciAddress address) => Discovery.DescribePci(address);

    /// <summary>
    /// The platform devices bound to vfio-platform (or vfio-amba), with their device tree compatible
    /// entries (<c>of_node/compatible</c>) or their ACPI hardware id (the <c>acpi:</c> modalias). A device
    /// whose sysfs cannot be read is left out and logged as a warning.
    /// </summary>
    public IReadOnlyList<PlatformDeviceContext> DiscoverPlatform() => Discovery.Platform(includeRefused: false, []);

    /// <summary>The mediated devices that exist, with their types; one whose sysfs cannot be read is left out and logged as a warning.</summary>
    public IReadOnlyList<MdevDeviceContext> DiscoverMdev() => Discovery.Mdev([]);

    /// <summary>The mdev parents (<c>/sys/class/mdev_bus/*</c>) and the types each offers, read now; one whose sysfs cannot be read is left out and logged as a warning.</summary>
    public IReadOnlyList<MdevParent> DiscoverMdevParents() => Discovery.MdevParents();

    /// <summary>Reads one mdev parent and its types from sysfs.</summary>
    /// <param name="name">The parent's name under <c>/sys/class/mdev_bus</c> ("mtty").</param>
    /// <exception cref="ArgumentException"><paramref name="name"/> is not a device name: one path component, such as mtty.</exception>
    /// <exception cref="VfioNotFoundException">There is no such parent; the message lists those there are.</exception>
    public MdevParent FindMdevParent(string name)
    {
        KernelNames.Check(KernelNameKind.Device, name);
        return Discovery.TryDescribeMdevParent(name, out var parent) ? parent : throw new VfioNotFoundException(
            $"No mdev parent {name} in {Kernel.Sys("class/mdev_bus")} (there are: {string.Join(", ", Discovery.MdevParentNames().DefaultIfEmpty("none"))}); load its parent driver (e.g. modprobe mtty).");
    }
}
