using System.Globalization;
using System.Runtime.InteropServices;
using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio;

/// <summary>
/// The iommufd backend (the kernel's drivers/vfio/device_cdev.c and iommufd.c, drivers/iommu/iommufd):
/// the registry's one iommufd (<c>/dev/iommu</c>) with one IO address space its devices share, each
/// device opened through its cdev <c>/dev/vfio/devices/vfioN</c>, bound to the iommufd and attached to
/// the IOAS. The first device in opens the iommufd and allocates the IOAS; the last one out unmaps
/// everything, destroys the IOAS and closes the iommufd.
/// </summary>
/// <remarks>
/// No group file is opened: the kernel claims the group's DMA for the iommufd at bind, refuses a bind
/// while the group is open through the legacy API (EBUSY) and a legacy open while a device of the
/// group is bound (EBUSY), and binds devices of one group only to one iommufd (EPERM otherwise).
/// Locks, in the order they are taken (see VfioRegistry for the whole order): a device set's lock (the
/// caller's), then <see cref="_attachLock"/>, then the IOAS's DMA lock.
/// </remarks>
internal sealed unsafe class IommufdBackend(VfioRegistry registry) : IommuBackend
{
    // Guards _iommufd, _space and _attached: serialises opening the iommufd and allocating the IOAS,
    // binding, attaching and detaching devices, and destroying the IOAS. Held across those syscalls;
    // taken under a device set's lock, before the IOAS's DMA lock.
    private readonly Lock _attachLock = new();
    private IommufdAddressSpace? _space;
    private int _attached;

    public override VfioBackend Kind => VfioBackend.Iommufd;

    /// <summary>The IOAS, while a device is attached to it.</summary>
    public IommufdAddressSpace? AddressSpace => Volatile.Read(ref _space);

    public override DeviceAttachment Attach(VfioDevice device, string? cdevPath)
    {
        string path = cdevPath ?? throw new ArgumentNullException(nameof(cdevPath), "The iommufd backend opens a device through its cdev.");
        var target = device.ErrorTarget;
        lock (_attachLock)
        {
            var space = _space ?? OpenIoasLocked(target);
            SafeFd? fd = null;
            try
            {
                int rc = registry.Kernel.Open(path, Flags.O_RDWR, out fd);
                if (rc < 0)
                {
                    fd = null;
                    string? hint = -rc switch
                    {
                        Errno.ENOENT or Errno.ENODEV => $"{path} is gone: {device.Name} was unbound from its vfio driver meanwhile",
                        Errno.EACCES or Errno.EPERM => $"Give this user access to {path} (and to {registry.Kernel.Dev("iommu")}): its owner, or an udev rule for the vfio-dev class",
                        _ => null,
                    };
                    VfioErrors.Throw(-rc, "open " + path, target, hint);
                }
                uint deviceId = Bind(device, fd!, path, space);
                uint pageTable = AttachToIoas(device, fd!, space);
                space.AddDevice(device);
                space.RefreshRanges();
                _attached++;
                Log.CdevAttached(registry.Logger, device.Name, path, deviceId, space.IoasId, pageTable);
                return new DeviceAttachment(this, device, fd!, space, Group: null) { IommufdDeviceId = deviceId, CdevPath = path };
            }
            catch
            {
                space.RemoveDevice(device);
                fd?.Dispose(); // closing the cdev detaches and unbinds
                if (_attached == 0)
                {
                    CloseIoasLocked(space);
                }
                throw;
            }
        }
    }

    public override void Detach(DeviceAttachment attachment)
    {
        var space = (IommufdAddressSpace)attachment.AddressSpace;
        lock (_attachLock)
        {
            // Detach first, as the kernel's own release does: the device's DMA is blocked from here.
            var detach = new vfio_device_detach_iommufd_pt { argsz = DetachSize };
            int rc = registry.Kernel.Ioctl(attachment.DeviceFd, VfioUapi.VFIO_DEVICE_DETACH_IOMMUFD_PT, &detach);
            if (rc < 0)
            {
                Log.CdevTeardownFailed(registry.Logger, attachment.CdevPath ?? "?", VfioErrors.Create(-rc, "VFIO_DEVICE_DETACH_IOMMUFD_PT"));
            }
            attachment.DeviceFd.Dispose();
            space.RemoveDevice(attachment.Device);
            _attached--;
            Log.CdevDetached(registry.Logger, attachment.CdevPath ?? "?", space.IoasId);
            if (_attached == 0)
            {
                CloseIoasLocked(space);
                return;
            }
            try
            {
                space.RefreshRanges();
            }
            catch (VfioException e)
            {
                Log.CdevTeardownFailed(registry.Logger, attachment.CdevPath ?? "?", e);
            }
        }
    }

