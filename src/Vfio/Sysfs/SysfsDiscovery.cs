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

    /// <summary>The devices of every bus some driver is for: a registry of PCI drivers reads no platform or mdev sysfs.</summary>
    public IEnumerable<VfioDeviceContext> Discover(IReadOnlyList<VfioDriver> drivers) =>
        drivers.Select(d => d.Bus).Distinct().SelectMany(bus => bus switch
        {
            DriverBus.Pci => Pci(),
            DriverBus.Platform => Platform(includeRefused: true),
            _ => (IEnumerable<VfioDeviceContext>)Mdev(),
        });

    /// <summary>The PCI functions bound to a vfio driver.</summary>
    public List<PciDeviceContext> Pci()
    {
        var result = new List<PciDeviceContext>();
        foreach (string name in Sysfs.List("bus/pci/devices"))
        {
            string? driver = Sysfs.ReadLinkName("bus/pci/devices/" + name + "/driver");
            if (driver is not null && IsVfioDriver(driver) && PciAddress.TryParse(name, CultureInfo.InvariantCulture, out var address))
            {
                result.Add(DescribePci(address, driver));
            }
        }
        return result;
    }

    /// <summary>Describes one PCI function, whatever it is bound to; throws when sysfs has no such function or it has no group.</summary>
    public PciDeviceContext DescribePci(PciAddress address) =>
        DescribePci(address, Sysfs.ReadLinkName("bus/pci/devices/" + address + "/driver"));

    /// <summary>
    /// The platform devices bound to vfio; with <paramref name="includeRefused"/>, also those assigned to
    /// vfio-platform through driver_override that it did not bind (their context carries the reason).
    /// </summary>
    public List<PlatformDeviceContext> Platform(bool includeRefused)
    {
        var result = new List<PlatformDeviceContext>();
        foreach (string name in Sysfs.List("bus/platform/devices"))
        {
            string dir = "bus/platform/devices/" + name;
            string? driver = Sysfs.ReadLinkName(dir + "/driver");
            bool bound = driver is not null && IsVfioDriver(driver);
            bool refused = includeRefused && driver is null && Sysfs.ReadText(dir + "/driver_override") == "vfio-platform";
            if (!bound && !refused)
            {
                continue;
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
            string compatible = Sysfs.ReadText(dir + "/of_node/compatible") ?? string.Empty;
            string[] strings = compatible.Split('\0', StringSplitOptions.RemoveEmptyEntries);
            string? acpiHid = strings.Length == 0 ? AcpiHid(Sysfs.ReadText(dir + "/modalias")) : null;
            result.Add(new PlatformDeviceContext(registry, name, groupId, kind, driver, strings, acpiHid)
            {
                Refusal = refused ? refusal ?? PlatformReset.Refusal(registry, name, groupId, PlatformReset.Identity(strings, acpiHid), acpiHid is not null) : null,
            });
        }
        return result;
    }

    /// <summary>The mediated devices that exist, with their types.</summary>
    public List<MdevDeviceContext> Mdev()
    {
        var result = new List<MdevDeviceContext>();
        foreach (string name in Sysfs.List("bus/mdev/devices"))
        {
            if (!Guid.TryParse(name, out var uuid))
            {
                continue;
            }
            string dir = "bus/mdev/devices/" + name;
            string? type = Sysfs.ReadLinkName(dir + "/mdev_type");
            if (type is null)
            {
                continue;
            }
            result.Add(DescribeMdev(name, uuid, type));
        }
        return result;
    }

    /// <summary>Describes an mdev that exists, from its sysfs folder.</summary>
    public MdevDeviceContext DescribeMdev(Guid uuid)
    {
        string name = uuid.ToString("D", CultureInfo.InvariantCulture);
        string type = Sysfs.ReadLinkName("bus/mdev/devices/" + name + "/mdev_type")
            ?? throw new VfioNotFoundException($"The mdev {name} has no mdev_type link in sysfs: it was removed.");
        return DescribeMdev(name, uuid, type);
    }

    /// <summary>The mdev parents (<c>/sys/class/mdev_bus/*</c>) and the types each offers, read now.</summary>
    public List<MdevParent> MdevParents()
    {
        var result = new List<MdevParent>();
        foreach (string name in Sysfs.List("class/mdev_bus").Order(StringComparer.Ordinal))
        {
            if (TryDescribeMdevParent(name, out var parent))
            {
                result.Add(parent);
            }
        }
        return result;
    }

    /// <summary>Reads one mdev parent and its types; false when there is no such parent.</summary>
    public bool TryDescribeMdevParent(string name, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out MdevParent? parent)
    {
        string dir = "class/mdev_bus/" + name;
        string[] typeIds = Sysfs.List(dir + "/mdev_supported_types");
        if (typeIds.Length == 0 && !Sysfs.Exists(dir))
        {
            parent = null;
            return false;
        }
        parent = new MdevParent(registry, name, dir);
        var types = new List<MdevType>();
        foreach (string id in typeIds.Order(StringComparer.Ordinal))
        {
            string typeDir = dir + "/mdev_supported_types/" + id;
            types.Add(new MdevType(parent, id,
                Sysfs.ReadText(typeDir + "/name") ?? id,
                Sysfs.ReadText(typeDir + "/description"),
                Sysfs.ReadText(typeDir + "/device_api") ?? string.Empty));
        }
        parent.Types = types;
        return true;
    }

    /// <summary>The names of the mdev parents there are, for an error that lists them.</summary>
    public string[] MdevParentNames() => Sysfs.List("class/mdev_bus");

    private PciDeviceContext DescribePci(PciAddress address, string? driver)
    {
        string name = address.ToString();
        string dir = "bus/pci/devices/" + name;
        uint vendor = Sysfs.ReadHex(dir + "/vendor")
            ?? throw new VfioNotFoundException($"No PCI function {name} in sysfs ({registry.Kernel.Sys(dir)}).");
        var (groupId, kind) = ReadGroup(dir, name);
        return new PciDeviceContext(registry, address, groupId, kind, driver,
            (ushort)vendor,
            (ushort)(Sysfs.ReadHex(dir + "/device") ?? 0),
            Sysfs.ReadHex(dir + "/class") ?? 0,
            (ushort)(Sysfs.ReadHex(dir + "/subsystem_vendor") ?? 0),
            (ushort)(Sysfs.ReadHex(dir + "/subsystem_device") ?? 0));
    }

    private MdevDeviceContext DescribeMdev(string name, Guid uuid, string type)
    {
        string dir = "bus/mdev/devices/" + name;
        var (groupId, _) = ReadGroup(dir, name);
        string? driver = Sysfs.ReadLinkName(dir + "/driver");
        // The device's folder lives in its parent's: .../devices/virtual/mtty/mtty/<uuid>.
        string? parent = registry.Kernel.ReadLink(registry.Kernel.Sys(dir), out string target) == 0 && target.Split('/') is { Length: >= 2 } parts
            ? parts[^2]
            : null;
        return new MdevDeviceContext(registry, uuid, groupId, driver, type, parent);
    }

    private (int Id, IommuGroupKind Kind) ReadGroup(string deviceDir, string name) =>
        TryReadGroup(Sysfs, deviceDir) is (int id, IommuGroupKind kind)
            ? (id, kind)
            : throw new VfioNotFoundException(
                $"Device {name} has no IOMMU group: enable the IOMMU (intel_iommu=on or amd_iommu=on) or load vfio with enable_unsafe_noiommu_mode=1.");

    /// <summary>A device folder's IOMMU group and its kind, or (null, null) when it has none (the IOMMU is off).</summary>
    internal static (int? Id, IommuGroupKind? Kind) TryReadGroup(SysfsReader sysfs, string deviceDir)
    {
        string? group = sysfs.ReadLinkName(deviceDir + "/iommu_group");
        if (group is null || !int.TryParse(group, NumberStyles.None, CultureInfo.InvariantCulture, out int id))
        {
            return (null, null);
        }
        // An mdev's group is emulated; Linux names it "vfio-noiommu" as it names the no-IOMMU groups,
        // so the bus decides first.
        var kind = deviceDir.StartsWith("bus/mdev/", StringComparison.Ordinal) ? IommuGroupKind.Emulated
            : sysfs.ReadText("kernel/iommu_groups/" + group + "/name") == "vfio-noiommu" ? IommuGroupKind.NoIommu
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
