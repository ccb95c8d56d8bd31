using System.Globalization;

namespace Vfio;

/// <summary>
/// A type of mediated device a parent offers (a folder under <c>mdev_supported_types</c>): its
/// attributes as read at discovery, and live reads of what changes.
/// </summary>
public sealed class MdevType
{
    internal MdevType(MdevParent parent, string id, string name, string? description, string deviceApi)
    {
        Parent = parent;
        Id = id;
        Name = name;
        Description = description;
        DeviceApi = deviceApi;
    }

    /// <summary>The parent that offers it.</summary>
    public MdevParent Parent { get; }

    /// <summary>The type's id: its folder name, "&lt;parent driver&gt;-&lt;name&gt;" ("mtty-2"), which mdev drivers match.</summary>
    public string Id { get; }

    /// <summary>Its <c>name</c> attribute ("Dual port serial").</summary>
    public string Name { get; }

    /// <summary>Its <c>description</c> attribute, or null when the parent driver shows none.</summary>
    public string? Description { get; }

    /// <summary>Its <c>device_api</c> attribute: the VFIO device API its devices expose ("vfio-pci").</summary>
    public string DeviceApi { get; }

    internal string SysfsRelative => KernelNames.Join(Parent.SysfsRelative + "/mdev_supported_types", KernelNameKind.MdevType, Id);

    /// <summary>Reads <c>available_instances</c> now: how many more devices of this type can be created.</summary>
    /// <exception cref="VfioNotFoundException">The type (or its parent) is gone.</exception>
    /// <exception cref="VfioException">The attribute cannot be read, or is not a count (the message says what it read).</exception>
    public int ReadAvailableInstances() =>
        Parent.Registry.Sysfs.ReadCount(SysfsRelative + "/available_instances", new ErrorTarget(Device: Parent.Name)) ?? throw Gone();

    /// <summary>Reads the UUIDs of the devices of this type that exist now (the type's <c>devices</c> folder).</summary>
    public IReadOnlyList<Guid> ReadDevices() =>
        [.. Parent.Registry.Sysfs.List(SysfsRelative + "/devices", KernelNameKind.Uuid, new ErrorTarget(Device: Parent.Name)).Select(n => Guid.ParseExact(n, "D"))];

    /// <summary>
    /// Creates an mdev of this type (writes its UUID to the type's <c>create</c>), then has the
    /// registry's <see cref="MdevDriver{TDevice}"/> for the type create the typed device, registers it
    /// and opens it through its emulated IOMMU group. Either all of that works, or the error says why
    /// and nothing is left behind: no mdev this call created, no open file, no registered device.
    /// </summary>
    /// <typeparam name="TDevice">The device type the matching driver creates.</typeparam>
    /// <param name="uuid">The new device's UUID; a new random one when null.</param>
    /// <param name="cancellationToken">
    /// Checked before each step that changes something (the create, the registration, the open): once
    /// cancelled, no further step is taken, what was done is undone, and the call throws
    /// <see cref="OperationCanceledException"/>.
    /// </param>
    /// <returns>The open device; disposing the handle closes, unregisters, disposes and removes it.</returns>
    /// <exception cref="InvalidOperationException">No driver added to the registry handles this type, or it creates another device type.</exception>
    /// <exception cref="VfioNotFoundException">The parent or the type is gone.</exception>
    /// <exception cref="VfioException">The kernel refused: no instance left (ENOSPC, EUSERS), the UUID exists (EEXIST), ...; or the first open failed.</exception>
    /// <exception cref="OperationCanceledException">The token was cancelled; nothing this call created is left.</exception>
    public Task<CreatedMdev<TDevice>> CreateAsync<TDevice>(Guid? uuid = null, CancellationToken cancellationToken = default)
        where TDevice : MdevVfioDevice =>
        MdevLifecycle.CreateAsync<TDevice>(this, uuid ?? Guid.NewGuid(), cancellationToken);

    /// <summary>
    /// Creates an mdev of this type and leaves it there, unopened, for any process to use (as writing its
    /// UUID to the type's <c>create</c> does); remove it with <see cref="RemoveDevice"/>. To create, use and
    /// remove one in this process, use <see cref="CreateAsync{TDevice}"/> instead.
    /// </summary>
    /// <param name="uuid">The new device's UUID; a new random one when null.</param>
    /// <returns>The new device's UUID.</returns>
    /// <exception cref="VfioNotFoundException">The parent or the type is gone.</exception>
    /// <exception cref="VfioException">The kernel refused: no instance left (ENOSPC, EUSERS), the UUID exists (EEXIST), ...</exception>
    public Guid CreateDevice(Guid? uuid = null)
    {
        var id = uuid ?? Guid.NewGuid();
        MdevLifecycle.CreateDevice(this, id);
        return id;
    }

    /// <summary>
    /// Removes an mdev of this type (writes 1 to its <c>remove</c>); the kernel waits while a process has
    /// it open. One that is already gone counts as removed.
    /// </summary>
    /// <param name="uuid">The device's UUID.</param>
    /// <exception cref="VfioException">The kernel refused; the message says how to remove it by hand.</exception>
    public void RemoveDevice(Guid uuid) => MdevLifecycle.Remove(Parent.Registry, this, uuid);

    internal VfioNotFoundException Gone() =>
        new($"The mdev type {Id} of parent {Parent.Name} is gone ({Parent.Registry.Kernel.Sys(SysfsRelative)} no longer exists): its parent driver was unloaded or its device removed.");

    /// <inheritdoc/>
    public override string ToString() => $"{Id} ({Name}, {DeviceApi}) on {Parent.Name}";
}