    /// <summary>IOMMU_GET_HW_INFO for a device attached here.</summary>
    public IommuHardwareInfo QueryHardwareInfo(VfioDevice device, DeviceAttachment attachment)
    {
        var space = (IommufdAddressSpace)attachment.AddressSpace;
        // Intel VT-d's data is 24 bytes; room for larger IOMMUs' (the kernel says how much it had).
        byte[] data = new byte[256];
        var info = new iommu_hw_info { size = (uint)sizeof(iommu_hw_info), dev_id = attachment.IommufdDeviceId, data_len = (uint)data.Length };
        int rc;
        fixed (byte* p = data)
        {
            info.data_uptr = (ulong)p;
            rc = registry.Kernel.Ioctl(space.Iommufd, IommufdUapi.IOMMU_GET_HW_INFO, &info);
        }
        VfioErrors.Check(rc, string.Create(CultureInfo.InvariantCulture, $"IOMMU_GET_HW_INFO (iommufd device {attachment.IommufdDeviceId})"), device.ErrorTarget);
        int length = (int)Math.Min(info.data_len, (uint)data.Length);
        return new IommuHardwareInfo((IommuHardwareType)info.out_data_type, info.out_capabilities, info.out_max_pasid_log2, data.AsMemory(0, length));
    }

    // The sizes of Linux 6.6's structs (before the VF token and PASID fields): every later kernel takes them.
    private const uint BindSize = 16; // offsetofend(struct vfio_device_bind_iommufd, out_devid)
    private const uint AttachSize = 12; // offsetofend(struct vfio_device_attach_iommufd_pt, pt_id)
    private const uint DetachSize = 8; // offsetofend(struct vfio_device_detach_iommufd_pt, flags)

    // Opens /dev/iommu, reads where it charges pinned memory and allocates the IOAS; nothing stays open
    // when it throws. Errors name the device whose open made the IOAS.
    private IommufdAddressSpace OpenIoasLocked(ErrorTarget target)
    {
        LockAssert.Held(_attachLock);
        var kernel = registry.Kernel;
        string path = kernel.Dev("iommu");
        int rc = kernel.Open(path, Flags.O_RDWR, out var fd);
        if (rc < 0)
        {
            string? hint = -rc switch
            {
                Errno.ENOENT => $"No {path}: the kernel was built without CONFIG_IOMMUFD (Linux 6.2 and later; no Debian kernel enables it) or the iommufd module is not loaded. Use the legacy backend (VfioRegistryOptions.Backend = VfioBackend.Legacy)",
                Errno.EACCES or Errno.EPERM => $"Give this user access to {path} (its owner, or an udev rule), or run as root",
                _ => null,
            };
            VfioErrors.Throw(-rc, "open " + path, target, hint);
        }
        try
        {
            var accounting = ReadAccounting(fd, target);
            var alloc = new iommu_ioas_alloc { size = (uint)sizeof(iommu_ioas_alloc) };
            VfioErrors.Check(kernel.Ioctl(fd, IommufdUapi.IOMMU_IOAS_ALLOC, &alloc), "IOMMU_IOAS_ALLOC", target);
            var space = new IommufdAddressSpace(registry, fd, alloc.out_ioas_id, accounting);
            Volatile.Write(ref _space, space);
            Log.IoasAllocated(registry.Logger, space.IoasId, accounting);
            return space;
        }
        catch
        {
            fd.Dispose();
            throw;
        }
    }

    // IOMMU_OPTION_RLIMIT_MODE, global (object 0): where pinned pages are charged (the locked-memory
    // error says it). Every kernel with iommufd answers it.
    private LockedMemoryAccounting ReadAccounting(SafeFd iommufd, ErrorTarget target)
    {
        var option = new iommu_option
        {
            size = (uint)sizeof(iommu_option),
            option_id = IommufdUapi.IOMMU_OPTION_RLIMIT_MODE,
            op = IommufdUapi.IOMMU_OPTION_OP_GET,
        };
        VfioErrors.Check(registry.Kernel.Ioctl(iommufd, IommufdUapi.IOMMU_OPTION, &option), "IOMMU_OPTION (IOMMU_OPTION_RLIMIT_MODE, get)", target);
        return option.val64 == 1 ? LockedMemoryAccounting.Process : LockedMemoryAccounting.User;
    }

