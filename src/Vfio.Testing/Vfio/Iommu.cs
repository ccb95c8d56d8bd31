using System.Runtime.InteropServices;
using Vfio.Interop;

namespace Vfio.Testing;

/// <summary>A range of I/O virtual addresses a container can map, with an inclusive end, as <c>vfio_iova_range</c>.</summary>
/// <param name="Start">The first usable address.</param>
/// <param name="End">The last usable address (inclusive).</param>
public readonly record struct SimulatedIovaRange(ulong Start, ulong End);

/// <summary>A DMA access by a device model that the IOMMU refused.</summary>
/// <param name="Device">The device's name (a PCI address, a platform device name or an mdev UUID).</param>
/// <param name="Iova">The first address of the access.</param>
/// <param name="Length">The access's length in bytes.</param>
/// <param name="IsWrite">True for a write to memory, false for a read from memory.</param>
/// <param name="Reason">Why it faulted: no mapping, missing permission, bus mastering disabled, no IOMMU domain.</param>
public sealed record DmaFault(string Device, ulong Iova, int Length, bool IsWrite, string Reason);

/// <summary>One IOMMU mapping: an IOVA range pinned to the memory behind a virtual address.</summary>
internal sealed class DmaMapping(ulong iova, ulong size, ulong vaddr, bool read, bool write, AnonymousMemory memory)
{
    public ulong Iova { get; } = iova;

    public ulong Size { get; } = size;

    public ulong Vaddr { get; } = vaddr;

    public bool Read { get; } = read;

    public bool Write { get; } = write;

    public AnonymousMemory Memory { get; } = memory;

    public ulong End => Iova + Size; // exclusive; maps never wrap
}

/// <summary>
/// The type1 IOMMU driver's data for one container (vfio_iommu): the mappings sorted by IOVA, the
/// page sizes, the usable IOVA ranges and the count of mappings still allowed.
/// </summary>
internal sealed unsafe partial class Type1Iommu(SimulatedKernel kernel, ContainerState container, bool v2) : IDmaMappings
{
    // The driver's settings, taken from the kernel when the IOMMU is set (as module parameters and
    // the IOMMU's geometry are fixed for a vfio_iommu's life).
    private readonly ulong pageSizes = kernel.IommuPageSizes;
    private readonly IReadOnlyList<SimulatedIovaRange> ranges = kernel.IovaRanges;
    private readonly bool reportDmaAvail = kernel.ReportsDmaAvailable;
    private readonly List<DmaMapping> _mappings = [];

    // iommufd's emulation of type1 (drivers/iommu/iommufd/vfio_compat.c) rather than type1 itself: no
    // count of mappings, no dirty tracking, unmap flags ALL only, ENOENT for an unmap cutting a mapping.
    private readonly bool compat = container.IommufdCompat;

    public bool V2 { get; } = v2;

    public int Available { get; private set; } = kernel.DmaEntryLimit;

    public int Count => _mappings.Count;

    public IEnumerable<DmaMapping> Mappings => _mappings;

    private ulong MinPageSize => pageSizes & (~pageSizes + 1);

    /// <summary>Drops every mapping and unpins its memory (driver release, or the last group leaving).</summary>
    public void Clear()
    {
        foreach (var m in _mappings)
        {
            m.Memory.Put();
            kernel.UnlockLocked(m.Size);
        }
        if (!compat)
        {
            Available += _mappings.Count;
        }
        _mappings.Clear();
        _dirty.Clear();
    }

    /// <summary>The type1 driver's CHECK_EXTENSION once it is the container's driver.</summary>
    public static int CheckExtension(Type1Iommu? iommu, nint extension) => (int)extension switch
    {
        VfioUapi.VFIO_TYPE1_IOMMU or VfioUapi.VFIO_TYPE1v2_IOMMU or VfioUapi.VFIO_UNMAP_ALL or VfioUapi.VFIO_UPDATE_VADDR => 1,
        VfioUapi.VFIO_DMA_CC_IOMMU => iommu is null ? 0 : 1,
        _ => 0,
    };

    public int Ioctl(nuint request, nint argument)
    {
        if (request == VfioUapi.VFIO_CHECK_EXTENSION)
        {
            return CheckExtension(this, argument);
        }
        if (request == VfioUapi.VFIO_IOMMU_GET_INFO)
        {
            return GetInfo((byte*)argument);
        }
        if (request == VfioUapi.VFIO_IOMMU_MAP_DMA)
        {
            return Map((vfio_iommu_type1_dma_map*)argument);
        }
        if (request == VfioUapi.VFIO_IOMMU_UNMAP_DMA)
        {
            return Unmap((vfio_iommu_type1_dma_unmap*)argument);
        }
        if (request == VfioUapi.VFIO_IOMMU_DIRTY_PAGES && !compat)
        {
            return DirtyPages((byte*)argument);
        }
        return -Errno.ENOTTY;
    }

