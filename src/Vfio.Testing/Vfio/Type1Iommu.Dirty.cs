using System.Numerics;
using Vfio.Interop;

namespace Vfio.Testing;

// The type1 driver's dirty page tracking (vfio_iommu_type1_dirty_pages, update_user_bitmap; the same
// in Linux 6.1 and 7.x): VFIO_IOMMU_DIRTY_PAGES START, STOP and GET_BITMAP, and the bitmap of
// VFIO_IOMMU_UNMAP_DMA with VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP. type1 cannot see what a device
// writes: while any group of the container is backed by an IOMMU (not an mdev's emulated group,
// which reports the pages it pins), every page of every mapping reads dirty, at every read.
//
// Each mapping keeps its own bitmap while tracking (vfio_dma->bitmap, one word longer than its pages
// need), and type1 reports it as the kernel does, flaw included: a mapping whose first page is not
// at a multiple of 64 pages from the start of the range read has its bitmap shifted left in place by
// that remainder, the caller's word it shares ORed into its first word, and copied out; afterwards
// vfio_iova_dirty_bitmap clears only the mapping's own page count of bits, so the shifted tail and
// the neighbours' bits stay, and the next such read shifts them again: pages past the mapping (and
// the neighbours') read dirty. A read whose range starts at the mapping never shifts.
internal sealed unsafe partial class Type1Iommu
{
    // vfio_dma->bitmap of each mapping while tracking.
    private readonly Dictionary<DmaMapping, ulong[]> _dirty = [];

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
            // vfio_dma_bitmap_alloc_all, only when not tracking yet: zeroed bitmaps (no model pins pages).
            if (!Tracking)
            {
                foreach (var m in _mappings)
                {
                    _dirty[m] = NewBitmap(m);
                }
            }
            Tracking = true;
            return 0;
        }
        if (flags == VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP)
        {
            _dirty.Clear();
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
                // Then it clears the mapping's page count of bits, not the bits a shift moved past them,
                // and sets again the pages pinned (none here).
                Array.Clear(_dirty[m], 0, (int)(Pages(m) / 64));
                if (Pages(m) % 64 != 0)
                {
                    _dirty[m][Pages(m) / 64] &= ~((1UL << (int)(Pages(m) % 64)) - 1);
                }
            }
        }
        return 0;
    }

    /// <summary>A mapping made while tracking gets its bitmap at once (vfio_dma_do_map).</summary>
    private void TrackNewMapping(DmaMapping mapping)
    {
        if (Tracking)
        {
            _dirty[mapping] = NewBitmap(mapping);
        }
    }

    private ulong Pages(DmaMapping mapping) => mapping.Size >> PageShift(MinPageSize);

    // vfio_dma_bitmap_alloc: DIRTY_BITMAP_BYTES(npages + BITS_PER_LONG), zeroed.
    private ulong[] NewBitmap(DmaMapping mapping) => new ulong[(Pages(mapping) + 64 + 63) / 64];

    /// <summary>
    /// update_user_bitmap: the mapping's bitmap (every page set while a group backed by an IOMMU is in
    /// the container), shifted to its bit offset from <paramref name="baseIova"/> within its first word,
    /// with the caller's bits of that word ORed in, copied to the caller's bitmap in whole words.
    /// </summary>
    private void ReportDirty(DmaMapping mapping, ulong baseIova, vfio_bitmap bitmap)
    {
        ulong[] own = _dirty[mapping];
        ulong pages = Pages(mapping);
        ulong bitOffset = (mapping.Iova - baseIova) >> PageShift(MinPageSize);
        ulong copyOffset = bitOffset / 64;
        int shift = (int)(bitOffset % 64);
        // An emulated group reports only what its parent pinned, and no model pins: only a group backed
        // by an IOMMU (num_non_pinned_groups) makes every mapped page dirty.
        if (container.Groups.Any(g => g.Kind == SimulatedGroupKind.Iommu))
        {
            for (ulong bit = 0; bit < pages; bit++)
            {
                own[bit / 64] |= 1UL << (int)(bit % 64);
            }
        }
        int words = (int)((pages + (ulong)shift + 63) / 64);
        if (shift != 0)
        {
            // __bitmap_shift_left over nbits + shift bits (its last word is not masked), then
            // bitmap_or of the caller's word, which takes the whole word.
            for (int k = words - 1; k >= 0; k--)
            {
                own[k] = (own[k] << shift) | (k > 0 ? own[k - 1] >> (64 - shift) : 0);
            }
            own[0] |= bitmap.data[copyOffset];
        }
        for (int k = 0; k < words; k++)
        {
            bitmap.data[copyOffset + (ulong)k] = own[k];
        }
    }
}
