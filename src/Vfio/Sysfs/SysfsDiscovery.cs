using System.Globalization;

namespace Vfio;

/// <summary>
/// What sysfs says about the devices a registry may drive: the PCI functions, platform devices and
/// mediated devices bound to vfio, each described with its IOMMU group, and the mdev parents with
/// their types. Reads only; nothing is opened beyond the sysfs files themselves, and no lock is held.
/// </summary>
internal sealed class SysfsDiscovery(VfioRegistry registry)
{
    private SysfsReader Sysfs => registry.Sysfs;

    /// <summary>True for a vfio bus driver (vfio-pci, vfio-platform, vfio-amba, a vfio-pci variant driver).</summary>
    public static bool IsVfioDriver(string driver) => KernelDrivers.IsVfio(driver);

    /// <summary>
    /// The devices of every bus some driver is for: a registry of PCI drivers reads no platform or mdev
    /// sysfs. A device whose sysfs cannot be read or does not read as the kernel writes it is left out
    /// and added to <paramref name="failures"/>, its error naming it; the others are described.
    /// </summary>
    public IEnumerable<VfioDeviceContext> Discover(IReadOnlyList<VfioDriver> drivers, List<DiscoveryFailure> failures) =>
        drivers.Select(d => d.Bus).Distinct().SelectMany(bus => bus switch
        {
            DriverBus.Pci => Pci(failures),
            DriverBus.Platform => Platform(includeRefused: true, failures),
            _ => (IEnumerable<VfioDeviceContext>)Mdev(failures),
        });

    /// <summary>The PCI functions bound to a vfio driver; those that cannot be described go to <paramref name="failures"/>.</summary>
    public List<PciDeviceContext> Pci(List<DiscoveryFailure> failures)
    {
        var result = new List<PciDeviceContext>();
        foreach (string name in Sysfs.List("bus/pci/devices", KernelNameKind.PciAddress))
        {
            var address = PciAddress.Parse(name, CultureInfo.InvariantCulture);
            Describe(name, failures, result, () =>
            {
                string? driver = ReadDriver(PciDir(address), new ErrorTarget(Device: name));
                return driver is not null && IsVfioDriver(driver) ? DescribePci(address, driver) : null;
            });
        }
        return result;
    }

    /// <summary>
    /// The PCI functions not bound to a vfio driver (bound to a kernel driver or to none), described as
    /// far as sysfs says; a function without an IOMMU group has group -1. One whose sysfs cannot be
    /// read is left out: it is none of the probe's devices, and the probe's own discovery reports
    /// those bound to vfio.
    /// </summary>
    public List<PciDeviceContext> PciNotOnVfio()
    {
        var result = new List<PciDeviceContext>();
        foreach (string name in Sysfs.List("bus/pci/devices", KernelNameKind.PciAddress))
        {
            var address = PciAddress.Parse(name, CultureInfo.InvariantCulture);
            try
            {
                string? driver = ReadDriver(PciDir(address), new ErrorTarget(Device: name));
                if (driver is null || !IsVfioDriver(driver))
                {
                    result.Add(DescribePci(address, driver, requireGroup: false));
                }
            }
            catch (VfioException)
            {
                // Left out, as said above.
            }
        }
        return result;
    }

    /// <summary>Describes one PCI function, whatever it is bound to; throws when sysfs has no such function, it has no group, or its sysfs cannot be read.</summary>
    public PciDeviceContext DescribePci(PciAddress address) =>
        DescribePci(address, ReadDriver(PciDir(address), new ErrorTarget(Device: address.ToString())));

    /// <summary>
    /// The platform devices bound to vfio; with <paramref name="includeRefused"/>, also those assigned to
    /// vfio-platform through driver_override that it did not bind (their context carries the reason).
    /// Those that cannot be described go to <paramref name="failures"/>.
    /// </summary>
    public List<PlatformDeviceContext> Platform(bool includeRefused, List<DiscoveryFailure> failures)
    {
        var result = new List<PlatformDeviceContext>();
        foreach (string name in Sysfs.List("bus/platform/devices", KernelNameKind.Device))
        {
            Describe(name, failures, result, () => DescribePlatform(name, includeRefused));
        }
        return result;
    }

