using System.Numerics;
using Vfio.Interop;

namespace Vfio.Testing;

// The type1 driver's dirty page tracking (vfio_iommu_type1_dirty_pages, update_user_bitmap; the same
// in Linux 6.1 and 7.x): VFIO_IOMMU_DIRTY_PAGES START, STOP and GET_BITMAP, and the bitmap of
// VFIO_IOMMU_UNMAP_DMA with VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP. type1 cannot see what a device
// writes: while any group of the container is backed by an IOMMU (not an mdev's emulated group,
// which reports the pages it pins), every page of every mapping reads dirty, at every read.
internal sealed unsafe partial class Type1Iommu
{
    /// <summary>DIRTY_BITMAP_SIZE_MAX: the bitmap bytes for INT_MAX pages, 256 MiB.</summary>
    internal const ulong MaxDirtyBitmapSize = (((ulong)int.MaxValue + 63) & ~63UL) / 8;

    /// <summary>Whether VFIO_IOMMU_DIRTY_PAGES START was called (and not STOP since).</summary>
    public bool Tracking { get; private set; }

    // __ffs: the lowest set bit; for 0 the kernel's result is undefined, here no page at all.
    private static int PageShift(ulong pageSize) => pageSize == 0 ? 64 : BitOperations.TrailingZeroCount(pageSize);

    // verify_bitmap_size
    private static int VerifyBitmapSize(ulong pages, ulong bitmapSize)
    {
        ulong needed = ((pages + 63) & ~63UL) / 8;
        return pages == 0 || bitmapSize == 0 || bitmapSize > MaxDirtyBitmapSize || bitmapSize < needed ? -Errno.EINVAL : 0;
    }

    private int DirtyPages(byte* argument)
    {
        const int MinSize = 8; // offsetofend(struct vfio_iommu_type1_dirty_bitmap, flags)
        const uint Mask = VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_START | VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP | VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP;
        if (!V2)
        {
            return -Errno.EACCES;
        }
        var dirty = (vfio_iommu_type1_dirty_bitmap*)argument;
        uint flags = dirty->flags;
        if (dirty->argsz < MinSize || (flags & ~Mask) != 0)
        {
            return -Errno.EINVAL;
        }
        // Exactly one flag at a time (none falls through to the final EINVAL).
        if (BitOperations.PopCount(flags) > 1)
        {
            return -Errno.EINVAL;
        }
        if (flags == VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_START)
        {
            Tracking = true;
            return 0;
        }
        if (flags == VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP)
        {
            Tracking = false;
            return 0;
        }
        if (flags != VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP)
        {
            return -Errno.EINVAL;
        }
        if (dirty->argsz - MinSize < sizeof(vfio_iommu_type1_dirty_bitmap_get))
        {
            return -Errno.EINVAL;
        }
        var range = *(vfio_iommu_type1_dirty_bitmap_get*)(argument + MinSize);
        if (range.size == 0)
        {
            return -Errno.EINVAL;
        }
        if (range.iova + range.size - 1 < range.iova)
        {
            return -Errno.EOVERFLOW; // Linux 7.x; 6.1 goes on and refuses the range below
        }
        int r = VerifyBitmapSize(range.size >> PageShift(range.bitmap.pgsize), range.bitmap.size);
        if (r < 0)
        {
            return r;
        }
        ulong pgmask = MinPageSize - 1;
        if (range.bitmap.pgsize != MinPageSize || (range.iova & pgmask) != 0 || (range.size & pgmask) != 0 || !Tracking)
        {
            return -Errno.EINVAL;
        }
        // The range must cover whole mappings (vfio_iova_dirty_bitmap).
        ulong last = range.iova + range.size - 1;
        if (Find(range.iova) is { } first && first.Iova != range.iova)
        {
            return -Errno.EINVAL;
        }
        if (Find(last) is { } end && end.End - 1 != last)
        {
            return -Errno.EINVAL;
        }
        foreach (var m in _mappings)
        {
            if (m.Iova >= range.iova && m.Iova <= last)
            {
                ReportDirty(m, range.iova, range.bitmap);
            }
        }
        return 0;
    }

    /// <summary>update_user_bitmap: sets the mapping's bits in the caller's bitmap, counted from <paramref name="baseIova"/>.</summary>
    private void ReportDirty(DmaMapping mapping, ulong baseIova, vfio_bitmap bitmap)
    {
        // An emulated group reports only what its parent pinned, and no model pins: only a group backed
        // by an IOMMU (num_non_pinned_groups) makes every mapped page dirty.
        if (!container.Groups.Any(g => g.Kind == SimulatedGroupKind.Iommu))
        {
            return;
        }
        ulong pageSize = bitmap.pgsize;
        ulong first = (mapping.Iova - baseIova) / pageSize;
        ulong pages = mapping.Size / pageSize;
        for (ulong bit = first; bit < first + pages; bit++)
        {
            bitmap.data[bit / 64] |= 1UL << (int)(bit % 64);
        }
    }
}
