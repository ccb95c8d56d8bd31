using System.Runtime.InteropServices;
using Vfio.Interop;

namespace Vfio.Testing;

/// <summary>
/// An object of an iommufd context (struct iommufd_object): its id in the context's table, and its
/// users, which start at 1 for the table itself. IOMMU_DESTROY removes an object only while the table
/// is its sole user (EBUSY otherwise).
/// </summary>
internal abstract class IommufdObject(IommufdContext context)
{
    public IommufdContext Context { get; } = context;

    public uint Id { get; set; }

    public int Users { get; set; } = 1;

    public abstract string Kind { get; }

    public abstract string Describe();

    /// <summary>The object's destroy op, run once it is out of the table.</summary>
    public virtual void Destroy()
    {
    }
}

/// <summary>A device bound to the context (struct iommufd_device); the VFIO device file holds a user on it.</summary>
internal sealed class IommufdDeviceObject(IommufdContext context, SimulatedDevice device) : IommufdObject(context)
{
    public SimulatedDevice Device { get; } = device;

    public override string Kind => "device";

    /// <summary>The page table the device is attached to, or null (DMA blocked).</summary>
    public HwptObject? Attached { get; set; }

    public override string Describe() => $"device {Id} ({Device.Name}){(Attached is { } h ? $", attached to page table {h.Id}" : string.Empty)}";
}

/// <summary>
/// A hardware page table (struct iommufd_hwpt_paging): an IOMMU domain filled from its IOAS. An attach
/// to an IOAS creates one automatically and destroys it after the last device leaves; IOMMU_HWPT_ALLOC
/// creates one that lives until IOMMU_DESTROY.
/// </summary>
internal sealed class HwptObject(IommufdContext context, IoasObject ioas, bool automatic) : IommufdObject(context)
{
    public IoasObject Ioas { get; } = ioas;

    public bool Automatic { get; } = automatic;

    public override string Kind => "page table";

    public override string Describe() => $"{(Automatic ? "automatic" : "allocated")} page table {Id} of IOAS {Ioas.Id}";

    /// <summary>iommufd_hwpt_paging_destroy: the domain leaves its IOAS, which loses a user.</summary>
    public override void Destroy()
    {
        Ioas.RemoveDomain(this);
        Ioas.Users--;
    }
}

/// <summary>
/// An iommufd context (struct iommufd_ctx), one per open of <c>/dev/iommu</c>: its object table, its
/// RLIMIT_MEMLOCK accounting mode, the VFIO compatibility IOAS, and per IOMMU group the page table
/// the group's devices are attached to. The ioctls follow Linux 7.x's drivers/iommu/iommufd (main.c,
/// ioas.c, io_pagetable.c, device.c, hw_pagetable.c). All members run under the kernel lock; the
/// entry points from the device cdev and the file assert it.
/// </summary>
internal sealed unsafe class IommufdContext(SimulatedKernel kernel)
{
    // Items of 7.x's header the library does not use, so not mirrored in the uAPI.
    private const uint IommuHwInfoFlagInputType = 1u << 0; // IOMMU_HW_INFO_FLAG_INPUT_TYPE
    private const uint HwptAllocFaultIdValid = 1u << 2; // IOMMU_HWPT_FAULT_ID_VALID (6.11)
    private const uint HwptAllocPasid = 1u << 3; // IOMMU_HWPT_ALLOC_PASID

    /// <summary>IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED: reported since after 6.12 (in 7.2's header) for a device that cannot use ATS, as no simulated device can.</summary>
    private const ulong IommuHwCapPciAtsNotSupported = 1UL << 3;

    private readonly SortedDictionary<uint, IommufdObject> _objects = [];
    private readonly Dictionary<IommuGroupState, GroupAttach> _groups = [];

    /// <summary>A context whose pinned pages are charged as <paramref name="accounting"/> says from the start (the compatibility container's).</summary>
    public IommufdContext(SimulatedKernel kernel, PinAccounting accounting)
        : this(kernel)
    {
        Accounting = accounting;
    }

    public SimulatedKernel Kernel { get; } = kernel;

    public PinAccounting Accounting { get; private set; } = PinAccounting.User;

    public IoasObject? VfioIoas { get; private set; }

    public IEnumerable<IommufdObject> Objects => _objects.Values;

    private sealed class GroupAttach(HwptObject hwpt)
    {
        public HwptObject Hwpt { get; set; } = hwpt;

        public List<IommufdDeviceObject> Devices { get; } = [];
    }

    // ---- The object table ----------------------------------------------------------------------

    /// <summary>Installs an object at the lowest free id from 1 (xa_alloc on an ALLOC1 xarray).</summary>
    private void Install(IommufdObject obj)
    {
        uint id = 1;
        while (_objects.ContainsKey(id))
        {
            id++;
        }
        obj.Id = id;
        _objects.Add(id, obj);
    }

    private T? Get<T>(uint id)
        where T : IommufdObject =>
        _objects.GetValueOrDefault(id) as T;

    /// <summary>iommufd_object_remove: only when the table holds the last user.</summary>
    private int Remove(IommufdObject obj)
    {
        if (obj.Users != 1)
        {
            return -Errno.EBUSY;
        }
        _objects.Remove(obj.Id);
        if (ReferenceEquals(VfioIoas, obj))
        {
            VfioIoas = null;
        }
        obj.Destroy();
        return 0;
    }