    /// <summary>The mediated devices that exist, with their types; those that cannot be described go to <paramref name="failures"/>.</summary>
    public List<MdevDeviceContext> Mdev(List<DiscoveryFailure> failures)
    {
        var result = new List<MdevDeviceContext>();
        foreach (string name in Sysfs.List("bus/mdev/devices", KernelNameKind.Uuid))
        {
            Describe(name, failures, result, () =>
            {
                string? type = Sysfs.ReadLinkName(MdevDir(name) + "/mdev_type", KernelNameKind.MdevType, "an mdev type", new ErrorTarget(Device: name));
                return type is null ? null : DescribeMdev(name, Guid.ParseExact(name, "D"), type);
            });
        }
        return result;
    }

    /// <summary>Describes an mdev that exists, from its sysfs folder; errors name it.</summary>
    public MdevDeviceContext DescribeMdev(Guid uuid)
    {
        string name = uuid.ToString("D", CultureInfo.InvariantCulture);
        string type = Sysfs.ReadLinkName(MdevDir(name) + "/mdev_type", KernelNameKind.MdevType, "an mdev type", new ErrorTarget(Device: name))
            ?? throw new VfioNotFoundException($"The mdev {name} has no mdev_type link in sysfs: it was removed.");
        return DescribeMdev(name, uuid, type);
    }

    /// <summary>The mdev parents (<c>/sys/class/mdev_bus/*</c>) and the types each offers, read now; a parent that cannot be read is logged and left out.</summary>
    public List<MdevParent> MdevParents()
    {
        var result = new List<MdevParent>();
        foreach (string name in Sysfs.List("class/mdev_bus", KernelNameKind.Device).Order(StringComparer.Ordinal))
        {
            try
            {
                if (TryDescribeMdevParent(name, out var parent))
                {
                    result.Add(parent);
                }
            }
            catch (VfioException e)
            {
                Log.DiscoveryFailed(registry.Logger, name, e.Message, e);
            }
        }
        return result;
    }

    /// <summary>Reads one mdev parent and its types; false when there is no such parent.</summary>
    /// <exception cref="ArgumentException"><paramref name="name"/> is not a device name (one path component).</exception>
    public bool TryDescribeMdevParent(string name, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out MdevParent? parent)
    {
        string dir = KernelNames.Join("class/mdev_bus", KernelNameKind.Device, name);
        var target = new ErrorTarget(Device: name);
        string[] typeIds = Sysfs.List(dir + "/mdev_supported_types", target);
        if (typeIds.Length == 0 && !Sysfs.Exists(dir))
        {
            parent = null;
            return false;
        }
        parent = new MdevParent(registry, name, dir);
        var types = new List<MdevType>();
        foreach (string id in typeIds.Where(id => KernelNames.IsValid(KernelNameKind.MdevType, id)).Order(StringComparer.Ordinal))
        {
            string typeDir = dir + "/mdev_supported_types/" + id;
            types.Add(new MdevType(parent, id,
                Sysfs.ReadText(typeDir + "/name", target) ?? id,
                Sysfs.ReadText(typeDir + "/description", target),
                Sysfs.ReadText(typeDir + "/device_api", target) ?? string.Empty));
        }
        parent.Types = types;
        return true;
    }

    /// <summary>The names of the mdev parents there are, for an error that lists them.</summary>
    public string[] MdevParentNames() => [.. Sysfs.List("class/mdev_bus", KernelNameKind.Device)];

    /// <summary>The name of a device's VFIO cdev (<c>vfio0</c>, under <c>/dev/vfio/devices</c>), from its <c>vfio-dev</c> folder; null when the kernel gives it none.</summary>
    internal static string? CdevOf(SysfsReader sysfs, string deviceDir) =>
        sysfs.List(deviceDir + "/vfio-dev", KernelNameKind.Cdev).FirstOrDefault(name => sysfs.Exists(deviceDir + "/vfio-dev/" + name + "/dev"));

    /// <summary>A PCI function's sysfs folder.</summary>
    internal static string PciDir(PciAddress address) => "bus/pci/devices/" + address;

    /// <summary>An mdev's sysfs folder.</summary>
    internal static string MdevDir(string uuid) => KernelNames.Join("bus/mdev/devices", KernelNameKind.Uuid, uuid);

    /// <summary>The driver a device folder's <c>driver</c> link names, or null when it has none.</summary>
    private string? ReadDriver(string deviceDir, ErrorTarget target) =>
        Sysfs.ReadLinkName(deviceDir + "/driver", KernelNameKind.Driver, "a driver", target);

