using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio.Testing;

/// <summary>
/// A registered VFIO device (the vfio_device a vfio bus driver's probe registers): its index, which
/// names <c>vfio-dev/vfioN</c> in sysfs and the cdev <c>/dev/vfio/devices/vfioN</c>, the cdev files
/// open on it (each holds the registration, so an unbind waits for them), and its iommufd binding.
/// </summary>
internal sealed class VfioDeviceRegistration(int index)
{
    public int Index { get; } = index;

    public string Name => "vfio" + SimulatedKernel.Decimal(Index);

    public int CdevFiles { get; set; }

    /// <summary>The device's iommufd binding while a cdev file of it is bound (device->cdev_opened).</summary>
    public IommufdDeviceObject? Binding { get; set; }
}

/// <summary>
/// A device file opened from <c>/dev/vfio/devices/vfioN</c> (drivers/vfio/device_cdev.c). Until
/// VFIO_DEVICE_BIND_IOMMUFD succeeds every other call fails with EINVAL; after it, it is a device file
/// like one from VFIO_GROUP_GET_DEVICE_FD, plus ATTACH/DETACH_IOMMUFD_PT. Closing it unbinds.
/// </summary>
internal sealed unsafe class DeviceCdevFile(SimulatedKernel kernel, string path, SimulatedDevice device, VfioDeviceRegistration registration)
    : DeviceFile(kernel, path, device)
{
    private IommufdFile? _iommufd;
    private IommufdDeviceObject? _bound;

    public override int Ioctl(nuint request, nint argument)
    {
        if (request == VfioUapi.VFIO_DEVICE_BIND_IOMMUFD)
        {
            using (Kernel.Enter())
            {
                return Bind((byte*)argument);
            }
        }
        using (Kernel.Enter())
        {
            // vfio_device_fops_unl_ioctl: nothing before access is granted.
            if (_bound is not { } idev)
            {
                return -Errno.EINVAL;
            }
            if (request == VfioUapi.VFIO_DEVICE_ATTACH_IOMMUFD_PT)
            {
                return Attach(idev, (vfio_device_attach_iommufd_pt*)argument);
            }
            if (request == VfioUapi.VFIO_DEVICE_DETACH_IOMMUFD_PT)
            {
                return Detach(idev, (vfio_device_detach_iommufd_pt*)argument);
            }
        }
        return base.Ioctl(request, argument);
    }

    public override long PRead(Span<byte> buffer, long offset) => Granted() ? base.PRead(buffer, offset) : -Errno.EINVAL;

    public override long PWrite(ReadOnlySpan<byte> buffer, long offset) => Granted() ? base.PWrite(buffer, offset) : -Errno.EINVAL;

    public override int Map(nuint length, int prot, int flags, long offset, out MappingSource source)
    {
        source = null!;
        return Granted() ? base.Map(length, prot, flags, offset, out source) : -Errno.EINVAL;
    }

    private bool Granted()
    {
        using (Kernel.Enter())
        {
            return _bound is not null;
        }
    }

    /// <summary>vfio_df_ioctl_bind_iommufd; the lock is held.</summary>
    private int Bind(byte* argument)
    {
        const int MinSize = 16; // offsetofend(struct vfio_device_bind_iommufd, out_devid)
        if (argument == null)
        {
            return -Errno.EFAULT;
        }
        uint argsz = *(uint*)argument;
        if (argsz < MinSize)
        {
            return -Errno.EINVAL;
        }
        // copy_struct_from_user: what the kernel does not know must be zero.
        for (long i = sizeof(vfio_device_bind_iommufd); i < argsz; i++)
        {
            if (argument[i] != 0)
            {
                return -Errno.E2BIG;
            }
        }
        var bind = default(vfio_device_bind_iommufd);
        new ReadOnlySpan<byte>(argument, (int)Math.Min(argsz, (uint)sizeof(vfio_device_bind_iommufd))).CopyTo(new Span<byte>(&bind, sizeof(vfio_device_bind_iommufd)));
        if (bind.iommufd < 0 || (bind.flags & ~VfioUapi.VFIO_DEVICE_BIND_FLAG_TOKEN) != 0)
        {
            return -Errno.EINVAL;
        }
        // vfio_device_block_group: not while the group is open through the legacy API.
        if (Device.Group.OpenFile is not null)
        {
            return -Errno.EBUSY;
        }
        if (_bound is not null)
        {
            return -Errno.EINVAL; // one device file is bound once
        }
        // vfio_df_check_token: no simulated device is an SR-IOV PF or VF, so a token is never wanted.
        if ((bind.flags & VfioUapi.VFIO_DEVICE_BIND_FLAG_TOKEN) != 0)
        {
            return -Errno.EINVAL;
        }
        var file = Kernel.FileLocked(bind.iommufd);
        if (file is null)
        {
            return -Errno.EBADF;
        }
        if (file is not IommufdFile iommufd)
        {
            return -Errno.EBADFD;
        }
        // vfio_df_open: the cdev path opens a device only once, in any way.
        if (Device.OpenCount != 0)
        {
            return -Errno.EINVAL;
        }
        int r = iommufd.Context.Bind(Device, out var idev);
        if (r < 0)
        {
            return r;
        }
        r = Device.OpenDeviceLocked();
        if (r < 0)
        {
            iommufd.Context.Unbind(idev!);
            return r;
        }
        iommufd.Get(); // the binding holds the context (iommufd_ctx_get)
        _iommufd = iommufd;
        _bound = idev;
        registration.Binding = idev;
        Device.FirstOpenLocked();
        Device.OpenCount++;
        ((vfio_device_bind_iommufd*)argument)->out_devid = idev!.Id;
        return 0;
    }

    /// <summary>vfio_df_ioctl_attach_pt; the lock is held.</summary>
    private int Attach(IommufdDeviceObject idev, vfio_device_attach_iommufd_pt* argument)
    {
        const int MinSize = 12; // offsetofend(struct vfio_device_attach_iommufd_pt, pt_id)
        if (argument->argsz < MinSize)
        {
            return -Errno.EINVAL;
        }
        if ((argument->flags & ~VfioUapi.VFIO_DEVICE_ATTACH_PASID) != 0)
        {
            return -Errno.EINVAL;
        }
        if ((argument->flags & VfioUapi.VFIO_DEVICE_ATTACH_PASID) != 0)
        {
            return -Errno.EOPNOTSUPP; // vfio-pci's pasid_attach_ioas needs a PASID-capable device; none is simulated
        }
        uint ptId = argument->pt_id;
        int r = idev.Context.Attach(idev, ref ptId);
        if (r == 0)
        {
            argument->pt_id = ptId;
        }
        return r;
    }

    /// <summary>vfio_df_ioctl_detach_pt; the lock is held.</summary>
    private static int Detach(IommufdDeviceObject idev, vfio_device_detach_iommufd_pt* argument)
    {
        const int MinSize = 8; // offsetofend(struct vfio_device_detach_iommufd_pt, flags)
        if (argument->argsz < MinSize || (argument->flags & ~VfioUapi.VFIO_DEVICE_DETACH_PASID) != 0)
        {
            return -Errno.EINVAL;
        }
        if ((argument->flags & VfioUapi.VFIO_DEVICE_DETACH_PASID) != 0)
        {
            return -Errno.EOPNOTSUPP;
        }
        idev.Context.Detach(idev);
        return 0;
    }

    /// <summary>vfio_device_fops_release: an unbound file only lets go of the registration.</summary>
    protected override void Release()
    {
        registration.CdevFiles--;
        if (_bound is not null)
        {
            base.Release();
        }
        Kernel.Wake();
    }

    /// <summary>vfio_df_unbind_iommufd after the device's close: detach, unbind, let go of the context.</summary>
    protected override void LastClose()
    {
        Device.LastCloseLocked();
        _iommufd!.Context.Unbind(_bound!);
        registration.Binding = null;
        _bound = null;
        _iommufd.Put();
        _iommufd = null;
        Kernel.Wake();
    }
}