    /// <summary>iommufd_fops_release: destroys the leaves first, until nothing is left.</summary>
    public void Release()
    {
        Kernel.AssertLocked();
        while (_objects.Count > 0)
        {
            var leaves = _objects.Values.Where(o => o.Users == 1).ToList();
            if (leaves.Count == 0)
            {
                break; // a users count the simulation got wrong; the leak report shows what is left
            }
            foreach (var leaf in leaves)
            {
                _ = Remove(leaf);
            }
        }
    }

    // ---- Devices: bind, attach, detach -------------------------------------------------------

    /// <summary>
    /// The DMA owner of a group from iommufd's side: the context some bound device of the group
    /// belongs to, or null.
    /// </summary>
    public static IommufdContext? GroupOwner(SimulatedKernel kernel, IommuGroupState group)
    {
        kernel.AssertLocked();
        return group.Devices.Select(kernel.IommufdBindingLocked).OfType<IommufdDeviceObject>().FirstOrDefault()?.Context;
    }

    /// <summary>
    /// iommufd_device_bind: EPERM without isolated MSI, EPERM when the group's DMA is owned by another
    /// context or by a kernel driver (iommu_device_claim_dma_owner); the device's id is returned.
    /// </summary>
    public int Bind(SimulatedDevice device, out IommufdDeviceObject? bound)
    {
        Kernel.AssertLocked();
        bound = null;
        if (!Kernel.IsolatedMsi)
        {
            return -Errno.EPERM;
        }
        var group = device.Group;
        if (!group.Viable || group.Container is not null || (GroupOwner(Kernel, group) is { } owner && owner != this))
        {
            return -Errno.EPERM;
        }
        var idev = new IommufdDeviceObject(this, device);
        idev.Users++; // the VFIO device holds it until unbind
        Install(idev);
        bound = idev;
        return 0;
    }

    /// <summary>iommufd_device_unbind: detaches, and removes the device from the table.</summary>
    public void Unbind(IommufdDeviceObject idev)
    {
        Kernel.AssertLocked();
        Detach(idev);
        idev.Users--;
        _ = Remove(idev);
    }

    /// <summary>
    /// VFIO_DEVICE_ATTACH_IOMMUFD_PT for a physical device (vfio_iommufd_physical_attach_ioas): attach,
    /// or replace when attached already. pt_id names an IOAS (an automatic page table is found or made,
    /// its id returned) or a page table.
    /// </summary>
    public int Attach(IommufdDeviceObject idev, ref uint ptId)
    {
        Kernel.AssertLocked();
        bool replace = idev.Attached is not null;
        if (!_objects.TryGetValue(ptId, out var target))
        {
            return -Errno.ENOENT;
        }
        int r;
        switch (target)
        {
            case HwptObject hwpt:
                r = replace ? Replace(idev, hwpt) : AttachTo(idev, hwpt);
                break;
            case IoasObject ioas:
                r = AutoAttach(idev, ioas, replace, ref ptId);
                break;
            default:
                return -Errno.EINVAL;
        }
        if (r == 0 && !replace)
        {
            idev.Users++; // iommufd_device_attach: paired with detach
        }
        return r;
    }

    /// <summary>iommufd_device_auto_get_domain: an automatic page table of the IOAS that takes the device, or a new one.</summary>
    private int AutoAttach(IommufdDeviceObject idev, IoasObject ioas, bool replace, ref uint ptId)
    {
        foreach (var existing in ioas.Domains.Where(d => d.Automatic).ToList())
        {
            int r = replace ? Replace(idev, existing) : AttachTo(idev, existing);
            if (r == -Errno.EINVAL)
            {
                continue; // incompatible with this domain; try the next
            }
            if (r == 0)
            {
                ptId = existing.Id;
            }
            return r;
        }
        // iommufd_hwpt_paging_alloc: attach first (immediate_attach), then add the domain to the IOAS.
        var hwpt = new HwptObject(this, ioas, automatic: true);
        Install(hwpt);
        ioas.Users++;
        int rc = replace ? 0 : AttachTo(idev, hwpt);
        if (rc == 0)
        {
            rc = ioas.AddDomain(hwpt);
            if (rc < 0 && !replace)
            {
                DetachFromGroup(idev);
            }
        }
        if (rc == 0 && replace)
        {
            rc = Replace(idev, hwpt);
        }
        if (rc < 0)
        {
            _objects.Remove(hwpt.Id);
            hwpt.Destroy(); // abort: the domain (if added) leaves, the IOAS loses the user
            return rc;
        }
        ptId = hwpt.Id;
        return 0;
    }

    /// <summary>
    /// iommufd_hw_pagetable_attach: a group attaches once, and every device of it to the same page table
    /// (EINVAL otherwise); the device's reserved regions go into the IOAS (EADDRINUSE where mapped).
    /// </summary>
    private int AttachTo(IommufdDeviceObject idev, HwptObject hwpt)
    {
        var group = idev.Device.Group;
        _groups.TryGetValue(group, out var attach);
        if (attach is not null && attach.Hwpt != hwpt)
        {
            return -Errno.EINVAL;
        }
        int r = hwpt.Ioas.ReserveDeviceRegions(idev);
        if (r < 0)
        {
            return r;
        }
        if (attach is null)
        {
            attach = new GroupAttach(hwpt);
            _groups.Add(group, attach);
        }
        attach.Devices.Add(idev);
        hwpt.Users++;
        idev.Attached = hwpt;
        return 0;
    }