    private int GetInfo(byte* arg)
    {
        var info = (vfio_iommu_type1_info*)arg;
        const int MinSize = 16; // offsetofend(struct vfio_iommu_type1_info, iova_pgsizes)
        int size = sizeof(vfio_iommu_type1_info);
        uint argsz = info->argsz;
        if (argsz < MinSize)
        {
            return -Errno.EINVAL;
        }
        // Linux 6.1 builds the chain in this order: migration (which reports only the smallest page
        // size, the dirty-bitmap granule), DMA_AVAIL (from 5.10), the IOVA ranges (left out when the
        // list is empty, as for a container holding only an mdev).
        // iommufd's emulation: no migration capability (no dirty tracking), DMA_AVAIL always U32_MAX
        // (its limit is the memory cgroup's), then the IOVA ranges.
        var caps = new CapabilityChain();
        if (!compat)
        {
            caps.Add(
                new vfio_iommu_type1_info_cap_migration { pgsize_bitmap = MinPageSize, max_dirty_bitmap_size = MaxDirtyBitmapSize },
                (ushort)VfioUapi.VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION,
                1);
        }
        if (reportDmaAvail || compat)
        {
            caps.Add(
                new vfio_iommu_type1_info_dma_avail { avail = compat ? uint.MaxValue : (uint)Available },
                (ushort)VfioUapi.VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL,
                1);
        }
        if (ranges.Count > 0)
        {
            var rangeArray = ranges.Select(r => new vfio_iova_range { start = r.Start, end = r.End }).ToArray();
            caps.Add(
                new vfio_iommu_type1_info_cap_iova_range { nr_iovas = (uint)rangeArray.Length },
                (ushort)VfioUapi.VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
                1,
                MemoryMarshal.AsBytes(rangeArray.AsSpan()));
        }

        var result = new vfio_iommu_type1_info
        {
            argsz = argsz,
            flags = VfioUapi.VFIO_IOMMU_INFO_PGSIZES | VfioUapi.VFIO_IOMMU_INFO_CAPS,
            iova_pgsizes = pageSizes,
            cap_offset = 0,
        };
        if (argsz < size + caps.Size)
        {
            result.argsz = (uint)(size + caps.Size);
        }
        else
        {
            caps.WriteAfter(arg, size);
            result.cap_offset = (uint)size;
        }
        // The kernel copies back up to cap_offset's end (20 bytes) when argsz covers it, else only up to
        // iova_pgsizes (16): an old caller's short struct is not overrun, and the padding is not written.
        const int CapsSize = 20; // offsetofend(struct vfio_iommu_type1_info, cap_offset)
        int copy = argsz >= CapsSize ? CapsSize : MinSize;
        new ReadOnlySpan<byte>(&result, copy).CopyTo(new Span<byte>(arg, copy));
        return 0;
    }

    private int Map(vfio_iommu_type1_dma_map* map)
    {
        const int MinSize = 32; // offsetofend(struct vfio_iommu_type1_dma_map, size)
        uint mask = VfioUapi.VFIO_DMA_MAP_FLAG_READ | VfioUapi.VFIO_DMA_MAP_FLAG_WRITE | VfioUapi.VFIO_DMA_MAP_FLAG_VADDR;
        if (map->argsz < MinSize || (map->flags & ~mask) != 0)
        {
            return -Errno.EINVAL;
        }
        bool read = (map->flags & VfioUapi.VFIO_DMA_MAP_FLAG_READ) != 0;
        bool write = (map->flags & VfioUapi.VFIO_DMA_MAP_FLAG_WRITE) != 0;
        // Re-attaching a vaddr (VFIO_DMA_MAP_FLAG_VADDR) is not simulated; without a mapping whose vaddr
        // was invalidated the kernel refuses it with EINVAL too.
        if ((map->flags & VfioUapi.VFIO_DMA_MAP_FLAG_VADDR) != 0 || (!read && !write))
        {
            return -Errno.EINVAL;
        }
        ulong iova = map->iova;
        ulong size = map->size;
        ulong vaddr = map->vaddr;
        ulong pgmask = MinPageSize - 1;
        if (size == 0 || ((size | iova | vaddr) & pgmask) != 0)
        {
            return -Errno.EINVAL;
        }
        if (iova + size - 1 < iova || vaddr + size - 1 < vaddr)
        {
            return -Errno.EINVAL;
        }
        if (Overlaps(iova, size))
        {
            return -Errno.EEXIST;
        }
        if (Available == 0 && !compat)
        {
            return -Errno.ENOSPC;
        }
        // An empty list (a container holding only an mdev) allows any IOVA.
        if (ranges.Count > 0 && !ranges.Any(r => iova >= r.Start && iova + size - 1 <= r.End))
        {
            return -Errno.EINVAL;
        }
        // Pinning the pages: the memory must be mapped in the process.
        var area = kernel.FindAnonymousLocked(vaddr, size);
        if (area is null)
        {
            return -Errno.EFAULT;
        }
        // Pinning charges the pages to the locked-memory limit (unless the caller has CAP_IPC_LOCK).
        if (!kernel.TryLockLocked(size))
        {
            return -Errno.ENOMEM;
        }
        area.Memory!.Get();
        var mapping = new DmaMapping(iova, size, vaddr, read, write, area.Memory);
        _mappings.Insert(FloorIndex(iova) + 1, mapping);
        if (!compat)
        {
            Available--;
        }
        TrackNewMapping(mapping);
        return 0;
    }

