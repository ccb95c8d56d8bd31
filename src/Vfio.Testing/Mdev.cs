using System.Globalization;
using Vfio.Interop;

namespace Vfio.Testing;

/// <summary>A type of mediated device a parent offers (a folder under <c>mdev_supported_types</c>).</summary>
/// <param name="name">The type's short name; its folder is "&lt;parent driver&gt;-&lt;name&gt;".</param>
/// <param name="maxInstances">How many devices of this type may exist at once.</param>
/// <param name="createModel">Creates the model of each new device.</param>
/// <param name="description">The type's description attribute.</param>
/// <param name="deviceApi">The device API it exposes ("vfio-pci" or "vfio-platform").</param>
public sealed class SimulatedMdevType(string name, int maxInstances, Func<DeviceModel> createModel, string description = "", string deviceApi = "vfio-pci")
{
    /// <summary>The type's short name.</summary>
    public string Name { get; } = name;

    /// <summary>How many devices of this type may exist at once.</summary>
    public int MaxInstances { get; } = maxInstances;

    /// <summary>The type's description.</summary>
    public string Description { get; } = description;

    /// <summary>The device API ("vfio-pci").</summary>
    public string DeviceApi { get; } = deviceApi;

    internal Func<DeviceModel> CreateModel { get; } = createModel;

    internal int Instances { get; set; }
}

/// <summary>A parent device that creates mediated devices (listed under <c>class/mdev_bus</c>).</summary>
public sealed class SimulatedMdevParent
{
    internal SimulatedMdevParent(SimulatedKernel kernel, string name, string driver, IReadOnlyList<SimulatedMdevType> types)
    {
        Kernel = kernel;
        Name = name;
        Driver = driver;
        Types = types;
    }

    /// <summary>The parent's device name.</summary>
    public string Name { get; }

    /// <summary>The parent's driver, which also drives its mdevs.</summary>
    public string Driver { get; }

    /// <summary>The types it offers.</summary>
    public IReadOnlyList<SimulatedMdevType> Types { get; }

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
}

public sealed partial class SimulatedKernel
{
    /// <summary>
    /// Adds an mdev parent (a virtual device driven by <paramref name="driver"/>) offering
    /// <paramref name="types"/>; writing a UUID to a type's <c>create</c> makes a device with its own
    /// emulated IOMMU group.
    /// </summary>
    /// <param name="name">The parent's device name.</param>
    /// <param name="driver">The parent's driver name, e.g. "mtty".</param>
    /// <param name="types">The types it offers.</param>
    public SimulatedMdevParent AddMdevParent(string name, string driver, params SimulatedMdevType[] types)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentException.ThrowIfNullOrEmpty(driver);
        ArgumentNullException.ThrowIfNull(types);
        var parent = new SimulatedMdevParent(this, name, driver, [.. types]);
        using (Enter())
        {
            var dir = Sysfs.Directory(parent.SysfsRelative);
            Sysfs.Directory("class/mdev_bus").Link(name, parent.SysfsRelative);
            Sysfs.Directory("bus/mdev/drivers").Directory(driver);
            foreach (var type in types)
            {
                var typeDir = dir.Directory("mdev_supported_types").Directory(parent.TypeFolder(type));
                typeDir.Attribute("name", () => type.Name + "\n");
                typeDir.Attribute("description", () => type.Description + "\n");
                typeDir.Attribute("device_api", () => type.DeviceApi + "\n");
                typeDir.Attribute("available_instances", () => Decimal(type.MaxInstances - type.Instances) + "\n");
                typeDir.Attribute("create", null, text => CreateMdevLocked(parent, type, text.Trim()));
                typeDir.Directory("devices");
            }
        }
        return parent;
    }

    internal SimulatedDevice? FindDeviceLocked(string name) => _devices.GetValueOrDefault(name);

    internal int CreateMdevLocked(SimulatedMdevParent parent, SimulatedMdevType type, string text)
    {
        if (text.Length != 36 || !Guid.TryParseExact(text, "D", out var uuid))
        {
            return -Errno.EINVAL;
        }
        string name = uuid.ToString("D", CultureInfo.InvariantCulture);
        if (_devices.ContainsKey(name))
        {
            return -Errno.EEXIST;
        }
        if (type.Instances >= type.MaxInstances)
        {
            return -Errno.ENOSPC;
        }
        var model = type.CreateModel();
        model.Seal();
        int groupId = _groups.Count == 0 ? 0 : _groups.Keys.Max() + 1;
        var group = GroupLocked(groupId, SimulatedGroupKind.Emulated);
        var device = new SimulatedMdevDevice(this, uuid, parent, type, model, group);
        type.Instances++;
        AddDeviceLocked(device, "bus/mdev");
        var dir = Sysfs.Directory(device.SysfsRelative);
        string typePath = parent.SysfsRelative + "/mdev_supported_types/" + parent.TypeFolder(type);
        dir.Link("mdev_type", typePath);
        dir.Link("driver", "bus/mdev/drivers/" + parent.Driver);
        dir.Attribute("remove", null, value => value.Trim() == "1" ? RemoveMdevLocked(device) : -Errno.EINVAL);
        Sysfs.Directory(typePath + "/devices").Link(name, device.SysfsRelative);
        Wake();
        return 0;
    }

    private int RemoveMdevLocked(SimulatedMdevDevice device)
    {
        if (!_devices.ContainsKey(device.Name))
        {
            return -Errno.ENODEV;
        }
        UnbindLocked(device);
        _devices.Remove(device.Name);
        device.Type.Instances--;
        var parent = device.Parent;
        Sysfs.Remove(parent.SysfsRelative + "/mdev_supported_types/" + parent.TypeFolder(device.Type) + "/devices/" + device.Name);
        Sysfs.Remove("bus/mdev/devices/" + device.Name);
        Sysfs.Remove(device.SysfsRelative);
        device.Group.Devices.Remove(device);
        if (device.Group.Devices.Count == 0 && device.Group.OpenFile is null)
        {
            _groups.Remove(device.Group.Id);
            Sysfs.Remove("kernel/iommu_groups/" + Decimal(device.Group.Id));
        }
        return 0;
    }
}