    /// <summary>iommufd_device_do_replace: the whole group moves to the new page table; the same one is a no-op.</summary>
    private int Replace(IommufdDeviceObject idev, HwptObject hwpt)
    {
        if (!_groups.TryGetValue(idev.Device.Group, out var attach) || !attach.Devices.Contains(idev))
        {
            return -Errno.EINVAL;
        }
        var old = attach.Hwpt;
        if (old == hwpt)
        {
            return 0;
        }
        if (old.Ioas != hwpt.Ioas)
        {
            foreach (var device in attach.Devices)
            {
                int r = hwpt.Ioas.ReserveDeviceRegions(device);
                if (r < 0)
                {
                    attach.Devices.ForEach(hwpt.Ioas.RemoveReserved);
                    return r;
                }
            }
            attach.Devices.ForEach(old.Ioas.RemoveReserved);
        }
        attach.Hwpt = hwpt;
        foreach (var device in attach.Devices)
        {
            device.Attached = hwpt;
        }
        hwpt.Users += attach.Devices.Count;
        old.Users -= attach.Devices.Count - 1;
        PutHwpt(old);
        return 0;
    }

    /// <summary>VFIO_DEVICE_DETACH_IOMMUFD_PT (iommufd_device_detach): nothing to do when not attached.</summary>
    public void Detach(IommufdDeviceObject idev)
    {
        Kernel.AssertLocked();
        if (idev.Attached is not { } hwpt)
        {
            return;
        }
        DetachFromGroup(idev);
        PutHwpt(hwpt);
        idev.Users--;
    }

    /// <summary>iommufd_hw_pagetable_detach without the put.</summary>
    private void DetachFromGroup(IommufdDeviceObject idev)
    {
        var group = idev.Device.Group;
        var attach = _groups[group];
        attach.Devices.Remove(idev);
        if (attach.Devices.Count == 0)
        {
            _groups.Remove(group);
        }
        attach.Hwpt.Ioas.RemoveReserved(idev);
        idev.Attached = null;
    }

    /// <summary>iommufd_hw_pagetable_put: an automatic page table goes with its last user.</summary>
    private void PutHwpt(HwptObject hwpt)
    {
        hwpt.Users--;
        if (hwpt.Automatic && hwpt.Users == 1)
        {
            _ = Remove(hwpt);
        }
    }

    /// <summary>vfio_iommufd_get_dev_id: the device's id here, -ENOENT when owned through its group, -ENODEV otherwise.</summary>
    public int DeviceId(SimulatedDevice device)
    {
        Kernel.AssertLocked();
        if (Kernel.IommufdBindingLocked(device) is { } idev && idev.Context == this)
        {
            return (int)idev.Id;
        }
        return device.Group.Devices.Any(d => Kernel.IommufdBindingLocked(d)?.Context == this) ? -Errno.ENOENT : -Errno.ENODEV;
    }

    // ---- ioctl ---------------------------------------------------------------------------------

    /// <summary>The command table (iommufd_ioctl_ops): the struct's size and the size up to its last required field.</summary>
    private static readonly (nuint Request, int Size, int MinSize)[] Commands =
    [
        (IommufdUapi.IOMMU_DESTROY, sizeof(iommu_destroy), 8),
        (IommufdUapi.IOMMU_IOAS_ALLOC, sizeof(iommu_ioas_alloc), 12),
        (IommufdUapi.IOMMU_IOAS_ALLOW_IOVAS, sizeof(iommu_ioas_allow_iovas), 24),
        (IommufdUapi.IOMMU_IOAS_COPY, sizeof(iommu_ioas_copy), 40),
        (IommufdUapi.IOMMU_IOAS_IOVA_RANGES, sizeof(iommu_ioas_iova_ranges), 32),
        (IommufdUapi.IOMMU_IOAS_MAP, sizeof(iommu_ioas_map), 40),
        (IommufdUapi.IOMMU_IOAS_UNMAP, sizeof(iommu_ioas_unmap), 24),
        (IommufdUapi.IOMMU_OPTION, sizeof(iommu_option), 24),
        (IommufdUapi.IOMMU_VFIO_IOAS, sizeof(iommu_vfio_ioas), 12),
        (IommufdUapi.IOMMU_HWPT_ALLOC, sizeof(iommu_hwpt_alloc), 24),
        (IommufdUapi.IOMMU_GET_HW_INFO, sizeof(iommu_hw_info), 28),
        (IommufdUapi.IOMMU_HWPT_SET_DIRTY_TRACKING, sizeof(iommu_hwpt_set_dirty_tracking), 16),
        (IommufdUapi.IOMMU_HWPT_GET_DIRTY_BITMAP, sizeof(iommu_hwpt_get_dirty_bitmap), 48),
    ];

