using System.Globalization;

namespace Vfio;

/// <summary>
/// A PCI function as sysfs shows it now, whatever it is bound to: its ids, its driver and
/// driver_override, and its IOMMU group (none when the IOMMU is off).
/// </summary>
/// <param name="Address">The function's address.</param>
/// <param name="VendorId">The vendor id.</param>
/// <param name="DeviceId">The device id.</param>
/// <param name="ClassCode">The 24-bit class code (base class, subclass, programming interface).</param>
/// <param name="SubsystemVendorId">The subsystem vendor id.</param>
/// <param name="SubsystemId">The subsystem id.</param>
/// <param name="Driver">The driver it is bound to ("nvme", "vfio-pci"), or null.</param>
/// <param name="DriverOverride">Its <c>driver_override</c>: the only driver a probe may bind, or null when unset.</param>
/// <param name="IommuGroup">Its IOMMU group number, or null when it has none.</param>
/// <param name="GroupKind">The kind of its group, or null when it has none.</param>
public sealed record PciFunction(PciAddress Address, ushort VendorId, ushort DeviceId, uint ClassCode,
    ushort SubsystemVendorId, ushort SubsystemId, string? Driver, string? DriverOverride, int? IommuGroup, IommuGroupKind? GroupKind)
{
    /// <summary>
    /// True for a PCI-to-PCI or CardBus bridge (class 06:04, 06:07, 06:09: a type 1 or 2 header), which
    /// vfio-pci refuses to bind.
    /// </summary>
    public bool IsBridge => (ClassCode >> 8) is 0x0604 or 0x0607 or 0x0609;

    /// <summary>True when it is bound to a vfio driver (vfio-pci or a vendor variant of it).</summary>
    public bool IsBoundToVfio => Driver is not null && KernelDrivers.IsVfio(Driver);

    /// <summary>
    /// True when its driver uses the kernel's DMA API and so keeps its IOMMU group from being used
    /// through VFIO: any driver but vfio's, pci-stub and pcieport, which manage DMA themselves.
    /// </summary>
    public bool BlocksGroup => Driver is not null && !KernelDrivers.ManagesDma(Driver);

    /// <summary>Reads every PCI function sysfs lists, in address order.</summary>
    /// <param name="kernel">The kernel to read.</param>
    public static IReadOnlyList<PciFunction> ReadAll(VfioKernel kernel)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        var sysfs = new SysfsReader(kernel);
        var result = new List<PciFunction>();
        foreach (string name in sysfs.List("bus/pci/devices"))
        {
            if (PciAddress.TryParse(name, CultureInfo.InvariantCulture, out var address) && TryRead(sysfs, address) is { } function)
            {
                result.Add(function);
            }
        }
        result.Sort((a, b) => string.CompareOrdinal(a.Address.ToString(), b.Address.ToString()));
        return result;
    }

    /// <summary>Reads one PCI function.</summary>
    /// <param name="kernel">The kernel to read.</param>
    /// <param name="address">The function's address.</param>
    /// <exception cref="VfioNotFoundException">There is no such function.</exception>
    public static PciFunction Read(VfioKernel kernel, PciAddress address)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        return TryRead(new SysfsReader(kernel), address)
            ?? throw new VfioNotFoundException($"No PCI function {address} in sysfs ({kernel.Sys("bus/pci/devices/" + address)}); `lspci -D` or `vfio list` shows the addresses there are.");
    }

    internal static PciFunction? TryRead(SysfsReader sysfs, PciAddress address)
    {
        string dir = "bus/pci/devices/" + address;
        if (sysfs.ReadHex(dir + "/vendor") is not uint vendor)
        {
            return null;
        }
        string? driverOverride = sysfs.ReadText(dir + "/driver_override");
        var (group, kind) = ReadGroup(sysfs, dir);
        return new PciFunction(address, (ushort)vendor,
            (ushort)(sysfs.ReadHex(dir + "/device") ?? 0),
            sysfs.ReadHex(dir + "/class") ?? 0,
            (ushort)(sysfs.ReadHex(dir + "/subsystem_vendor") ?? 0),
            (ushort)(sysfs.ReadHex(dir + "/subsystem_device") ?? 0),
            sysfs.ReadLinkName(dir + "/driver"),
            driverOverride is null or "(null)" or "" ? null : driverOverride,
            group, kind);
    }

    /// <summary>The IOMMU group of a device folder and its kind; (null, null) without one.</summary>
    internal static (int? Id, IommuGroupKind? Kind) ReadGroup(SysfsReader sysfs, string deviceDir)
    {
        string? group = sysfs.ReadLinkName(deviceDir + "/iommu_group");
        if (group is null || !int.TryParse(group, NumberStyles.None, CultureInfo.InvariantCulture, out int id))
        {
            return (null, null);
        }
        // Linux names no-IOMMU groups "vfio-noiommu" (mdev groups too, but they are not PCI functions).
        var kind = sysfs.ReadText("kernel/iommu_groups/" + group + "/name") == "vfio-noiommu" ? IommuGroupKind.NoIommu : IommuGroupKind.Iommu;
        return (id, kind);
    }

    /// <inheritdoc/>
    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"{Address} [{VendorId:x4}:{DeviceId:x4}] class {ClassCode:x6} on {Driver ?? "no driver"}");
}

