using System.Globalization;
using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio.Testing;

/// <summary>
/// PCI reset scopes and the two hot-reset ioctls of vfio-pci (<c>vfio_pci_ioctl_get_pci_hot_reset_info</c>,
/// <c>vfio_pci_ioctl_pci_hot_reset</c>): for a device opened through its group as Linux 6.1 does it
/// (group ids, ownership proved by group fds), for one bound to an iommufd through its cdev as 6.6 and
/// later do (devids, ownership through the iommufd, an empty fd array). A function on a bus behind a
/// bridge (<see cref="AddPciBridge"/>) is reset with its whole bus; a function on a bus without a
/// parent bridge (the root bus) cannot be hot reset: ENODEV, as on real hardware.
/// </summary>
public sealed partial class SimulatedKernel
{
    private const int HotResetHeaderSize = 12; // offsetofend(struct vfio_pci_hot_reset_info, count)
    private readonly Dictionary<(int Domain, int Bus), string> _bridges = [];

    /// <summary>
    /// Puts PCI bus <paramref name="secondaryBus"/> behind a bridge (a PCIe root port or a switch
    /// port) at <paramref name="bridgeAddress"/>: every function on that bus then shares one reset
    /// scope, and a hot reset of any of them resets them all. The bridge itself is not a device of
    /// the simulated machine, and bridges do not nest (a root port on a bus without a bridge).
    /// Functions on a bus with no bridge cannot be hot reset.
    /// </summary>
    /// <param name="bridgeAddress">The bridge's address, "dddd:bb:dd.f" in lower-case hex; its domain is the bus's domain.</param>
    /// <param name="secondaryBus">The bus number below the bridge (1 to 255).</param>
    public void AddPciBridge(string bridgeAddress, int secondaryBus)
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
            if (_bridges.ContainsKey((domain, bus)))
            {
                throw new InvalidOperationException($"Bridges sit on a bus without a parent bridge (a root port); bus {bus:x2} is behind {_bridges[(domain, bus)]}.");
            }
            if (!_bridges.TryAdd((domain, secondaryBus), bridgeAddress))
            {
                throw new InvalidOperationException($"Bus {secondaryBus:x2} already has a bridge ({_bridges[(domain, secondaryBus)]}).");
            }
        }
    }

    /// <summary>The functions a hot reset of <paramref name="device"/> reaches, by address; null when none is possible. The lock is held.</summary>
    internal List<SimulatedPciDevice>? ResetScopeLocked(SimulatedPciDevice device)
    {
        AssertLocked();
        var (domain, bus, _) = PciLocation(device.Name);
        if (!_bridges.ContainsKey((domain, bus)))
        {
            return null;
        }
        return [.. _devices.Values.OfType<SimulatedPciDevice>()
            .Where(d => PciLocation(d.Name) is var (dd, db, _) && dd == domain && db == bus)
            .OrderBy(d => d.Name, StringComparer.Ordinal)];
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
        // vfio_pci_dev_set_hot_reset: every function of the scope must be in the device set (bound to
        // vfio-pci), and each of them owned by the caller.
        if (scope.Any(d => !d.IsVfioBound) || !scope.All(owned))
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