    /// <summary>
    /// iommufd_fops_ioctl: the number must be a command's exactly (ENOTTY otherwise), the user's size at
    /// least the command's minimum (EINVAL), bytes past what the kernel knows zero (E2BIG); the command
    /// runs on a kernel copy, and what it answers is copied back up to the user's size.
    /// </summary>
    public int Ioctl(nuint request, nint argument)
    {
        Kernel.AssertLocked();
        uint nr = (uint)request & 0xff;
        // Numbers outside the table go to the VFIO type1 compatibility ioctls (iommufd_vfio_ioctl), and
        // the table's later commands (invalidation, fault queues, vIOMMU, map-file, ...) are not simulated.
        if (nr < IommufdUapi.IOMMUFD_CMD_BASE || nr - IommufdUapi.IOMMUFD_CMD_BASE >= Commands.Length)
        {
            return -Errno.ENOTTY;
        }
        var (expected, size, minSize) = Commands[nr - IommufdUapi.IOMMUFD_CMD_BASE];
        // Commands and struct sizes by version: HWPT_ALLOC and GET_HW_INFO arrived in 6.6 (24 and 32
        // bytes), dirty tracking and GET_HW_INFO's out_capabilities in 6.7 (HWPT_ALLOC 40 bytes), the
        // fault queue id in 6.11 (HWPT_ALLOC 48 bytes). Before its version a command is ENOTTY.
        if ((nr >= IommufdUapi.IOMMUFD_CMD_HWPT_ALLOC && !Kernel.Since(6, 6)) || (nr >= IommufdUapi.IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING && !Kernel.Since(6, 7)))
        {
            return -Errno.ENOTTY;
        }
        int known = nr switch
        {
            IommufdUapi.IOMMUFD_CMD_GET_HW_INFO when !Kernel.Since(6, 7) => 32,
            IommufdUapi.IOMMUFD_CMD_HWPT_ALLOC when !Kernel.Since(6, 7) => 24,
            IommufdUapi.IOMMUFD_CMD_HWPT_ALLOC when !Kernel.Since(6, 11) => 40,
            _ => size,
        };
        if (argument == 0)
        {
            return -Errno.EFAULT;
        }
        if (expected != request)
        {
            return -Errno.ENOTTY;
        }
        byte* user = (byte*)argument;
        uint userSize = *(uint*)user;
        if (userSize < minSize)
        {
            return -Errno.EINVAL;
        }
        // copy_struct_from_user, up to the size this version knows; the command runs on a zeroed copy of
        // the whole struct, so fields of later versions read as 0.
        for (long i = known; i < userSize; i++)
        {
            if (user[i] != 0)
            {
                return -Errno.E2BIG;
            }
        }
        byte* cmd = stackalloc byte[size];
        new Span<byte>(cmd, size).Clear();
        int copy = (int)Math.Min(userSize, (uint)known);
        new ReadOnlySpan<byte>(user, copy).CopyTo(new Span<byte>(cmd, size));
        bool respond = false;
        int rc = Execute(nr, cmd, ref respond);
        if (respond)
        {
            // iommufd_ucmd_respond
            new ReadOnlySpan<byte>(cmd, copy).CopyTo(new Span<byte>(user, copy));
        }
        else if (rc == 0 && nr == IommufdUapi.IOMMUFD_CMD_OPTION)
        {
            // iommufd_option answers val64 alone.
            ((iommu_option*)user)->val64 = ((iommu_option*)cmd)->val64;
        }
        return rc;
    }

    private int Execute(uint nr, byte* cmd, ref bool respond)
    {
        switch (nr)
        {
            case IommufdUapi.IOMMUFD_CMD_DESTROY:
                return _objects.TryGetValue(((iommu_destroy*)cmd)->id, out var obj) ? Remove(obj) : -Errno.ENOENT;
            case IommufdUapi.IOMMUFD_CMD_IOAS_ALLOC:
            {
                var alloc = (iommu_ioas_alloc*)cmd;
                if (alloc->flags != 0)
                {
                    return -Errno.EOPNOTSUPP;
                }
                var ioas = new IoasObject(this);
                Install(ioas);
                alloc->out_ioas_id = ioas.Id;
                respond = true;
                return 0;
            }
            case IommufdUapi.IOMMUFD_CMD_IOAS_ALLOW_IOVAS:
                return AllowIovas((iommu_ioas_allow_iovas*)cmd);
            case IommufdUapi.IOMMUFD_CMD_IOAS_COPY:
                return Copy((iommu_ioas_copy*)cmd, ref respond);
            case IommufdUapi.IOMMUFD_CMD_IOAS_IOVA_RANGES:
                return IovaRanges((iommu_ioas_iova_ranges*)cmd, ref respond);
            case IommufdUapi.IOMMUFD_CMD_IOAS_MAP:
                return Map((iommu_ioas_map*)cmd, ref respond);
            case IommufdUapi.IOMMUFD_CMD_IOAS_UNMAP:
                return Unmap((iommu_ioas_unmap*)cmd, ref respond);
            case IommufdUapi.IOMMUFD_CMD_OPTION:
                return Option((iommu_option*)cmd);
            case IommufdUapi.IOMMUFD_CMD_VFIO_IOAS:
                return VfioCompatIoas((iommu_vfio_ioas*)cmd, ref respond);
            case IommufdUapi.IOMMUFD_CMD_HWPT_ALLOC:
                return HwptAlloc((iommu_hwpt_alloc*)cmd, ref respond);
            case IommufdUapi.IOMMUFD_CMD_GET_HW_INFO:
                return HwInfo((iommu_hw_info*)cmd, ref respond);
            case IommufdUapi.IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING:
            {
                var set = (iommu_hwpt_set_dirty_tracking*)cmd;
                if ((set->flags & ~IommufdUapi.IOMMU_HWPT_DIRTY_TRACKING_ENABLE) != 0)
                {
                    return -Errno.EOPNOTSUPP;
                }
                // iopt_set_dirty_tracking: the simulated IOMMU, like QEMU's intel-iommu, has no dirty_ops.
                return Get<HwptObject>(set->hwpt_id) is null ? -Errno.ENOENT : -Errno.EOPNOTSUPP;
            }
            case IommufdUapi.IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP:
                return DirtyBitmap((iommu_hwpt_get_dirty_bitmap*)cmd);
            default:
                return -Errno.ENOTTY;
        }
    }

