using System.Text.RegularExpressions;
using Vfio.Interop;

namespace Vfio.Testing;

/// <summary>The simulated machine's devices and drivers, and how sysfs shows them.</summary>
public sealed partial class SimulatedKernel
{
    private const string PciBus = "bus/pci";
    private const string PlatformBus = "bus/platform";
    private readonly Dictionary<string, SimulatedDevice> _devices = new(StringComparer.Ordinal);

    /// <summary>How often an unbind waiting for a device file to close signals the device's REQ interrupt again (10 s, as the kernel).</summary>
    public TimeSpan ReleaseRequestInterval { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>How many times unbinding a device in use asked for its release (signalled its REQ eventfd) so far.</summary>
    public int ReleaseRequests { get; private set; }

    [GeneratedRegex("^[0-9a-f]{4}:[0-9a-f]{2}:[0-1][0-9a-f]\\.[0-7]$")]
    private static partial Regex PciAddressPattern();

    private void InitializeSysfs()
    {
        foreach (string dir in new[] { PciBus + "/devices", PciBus + "/drivers", PlatformBus + "/devices", PlatformBus + "/drivers", "bus/mdev/devices", "bus/mdev/drivers", "class/mdev_bus", "kernel/iommu_groups", "devices/platform", "devices/virtual" })
        {
            Sysfs.Directory(dir);
        }
        Sysfs.Directory(PciBus).Attribute("drivers_probe", null, name => ProbeLocked(PciBus, name));
        Sysfs.Directory(PlatformBus).Attribute("drivers_probe", null, name => ProbeLocked(PlatformBus, name));
        RegisterDriverLocked(PciBus, "vfio-pci");
        RegisterDriverLocked(PciBus, "pci-stub");
        RegisterDriverLocked(PlatformBus, "vfio-platform");
        InitializePlatformSysfs();
    }

    /// <summary>Finds a device by name (PCI address, platform name or mdev UUID).</summary>
    /// <param name="name">The device's name.</param>
    /// <exception cref="KeyNotFoundException">The kernel has no such device.</exception>
    public SimulatedDevice FindDevice(string name) =>
        TryFindDevice(name, out var device) ? device : throw new KeyNotFoundException($"The simulated kernel has no device {name}.");

    /// <summary>Finds a device by name (PCI address, platform name or mdev UUID).</summary>
    /// <param name="name">The device's name.</param>
    /// <param name="device">The device, when there is one.</param>
    /// <returns>False when the kernel has no such device (an mdev removed, a name never added).</returns>
    public bool TryFindDevice(string name, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out SimulatedDevice? device)
    {
        using (Enter())
        {
            device = FindDeviceLocked(name);
            return device is not null;
        }
    }

    /// <summary>Adds a PCI function emulated by a plain <see cref="PciDeviceModel"/> (no BARs, INTx only).</summary>
    /// <param name="address">Its address, "dddd:bb:dd.f" in lower-case hex.</param>
    /// <param name="vendorId">The vendor id.</param>
    /// <param name="deviceId">The device id.</param>
    /// <param name="classCode">The 24-bit class code.</param>
    /// <param name="iommuGroup">Its IOMMU group; several devices may share one.</param>
    /// <param name="driver">The driver it is bound to at boot ("vfio-pci" by default; null for none).</param>
    public SimulatedPciDevice AddPciDevice(string address, ushort vendorId, ushort deviceId, uint classCode, int iommuGroup, string? driver = "vfio-pci") =>
        AddPciDevice(address, new PciDeviceModel(vendorId, deviceId, classCode), iommuGroup, driver);

    /// <summary>Adds a PCI function emulated by <paramref name="model"/>.</summary>
    /// <param name="address">Its address, "dddd:bb:dd.f" in lower-case hex.</param>
    /// <param name="model">The model; it is fixed from now on and belongs to this device only.</param>
    /// <param name="iommuGroup">Its IOMMU group; several devices may share one.</param>
    /// <param name="driver">
    /// The driver it is bound to at boot ("vfio-pci" by default; null for none). Another name is a
    /// host driver: it becomes the device's native driver, which a probe without override binds.
    /// </param>
    public SimulatedPciDevice AddPciDevice(string address, PciDeviceModel model, int iommuGroup, string? driver = "vfio-pci") =>
        AddPciDevice(address, model, iommuGroup, SimulatedGroupKind.Iommu, driver);

    /// <summary>Adds a PCI function in a group of the given kind (<see cref="SimulatedGroupKind.NoIommu"/> for no-IOMMU mode).</summary>
    /// <param name="address">Its address, "dddd:bb:dd.f" in lower-case hex.</param>
    /// <param name="model">The model.</param>
    /// <param name="iommuGroup">Its IOMMU group.</param>
    /// <param name="groupKind">Iommu or NoIommu.</param>
    /// <param name="driver">The driver it is bound to at boot, or null.</param>
    public SimulatedPciDevice AddPciDevice(string address, PciDeviceModel model, int iommuGroup, SimulatedGroupKind groupKind, string? driver)
    {
        ArgumentNullException.ThrowIfNull(address);
        ArgumentNullException.ThrowIfNull(model);
        ArgumentOutOfRangeException.ThrowIfNegative(iommuGroup);
        if (!PciAddressPattern().IsMatch(address))
        {
            throw new ArgumentException("A PCI address is dddd:bb:dd.f in lower-case hex, e.g. 0000:00:03.0.", nameof(address));
        }
        if (groupKind == SimulatedGroupKind.Emulated)
        {
            throw new ArgumentException("Emulated groups belong to mdevs.", nameof(groupKind));
        }
        using (Enter())
        {
            if (_devices.ContainsKey(address))
            {
                throw new InvalidOperationException("A device " + address + " exists already.");
            }
            model.Seal();
            var group = GroupLocked(iommuGroup, groupKind);
            string? native = driver is null || IommuGroupState.DmaManagingDrivers.Contains(driver) ? null : driver;
            var device = new SimulatedPciDevice(this, address, model, group, native, PciDeviceFolderLocked(address));
            AddDeviceLocked(device, PciBus);
            var dir = Sysfs.Directory(device.SysfsRelative);
            dir.Attribute("vendor", () => Hex(model.VendorId, 4));
            dir.Attribute("device", () => Hex(model.DeviceId, 4));
            dir.Attribute("class", () => Hex(model.ClassCode, 6));
            dir.Attribute("subsystem_vendor", () => Hex(model.SubsystemVendorId, 4));
            dir.Attribute("subsystem_device", () => Hex(model.SubsystemId, 4));
            dir.Attribute("revision", () => Hex(model.Revision, 2));
            dir.Attribute("driver_override", () => (device.Override ?? "(null)") + "\n", text => StoreOverride(text, v => device.Override = v));
            dir.BinaryAttribute("config", model.ReadConfigSpaceAsHost);
            device.ResetMethods = ProbeResetMethodsLocked(device);
            if (device.ResetMethods.Count > 0)
            {
                dir.Attribute("reset_method", () => string.Join(' ', device.ResetMethods) + "\n");
            }
            if (driver is not null)
            {
                RegisterDriverLocked(PciBus, driver);
                Check(BindLocked(device, driver, checkMatch: false));
            }
            return device;
        }
    }

    /// <summary>Adds a platform device emulated by <paramref name="model"/>.</summary>
    /// <param name="name">Its name on the platform bus, e.g. "fe000000.dma".</param>
    /// <param name="model">The model.</param>
    /// <param name="iommuGroup">Its IOMMU group.</param>
    /// <param name="driver">The driver it is bound to at boot ("vfio-platform" by default; null for none).</param>
    public SimulatedPlatformDevice AddPlatformDevice(string name, PlatformDeviceModel model, int iommuGroup, string? driver = "vfio-platform") =>
        AddPlatformDevice(name, model, iommuGroup, SimulatedGroupKind.Iommu, driver);

    /// <summary>
    /// Adds a platform device in a group of the given kind (<see cref="SimulatedGroupKind.NoIommu"/> for
    /// a machine without an IOMMU, whose vfio-platform needs <see cref="UnsafeNoIommuMode"/>).
    /// </summary>
    /// <param name="name">Its name on the platform bus, e.g. "fe000000.dma" or "LNRO0005:00".</param>
    /// <param name="model">The model.</param>
    /// <param name="iommuGroup">Its IOMMU group.</param>
    /// <param name="groupKind">Iommu or NoIommu.</param>
    /// <param name="driver">The driver it is bound to at boot, or null.</param>
    public SimulatedPlatformDevice AddPlatformDevice(string name, PlatformDeviceModel model, int iommuGroup, SimulatedGroupKind groupKind, string? driver)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(model);
        ArgumentOutOfRangeException.ThrowIfNegative(iommuGroup);
        if (name.Contains('/', StringComparison.Ordinal))
        {
            throw new ArgumentException("A device name has no '/'.", nameof(name));
        }
        using (Enter())
        {
            if (_devices.ContainsKey(name))
            {
                throw new InvalidOperationException("A device " + name + " exists already.");
            }
            if (groupKind == SimulatedGroupKind.Emulated)
            {
                throw new ArgumentException("Emulated groups belong to mdevs.", nameof(groupKind));
            }
            model.Seal();
            var group = GroupLocked(iommuGroup, groupKind);
            string? native = driver is null || IommuGroupState.DmaManagingDrivers.Contains(driver) ? null : driver;
            var device = new SimulatedPlatformDevice(this, name, model, group, native);
            AddDeviceLocked(device, PlatformBus);
            var dir = Sysfs.Directory(device.SysfsRelative);
            dir.Attribute("driver_override", () => (device.Override ?? "(null)") + "\n", text => StoreOverride(text, v => device.Override = v));
            dir.Attribute("modalias", () => PlatformModalias(name, model));
            if (model.Compatible.Count > 0)
            {
                dir.Directory("of_node").Attribute("compatible", () => model.CompatibleProperty);
            }
            if (driver == VfioPlatform)
            {
                // vfio-platform matches no ids: a device reaches it through driver_override only. A
                // probe it refuses (no reset handler) leaves the device unbound, as at boot.
                device.Override = driver;
                _ = BindLocked(device, driver, checkMatch: true);
            }
            else if (driver is not null)
            {
                RegisterDriverLocked(PlatformBus, driver);
                Check(BindLocked(device, driver, checkMatch: false));
            }
            return device;
        }
    }

