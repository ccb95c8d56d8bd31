using System.Globalization;
using Vfio.Interop;

namespace Vfio.Testing;

public sealed partial class SimulatedKernel
{
    /// <summary>
    /// Adds an mdev parent (a virtual device driven by <paramref name="driver"/>) offering
    /// <paramref name="types"/>, each limited by its own <see cref="SimulatedMdevType.MaxInstances"/>;
    /// writing a UUID to a type's <c>create</c> makes a device with its own emulated IOMMU group.
    /// </summary>
    /// <param name="name">The parent's device name.</param>
    /// <param name="driver">The parent's driver name, e.g. "mtty".</param>
    /// <param name="types">The types it offers.</param>
    public SimulatedMdevParent AddMdevParent(string name, string driver, params SimulatedMdevType[] types) =>
        AddMdevParent(name, driver, null, types);

    /// <summary>
    /// Adds an mdev parent whose types share a capacity: a device of a type takes
    /// <see cref="SimulatedMdevType.Units"/> of it, and each type's <c>available_instances</c> is what
    /// is left divided by its units (how mtty counts serial ports).
    /// </summary>
    /// <param name="name">The parent's device name.</param>
    /// <param name="driver">The parent's driver name.</param>
    /// <param name="capacity">The shared capacity.</param>
    /// <param name="types">The types it offers.</param>
    public SimulatedMdevParent AddMdevParent(string name, string driver, int capacity, params SimulatedMdevType[] types)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(capacity);
        return AddMdevParent(name, driver, (int?)capacity, types);
    }

    /// <summary>
    /// Adds the parent the kernel's mtty sample driver (samples/vfio-mdev/mtty.c) registers: "mtty",
    /// with types mtty-1 ("Single port serial") and mtty-2 ("Dual port serial") sharing 24 ports,
    /// each device emulated by an <see cref="MttyDeviceModel"/>.
    /// </summary>
    public SimulatedMdevParent AddMttyParent() =>
        AddMdevParent("mtty", "mtty", MttyDeviceModel.MaxPorts,
            new SimulatedMdevType("1", int.MaxValue, () => new MttyDeviceModel(1)) { PrettyName = "Single port serial", Units = 1 },
            new SimulatedMdevType("2", int.MaxValue, () => new MttyDeviceModel(2)) { PrettyName = "Dual port serial", Units = 2 });

    private SimulatedMdevParent AddMdevParent(string name, string driver, int? capacity, SimulatedMdevType[] types)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentException.ThrowIfNullOrEmpty(driver);
        ArgumentNullException.ThrowIfNull(types);
        var parent = new SimulatedMdevParent(this, name, driver, capacity, [.. types]);
        using (Enter())
        {
            foreach (var type in types)
            {
                if (type.Parent is not null)
                {
                    throw new InvalidOperationException("The type " + type.Name + " belongs to another parent already.");
                }
                type.Parent = parent;
            }
            var dir = Sysfs.Directory(parent.SysfsRelative);
            Sysfs.Directory("class/mdev_bus").Link(name, parent.SysfsRelative);
            Sysfs.Directory("bus/mdev/drivers").Directory(driver);
            foreach (var type in types)
            {
                var typeDir = dir.Directory("mdev_supported_types").Directory(parent.TypeFolder(type));
                typeDir.Attribute("name", () => (type.PrettyName ?? type.Name) + "\n");
                if (type.Description is not null)
                {
                    typeDir.Attribute("description", () => type.Description + "\n");
                }
                typeDir.Attribute("device_api", () => type.DeviceApi + "\n");
                typeDir.Attribute("available_instances", () => Decimal(type.Available) + "\n");
                typeDir.Attribute("create", null, text => CreateMdevLocked(parent, type, text));
                typeDir.Directory("devices");
            }
        }
        return parent;
    }

    internal SimulatedDevice? FindDeviceLocked(string name)
    {
        AssertLocked();
        return _devices.GetValueOrDefault(name);
    }

    /// <summary>
    /// What writing <paramref name="text"/> to a type's <c>create</c> does in Linux 6.1 (create_store and
    /// mdev_device_create): 36 or 37 bytes parsed as a UUID (EINVAL), a duplicate UUID (EEXIST), then the
    /// parent driver's probe, which fails with ENOSPC when the type has no instance left.
    /// </summary>
    internal int CreateMdevLocked(SimulatedMdevParent parent, SimulatedMdevType type, string text)
    {
        AssertLocked();
        if (text.Length < 36 || text.Length > 37 || !Guid.TryParseExact(text[..36], "D", out var uuid))
        {
            return -Errno.EINVAL;
        }
        string name = uuid.ToString("D", CultureInfo.InvariantCulture);
        if (_devices.ContainsKey(name))
        {
            return -Errno.EEXIST;
        }
        if (parent.IsRemoved)
        {
            return -Errno.ENODEV;
        }
        if (type.Available <= 0)
        {
            return -Errno.ENOSPC;
        }
        var model = type.CreateModel();
        model.Seal();
        // iommu_group_alloc takes the lowest free group number.
        int groupId = 0;
        while (_groups.ContainsKey(groupId))
        {
            groupId++;
        }
        var group = GroupLocked(groupId, SimulatedGroupKind.Emulated);
        var device = new SimulatedMdevDevice(this, uuid, parent, type, model, group);
        type.Instances++;
        if (parent.Capacity is not null)
        {
            parent.FreeUnits -= type.Units;
        }
        AddDeviceLocked(device, "bus/mdev");
        var dir = Sysfs.Directory(device.SysfsRelative);
        string typePath = parent.SysfsRelative + "/mdev_supported_types/" + parent.TypeFolder(type);
        dir.Link("mdev_type", typePath);
        dir.Link("driver", "bus/mdev/drivers/" + parent.Driver);
        dir.Attribute("remove", null, value => RemoveStoreLocked(device, value));
        Sysfs.Directory("bus/mdev/drivers/" + parent.Driver).Link(name, device.SysfsRelative);
        Sysfs.Directory(typePath + "/devices").Link(name, device.SysfsRelative);
        Wake();
        return 0;
    }

    /// <summary>remove_store: a number (kstrtoul, base 0); 0 does nothing, anything else removes the device.</summary>
    private int RemoveStoreLocked(SimulatedMdevDevice device, string value)
    {
        AssertLocked();
        string text = value.EndsWith('\n') ? value[..^1] : value;
        ulong number;
        bool parsed = text.StartsWith("0x", StringComparison.OrdinalIgnoreCase)
            ? ulong.TryParse(text.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out number)
            : ulong.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out number);
        if (!parsed)
        {
            return -Errno.EINVAL;
        }
        return number == 0 || device.Removed ? 0 : RemoveMdevLocked(device);
    }

    /// <summary>
    /// mdev_device_remove: the device leaves its bus at once for new users, and its driver's remove
    /// (vfio_unregister_group_dev) waits while its device file is open; then its folders go, its
    /// instance is returned, and its group goes with the group file's last close.
    /// </summary>
    private int RemoveMdevLocked(SimulatedMdevDevice device)
    {
        AssertLocked();
        if (!_devices.ContainsKey(device.Name))
        {
            return -Errno.ENODEV;
        }
        device.Removed = true;
        UnbindLocked(device);
        _devices.Remove(device.Name);
        device.Type.Instances--;
        var parent = device.Parent;
        if (parent.Capacity is not null)
        {
            parent.FreeUnits += device.Type.Units;
        }
        Sysfs.Remove(parent.SysfsRelative + "/mdev_supported_types/" + parent.TypeFolder(device.Type) + "/devices/" + device.Name);
        Sysfs.Remove("bus/mdev/drivers/" + parent.Driver + "/" + device.Name);
        Sysfs.Remove("bus/mdev/devices/" + device.Name);
        Sysfs.Remove(device.SysfsRelative);
        device.Group.Devices.Remove(device);
        Sysfs.Remove("kernel/iommu_groups/" + Decimal(device.Group.Id) + "/devices/" + device.Name);
        if (device.Group.Devices.Count == 0 && device.Group.OpenFile is null)
        {
            _groups.Remove(device.Group.Id);
            Sysfs.Remove("kernel/iommu_groups/" + Decimal(device.Group.Id));
        }
        Wake();
        return 0;
    }

    internal void RemoveMdevParentLocked(SimulatedMdevParent parent)
    {
        AssertLocked();
        if (parent.IsRemoved)
        {
            return;
        }
        parent.IsRemoved = true;
        foreach (var device in _devices.Values.OfType<SimulatedMdevDevice>().Where(d => d.Parent == parent).ToList())
        {
            device.Removed = true;
            RemoveMdevLocked(device);
        }
        Sysfs.Remove("class/mdev_bus/" + parent.Name);
        Sysfs.Remove(parent.SysfsRelative);
        Wake();
    }
}