    /// <summary>iommufd_ioas_allow_iovas.</summary>
    private int AllowIovas(iommu_ioas_allow_iovas* cmd)
    {
        if (cmd->__reserved != 0)
        {
            return -Errno.EOPNOTSUPP;
        }
        if (Get<IoasObject>(cmd->ioas_id) is not { } ioas)
        {
            return -Errno.ENOENT;
        }
        var user = new ReadOnlySpan<iommu_iova_range>((void*)cmd->allowed_iovas, (int)cmd->num_iovas);
        var ranges = new List<(ulong, ulong)>(user.Length);
        foreach (var range in user)
        {
            ranges.Add((range.start, range.last));
        }
        return ioas.SetAllowed(ranges);
    }

    /// <summary>iommufd_ioas_iova_ranges: fills what fits, sets the total, answers, then EMSGSIZE if it did not all fit.</summary>
    private int IovaRanges(iommu_ioas_iova_ranges* cmd, ref bool respond)
    {
        if (cmd->__reserved != 0)
        {
            return -Errno.EOPNOTSUPP;
        }
        if (Get<IoasObject>(cmd->ioas_id) is not { } ioas)
        {
            return -Errno.ENOENT;
        }
        uint max = cmd->num_iovas;
        var ranges = ioas.UsableRanges();
        var output = (iommu_iova_range*)cmd->allowed_iovas;
        for (int i = 0; i < ranges.Count && i < max; i++)
        {
            output[i] = new iommu_iova_range { start = ranges[i].Start, last = ranges[i].Last };
        }
        cmd->num_iovas = (uint)ranges.Count;
        cmd->out_iova_alignment = ioas.IovaAlignment;
        respond = true;
        return ranges.Count > max ? -Errno.EMSGSIZE : 0;
    }

    private const uint MapFlags = IommufdUapi.IOMMU_IOAS_MAP_FIXED_IOVA | IommufdUapi.IOMMU_IOAS_MAP_WRITEABLE | IommufdUapi.IOMMU_IOAS_MAP_READABLE;
    private const uint Access = IommufdUapi.IOMMU_IOAS_MAP_WRITEABLE | IommufdUapi.IOMMU_IOAS_MAP_READABLE;

    /// <summary>
    /// The checks map and copy share, before any IOAS is looked up: unknown flags or reserved bits
    /// EOPNOTSUPP, an address or length of U64_MAX EOVERFLOW, no access EINVAL.
    /// </summary>
    private static int CheckMapFlags(uint flags, bool reserved, bool overflow) =>
        (flags & ~MapFlags) != 0 || reserved ? -Errno.EOPNOTSUPP
        : overflow ? -Errno.EOVERFLOW
        : (flags & Access) == 0 ? -Errno.EINVAL
        : 0;

    /// <summary>iommufd_ioas_map.</summary>
    private int Map(iommu_ioas_map* cmd, ref bool respond)
    {
        int r = CheckMapFlags(cmd->flags, cmd->__reserved != 0, cmd->iova >= ulong.MaxValue || cmd->length >= ulong.MaxValue);
        if (r < 0)
        {
            return r;
        }
        if (Get<IoasObject>(cmd->ioas_id) is not { } ioas)
        {
            return -Errno.ENOENT;
        }
        ulong iova = cmd->iova;
        r = ioas.Map(cmd->user_va, cmd->length, ref iova, cmd->flags);
        if (r < 0)
        {
            return r;
        }
        cmd->iova = iova;
        respond = true;
        return 0;
    }

    /// <summary>iommufd_ioas_copy: the source range must be covered by areas without a gap (ENOENT).</summary>
    private int Copy(iommu_ioas_copy* cmd, ref bool respond)
    {
        int r = CheckMapFlags(cmd->flags, false, cmd->length >= ulong.MaxValue || cmd->src_iova >= ulong.MaxValue || cmd->dst_iova >= ulong.MaxValue);
        if (r < 0)
        {
            return r;
        }
        if (Get<IoasObject>(cmd->src_ioas_id) is not { } source)
        {
            return -Errno.ENOENT;
        }
        r = source.Slices(cmd->src_iova, cmd->length, out var slices);
        if (r < 0)
        {
            return r;
        }
        if (Get<IoasObject>(cmd->dst_ioas_id) is not { } destination)
        {
            return -Errno.ENOENT;
        }
        ulong iova = cmd->dst_iova;
        r = destination.MapSlices(slices, cmd->length, ref iova, cmd->flags);
        if (r < 0)
        {
            return r;
        }
        cmd->dst_iova = iova;
        respond = true;
        return 0;
    }

