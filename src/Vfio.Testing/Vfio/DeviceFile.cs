using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio.Testing;

/// <summary>
/// A device file returned by VFIO_GROUP_GET_DEVICE_FD (or, bound to an iommufd, opened from the device's
/// cdev: <see cref="DeviceCdevFile"/>): the info ioctls, SET_IRQS, reset, region reads and writes at
/// <c>index &lt;&lt; 40</c> as vfio-pci and vfio-platform lay them out, and mmap of regions that allow
/// it. Mappings hold the file, so the device is closed only after the last munmap (or after the last
/// mapping of it is replaced in place).
/// </summary>
internal unsafe class DeviceFile(SimulatedKernel kernel, string path, SimulatedDevice device) : KernelFile(kernel, path)
{
    /// <summary>VFIO_PCI_OFFSET_SHIFT and VFIO_PLATFORM_OFFSET_SHIFT.</summary>
    public const int OffsetShift = 40;
    private const ulong OffsetMask = (1UL << OffsetShift) - 1;

    public SimulatedDevice Device { get; } = device;

    public override SimulatedFileKind Kind => SimulatedFileKind.Device;

    protected override void Release()
    {
        if (--Device.OpenCount == 0)
        {
            DeviceFeatures.LastClose(Device);
            LastClose();
        }
    }

    /// <summary>vfio_df_device_last_close after the driver's close: the group's container use ends.</summary>
    protected virtual void LastClose() => Kernel.LastCloseLocked(Device);

    public override int Ioctl(nuint request, nint argument)
    {
        if (request == VfioUapi.VFIO_DEVICE_FEATURE)
        {
            return DeviceFeatures.Ioctl(Kernel, Device, (byte*)argument); // takes the model's lock, then the kernel's
        }
        if (request == VfioUapi.VFIO_DEVICE_RESET && Device is SimulatedPciDevice { Model: var function })
        {
            return function.VfioPci.ResetFromIoctl(); // vfio_pci_ioctl_reset: takes the model's lock, then the kernel's
        }
        using (Kernel.Enter())
        {
            var model = Device.Model;
            if (request == VfioUapi.VFIO_DEVICE_GET_INFO)
            {
                var info = (vfio_device_info*)argument;
                const int MinSize = 16; // offsetofend(struct vfio_device_info, num_irqs)
                if (info->argsz < MinSize)
                {
                    return -Errno.EINVAL;
                }
                info->flags = model.InfoFlags | (model.ResetWorks ? VfioUapi.VFIO_DEVICE_FLAGS_RESET : 0);
                info->num_regions = (uint)model.RegionCount;
                info->num_irqs = (uint)model.IrqIndexCount;
                return 0;
            }
            if (request == VfioUapi.VFIO_DEVICE_GET_REGION_INFO)
            {
                return GetRegionInfo((byte*)argument);
            }
            if (request == VfioUapi.VFIO_DEVICE_GET_IRQ_INFO)
            {
                var info = (vfio_irq_info*)argument;
                const int MinSize = 16; // offsetofend(struct vfio_irq_info, count)
                if (info->argsz < MinSize || info->index >= (uint)model.IrqIndexCount)
                {
                    return -Errno.EINVAL;
                }
                if (!model.DescribeIrq((int)info->index, out uint flags, out int count))
                {
                    return -Errno.EINVAL;
                }
                info->flags = flags;
                info->count = (uint)count;
                return 0;
            }
            if (request == VfioUapi.VFIO_DEVICE_SET_IRQS)
            {
                return Kernel.SetIrqsLocked(Device, (vfio_irq_set*)argument);
            }
            if (request == VfioUapi.VFIO_DEVICE_RESET)
            {
                if (!model.SupportsReset)
                {
                    return -Errno.EINVAL;
                }
                if (model is PlatformDeviceModel { ResetErrno: > 0 } failing)
                {
                    return -failing.ResetErrno;
                }
                Kernel.Defer(model.ResetKeepingConfig);
                return 0;
            }
            if (request == VfioUapi.VFIO_DEVICE_GET_PCI_HOT_RESET_INFO && Device is SimulatedPciDevice pci)
            {
                return Kernel.GetHotResetInfoLocked(pci, (byte*)argument);
            }
            if (request == VfioUapi.VFIO_DEVICE_PCI_HOT_RESET && Device is SimulatedPciDevice target)
            {
                return Kernel.HotResetLocked(target, (byte*)argument);
            }
            if (request == VfioUapi.VFIO_DEVICE_BIND_IOMMUFD)
            {
                return Kernel.BindGroupDeviceFileLocked((byte*)argument);
            }
            return -Errno.ENOTTY;
        }
    }