    /// <summary>The platform bus's modalias: "of:N&lt;node&gt;T(null)C&lt;compatible&gt;..." for device tree, "acpi:&lt;HID&gt;:" for ACPI.</summary>
    private static string PlatformModalias(string name, PlatformDeviceModel model)
    {
        if (model.AcpiHid is { Length: > 0 } hid)
        {
            return "acpi:" + hid + ":\n";
        }
        int dot = name.IndexOf('.', StringComparison.Ordinal);
        string node = dot >= 0 ? name[(dot + 1)..] : name;
        return "of:N" + node + "T(null)" + string.Concat(model.Compatible.Select(c => "C" + c)) + "\n";
    }

    private void AddDeviceLocked(SimulatedDevice device, string bus)
    {
        AssertLocked();
        _devices.Add(device.Name, device);
        device.Group.Devices.Add(device);
        Sysfs.Directory(device.SysfsRelative).Link("iommu_group", "kernel/iommu_groups/" + Decimal(device.IommuGroup));
        Sysfs.Directory(device.SysfsRelative).Link("subsystem", bus);
        Sysfs.Directory(bus + "/devices").Link(device.Name, device.SysfsRelative);
        Sysfs.Directory("kernel/iommu_groups/" + Decimal(device.IommuGroup) + "/devices").Link(device.Name, device.SysfsRelative);
    }