    private int Unmap(vfio_iommu_type1_dma_unmap* unmap)
    {
        const int MinSize = 24; // offsetofend(struct vfio_iommu_type1_dma_unmap, size)
        uint mask = compat
            ? VfioUapi.VFIO_DMA_UNMAP_FLAG_ALL
            : VfioUapi.VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP | VfioUapi.VFIO_DMA_UNMAP_FLAG_ALL | VfioUapi.VFIO_DMA_UNMAP_FLAG_VADDR;
        if (unmap->argsz < MinSize || (unmap->flags & ~mask) != 0)
        {
            return -Errno.EINVAL;
        }
        bool all = (unmap->flags & VfioUapi.VFIO_DMA_UNMAP_FLAG_ALL) != 0;
        bool dirty = (unmap->flags & VfioUapi.VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP) != 0;
        // Vaddr invalidation is not simulated; the kernel refuses it with a bitmap, as it refuses ALL with one.
        if ((unmap->flags & VfioUapi.VFIO_DMA_UNMAP_FLAG_VADDR) != 0 || (dirty && all))
        {
            return -Errno.EINVAL;
        }
        vfio_bitmap bitmap = default;
        if (dirty)
        {
            if (unmap->argsz < MinSize + sizeof(vfio_bitmap))
            {
                return -Errno.EINVAL;
            }
            bitmap = *(vfio_bitmap*)((byte*)unmap + MinSize);
            int r = VerifyBitmapSize(unmap->size >> PageShift(bitmap.pgsize), bitmap.size);
            if (r < 0)
            {
                return r;
            }
        }
        ulong iova = unmap->iova;
        ulong size = unmap->size;
        ulong pgmask = MinPageSize - 1;
        if ((iova & pgmask) != 0)
        {
            return -Errno.EINVAL;
        }
        if (all)
        {
            if (iova != 0 || size != 0)
            {
                return -Errno.EINVAL;
            }
            size = ulong.MaxValue;
        }
        else if (size == 0 || (size & pgmask) != 0 || iova + size - 1 < iova)
        {
            return -Errno.EINVAL;
        }
        // A bitmap only while tracking, and only at the smallest page size.
        if (dirty && (!Tracking || bitmap.pgsize != MinPageSize))
        {
            return -Errno.EINVAL;
        }
        ulong last = iova + size - 1;

        // type1v2 is strict: an unmap may not bisect a mapping at either end; iommufd refuses it too,
        // with ENOENT (iopt_unmap_iova_range).
        if (V2 && !all)
        {
            int cut = compat ? -Errno.ENOENT : -Errno.EINVAL;
            var first = Find(iova);
            if (first is not null && first.Iova != iova)
            {
                return cut;
            }
            var end = Find(last);
            if (end is not null && end.End - 1 != last)
            {
                return cut;
            }
        }

        ulong unmapped = 0;
        int i = FloorIndex(iova);
        if (i < 0 || _mappings[i].End <= iova)
        {
            i++;
        }
        while (i < _mappings.Count && _mappings[i].Iova <= last)
        {
            var m = _mappings[i];
            if (!V2 && iova > m.Iova)
            {
                break; // type1 (v1) stops at a mapping that starts before the range
            }
            if (dirty)
            {
                ReportDirty(m, iova, bitmap);
            }
            unmapped += m.Size;
            m.Memory.Put();
            kernel.UnlockLocked(m.Size);
            _mappings.RemoveAt(i);
            _dirty.Remove(m);
            if (!compat)
            {
                Available++;
            }
        }
        unmap->size = unmapped;
        return 0;
    }

    private bool Overlaps(ulong iova, ulong size)
    {
        int i = FloorIndex(iova + size - 1);
        return i >= 0 && _mappings[i].End > iova;
    }

    /// <summary>The mapping that contains <paramref name="iova"/>, or null.</summary>
    public DmaMapping? Find(ulong iova)
    {
        int i = FloorIndex(iova);
        return i >= 0 && _mappings[i].End > iova ? _mappings[i] : null;
    }

    /// <summary>The index of the last mapping starting at or below <paramref name="iova"/>, or -1.</summary>
    private int FloorIndex(ulong iova) => IovaOrder.Floor(_mappings, iova, static m => m.Iova);
}

/// <summary>Binary search over mappings kept sorted by their first IOVA (type1's and an IOAS's).</summary>
internal static class IovaOrder
{
    /// <summary>The index of the last item starting at or below <paramref name="iova"/>, or -1.</summary>
    public static int Floor<T>(List<T> sorted, ulong iova, Func<T, ulong> start)
    {
        int lo = 0;
        int hi = sorted.Count - 1;
        int found = -1;
        while (lo <= hi)
        {
            int mid = (lo + hi) / 2;
            if (start(sorted[mid]) <= iova)
            {
                found = mid;
                lo = mid + 1;
            }
            else
            {
                hi = mid - 1;
            }
        }
        return found;
    }
}