    // Describes one device; a VfioException (the device's sysfs unreadable or malformed) makes it a
    // failure, logged, and discovery goes on with the next device.
    private void Describe<T>(string name, List<DiscoveryFailure> failures, List<T> result, Func<T?> describe)
        where T : class
    {
        try
        {
            if (describe() is { } context)
            {
                result.Add(context);
            }
        }
        catch (VfioException e)
        {
            failures.Add(new DiscoveryFailure(name, e));
            Log.DiscoveryFailed(registry.Logger, name, e.Message, e);
        }
    }

    private PlatformDeviceContext? DescribePlatform(string name, bool includeRefused)
    {
        string dir = "bus/platform/devices/" + name;
        var target = new ErrorTarget(Device: name);
        string? driver = ReadDriver(dir, target);
        bool bound = driver is not null && IsVfioDriver(driver);
        bool refused = includeRefused && driver is null && Sysfs.ReadText(dir + "/driver_override", target) == "vfio-platform";
        if (!bound && !refused)
        {
            return null;
        }
        int groupId = -1;
        var kind = IommuGroupKind.Iommu;
        VfioException? refusal = null;
        try
        {
            (groupId, kind) = ReadGroup(dir, name);
        }
        catch (VfioNotFoundException e) when (refused)
        {
            refusal = e; // vfio-platform refuses a device without an IOMMU group too
        }
        string compatible = Sysfs.ReadText(dir + "/of_node/compatible", target) ?? string.Empty;
        string[] strings = compatible.Split('\0', StringSplitOptions.RemoveEmptyEntries);
        string? acpiHid = strings.Length == 0 ? AcpiHid(Sysfs.ReadText(dir + "/modalias", target)) : null;
        return new PlatformDeviceContext(registry, name, groupId, kind, driver, strings, acpiHid)
        {
            Refusal = refused ? refusal ?? PlatformReset.Refusal(registry, name, groupId, PlatformReset.Identity(strings, acpiHid), acpiHid is not null) : null,
        };
    }

    private PciDeviceContext DescribePci(PciAddress address, string? driver, bool requireGroup = true)
    {
        string name = address.ToString();
        string dir = PciDir(address);
        var target = new ErrorTarget(Device: name);
        var ids = PciIds.Read(Sysfs, dir, target)
            ?? throw new VfioNotFoundException($"No PCI function {name} in sysfs ({registry.Kernel.Sys(dir)}).");
        var (groupId, kind) = requireGroup ? ReadGroup(dir, name)
            : TryReadGroup(Sysfs, dir, target) is (int id, IommuGroupKind found) ? (id, found) : (-1, IommuGroupKind.Iommu);
        return new PciDeviceContext(registry, address, groupId, kind, driver,
            ids.VendorId, ids.DeviceId, ids.ClassCode, ids.SubsystemVendorId, ids.SubsystemId, PciSetId(address, target));
    }

    /// <summary>
    /// The device set of a PCI function, as vfio-pci forms it (<c>vfio_pci_core_register_device</c>): a
    /// function on a root bus (its sysfs folder sits right under the host bridge's <c>pciDDDD:BB</c>) or a
    /// virtual function (it has a <c>physfn</c> link; kernels from mid-2025 on, earlier ones put a VF in its
    /// bus's set, which only made their locks coarser) is a set of its own; one in
    /// a slot that <c>pci_probe_reset_slot</c> accepts (a hotplug slot whose driver resets slots:
    /// <c>/sys/bus/pci/slots/N</c> with its address and a <c>module</c> link to pciehp, pnv_php or
    /// s390_pci_hpc) shares the slot's set; any other shares its bus's set.
    /// </summary>
    internal string PciSetId(PciAddress address, ErrorTarget target)
    {
        string dir = PciDir(address);
        string name = address.ToString();
        string[] path = (Sysfs.ReadLink(dir, target) ?? string.Empty).Split('/', StringSplitOptions.RemoveEmptyEntries);
        bool rootBus = path.Length < 2 || !KernelNames.IsValid(KernelNameKind.PciAddress, path[^2]);
        if (rootBus || Sysfs.ReadLinkName(dir + "/physfn", target) is not null)
        {
            return "device:" + name;
        }
        foreach (string slot in Sysfs.List("bus/pci/slots", KernelNameKind.Device, target))
        {
            string slotDir = "bus/pci/slots/" + slot;
            if (Sysfs.ReadText(slotDir + "/address", target) == address.SlotName
                && Sysfs.ReadLinkName(slotDir + "/module", target) is "pciehp" or "pnv_php" or "s390_pci_hpc")
            {
                return "pci-slot:" + address.SlotName;
            }
        }
        return string.Create(CultureInfo.InvariantCulture, $"pci-bus:{address.Domain:x4}:{address.Bus:x2}");
    }