    private static string Hex(uint value, int digits) => "0x" + value.ToString("x" + Decimal(digits), System.Globalization.CultureInfo.InvariantCulture) + "\n";

    private static int StoreOverride(string text, Action<string?> set)
    {
        if (text.Length >= PageSize - 1)
        {
            return -Errno.EINVAL;
        }
        string value = text.TrimEnd('\n');
        set(value.Length == 0 ? null : value);
        return 0;
    }

    private static void Check(int result)
    {
        if (result < 0)
        {
            throw new InvalidOperationException("The simulated kernel refused: " + Errno.Name(-result));
        }
    }

    private static string BusOf(SimulatedDevice device) => device is SimulatedPlatformDevice ? PlatformBus : PciBus;

    private void RegisterDriverLocked(string bus, string driver)
    {
        AssertLocked();
        var drivers = Sysfs.Directory(bus + "/drivers");
        if (drivers.Child(driver) is not null)
        {
            return;
        }
        var dir = drivers.Directory(driver);
        dir.Attribute("bind", null, name => BindByNameLocked(bus, driver, name));
        dir.Attribute("unbind", null, name => UnbindByNameLocked(bus, driver, name));
    }

    private SimulatedDevice? DeviceOnBus(string bus, string name)
    {
        var device = _devices.GetValueOrDefault(name.TrimEnd('\n'));
        return device is not null && BusOf(device) == bus && device is not SimulatedMdevDevice ? device : null;
    }

