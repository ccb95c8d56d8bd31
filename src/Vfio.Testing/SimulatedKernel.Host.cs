using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio.Testing;

/// <summary>
/// The machine around VFIO that a tool inspects: the IOMMU, the loaded modules, the owner and mode of
/// the device nodes, the process's identity and limits.
/// </summary>
public sealed partial class SimulatedKernel
{
    private const uint GroupNodeMode = FileStatus.CharacterDevice | 0x180; // crw------- (devtmpfs default)
    private const uint ContainerNodeMode = FileStatus.CharacterDevice | 0x1b6; // crw-rw-rw- (misc device, S_IRUGO | S_IWUGO)
    private const uint IommufdNodeMode = FileStatus.CharacterDevice | 0x1b0; // crw-rw---- (iommufd's misc device, 0660)
    private const uint DirectoryMode = FileStatus.Directory | 0x1ed; // drwxr-xr-x

    private readonly Dictionary<string, (uint UserId, uint GroupId)> _nodeOwners = new(StringComparer.Ordinal);
    private SimulatedIommuState _iommu = SimulatedIommuState.On;
    private bool _vfioPciLoaded = true;

    /// <summary>
    /// The IOMMU (<see cref="SimulatedIommuState.On"/> by default). Devices with IOMMU groups need it
    /// on: it can be changed only while there are none, and such devices cannot be added while it is not on.
    /// </summary>
    public SimulatedIommuState Iommu
    {
        get
        {
            using (Enter())
            {
                return _iommu;
            }
        }
        set
        {
            using (Enter())
            {
                if (value != SimulatedIommuState.On && GroupsLocked.Any(g => g.Kind == SimulatedGroupKind.Iommu))
                {
                    throw new InvalidOperationException("Devices with IOMMU groups exist: the IOMMU must stay on.");
                }
                _iommu = value;
                ShowIommuLocked();
            }
        }
    }

    /// <summary>
    /// Whether the vfio-pci module is loaded (true by default): <c>/sys/module/vfio_pci</c> and the
    /// driver <c>/sys/bus/pci/drivers/vfio-pci</c>. It can be unloaded only while no device is bound to it.
    /// </summary>
    public bool VfioPciLoaded
    {
        get
        {
            using (Enter())
            {
                return _vfioPciLoaded;
            }
        }
        set
        {
            using (Enter())
            {
                if (!value && _devices.Values.Any(d => d.DriverName == VfioPci))
                {
                    throw new InvalidOperationException("Devices are bound to vfio-pci: unbind them before unloading it.");
                }
                _vfioPciLoaded = value;
                if (value)
                {
                    Sysfs.Directory("module/vfio_pci/parameters");
                    RegisterDriverLocked(PciBus, VfioPci);
                }
                else
                {
                    Sysfs.Remove("module/vfio_pci");
                    Sysfs.Remove(PciBus + "/drivers/" + VfioPci);
                }
            }
        }
    }

    /// <summary>The effective user id of the process the library runs in (0, root, by default): decides what <c>access</c> allows and whether <c>chown</c> may.</summary>
    public uint ProcessUserId { get; set; }

    /// <summary>The effective group id of the process (0 by default).</summary>
    public uint ProcessGroupId { get; set; }

    /// <summary>
    /// Whether the process has CAP_IPC_LOCK (false by default): VFIO_IOMMU_MAP_DMA then does not charge
    /// its pinned pages to <see cref="MemoryLockLimit"/>, as the type1 IOMMU driver does for such a caller.
    /// </summary>
    public bool IpcLockCapability { get; set; }

    /// <summary>The kernel release <c>uname -r</c> shows ("6.1.0-simulated" by default).</summary>
    public string KernelRelease { get; set; } = "6.1.0-simulated";

    /// <summary>
    /// Whether the kernel's module tree <c>/lib/modules/</c><see cref="KernelRelease"/> exists (true by
    /// default): the one path outside its roots the simulated kernel answers, from the model.
    /// </summary>
    public bool HasModuleTree { get; set; } = true;

    private const string VfioPci = "vfio-pci";