/// <summary>
/// An IOMMU group as sysfs shows it now: its members (of any bus) with their drivers, and whether
/// VFIO can use it.
/// </summary>
/// <param name="Id">The group number.</param>
/// <param name="Kind">Its kind: a real IOMMU group or a no-IOMMU one.</param>
/// <param name="Members">Its devices, by name, with their drivers.</param>
public sealed record IommuGroupInfo(int Id, IommuGroupKind Kind, IReadOnlyList<IommuGroupMember> Members)
{
    /// <summary>
    /// The members bound to a driver that uses the kernel's DMA API: while any is, the group is not
    /// viable (VFIO_GROUP_GET_STATUS) and cannot be attached to a container.
    /// </summary>
    public IReadOnlyList<IommuGroupMember> BlockingMembers => [.. Members.Where(m => m.BlocksGroup)];

    /// <summary>True when no member blocks the group.</summary>
    public bool IsViable => !Members.Any(m => m.BlocksGroup);

    /// <summary>True when a member is bound to a vfio driver (the group then has its <c>/dev/vfio</c> node).</summary>
    public bool HasVfioMember => Members.Any(m => m.Driver is not null && KernelDrivers.IsVfio(m.Driver));

    /// <summary>
    /// The group's node, <c>/dev/vfio/N</c> (or <c>/dev/vfio/noiommu-N</c>), under the kernel's device root;
    /// it exists while a member is bound to a vfio driver.
    /// </summary>
    /// <param name="kernel">The kernel whose device root to use.</param>
    public string NodePath(VfioKernel kernel)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        return IommuGroup.NodePathFor(kernel, Id, Kind);
    }

    /// <summary>Reads one group.</summary>
    /// <param name="kernel">The kernel to read.</param>
    /// <param name="id">The group number.</param>
    /// <exception cref="VfioNotFoundException">There is no such group.</exception>
    public static IommuGroupInfo Read(VfioKernel kernel, int id)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        var sysfs = new SysfsReader(kernel);
        string dir = "kernel/iommu_groups/" + id.ToString(CultureInfo.InvariantCulture);
        if (!sysfs.Exists(dir))
        {
            throw new VfioNotFoundException($"No IOMMU group {id} ({kernel.Sys(dir)}).");
        }
        return Read(sysfs, id);
    }

    /// <summary>Reads every IOMMU group, in number order.</summary>
    /// <param name="kernel">The kernel to read.</param>
    public static IReadOnlyList<IommuGroupInfo> ReadAll(VfioKernel kernel)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        var sysfs = new SysfsReader(kernel);
        var result = new List<IommuGroupInfo>();
        foreach (string name in sysfs.List("kernel/iommu_groups"))
        {
            if (int.TryParse(name, NumberStyles.None, CultureInfo.InvariantCulture, out int id))
            {
                result.Add(Read(sysfs, id));
            }
        }
        result.Sort((a, b) => a.Id.CompareTo(b.Id));
        return result;
    }

    internal static IommuGroupInfo Read(SysfsReader sysfs, int id)
    {
        string dir = "kernel/iommu_groups/" + id.ToString(CultureInfo.InvariantCulture);
        var members = sysfs.List(dir + "/devices")
            .Order(StringComparer.Ordinal)
            .Select(name => new IommuGroupMember(name, sysfs.ReadLinkName(dir + "/devices/" + name + "/driver")))
            .ToList();
        var kind = sysfs.ReadText(dir + "/name") == "vfio-noiommu" ? IommuGroupKind.NoIommu : IommuGroupKind.Iommu;
        return new IommuGroupInfo(id, kind, members);
    }
}

/// <summary>A device of an IOMMU group.</summary>
/// <param name="Name">Its name on its bus (a PCI address, a platform device name).</param>
/// <param name="Driver">The driver it is bound to, or null.</param>
public sealed record IommuGroupMember(string Name, string? Driver)
{
    /// <summary>True when its driver uses the kernel's DMA API, which keeps the group from being viable.</summary>
    public bool BlocksGroup => Driver is not null && !KernelDrivers.ManagesDma(Driver);

    /// <inheritdoc/>
    public override string ToString() => Driver is null ? Name + " (no driver)" : Name + " (" + Driver + ")";
}

/// <summary>What the library knows of kernel drivers by name.</summary>
internal static class KernelDrivers
{
    /// <summary>vfio-pci and its vendor variants (mlx5_vfio_pci, hisi_acc_vfio_pci, ...), vfio-platform, vfio-amba, vfio_ap, ...</summary>
    public static bool IsVfio(string driver) =>
        driver.StartsWith("vfio", StringComparison.Ordinal)
        || driver.Contains("vfio_pci", StringComparison.Ordinal)
        || driver.Contains("vfio-pci", StringComparison.Ordinal);

    /// <summary>
    /// Drivers that set <c>driver_managed_dma</c>, so their devices do not keep a group from VFIO:
    /// vfio's own, pci-stub and the PCIe port driver (Linux 5.19 and later).
    /// </summary>
    public static bool ManagesDma(string driver) => IsVfio(driver) || driver is "pci-stub" or "pcieport";
}
