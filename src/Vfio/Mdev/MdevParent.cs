namespace Vfio;

/// <summary>
/// A device that creates mediated devices (listed under <c>/sys/class/mdev_bus</c>), and the types it
/// offers, as sysfs showed them when <see cref="VfioRegistry.DiscoverMdevParents"/> read it.
/// </summary>
public sealed class MdevParent
{
    internal MdevParent(VfioRegistry registry, string name, string sysfsPath)
    {
        Registry = registry;
        Name = name;
        SysfsRelative = sysfsPath;
    }

    /// <summary>The parent's device name ("mtty", or a PCI address for a physical parent).</summary>
    public string Name { get; }

    /// <summary>The types it offers, by <see cref="MdevType.Id"/>.</summary>
    public IReadOnlyList<MdevType> Types { get; internal set; } = [];

    /// <summary>The registry it was discovered by, which creates its mdevs.</summary>
    public VfioRegistry Registry { get; }

    internal string SysfsRelative { get; }

    /// <summary>Finds one of the types it offers.</summary>
    /// <param name="typeId">The type's id, the folder name under <c>mdev_supported_types</c> ("mtty-2").</param>
    /// <exception cref="VfioNotFoundException">The parent offers no such type; the message lists those it offers.</exception>
    public MdevType Type(string typeId)
    {
        ArgumentException.ThrowIfNullOrEmpty(typeId);
        return Types.FirstOrDefault(t => t.Id == typeId)
            ?? throw new VfioNotFoundException($"The mdev parent {Name} offers no type {typeId}; it offers: {string.Join(", ", Types.Select(t => t.Id))}.");
    }

    /// <summary>Creates an mdev of one of its types; see <see cref="MdevType.CreateAsync{TDevice}"/>.</summary>
    /// <typeparam name="TDevice">The device type the registry's matching <see cref="MdevDriver{TDevice}"/> creates.</typeparam>
    /// <param name="typeId">The type's id ("mtty-2").</param>
    /// <param name="uuid">The new device's UUID; a new random one when null.</param>
    /// <param name="cancellationToken">Stops waiting while a failed creation is undone.</param>
    /// <returns>The created, registered and open device; dispose it to close and remove it.</returns>
    public Task<CreatedMdev<TDevice>> CreateAsync<TDevice>(string typeId, Guid? uuid = null, CancellationToken cancellationToken = default)
        where TDevice : MdevVfioDevice =>
        Type(typeId).CreateAsync<TDevice>(uuid, cancellationToken);

    /// <inheritdoc/>
    public override string ToString() => $"mdev parent {Name} ({string.Join(", ", Types.Select(t => t.Id))})";
}