    private MdevDeviceContext DescribeMdev(string name, Guid uuid, string type)
    {
        string dir = MdevDir(name);
        var target = new ErrorTarget(Device: name);
        var (groupId, _) = ReadGroup(dir, name);
        string? driver = ReadDriver(dir, target);
        // The device's folder lives in its parent's: .../devices/virtual/mtty/mtty/<uuid>.
        string? parent = Sysfs.ReadLink(dir, target)?.Split('/') is { Length: >= 2 } parts && KernelNames.IsValid(KernelNameKind.Device, parts[^2])
            ? parts[^2]
            : null;
        return new MdevDeviceContext(registry, uuid, groupId, driver, type, parent);
    }

    private (int Id, IommuGroupKind Kind) ReadGroup(string deviceDir, string name) =>
        TryReadGroup(Sysfs, deviceDir, new ErrorTarget(Device: name)) is (int id, IommuGroupKind kind)
            ? (id, kind)
            : throw new VfioNotFoundException(
                $"Device {name} has no IOMMU group (no iommu_group link in {registry.Kernel.Sys(deviceDir)}): enable the IOMMU (intel_iommu=on or amd_iommu=on) or load vfio with enable_unsafe_noiommu_mode=1.");

    /// <summary>
    /// A device folder's IOMMU group and its kind, or (null, null) when it has none (the IOMMU is off).
    /// A link that names no group number is an error that says what it names.
    /// </summary>
    internal static (int? Id, IommuGroupKind? Kind) TryReadGroup(SysfsReader sysfs, string deviceDir, ErrorTarget target = default)
    {
        string? group = sysfs.ReadLinkName(deviceDir + "/iommu_group", KernelNameKind.GroupId, "an IOMMU group number", target);
        if (group is null)
        {
            return (null, null);
        }
        int id = int.Parse(group, NumberStyles.None, CultureInfo.InvariantCulture);
        // An mdev's group is emulated; Linux names it "vfio-noiommu" as it names the no-IOMMU groups,
        // so the bus decides first.
        var kind = deviceDir.StartsWith("bus/mdev/", StringComparison.Ordinal) ? IommuGroupKind.Emulated
            : sysfs.ReadText("kernel/iommu_groups/" + group + "/name", target) == "vfio-noiommu" ? IommuGroupKind.NoIommu
            : IommuGroupKind.Iommu;
        return (id, kind);
    }

    /// <summary>The hardware id of an ACPI modalias ("acpi:HID:CID1:...:"), or null for another kind.</summary>
    private static string? AcpiHid(string? modalias)
    {
        const string Prefix = "acpi:";
        if (modalias is null || !modalias.StartsWith(Prefix, StringComparison.Ordinal))
        {
            return null;
        }
        string hid = modalias[Prefix.Length..].Split(':')[0];
        return hid.Length > 0 ? hid : null;
    }
}

/// <summary>A device discovery could not describe, and why.</summary>
/// <param name="Device">The device's name.</param>
/// <param name="Error">What was wrong with its sysfs, naming it.</param>
internal sealed record DiscoveryFailure(string Device, VfioException Error);

/// <summary>The ids of a PCI function as sysfs shows them, each checked for its width.</summary>
internal readonly record struct PciIds(ushort VendorId, ushort DeviceId, uint ClassCode, ushort SubsystemVendorId, ushort SubsystemId)
{
    /// <summary>Reads a function's ids; null when it has no <c>vendor</c> (no such function). An id that does not read as the kernel writes it is an error.</summary>
    public static PciIds? Read(SysfsReader sysfs, string dir, ErrorTarget target)
    {
        if (sysfs.ReadHex(dir + "/vendor", 16, target) is not uint vendor)
        {
            return null;
        }
        return new PciIds((ushort)vendor,
            (ushort)(sysfs.ReadHex(dir + "/device", 16, target) ?? 0),
            sysfs.ReadHex(dir + "/class", 24, target) ?? 0,
            (ushort)(sysfs.ReadHex(dir + "/subsystem_vendor", 16, target) ?? 0),
            (ushort)(sysfs.ReadHex(dir + "/subsystem_device", 16, target) ?? 0));
    }
}
