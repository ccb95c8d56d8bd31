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

    /// <summary>
    /// Reads every PCI function sysfs lists, in address order. A function whose sysfs cannot be read, or
    /// does not read as the kernel writes it, is left out (<see cref="Read"/> says what is wrong with it).
    /// </summary>
    /// <param name="kernel">The kernel to read.</param>
    public static IReadOnlyList<PciFunction> ReadAll(VfioKernel kernel)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        var sysfs = new SysfsReader(kernel);
        var result = new List<PciFunction>();
        foreach (string name in sysfs.List("bus/pci/devices", KernelNameKind.PciAddress))
        {
            try
            {
                if (TryRead(sysfs, PciAddress.Parse(name, CultureInfo.InvariantCulture)) is { } function)
                {
                    result.Add(function);
                }
            }
            catch (VfioException)
            {
                // One function sysfs cannot show does not hide the others.
            }
        }
        result.Sort((a, b) => string.CompareOrdinal(a.Address.ToString(), b.Address.ToString()));
        return result;
    }

    /// <summary>Reads one PCI function.</summary>
    /// <param name="kernel">The kernel to read.</param>
    /// <param name="address">The function's address.</param>
    /// <exception cref="VfioNotFoundException">There is no such function.</exception>
    /// <exception cref="VfioException">Its sysfs cannot be read, or an attribute does not read as the kernel writes it (the message says which and what it read).</exception>
    public static PciFunction Read(VfioKernel kernel, PciAddress address)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        return TryRead(new SysfsReader(kernel), address)
            ?? throw new VfioNotFoundException($"No PCI function {address} in sysfs ({kernel.Sys(SysfsDiscovery.PciDir(address))}); `lspci -D` or `vfio list` shows the addresses there are.");
    }

    internal static PciFunction? TryRead(SysfsReader sysfs, PciAddress address)
    {
        string dir = SysfsDiscovery.PciDir(address);
        var target = new ErrorTarget(Device: address.ToString());
        if (PciIds.Read(sysfs, dir, target) is not { } ids)
        {
            return null;
        }
        string? driverOverride = sysfs.ReadText(dir + "/driver_override", target);
        var (group, kind) = SysfsDiscovery.TryReadGroup(sysfs, dir, target);
        return new PciFunction(address, ids.VendorId, ids.DeviceId, ids.ClassCode, ids.SubsystemVendorId, ids.SubsystemId,
            sysfs.ReadLinkName(dir + "/driver", KernelNameKind.Driver, "a driver", target),
            driverOverride is null or "(null)" or "" ? null : driverOverride,
            group, kind);
    }

    /// <inheritdoc/>
    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"{Address} [{VendorId:x4}:{DeviceId:x4}] class {ClassCode:x6} on {Driver ?? "no driver"}");
}