    /// <summary>iommufd_ioas_unmap: iova 0 with length U64_MAX unmaps all (even nothing); otherwise nothing unmapped is ENOENT.</summary>
    private int Unmap(iommu_ioas_unmap* cmd, ref bool respond)
    {
        if (Get<IoasObject>(cmd->ioas_id) is not { } ioas)
        {
            return -Errno.ENOENT;
        }
        ulong unmapped;
        if (cmd->iova == 0 && cmd->length == ulong.MaxValue)
        {
            unmapped = ioas.UnmapAll();
        }
        else
        {
            if (cmd->iova >= ulong.MaxValue || cmd->length >= ulong.MaxValue)
            {
                return -Errno.EOVERFLOW;
            }
            // iopt_unmap_iova
            if (cmd->length == 0)
            {
                return -Errno.EINVAL;
            }
            ulong last = cmd->iova + cmd->length - 1;
            if (last < cmd->iova)
            {
                return -Errno.EOVERFLOW;
            }
            int r = ioas.Unmap(cmd->iova, last, out unmapped);
            if (r < 0)
            {
                return r;
            }
            if (unmapped == 0)
            {
                return -Errno.ENOENT;
            }
        }
        cmd->length = unmapped;
        respond = true;
        return 0;
    }

    /// <summary>iommufd_option: RLIMIT_MODE (global) and HUGE_PAGES (per IOAS); only val64 is answered.</summary>
    private int Option(iommu_option* cmd)
    {
        if (cmd->__reserved != 0)
        {
            return -Errno.EOPNOTSUPP;
        }
        int r;
        switch (cmd->option_id)
        {
            case IommufdUapi.IOMMU_OPTION_RLIMIT_MODE:
                r = RlimitMode(cmd);
                break;
            case IommufdUapi.IOMMU_OPTION_HUGE_PAGES:
                if (Get<IoasObject>(cmd->object_id) is not { } ioas)
                {
                    return -Errno.ENOENT;
                }
                r = cmd->op switch
                {
                    IommufdUapi.IOMMU_OPTION_OP_GET => Answer(cmd, ioas.LargePagesDisabled ? 0UL : 1UL),
                    IommufdUapi.IOMMU_OPTION_OP_SET => cmd->val64 switch
                    {
                        0 => ioas.SetLargePages(false),
                        1 => ioas.SetLargePages(true),
                        _ => -Errno.EINVAL,
                    },
                    _ => -Errno.EOPNOTSUPP,
                };
                break;
            default:
                return -Errno.EOPNOTSUPP;
        }
        return r;

        static int Answer(iommu_option* option, ulong value)
        {
            option->val64 = value;
            return 0;
        }
    }

    /// <summary>iommufd_option_rlimit_mode: set needs CAP_SYS_RESOURCE and an empty context.</summary>
    private int RlimitMode(iommu_option* cmd)
    {
        if (cmd->object_id != 0)
        {
            return -Errno.EOPNOTSUPP;
        }
        if (cmd->op == IommufdUapi.IOMMU_OPTION_OP_GET)
        {
            cmd->val64 = Accounting == PinAccounting.Mm ? 1UL : 0UL;
            return 0;
        }
        if (cmd->op != IommufdUapi.IOMMU_OPTION_OP_SET)
        {
            return -Errno.EOPNOTSUPP;
        }
        if (!Kernel.HasSysResourceCapability)
        {
            return -Errno.EPERM;
        }
        if (_objects.Count > 0)
        {
            return -Errno.EBUSY;
        }
        switch (cmd->val64)
        {
            case 0:
                Accounting = PinAccounting.User;
                return 0;
            case 1:
                Accounting = PinAccounting.Mm;
                return 0;
            default:
                return -Errno.EINVAL;
        }
    }

    /// <summary>iommufd_vfio_ioas: the IOAS a VFIO compatibility container would use.</summary>
    private int VfioCompatIoas(iommu_vfio_ioas* cmd, ref bool respond)
    {
        if (cmd->__reserved != 0)
        {
            return -Errno.EOPNOTSUPP;
        }
        switch (cmd->op)
        {
            case IommufdUapi.IOMMU_VFIO_IOAS_GET:
                if (VfioIoas is null)
                {
                    return -Errno.ENODEV;
                }
                cmd->ioas_id = VfioIoas.Id;
                respond = true;
                return 0;
            case IommufdUapi.IOMMU_VFIO_IOAS_SET:
                if (Get<IoasObject>(cmd->ioas_id) is not { } ioas)
                {
                    return -Errno.ENOENT;
                }
                VfioIoas = ioas;
                return 0;
            case IommufdUapi.IOMMU_VFIO_IOAS_CLEAR:
                VfioIoas = null;
                return 0;
            default:
                return -Errno.EOPNOTSUPP;
        }
    }

