using System.Globalization;
using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio.Testing;

/// <summary>
/// PCI reset scopes and the two hot-reset ioctls of vfio-pci (<c>vfio_pci_ioctl_get_pci_hot_reset_info</c>,
/// <c>vfio_pci_ioctl_pci_hot_reset</c>): for a device opened through its group as Linux 6.1 does it
/// (group ids, ownership proved by group fds), for one bound to an iommufd through its cdev as 6.6 and
/// later do (devids, ownership through the iommufd, an empty fd array). A function on a bus behind a
/// bridge (<see cref="AddPciBridge"/>) is reset with its whole bus, or with its slot when the bridge's
/// slot is a hotplug slot that can be reset; a function on a bus without a parent bridge (the root bus)
/// cannot be hot reset: ENODEV, as on real hardware. vfio-pci's device sets follow the same lines
/// (<c>vfio_pci_core_register_device</c>): the slot's, else the bus's, and a root bus function alone.
/// </summary>
public sealed partial class SimulatedKernel
{
    private const int HotResetHeaderSize = 12; // offsetofend(struct vfio_pci_hot_reset_info, count)
    private readonly Dictionary<(int Domain, int Bus), Bridge> _bridges = [];

    /// <summary>A bridge above a bus: its address, and whether slot 0 of the bus is a hotplug slot that can be reset.</summary>
    private readonly record struct Bridge(string Address, bool HotplugSlot);