    // The last device left: unmap what the books hold, then everything the kernel holds, destroy the
    // IOAS and close the iommufd. Failures are logged: closing the iommufd drops it all anyway.
    private void CloseIoasLocked(IommufdAddressSpace space)
    {
        LockAssert.Held(_attachLock);
        space.UnmapAll();
        int rc = space.UnmapEverything();
        if (rc < 0)
        {
            Log.IoasTeardownFailed(registry.Logger, space.IoasId, VfioErrors.Create(-rc, "IOMMU_IOAS_UNMAP (all)"));
        }
        var destroy = new iommu_destroy { size = (uint)sizeof(iommu_destroy), id = space.IoasId };
        rc = registry.Kernel.Ioctl(space.Iommufd, IommufdUapi.IOMMU_DESTROY, &destroy);
        if (rc < 0)
        {
            Log.IoasTeardownFailed(registry.Logger, space.IoasId, VfioErrors.Create(-rc, "IOMMU_DESTROY"));
        }
        space.Iommufd.Dispose();
        Volatile.Write(ref _space, null);
        Log.IoasDestroyed(registry.Logger, space.IoasId);
    }

    // VFIO_DEVICE_BIND_IOMMUFD: opens the device (its driver's open_device runs here) and returns its id.
    private uint Bind(VfioDevice device, SafeFd fd, string path, IommufdAddressSpace space)
    {
        var bind = new vfio_device_bind_iommufd { argsz = BindSize, iommufd = space.Iommufd.Value };
        int rc = registry.Kernel.Ioctl(fd, VfioUapi.VFIO_DEVICE_BIND_IOMMUFD, &bind);
        if (rc >= 0)
        {
            return bind.out_devid;
        }
        int errno = -rc;
        string group = device.GroupId.ToString(CultureInfo.InvariantCulture);
        switch (errno)
        {
            case Errno.EBUSY:
                throw VfioErrors.Create(errno, "VFIO_DEVICE_BIND_IOMMUFD", device.ErrorTarget,
                    $"Group {group} of {device.Name} is open through the legacy group API ({IommuGroup.NodePathFor(registry.Kernel, device.GroupId, device.GroupKind)}), " +
                    "by another VfioRegistry in this process or by another process; the kernel lets a group be used through its group file or through its devices' cdevs, not both. " +
                    "Close it there, or open this device through the legacy backend as well (VfioRegistryOptions.Backend = VfioBackend.Legacy)");
            case Errno.EPERM when IommuGroup.BlockingDevices(registry, device.GroupId) is { Count: > 0 } blocking:
                // iommu_device_claim_dma_owner: a device of the group is bound to a kernel driver.
                throw IommuGroup.NotViable(device.GroupId, blocking);
            case Errno.EPERM:
                throw VfioErrors.Create(errno, "VFIO_DEVICE_BIND_IOMMUFD", device.ErrorTarget,
                    $"The kernel refuses to bind {device.Name} to this registry's iommufd: another device of group {group} is bound to another iommufd " +
                    "(another VfioRegistry in this process, or another process), or the platform does not isolate MSI (no interrupt remapping: enable it " +
                    "in the firmware and on the kernel command line, or, knowing the risk, load iommufd with allow_unsafe_interrupts=1)");
            case Errno.EINVAL:
                throw VfioErrors.Create(errno, "VFIO_DEVICE_BIND_IOMMUFD", device.ErrorTarget,
                    $"{device.Name} is already open through another file of {path} (the kernel opens a device once, and another VfioRegistry in this process or another process holds it), " +
                    "or its driver refused to open it (see the kernel log)");
            default:
                throw VfioErrors.Create(errno, "VFIO_DEVICE_BIND_IOMMUFD", device.ErrorTarget);
        }
    }