public sealed partial class SimulatedKernel
{
    private const string VfioDevClass = "class/vfio-dev";
    private readonly Dictionary<SimulatedDevice, VfioDeviceRegistration> _vfioDevices = [];

    /// <summary>
    /// Whether the kernel has the VFIO device cdev (CONFIG_VFIO_DEVICE_CDEV, Linux 6.6 and later, which
    /// needs IOMMUFD): a device bound to vfio-pci or vfio-platform gets <c>/dev/vfio/devices/vfioN</c>.
    /// True by default; false models a kernel without it (6.1, or any Debian kernel). The sysfs node
    /// <c>vfio-dev/vfioN</c> exists either way (Linux 6.1 has it too), so it alone does not mean the cdev exists.
    /// </summary>
    public bool DeviceCdevEnabled { get; set; } = true;

    /// <summary>The device's iommufd binding (made through its cdev), or null; the lock is held.</summary>
    internal IommufdDeviceObject? IommufdBindingLocked(SimulatedDevice device) => _vfioDevices.GetValueOrDefault(device)?.Binding;

    /// <summary>Whether a device of the group is bound through its cdev (vfio_group's cdev_device_open_cnt); the lock is held.</summary>
    internal bool GroupHasBoundCdevLocked(IommuGroupState group) => group.Devices.Any(d => IommufdBindingLocked(d) is not null);