    /// <summary>
    /// Puts PCI bus <paramref name="secondaryBus"/> behind a bridge (a PCIe root port or a switch
    /// port) at <paramref name="bridgeAddress"/>: every function on that bus then shares one reset
    /// scope, and a hot reset of any of them resets them all. The bridge itself is not a device of
    /// the simulated machine, and bridges do not nest (a root port on a bus without a bridge).
    /// Functions on a bus with no bridge cannot be hot reset. Add the bridge before the functions
    /// behind it: their sysfs folders sit in the bridge's (<c>devices/pci0000:00/0000:00:1c.0/0000:01:00.0</c>).
    /// </summary>
    /// <param name="bridgeAddress">The bridge's address, "dddd:bb:dd.f" in lower-case hex; its domain is the bus's domain.</param>
    /// <param name="secondaryBus">The bus number below the bridge (1 to 255).</param>
    /// <param name="hotplugSlot">
    /// True when slot 0 of the bus is a PCIe hotplug slot that pciehp drives (<c>/sys/bus/pci/slots/N</c>
    /// with a <c>module</c> link to pciehp): a slot that can be reset, so its functions form a reset scope
    /// and a device set of their own, apart from the bus's other slots.
    /// </param>
    public void AddPciBridge(string bridgeAddress, int secondaryBus, bool hotplugSlot = false)
    {
        ArgumentNullException.ThrowIfNull(bridgeAddress);
        ArgumentOutOfRangeException.ThrowIfLessThan(secondaryBus, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(secondaryBus, 255);
        if (!PciAddressPattern().IsMatch(bridgeAddress))
        {
            throw new ArgumentException("A PCI address is dddd:bb:dd.f in lower-case hex, e.g. 0000:00:1c.0.", nameof(bridgeAddress));
        }
        var (domain, bus, _) = PciLocation(bridgeAddress);
        if (bus >= secondaryBus)
        {
            throw new ArgumentException("A bridge's secondary bus is numbered above the bus the bridge sits on.", nameof(secondaryBus));
        }
        using (Enter())
        {
            // Root ports only: a bridge below another would put its bus, and the bridge itself,
            // into the upper bus's reset scope, which is not modelled.
            if (_bridges.TryGetValue((domain, bus), out var above))
            {
                throw new InvalidOperationException($"Bridges sit on a bus without a parent bridge (a root port); bus {bus:x2} is behind {above.Address}.");
            }
            if (_bridges.TryGetValue((domain, secondaryBus), out var existing))
            {
                throw new InvalidOperationException($"Bus {secondaryBus:x2} already has a bridge ({existing.Address}).");
            }
            if (_devices.Values.OfType<SimulatedPciDevice>().FirstOrDefault(d => PciLocation(d.Name) is var (dd, db, _) && dd == domain && db == secondaryBus) is { } early)
            {
                throw new InvalidOperationException($"Add the bridge before the functions behind it: {early.Name} is on bus {secondaryBus:x2} already.");
            }
            _bridges.Add((domain, secondaryBus), new Bridge(bridgeAddress, hotplugSlot));
            if (hotplugSlot)
            {
                // pciehp names the slot by its physical slot number; the bus number stands in for it.
                var slot = Sysfs.Directory("bus/pci/slots/" + Decimal(secondaryBus));
                string slotAddress = bridgeAddress[..5] + secondaryBus.ToString("x2", CultureInfo.InvariantCulture) + ":00";
                slot.Attribute("address", () => slotAddress + "\n");
                Sysfs.Directory("module/pciehp");
                slot.Link("module", "module/pciehp");
            }
        }
    }

    /// <summary>The sysfs folder of a PCI function: under its host bridge, and under its bridge when its bus has one. The lock is held.</summary>
    private string PciDeviceFolderLocked(string address)
    {
        AssertLocked();
        var (domain, bus, _) = PciLocation(address);
        return _bridges.TryGetValue((domain, bus), out var bridge)
            ? "devices/pci" + bridge.Address[..7] + "/" + bridge.Address + "/" + address
            : "devices/pci" + address[..7] + "/" + address;
    }

    /// <summary>
    /// The functions a hot reset of <paramref name="device"/> reaches, in address order: its slot's when
    /// the slot can be reset, else its bus's; null when none is possible (the root bus). The lock is held.
    /// </summary>
    internal List<SimulatedPciDevice>? ResetScopeLocked(SimulatedPciDevice device)
    {
        AssertLocked();
        var (domain, bus, devfn) = PciLocation(device.Name);
        if (!_bridges.TryGetValue((domain, bus), out var bridge))
        {
            return null;
        }
        bool slotOnly = bridge.HotplugSlot && devfn >> 3 == 0;
        return [.. _devices.Values.OfType<SimulatedPciDevice>()
            .Where(d => PciLocation(d.Name) is var (dd, db, df) && dd == domain && db == bus && (!slotOnly || df >> 3 == 0))
            .OrderBy(d => d.Name, StringComparer.Ordinal)];
    }

    /// <summary>The device set vfio-pci puts a function in: its slot's, its bus's, or its own on the root bus. The lock is held.</summary>
    private string DeviceSetLocked(SimulatedPciDevice device)
    {
        AssertLocked();
        var (domain, bus, devfn) = PciLocation(device.Name);
        if (!_bridges.TryGetValue((domain, bus), out var bridge))
        {
            return device.Name;
        }
        return bridge.HotplugSlot && devfn >> 3 == 0 ? device.Name[..10] : device.Name[..7];
    }

    /// <summary>VFIO_DEVICE_GET_PCI_HOT_RESET_INFO; the lock is held.</summary>
    internal unsafe int GetHotResetInfoLocked(SimulatedPciDevice device, byte* arg)
    {
        AssertLocked();
        var hdr = (vfio_pci_hot_reset_info*)arg;
        if (hdr->argsz < HotResetHeaderSize)
        {
            return -Errno.EINVAL;
        }
        if (ResetScopeLocked(device) is not { } scope)
        {
            return -Errno.ENODEV;
        }
        // Too small: flags and count go back, argsz stays as the caller gave it.
        hdr->flags = 0;
        if (hdr->argsz < HotResetHeaderSize + (scope.Count * sizeof(vfio_pci_dependent_device)))
        {
            hdr->count = (uint)scope.Count;
            return -Errno.ENOSPC;
        }
        // Opened as a cdev: devids in the caller's iommufd, and OWNED while nothing is NOT_OWNED (vfio_pci_fill_devs).
        var iommufd = IommufdBindingLocked(device)?.Context;
        uint flags = iommufd is null ? 0 : VfioUapi.VFIO_PCI_HOT_RESET_FLAG_DEV_ID | VfioUapi.VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED;
        var devices = new Span<vfio_pci_dependent_device>(arg + HotResetHeaderSize, scope.Count);
        for (int i = 0; i < scope.Count; i++)
        {
            var (domain, bus, devfn) = PciLocation(scope[i].Name);
            devices[i] = new vfio_pci_dependent_device { segment = (ushort)domain, bus = (byte)bus, devfn = (byte)devfn };
            if (iommufd is null)
            {
                devices[i].group_id = (uint)scope[i].IommuGroup;
                continue;
            }
            int id = scope[i].IsVfioBound ? iommufd.DeviceId(scope[i]) : -Errno.ENODEV; // not in the dev_set
            devices[i].devid = id > 0 ? (uint)id
                : id == -Errno.ENOENT ? (uint)VfioUapi.VFIO_PCI_DEVID_OWNED
                : unchecked((uint)VfioUapi.VFIO_PCI_DEVID_NOT_OWNED);
            if (devices[i].devid == unchecked((uint)VfioUapi.VFIO_PCI_DEVID_NOT_OWNED))
            {
                flags &= ~VfioUapi.VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED;
            }
        }
        hdr->count = (uint)scope.Count;
        hdr->flags = flags;
        return 0;
    }

    /// <summary>VFIO_DEVICE_PCI_HOT_RESET; the lock is held. Every function of the scope is reset once the lock is released.</summary>
    internal unsafe int HotResetLocked(SimulatedPciDevice device, byte* arg)
    {
        AssertLocked();
        var hdr = (vfio_pci_hot_reset*)arg;
        if (hdr->argsz < HotResetHeaderSize || hdr->flags != 0)
        {
            return -Errno.EINVAL;
        }
        // The zero-length fd array is for cdev-opened devices only, and only it is.
        var iommufd = IommufdBindingLocked(device)?.Context;
        if ((hdr->count != 0) == (iommufd is not null))
        {
            return -Errno.EINVAL;
        }
        if (ResetScopeLocked(device) is not { } scope)
        {
            return -Errno.ENODEV;
        }
        Func<SimulatedPciDevice, bool> owned;
        if (iommufd is not null)
        {
            // Owned through the iommufd: bound to it, or in a group a device bound to it is in.
            owned = d => iommufd.DeviceId(d) is > 0 or -Errno.ENOENT;
        }
        else
        {
            // One group per function at most; no more files than that.
            if (hdr->count > scope.Count)
            {
                return -Errno.EINVAL;
            }
            var fds = new ReadOnlySpan<int>(arg + HotResetHeaderSize, (int)hdr->count);
            var groups = new List<IommuGroupState>(fds.Length);
            foreach (int fd in fds)
            {
                var file = FileLocked(fd);
                if (file is null)
                {
                    return -Errno.EBADF;
                }
                if (file is not GroupFile group)
                {
                    return -Errno.EINVAL;
                }
                groups.Add(group.Group);
            }
            owned = d => groups.Contains(d.Group);
        }
        // vfio_pci_dev_set_hot_reset: every function of the scope must be in the device's set (bound to
        // vfio-pci, in the same slot or bus set), and each of them owned by the caller.
        string set = DeviceSetLocked(device);
        if (scope.Any(d => !d.IsVfioBound || DeviceSetLocked(d) != set) || !scope.All(owned))
        {
            return -Errno.EINVAL;
        }
        foreach (var member in scope)
        {
            Defer(member.Model.ResetKeepingConfig);
        }
        return 0;
    }

    private static (int Domain, int Bus, int DevFn) PciLocation(string address)
    {
        int domain = int.Parse(address.AsSpan(0, 4), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture);
        int bus = int.Parse(address.AsSpan(5, 2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture);
        int slot = int.Parse(address.AsSpan(8, 2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture);
        int function = address[11] - '0';
        return (domain, bus, (slot << 3) | function);
    }
}