    /// <summary>
    /// iommufd_hwpt_alloc for an IOAS: a page table made now and filled from the IOAS (pinning its
    /// pages), which devices then attach to by its id. The simulated IOMMU, like QEMU's intel-iommu,
    /// offers neither dirty tracking nor nesting (EOPNOTSUPP for those flags and for driver data), and
    /// the context has no fault queues (a fault id is ENOENT).
    /// </summary>
    private int HwptAlloc(iommu_hwpt_alloc* cmd, ref bool respond)
    {
        if (cmd->__reserved != 0)
        {
            return -Errno.EOPNOTSUPP;
        }
        if ((cmd->data_type == IommufdUapi.IOMMU_HWPT_DATA_NONE) != (cmd->data_len == 0))
        {
            return -Errno.EINVAL;
        }
        if (Get<IommufdDeviceObject>(cmd->dev_id) is null)
        {
            return -Errno.ENOENT;
        }
        if (!_objects.TryGetValue(cmd->pt_id, out var pt))
        {
            return -Errno.EINVAL;
        }
        if (pt is HwptObject)
        {
            // iommufd_hwpt_nested_alloc: driver data is required, and a nest parent (which cannot be made here).
            return (cmd->flags & ~(HwptAllocFaultIdValid | HwptAllocPasid)) != 0 || cmd->data_len == 0 ? -Errno.EOPNOTSUPP : -Errno.EINVAL;
        }
        if (pt is not IoasObject ioas)
        {
            return -Errno.EINVAL;
        }
        // iommufd_hwpt_paging_alloc and intel_iommu_domain_alloc_paging_flags
        const uint ValidFlags = IommufdUapi.IOMMU_HWPT_ALLOC_NEST_PARENT | IommufdUapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING | HwptAllocFaultIdValid | HwptAllocPasid;
        if ((cmd->flags & ~ValidFlags) != 0 || (cmd->flags & (IommufdUapi.IOMMU_HWPT_ALLOC_NEST_PARENT | IommufdUapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING)) != 0 || cmd->data_len != 0)
        {
            return -Errno.EOPNOTSUPP;
        }
        var hwpt = new HwptObject(this, ioas, automatic: false);
        Install(hwpt);
        ioas.Users++;
        int r = ioas.AddDomain(hwpt);
        if (r == 0 && (cmd->flags & HwptAllocFaultIdValid) != 0)
        {
            r = -Errno.ENOENT; // iommufd_get_fault: no fault queue objects exist here
            ioas.RemoveDomain(hwpt);
        }
        if (r < 0)
        {
            _objects.Remove(hwpt.Id);
            ioas.Users--;
            return r;
        }
        cmd->out_hwpt_id = hwpt.Id;
        respond = true;
        return 0;
    }

    /// <summary>iommufd_get_hw_info with Intel VT-d's hw_info (intel_iommu_hw_info).</summary>
    private int HwInfo(iommu_hw_info* cmd, ref bool respond)
    {
        if ((cmd->flags & ~IommuHwInfoFlagInputType) != 0)
        {
            return -Errno.EOPNOTSUPP;
        }
        if (cmd->__reserved[0] != 0 || cmd->__reserved[1] != 0 || cmd->__reserved[2] != 0)
        {
            return -Errno.EOPNOTSUPP;
        }
        // The in/out type field: without INPUT_TYPE any input means the default type.
        if ((cmd->flags & IommuHwInfoFlagInputType) == 0)
        {
            cmd->out_data_type = IommufdUapi.IOMMU_HW_INFO_TYPE_NONE;
        }
        if (Get<IommufdDeviceObject>(cmd->dev_id) is not { } idev)
        {
            return -Errno.ENOENT;
        }
        if (cmd->out_data_type is not (IommufdUapi.IOMMU_HW_INFO_TYPE_NONE or IommufdUapi.IOMMU_HW_INFO_TYPE_INTEL_VTD))
        {
            return -Errno.EOPNOTSUPP;
        }
        var vtd = new iommu_hw_info_vtd
        {
            // The erratum bit arrived in 6.8; the Intel driver sets it since.
            flags = Kernel.Since(6, 8) ? IommufdUapi.IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17 : 0,
            cap_reg = Kernel.VtdCapabilityRegister,
            ecap_reg = Kernel.VtdExtendedCapabilityRegister,
        };
        int dataLength = sizeof(iommu_hw_info_vtd);
        if (cmd->data_len > 0)
        {
            var output = new Span<byte>((void*)cmd->data_uptr, (int)cmd->data_len);
            int copy = Math.Min(output.Length, dataLength);
            new ReadOnlySpan<byte>(&vtd, copy).CopyTo(output);
            output[copy..].Clear(); // the rest of a bigger buffer is zeroed
        }
        cmd->data_len = (uint)dataLength;
        cmd->out_data_type = IommufdUapi.IOMMU_HW_INFO_TYPE_INTEL_VTD;
        // 6.6's struct ends before out_capabilities (the respond copies no more than the kernel's size);
        // the ATS bit is reported after 6.12 (absent from 6.12's header, present in 7.2's).
        cmd->out_capabilities = idev.Device is SimulatedPciDevice && Kernel.Since(6, 13) ? IommuHwCapPciAtsNotSupported : 0;
        cmd->out_max_pasid_log2 = 0;
        respond = true;
        return 0;
    }