    // VFIO_DEVICE_ATTACH_IOMMUFD_PT to the IOAS: the kernel finds or makes the page table; returns its id.
    private uint AttachToIoas(VfioDevice device, SafeFd fd, IommufdAddressSpace space)
    {
        var attach = new vfio_device_attach_iommufd_pt { argsz = AttachSize, pt_id = space.IoasId };
        int rc = registry.Kernel.Ioctl(fd, VfioUapi.VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach);
        if (rc >= 0)
        {
            return attach.pt_id;
        }
        int errno = -rc;
        string operation = string.Create(CultureInfo.InvariantCulture, $"VFIO_DEVICE_ATTACH_IOMMUFD_PT (IOAS {space.IoasId})");
        string? hint = errno switch
        {
            Errno.EADDRINUSE => $"An IOVA range {device.Name}'s IOMMU reserves (its aperture's end, the MSI window) is already mapped in the IOAS by a DMA buffer of another device of this registry; open this device before mapping such buffers, or map them elsewhere",
            Errno.EINVAL => $"{device.Name} cannot share the IOAS's page table: another device of group {device.GroupId.ToString(CultureInfo.InvariantCulture)} is attached elsewhere, or its IOMMU is incompatible with the other devices'",
            // Pinning is lazy: the first page table of an IOAS pins what is mapped in it.
            Errno.ENOMEM => "Attaching pinned the DMA buffers already mapped in the IOAS, beyond the locked-memory limit (RLIMIT_MEMLOCK), which " +
                IommufdAddressSpace.ChargedTo(space.LockedMemoryAccounting) + ": raise it with ulimit -l, or run with CAP_IPC_LOCK",
            Errno.EFAULT => "Attaching pinned the DMA buffers already mapped in the IOAS, and one of them is no longer mapped memory",
            _ => null,
        };
        throw VfioErrors.Create(errno, operation, device.ErrorTarget, hint);
    }
}

/// <summary>
/// A device's VFIO cdev: <c>/dev/vfio/devices/vfioN</c>, where <c>vfioN</c> is the entry of the
/// device's sysfs folder <c>vfio-dev/</c>. The sysfs entry alone proves nothing (Linux 6.1 has it
/// without a cdev), so the node itself must exist.
/// </summary>
internal static class DeviceCdev
{
    /// <summary>The cdev's path, or null with why there is none.</summary>
    public static (string? Path, string Why) Find(VfioRegistry registry, VfioDevice device)
    {
        if (device.GroupKind == IommuGroupKind.NoIommu)
        {
            // 7.3 can give no-IOMMU devices a cdev (noiommu-vfioN, CONFIG_IOMMUFD_NOIOMMU), whose DMA takes
            // physical addresses (IOMMU_IOAS_NOIOMMU_GET_PA); the library maps IOVAs, so they stay legacy.
            return (null, "it is in a no-IOMMU group, which the library opens through the legacy no-IOMMU container only (the VFIO cdev has no no-IOMMU support before Linux 7.3)");
        }
        // Names are vfioN; a no-IOMMU device's (7.3) is noiommu-vfioN.
        string? name = registry.Sysfs.List(device.SysfsDirectory + "/vfio-dev", device.ErrorTarget).FirstOrDefault(n => n.StartsWith("vfio", StringComparison.Ordinal));
        if (name is null)
        {
            return (null, $"it has no vfio-dev entry in sysfs ({registry.Kernel.Sys(device.SysfsDirectory + "/vfio-dev")}): the kernel is older than 6.1, or the device is not bound to a vfio driver");
        }
        string folder = registry.Kernel.Dev("vfio/devices");
        int rc = registry.Kernel.ListDirectory(folder, out var nodes);
        if (rc < 0 && rc != -Errno.ENOENT)
        {
            VfioErrors.Throw(-rc, "list " + folder, device.ErrorTarget);
        }
        if (rc < 0 || !nodes.Contains(name))
        {
            return (null, $"its sysfs names {name}, but there is no {folder}/{name}: the kernel has no VFIO device cdev (CONFIG_VFIO_DEVICE_CDEV, Linux 6.6 and later, which needs CONFIG_IOMMUFD)");
        }
        return (folder + "/" + name, string.Empty);
    }

    public static VfioNotSupportedException Missing(VfioDevice device, string why) => new(
        $"Cannot open {device.Name} through the iommufd backend: {why}. Use the legacy backend (VfioRegistryOptions.Backend = VfioBackend.Legacy, or null to choose per device).");
}
