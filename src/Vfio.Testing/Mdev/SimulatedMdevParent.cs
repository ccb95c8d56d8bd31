using System.Globalization;
using Vfio.Interop;

namespace Vfio.Testing;

/// <summary>A parent device that creates mediated devices (listed under <c>class/mdev_bus</c>).</summary>
public sealed class SimulatedMdevParent
{
    internal SimulatedMdevParent(SimulatedKernel kernel, string name, string driver, int? capacity, IReadOnlyList<SimulatedMdevType> types)
    {
        Kernel = kernel;
        Name = name;
        Driver = driver;
        Capacity = capacity;
        FreeUnits = capacity ?? 0;
        Types = types;
    }

    /// <summary>The parent's device name.</summary>
    public string Name { get; }

    /// <summary>The parent's driver, which also drives its mdevs.</summary>
    public string Driver { get; }

    /// <summary>The capacity its types share (mtty: 24 serial ports), or null when each type counts alone.</summary>
    public int? Capacity { get; }

    /// <summary>The types it offers.</summary>
    public IReadOnlyList<SimulatedMdevType> Types { get; }

    /// <summary>Whether the parent was removed (its driver unloaded), after which its sysfs folder is gone.</summary>
    public bool IsRemoved { get; internal set; }

    internal int FreeUnits { get; set; }

    internal SimulatedKernel Kernel { get; }

    internal string SysfsRelative => "devices/virtual/" + Driver + "/" + Name;

    internal string TypeFolder(SimulatedMdevType type) => Driver + "-" + type.Name;

    /// <summary>Creates a device of <paramref name="typeName"/> as writing its UUID to the type's <c>create</c> would.</summary>
    /// <param name="uuid">The new device's UUID.</param>
    /// <param name="typeName">The type's short name.</param>
    public SimulatedMdevDevice Create(Guid uuid, string typeName)
    {
        var type = Types.FirstOrDefault(t => t.Name == typeName) ?? throw new ArgumentException("No type " + typeName, nameof(typeName));
        using (Kernel.Enter())
        {
            int r = Kernel.CreateMdevLocked(this, type, uuid.ToString("D", CultureInfo.InvariantCulture));
            if (r < 0)
            {
                throw new InvalidOperationException("Creating the mdev failed: " + Errno.Name(-r));
            }
            return (SimulatedMdevDevice)Kernel.FindDeviceLocked(uuid.ToString("D", CultureInfo.InvariantCulture))!;
        }
    }

    /// <summary>
    /// Removes the parent as unloading its driver would (<c>mdev_unregister_parent</c>): its mdevs are
    /// removed (waiting while one is open), then its folders disappear.
    /// </summary>
    public void Remove()
    {
        using (Kernel.Enter())
        {
            Kernel.RemoveMdevParentLocked(this);
        }
    }
}