    /// <summary>iommufd_hwpt_get_dirty_bitmap: the range is checked (iommufd_check_iova_range), then EOPNOTSUPP without dirty_ops.</summary>
    private int DirtyBitmap(iommu_hwpt_get_dirty_bitmap* cmd)
    {
        if ((cmd->flags & ~IommufdUapi.IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR) != 0 || cmd->__reserved != 0)
        {
            return -Errno.EOPNOTSUPP;
        }
        if (Get<HwptObject>(cmd->hwpt_id) is not { } hwpt)
        {
            return -Errno.ENOENT;
        }
        ulong last = cmd->iova + (cmd->length - 1); // wraps as check_add_overflow sees it
        if (last < cmd->iova)
        {
            return -Errno.EOVERFLOW;
        }
        ulong alignment = hwpt.Ioas.IovaAlignment;
        if ((cmd->iova & (alignment - 1)) != 0 || ((last + 1) & (alignment - 1)) != 0 || cmd->page_size == 0
            || (cmd->iova & (cmd->page_size - 1)) != 0 || ((last + 1) & (cmd->page_size - 1)) != 0)
        {
            return -Errno.EINVAL;
        }
        return -Errno.EOPNOTSUPP;
    }
}

/// <summary>A file opened from <c>/dev/iommu</c>: each open is a new iommufd context.</summary>
internal sealed class IommufdFile(SimulatedKernel kernel, string path) : KernelFile(kernel, path)
{
    public IommufdContext Context { get; } = new(kernel);

    public override SimulatedFileKind Kind => SimulatedFileKind.Iommufd;

    /// <summary>Runs after the descriptor closed and every bound device let go of the context (iommufd_ctx_put).</summary>
    protected override void Release()
    {
        Context.Release();
        Kernel.ForgetIommufdLocked(this);
    }

    public override int Ioctl(nuint request, nint argument)
    {
        using (Kernel.Enter())
        {
            return Context.Ioctl(request, argument);
        }
    }
}

public sealed partial class SimulatedKernel
{
    private readonly List<IommufdFile> _iommufds = [];
    private ulong _userLockedMemory;

    /// <summary>
    /// Whether the kernel was built with IOMMUFD (CONFIG_IOMMUFD): on <see cref="LinuxVersion"/> 6.2 and
    /// later <c>/dev/iommu</c> then exists. True by default; false models a kernel built without it
    /// (every Debian kernel).
    /// </summary>
    public bool IommufdEnabled { get; set; } = true;

    /// <summary>
    /// Whether the platform isolates MSI (interrupt remapping on x86). iommufd refuses to bind a device
    /// without it (EPERM) unless its module parameter <c>allow_unsafe_interrupts</c> is set, which the
    /// simulation does not model. True by default.
    /// </summary>
    public bool IsolatedMsi { get; set; } = true;

    /// <summary>
    /// Whether the process has CAP_SYS_RESOURCE, which setting IOMMU_OPTION_RLIMIT_MODE needs (EPERM
    /// otherwise). True by default, as for root.
    /// </summary>
    public bool HasSysResourceCapability { get; set; } = true;

    /// <summary>The Intel VT-d capability register IOMMU_GET_HW_INFO reports (0 by default: no capability claimed).</summary>
    public ulong VtdCapabilityRegister { get; set; }

    /// <summary>The Intel VT-d extended capability register IOMMU_GET_HW_INFO reports (0 by default).</summary>
    public ulong VtdExtendedCapabilityRegister { get; set; }

    /// <summary>
    /// The bytes iommufd has pinned and charged to the user's locked_vm, its default accounting
    /// (IOMMU_OPTION_RLIMIT_MODE 0; mode 1 charges <see cref="LockedMemory"/> as type1 does). Both
    /// are limited by <see cref="MemoryLockLimit"/>.
    /// </summary>
    public ulong UserLockedMemory
    {
        get
        {
            using (Enter())
            {
                return _userLockedMemory;
            }
        }
    }

    /// <summary>The live iommufd contexts; the lock is held.</summary>
    internal IEnumerable<IommufdContext> IommufdContextsLocked
    {
        get
        {
            AssertLocked();
            return _iommufds.Select(f => f.Context);
        }
    }

    internal KernelFile OpenIommufdLocked(string path)
    {
        AssertLocked();
        var file = new IommufdFile(this, path);
        _iommufds.Add(file);
        return file;
    }

    internal void ForgetIommufdLocked(IommufdFile file)
    {
        AssertLocked();
        _iommufds.Remove(file);
    }

    /// <summary>Charges pinned bytes in the context's mode (incr_user_locked_vm or the mm's locked_vm); false beyond RLIMIT_MEMLOCK. The lock is held.</summary>
    internal bool TryChargePinnedLocked(PinAccounting accounting, ulong bytes)
    {
        AssertLocked();
        if (accounting == PinAccounting.Mm)
        {
            return TryLockLocked(bytes);
        }
        if (_memlockLimit is ulong limit && (_userLockedMemory + bytes > limit || _userLockedMemory + bytes < bytes))
        {
            return false;
        }
        _userLockedMemory += bytes;
        return true;
    }

    /// <summary>Gives back pinned bytes; the lock is held.</summary>
    internal void UnchargePinnedLocked(PinAccounting accounting, ulong bytes)
    {
        AssertLocked();
        if (accounting == PinAccounting.Mm)
        {
            UnlockLocked(bytes);
        }
        else
        {
            _userLockedMemory -= bytes;
        }
    }
}
