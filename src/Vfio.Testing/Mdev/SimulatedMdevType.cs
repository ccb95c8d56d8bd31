using System.Globalization;
using Vfio.Interop;

namespace Vfio.Testing;

/// <summary>A type of mediated device a parent offers (a folder under <c>mdev_supported_types</c>).</summary>
/// <param name="name">The type's short name (the kernel's <c>sysfs_name</c>); its folder is "&lt;parent driver&gt;-&lt;name&gt;".</param>
/// <param name="maxInstances">
/// How many devices of this type may exist at once; for a parent with a shared capacity
/// (<see cref="SimulatedKernel.AddMdevParent(string, string, int, SimulatedMdevType[])"/>), an extra limit
/// on top of it (<see cref="int.MaxValue"/> for none).
/// </param>
/// <param name="createModel">Creates the model of each new device.</param>
/// <param name="description">The type's <c>description</c> attribute; null when the parent driver shows none (mtty shows none).</param>
/// <param name="deviceApi">The device API it exposes ("vfio-pci", "vfio-platform", "vfio-ccw", "vfio-ap").</param>
public sealed class SimulatedMdevType(string name, int maxInstances, Func<DeviceModel> createModel, string? description = null, string deviceApi = "vfio-pci")
{
    /// <summary>The type's short name.</summary>
    public string Name { get; } = name;

    /// <summary>
    /// The type's <c>name</c> attribute (the kernel's <c>pretty_name</c>, "Single port serial"); the
    /// attribute shows <see cref="Name"/> when null, as the kernel does.
    /// </summary>
    public string? PrettyName { get; init; }

    /// <summary>How many devices of this type may exist at once.</summary>
    public int MaxInstances { get; } = maxInstances;

    /// <summary>
    /// What one device of this type takes from its parent's shared capacity (mtty: its number of
    /// serial ports); ignored when the parent has none.
    /// </summary>
    public int Units { get; init; } = 1;

    /// <summary>The type's description, or null when the type has no <c>description</c> attribute.</summary>
    public string? Description { get; } = description;

    /// <summary>The device API ("vfio-pci").</summary>
    public string DeviceApi { get; } = deviceApi;

    internal Func<DeviceModel> CreateModel { get; } = createModel;

    internal int Instances { get; set; }

    internal SimulatedMdevParent? Parent { get; set; }

    /// <summary>What <c>available_instances</c> shows: the parent driver's <c>get_available</c>.</summary>
    internal int Available
    {
        get
        {
            int left = MaxInstances - Instances;
            return Parent?.Capacity is { } _ ? Math.Min(left, Parent.FreeUnits / Units) : left;
        }
    }
}