    /// <summary>
    /// Makes a PCI driver one built with <c>suppress_bind_attrs</c>: it has no <c>bind</c> or
    /// <c>unbind</c> file, so user space can never take a device away from it through sysfs.
    /// </summary>
    /// <param name="driver">The driver's name, e.g. "ahci"; registered when the simulation has no such driver yet.</param>
    public void SuppressBindAttributes(string driver)
    {
        ArgumentException.ThrowIfNullOrEmpty(driver);
        using (Enter())
        {
            RegisterDriverLocked(PciBus, driver);
            var dir = Sysfs.Directory(PciBus + "/drivers/" + driver);
            dir.Remove("bind");
            dir.Remove("unbind");
        }
    }

    private void InitializeHost()
    {
        Sysfs.Directory("class/iommu");
        Sysfs.Directory("module/vfio/parameters").Attribute("enable_unsafe_noiommu_mode",
            () => UnsafeNoIommuMode ? "Y\n" : "N\n",
            text => StoreBool(text, v => UnsafeNoIommuMode = v));
        Sysfs.Directory("module/vfio_pci/parameters");
        Sysfs.Directory("module/vfio_pci_core");
        Sysfs.Directory("module/irqbypass");
        // The 1 GiB pool x86-64 shows beside the 2 MiB one; it stays empty.
        var gigantic = Sysfs.Directory("kernel/mm/hugepages/hugepages-1048576kB");
        gigantic.Attribute("nr_hugepages", () => "0\n");
        gigantic.Attribute("free_hugepages", () => "0\n");
        ShowIommuLocked();
    }

    private static int StoreBool(string text, Action<bool> set)
    {
        switch (text.Trim())
        {
            case "Y" or "y" or "1":
                set(true);
                return 0;
            case "N" or "n" or "0":
                set(false);
                return 0;
            default:
                return -Errno.EINVAL;
        }
    }

    private void ShowIommuLocked()
    {
        AssertLocked();
        var tables = Sysfs.Directory("firmware/acpi/tables");
        if (_iommu == SimulatedIommuState.Absent)
        {
            tables.Remove("DMAR");
        }
        else if (tables.Child("DMAR") is null)
        {
            tables.Attribute("DMAR", () => "DMAR");
        }
        var iommus = Sysfs.Directory("class/iommu");
        if (_iommu == SimulatedIommuState.On)
        {
            iommus.Directory("dmar0");
        }
        else
        {
            iommus.Remove("dmar0");
        }
    }

    /// <summary>vfio-pci's probe in Linux 6.1: no bridges (header type other than normal), and a group it can use. The lock is held.</summary>
    private int ProbeVfioPciLocked(SimulatedDevice device)
    {
        AssertLocked();
        uint classCode = ((PciDeviceModel)device.Model).ClassCode;
        if ((classCode >> 8) is 0x0604 or 0x0607 or 0x0609)
        {
            return -Errno.EINVAL; // vfio_pci_probe: pdev->hdr_type != PCI_HEADER_TYPE_NORMAL
        }
        if (device.Group.Kind == SimulatedGroupKind.NoIommu && !UnsafeNoIommuMode)
        {
            return -Errno.EINVAL; // vfio_group_find_or_alloc: no IOMMU group and no no-IOMMU mode
        }
        return 0;
    }

    // ---- Device nodes ----------------------------------------------------------------------------

    /// <summary>Forgets the owners of nodes that are gone (a group node, a cdev): one that comes back is root's again. The lock is held.</summary>
    private void PruneNodeOwnersLocked()
    {
        AssertLocked();
        foreach (string path in _nodeOwners.Keys.Where(p => DevNodeModeLocked(p) is null).ToList())
        {
            _nodeOwners.Remove(path);
        }
    }

    /// <summary>The mode of a node under the device root, or null when there is none. The lock is held.</summary>
    private uint? DevNodeModeLocked(string path)
    {
        AssertLocked();
        if (path == DevRoot || path == DevRoot + "/vfio")
        {
            return DirectoryMode;
        }
        if (path == DevRoot + "/iommu")
        {
            return IommufdEnabled ? IommufdNodeMode : null;
        }
        if (path == DevRoot + "/vfio/vfio")
        {
            return ContainerNodeMode;
        }
        if (path == DevRoot + "/vfio/devices")
        {
            return CdevNamesLocked().Any() ? DirectoryMode : null;
        }
        return DevNodeExistsLocked(path) ? GroupNodeMode : null;
    }