    private int GetRegionInfo(byte* arg)
    {
        var info = (vfio_region_info*)arg;
        int size = sizeof(vfio_region_info);
        const int MinSize = 32; // offsetofend(struct vfio_region_info, offset)
        uint argsz = info->argsz;
        if (argsz < MinSize || info->index >= (uint)Device.Model.RegionCount || !Device.Model.HasRegion((int)info->index))
        {
            return -Errno.EINVAL;
        }
        int index = (int)info->index;
        var region = Device.Model.DescribeRegion(index);
        var caps = new CapabilityChain();
        uint flags = region.Flags;
        if ((flags & VfioUapi.VFIO_REGION_INFO_FLAG_MMAP) != 0 && region.SparseAreas is { } areas)
        {
            var bytes = new byte[areas.Count * sizeof(vfio_region_sparse_mmap_area)];
            var span = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, vfio_region_sparse_mmap_area>(bytes.AsSpan());
            for (int i = 0; i < areas.Count; i++)
            {
                span[i] = new vfio_region_sparse_mmap_area { offset = areas[i].Offset, size = areas[i].Size };
            }
            caps.Add(new vfio_region_info_cap_sparse_mmap { nr_areas = (uint)areas.Count }, (ushort)VfioUapi.VFIO_REGION_INFO_CAP_SPARSE_MMAP, 1, bytes);
        }
        if ((flags & VfioUapi.VFIO_REGION_INFO_FLAG_MMAP) != 0 && region.MsixMappable)
        {
            caps.Add(default(vfio_info_cap_header), (ushort)VfioUapi.VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, 1);
        }
        info->cap_offset = 0;
        if (!caps.IsEmpty)
        {
            flags |= VfioUapi.VFIO_REGION_INFO_FLAG_CAPS;
            if (argsz < size + caps.Size)
            {
                info->argsz = (uint)(size + caps.Size);
            }
            else
            {
                caps.WriteAfter(arg, size);
                info->cap_offset = (uint)size;
            }
        }
        info->flags = flags;
        info->size = region.Size;
        info->offset = (ulong)index << OffsetShift;
        return 0;
    }

    public override long PRead(Span<byte> buffer, long offset) => Access(buffer, offset, write: false);

    public override long PWrite(ReadOnlySpan<byte> buffer, long offset)
    {
        // The model reads from the span on a write; it is never written to.
        fixed (byte* p = buffer)
        {
            return Access(new Span<byte>(p, buffer.Length), offset, write: true);
        }
    }

    private long Access(Span<byte> buffer, long offset, bool write)
    {
        int index = (int)((ulong)offset >> OffsetShift);
        ulong position = (ulong)offset & OffsetMask;
        var model = Device.Model;
        int count;
        using (Kernel.Enter())
        {
            if (index >= model.RegionCount)
            {
                return -Errno.EINVAL;
            }
            var region = model.DescribeRegion(index);
            uint needed = write ? VfioUapi.VFIO_REGION_INFO_FLAG_WRITE : VfioUapi.VFIO_REGION_INFO_FLAG_READ;
            if ((region.Flags & needed) == 0 || position >= region.Size)
            {
                return -Errno.EINVAL;
            }
            if ((ulong)buffer.Length > region.Size - position && model.RefusePastEnd(index) is < 0 and int refused)
            {
                return refused;
            }
            count = (int)Math.Min((ulong)buffer.Length, region.Size - position);
        }
        return model.AccessRegion(index, position, buffer[..count], write);
    }

    public override int Map(nuint length, int prot, int flags, long offset, out MappingSource source)
    {
        source = null!;
        int index = (int)((ulong)offset >> OffsetShift);
        ulong start = (ulong)offset & OffsetMask;
        using (Kernel.Enter())
        {
            var model = Device.Model;
            if (index >= model.RegionCount || (flags & Flags.MAP_SHARED) == 0)
            {
                return -Errno.EINVAL;
            }
            var region = model.DescribeRegion(index);
            if ((region.Flags & VfioUapi.VFIO_REGION_INFO_FLAG_MMAP) == 0)
            {
                return -Errno.EINVAL;
            }
            // vfio_platform_mmap: the protection may not exceed what the region allows.
            if (model is PlatformDeviceModel
                && (((region.Flags & VfioUapi.VFIO_REGION_INFO_FLAG_READ) == 0 && (prot & Flags.PROT_READ) != 0)
                    || ((region.Flags & VfioUapi.VFIO_REGION_INFO_FLAG_WRITE) == 0 && (prot & Flags.PROT_WRITE) != 0)))
            {
                return -Errno.EINVAL;
            }
            ulong mappable = (region.Size + SimulatedKernel.PageSize - 1) & ~(ulong)(SimulatedKernel.PageSize - 1);
            if (start > mappable || (ulong)length > mappable - start)
            {
                return -Errno.EINVAL;
            }
            if (region.SparseAreas is { } areas && !areas.Any(a => start >= a.Offset && start + length <= a.Offset + a.Size))
            {
                return -Errno.EINVAL;
            }
            source = new MappingSource(this, index, start, null);
            return 0;
        }
    }
}