    /// <summary>The cdev files open on the device (each holds its registration, as an unbind must wait for); the lock is held.</summary>
    internal int CdevFilesLocked(SimulatedDevice device) => _vfioDevices.GetValueOrDefault(device)?.CdevFiles ?? 0;

    /// <summary>
    /// vfio_register_group_dev's device_add: the lowest free index, <c>vfio-dev/vfioN</c> under the device
    /// and its <c>class/vfio-dev</c> link. Physical devices only: mdevs get neither here. The lock is held.
    /// </summary>
    internal void RegisterVfioDeviceLocked(SimulatedDevice device)
    {
        if (device is SimulatedMdevDevice || _vfioDevices.ContainsKey(device))
        {
            return;
        }
        int index = 0;
        while (_vfioDevices.Values.Any(r => r.Index == index))
        {
            index++;
        }
        var registration = new VfioDeviceRegistration(index);
        _vfioDevices.Add(device, registration);
        string relative = device.SysfsRelative + "/vfio-dev/" + registration.Name;
        var dir = Sysfs.Directory(relative);
        dir.Link("device", device.SysfsRelative);
        dir.Link("subsystem", VfioDevClass);
        if (CdevNamesLocked().Contains(registration.Name))
        {
            // device_add shows "dev" only for a device with a devt, which vfio gives it with the cdev.
            dir.Attribute("dev", () => "511:" + Decimal(registration.Index) + "\n");
        }
        Sysfs.Directory(VfioDevClass).Link(registration.Name, relative);
    }

    /// <summary>vfio_unregister_group_dev's device_del; the lock is held.</summary>
    internal void UnregisterVfioDeviceLocked(SimulatedDevice device)
    {
        if (!_vfioDevices.Remove(device, out var registration))
        {
            return;
        }
        Sysfs.Remove(device.SysfsRelative + "/vfio-dev");
        Sysfs.Remove(VfioDevClass + "/" + registration.Name);
    }

    /// <summary>
    /// VFIO_DEVICE_BIND_IOMMUFD on a device file from VFIO_GROUP_GET_DEVICE_FD: only cdev files bind
    /// (EINVAL, after the argument's own checks); a kernel without the cdev does not know the ioctl. The lock is held.
    /// </summary>
    internal unsafe int BindGroupDeviceFileLocked(byte* argument)
    {
        if (!IommufdEnabled || !DeviceCdevEnabled)
        {
            return -Errno.ENOTTY;
        }
        if (argument == null)
        {
            return -Errno.EFAULT;
        }
        uint argsz = *(uint*)argument;
        for (long i = sizeof(vfio_device_bind_iommufd); i < argsz; i++)
        {
            if (argument[i] != 0)
            {
                return argsz < 16 ? -Errno.EINVAL : -Errno.E2BIG;
            }
        }
        return -Errno.EINVAL;
    }

    /// <summary>The names under <c>/dev/vfio/devices</c>: registered devices with an IOMMU, when the kernel has the cdev.</summary>
    private IEnumerable<string> CdevNamesLocked() =>
        IommufdEnabled && DeviceCdevEnabled
            ? _vfioDevices.Where(p => p.Key.GroupKind != SimulatedGroupKind.NoIommu).Select(p => p.Value.Name) // cdev does not support no-IOMMU
            : [];

    /// <summary>
    /// Opens <c>/dev/iommu</c> or <c>/dev/vfio/devices/vfioN</c>; null when the path is neither, so the
    /// caller goes on. The lock is held.
    /// </summary>
    private int? OpenIommufdNodeLocked(string path, out KernelFile? file)
    {
        file = null;
        if (path == DevRoot + "/iommu")
        {
            if (!IommufdEnabled)
            {
                return -Errno.ENOENT;
            }
            file = OpenIommufdLocked(path);
            return 0;
        }
        const string Devices = "/vfio/devices/";
        if (!path.StartsWith(DevRoot + Devices, StringComparison.Ordinal))
        {
            return null;
        }
        string name = path[(DevRoot.Length + Devices.Length)..];
        if (!CdevNamesLocked().Contains(name))
        {
            return -Errno.ENOENT;
        }
        // vfio_device_fops_cdev_open: holds the registration; nothing is opened until bind.
        var (device, registration) = _vfioDevices.First(p => p.Value.Name == name);
        registration.CdevFiles++;
        file = new DeviceCdevFile(this, path, device, registration);
        return 0;
    }

    /// <summary>The names of <c>/dev/vfio/devices</c> when <paramref name="path"/> is that folder, else null; the lock is held.</summary>
    private string[]? ListCdevFolderLocked(string path) =>
        path == DevRoot + "/vfio/devices" && CdevNamesLocked().Any() ? [.. CdevNamesLocked().Order(StringComparer.Ordinal)] : null;
}