    internal override int Stat(string path, out FileStatus status)
    {
        status = default;
        int injected = _injection.Enter(SimulatedCall.Stat);
        if (injected < 0)
        {
            return injected;
        }
        using (Enter())
        {
            if (SysfsRelative(path) is { } relative)
            {
                int r = ResolveSysfsLocked(relative, followLast: true, out var node);
                if (r < 0)
                {
                    return r;
                }
                status = new FileStatus(SysfsModeLocked(node), 0, 0);
                return 0;
            }
            if (HasModuleTree && path.TrimEnd('/') == "/lib/modules/" + KernelRelease)
            {
                status = new FileStatus(DirectoryMode, 0, 0);
                return 0;
            }
            string trimmed = path.TrimEnd('/');
            if (DevNodeModeLocked(trimmed) is not uint mode)
            {
                return -Errno.ENOENT;
            }
            var (userId, groupId) = _nodeOwners.GetValueOrDefault(trimmed);
            status = new FileStatus(mode, userId, groupId);
            return 0;
        }
    }

    private static uint SysfsModeLocked(SysfsNode node) => node switch
    {
        SysfsDirectory => DirectoryMode,
        SysfsAttribute { Show: not null, Store: not null } => FileStatus.RegularFile | 0x1a4, // -rw-r--r--
        SysfsAttribute { Show: not null } => FileStatus.RegularFile | 0x124, // -r--r--r--
        _ => FileStatus.RegularFile | 0x80, // --w-------
    };

    internal override int Access(string path, int mode)
    {
        int injected = _injection.Enter(SimulatedCall.Access);
        if (injected < 0)
        {
            return injected;
        }
        using (Enter())
        {
            if (_devAccessErrors.TryGetValue(path.TrimEnd('/'), out int denied) && denied != 0)
            {
                return -denied;
            }
        }
        int r = Stat(path, out var status);
        if (r < 0)
        {
            return r;
        }
        if (ProcessUserId == 0)
        {
            return 0; // CAP_DAC_OVERRIDE: read and write whatever the bits say
        }
        uint bits = status.UserId == ProcessUserId ? (status.Mode >> 6) & 7
            : status.GroupId == ProcessGroupId ? (status.Mode >> 3) & 7
            : status.Mode & 7;
        return (bits & (uint)mode) == (uint)mode ? 0 : -Errno.EACCES;
    }

    internal override int Chown(string path, int userId, int groupId)
    {
        int injected = _injection.Enter(SimulatedCall.Chown);
        if (injected < 0)
        {
            return injected;
        }
        using (Enter())
        {
            string trimmed = path.TrimEnd('/');
            if (DevNodeModeLocked(trimmed) is null)
            {
                return SysfsRelative(path) is not null ? -Errno.EOPNOTSUPP : -Errno.ENOENT; // sysfs owners are not modelled
            }
            if (ProcessUserId != 0)
            {
                return -Errno.EPERM; // CAP_CHOWN
            }
            var (oldUser, oldGroup) = _nodeOwners.GetValueOrDefault(trimmed);
            _nodeOwners[trimmed] = (userId < 0 ? oldUser : (uint)userId, groupId < 0 ? oldGroup : (uint)groupId);
            return 0;
        }
    }

    // ---- Process limits --------------------------------------------------------------------------

    internal override int GetResourceLimit(int resource, out ulong soft, out ulong hard)
    {
        soft = hard = 0;
        int injected = _injection.Enter(SimulatedCall.GetResourceLimit);
        if (injected < 0)
        {
            return injected;
        }
        if (resource != Flags.RLIMIT_MEMLOCK)
        {
            return -Errno.EINVAL; // only the limit VFIO charges is modelled
        }
        soft = hard = MemoryLockLimit ?? ulong.MaxValue;
        return 0;
    }

    internal override int GetCapabilities(out ulong effective)
    {
        effective = 0;
        int injected = _injection.Enter(SimulatedCall.GetCapabilities);
        if (injected < 0)
        {
            return injected;
        }
        effective = IpcLockCapability ? 1UL << Flags.CAP_IPC_LOCK : 0;
        return 0;
    }

    internal override int GetKernelRelease(out string release)
    {
        release = string.Empty;
        int injected = _injection.Enter(SimulatedCall.Uname);
        if (injected < 0)
        {
            return injected;
        }
        release = KernelRelease;
        return 0;
    }
}