    private static string? OverrideOf(SimulatedDevice device) => (device as SimulatedBusDevice)?.Override;

    private static string? NativeOf(SimulatedDevice device) => (device as SimulatedBusDevice)?.NativeDriver;

    /// <summary>Whether a driver matches a device: driver_override decides alone when set.</summary>
    private static bool Matches(SimulatedDevice device, string driver) =>
        OverrideOf(device) is { } forced ? forced == driver : NativeOf(device) == driver;

    private int BindByNameLocked(string bus, string driver, string name)
    {
        AssertLocked();
        var device = DeviceOnBus(bus, name);
        return device is null ? -Errno.ENODEV : BindLocked(device, driver, checkMatch: true);
    }

    private int UnbindByNameLocked(string bus, string driver, string name)
    {
        AssertLocked();
        var device = DeviceOnBus(bus, name);
        return device is null || device.DriverName != driver ? -Errno.ENODEV : UnbindLocked(device);
    }

    private int ProbeLocked(string bus, string name)
    {
        AssertLocked();
        var device = DeviceOnBus(bus, name);
        if (device is null)
        {
            return -Errno.ENODEV;
        }
        if (device.DriverName is not null)
        {
            return 0;
        }
        string? driver = OverrideOf(device) ?? NativeOf(device);
        if (driver is not null && Sysfs.Directory(bus + "/drivers").Child(driver) is not null)
        {
            _ = BindLocked(device, driver, checkMatch: true); // a failed probe leaves the device unbound
        }
        return 0;
    }

    /// <summary>Binds a device to a driver (device_driver_attach and the driver's probe); the lock is held.</summary>
    internal int BindLocked(SimulatedDevice device, string driver, bool checkMatch)
    {
        AssertLocked();
        string bus = BusOf(device);
        if (checkMatch && !Matches(device, driver))
        {
            return -Errno.ENODEV;
        }
        if (device.DriverName is not null)
        {
            return -Errno.EBUSY;
        }
        // A kernel driver that uses the DMA API cannot probe while user space owns the group's DMA.
        if (!IommuGroupState.DmaManagingDrivers.Contains(driver) && (device.Group.Container is not null || GroupHasBoundCdevLocked(device.Group)))
        {
            return -Errno.EBUSY;
        }
        if (driver == VfioPlatform && device is SimulatedPlatformDevice platform)
        {
            int probed = ProbeVfioPlatformLocked(platform);
            if (probed < 0)
            {
                return probed;
            }
        }
        if (driver == VfioPci && device is SimulatedPciDevice)
        {
            int probed = ProbeVfioPciLocked(device);
            if (probed < 0)
            {
                return probed;
            }
        }
        RegisterDriverLocked(bus, driver);
        device.DriverName = driver;
        Sysfs.Directory(device.SysfsRelative).Link("driver", bus + "/drivers/" + driver);
        Sysfs.Directory(bus + "/drivers/" + driver).Link(device.Name, device.SysfsRelative);
        if (device.IsVfioBound)
        {
            RegisterVfioDeviceLocked(device);
        }
        Wake();
        return 0;
    }

    /// <summary>
    /// Unbinds a device (device_release_driver). A vfio device in use blocks the unbind until its
    /// files close, and the kernel asks user space for it by signalling the REQ interrupt, again at
    /// each <see cref="ReleaseRequestInterval"/>. The lock is held once.
    /// </summary>
    internal int UnbindLocked(SimulatedDevice device)
    {
        AssertLocked();
        string? driver = device.DriverName;
        if (driver is null)
        {
            return -Errno.ENODEV;
        }
        // Open cdev files hold the registration even before they bind (vfio_unregister_group_dev waits).
        while (device.IsVfioBound && (device.OpenCount > 0 || CdevFilesLocked(device) > 0))
        {
            ReleaseRequests++;
            if (device.Irqs.Length > Req && device.Model is PciDeviceModel)
            {
                device.Irqs[Req][0].Trigger?.Signal();
            }
            WaitLocked(ReleaseRequestInterval);
        }
        if (device.DriverName != driver)
        {
            return 0; // someone else unbound it while we waited
        }
        UnregisterVfioDeviceLocked(device);
        device.DriverName = null;
        string bus = BusOf(device);
        Sysfs.Remove(device.SysfsRelative + "/driver");
        Sysfs.Remove(bus + "/drivers/" + driver + "/" + device.Name);
        PruneNodeOwnersLocked();
        Wake();
        return 0;
    }
}
