namespace Vfio;

/// <summary>
/// Hands out IO virtual addresses inside the IOMMU's valid ranges and below a device's DMA mask,
/// aligned to the IOMMU page size. The free space is kept as extents in two sorted sets, one by
/// address (to merge neighbours on free) and one by size (to find a fit), so allocating, reserving
/// and freeing are O(log n) in the number of extents. A fit is the smallest free extent that holds
/// the request, the lowest such one among equals; the request goes at its bottom.
/// </summary>
/// <remarks>
/// IOVA 0 is valid to the IOMMU, but a device that reads 0 as "no address" would be confused, so the
/// first page is never handed out by <see cref="Allocate"/>; it can still be reserved explicitly.
/// Not thread-safe: the container serialises calls.
/// </remarks>
internal sealed class IovaAllocator
{
    private readonly IReadOnlyList<IovaRange> _valid;
    private readonly ulong _page;
    private readonly SortedSet<Extent> _byStart = new(ByStart.Instance);
    private readonly SortedSet<Extent> _bySize = new(BySize.Instance);
    private readonly Dictionary<ulong, ulong> _used = [];

    public IovaAllocator(IReadOnlyList<IovaRange> valid, ulong pageSize)
    {
        _page = pageSize;
        _valid = [.. valid.OrderBy(r => r.Start)];
        Clear();
    }

    /// <summary>How many ranges are in use.</summary>
    public int Count => _used.Count;

    /// <summary>
    /// A free IOVA for <paramref name="size"/> bytes, a multiple of <paramref name="alignment"/> (a power
    /// of two, at least the page size), whose last byte is at or below <paramref name="mask"/>; null when none.
    /// </summary>
    public ulong? Allocate(ulong size, ulong mask, ulong alignment = 0)
    {
        size = AlignUp(size);
        alignment = Math.Max(alignment, _page);
        ulong needed = size + (alignment - _page); // any extent this large holds an aligned start
        if (size == 0 || needed < size)
        {
            return null;
        }
        // Extents of at least the size, smallest first. The mask rarely rejects the first one (only
        // when low space is used up), so this loop usually runs once.
        foreach (var extent in _bySize.GetViewBetween(new Extent(0, 0, needed), new Extent(ulong.MaxValue, ulong.MaxValue, ulong.MaxValue)))
        {
            ulong start = (UsableStart(extent) + alignment - 1) & ~(alignment - 1);
            if (start < extent.Start || start + size - 1 > extent.Last || start + size - 1 > mask)
            {
                continue;
            }
            Take(extent, start, size);
            return start;
        }
        return null;
    }

    /// <summary>Reserves a caller-chosen, aligned range; false when any of it is in use or outside the valid ranges.</summary>
    public bool Reserve(ulong iova, ulong size)
    {
        if (size == 0 || iova + size - 1 < iova)
        {
            return false;
        }
        if (!TryFloor(iova, out var extent) || extent.Last < iova + size - 1)
        {
            return false;
        }
        Take(extent, iova, size);
        return true;
    }

    /// <summary>Returns a range handed out by <see cref="Allocate"/> or <see cref="Reserve"/>; false when it is not in use.</summary>
    public bool Free(ulong iova)
    {
        if (!_used.Remove(iova, out ulong size))
        {
            return false;
        }
        ulong first = iova;
        ulong last = iova + size - 1;
        if (first > 0)
        {
            if (TryFloor(first - 1, out var previous) && previous.Last == first - 1)
            {
                RemoveFree(previous);
                first = previous.Start;
            }
        }
        if (last < ulong.MaxValue && _byStart.TryGetValue(new Extent(last + 1, 0, 0), out var next))
        {
            RemoveFree(next);
            last = next.Last;
        }
        AddFree(first, last);
        return true;
    }

    /// <summary>Forgets every range in use: all of the valid ranges are free again.</summary>
    public void Clear()
    {
        _used.Clear();
        _byStart.Clear();
        _bySize.Clear();
        foreach (var range in _valid)
        {
            // Only whole pages inside the range can be mapped.
            ulong first = AlignUp(range.Start);
            if (first < range.Start || range.End < _page - 1)
            {
                continue;
            }
            ulong last = ((range.End - _page + 1) & ~(_page - 1)) + _page - 1;
            if (first <= last)
            {
                AddFree(first, last);
            }
        }
    }

    private void Take(Extent extent, ulong start, ulong size)
    {
        RemoveFree(extent);
        if (start > extent.Start)
        {
            AddFree(extent.Start, start - 1);
        }
        if (start + size - 1 < extent.Last)
        {
            AddFree(start + size, extent.Last);
        }
        _used.Add(start, size);
    }

    private void AddFree(ulong first, ulong last)
    {
        var extent = new Extent(first, last, UsableSize(first, last));
        _byStart.Add(extent);
        if (extent.UsableSize != 0)
        {
            _bySize.Add(extent);
        }
    }

    private void RemoveFree(Extent extent)
    {
        _byStart.Remove(extent);
        if (extent.UsableSize != 0)
        {
            _bySize.Remove(extent);
        }
    }

    // The free extent starting at or below address. (A view's Count walks the view; Max does not.)
    private bool TryFloor(ulong address, out Extent extent)
    {
        extent = _byStart.GetViewBetween(new Extent(0, 0, 0), new Extent(address, 0, 0)).Max;
        // An empty view answers default: no real extent ends at 0, as extents are whole pages.
        return extent.Last != 0;
    }

    private ulong UsableStart(Extent extent) => extent.Start == 0 ? _page : extent.Start;

    // The bytes Allocate may hand out from [first, last]: all but the first page when it starts at 0.
    private ulong UsableSize(ulong first, ulong last)
    {
        ulong start = first == 0 ? _page : first;
        return start > last ? 0 : last - start + 1;
    }

    private ulong AlignUp(ulong value) => (value + _page - 1) & ~(_page - 1);

    /// <summary>A free extent [Start, Last] (inclusive, so the top of the 64-bit space fits).</summary>
    private readonly record struct Extent(ulong Start, ulong Last, ulong UsableSize);

    private sealed class ByStart : IComparer<Extent>
    {
        public static readonly ByStart Instance = new();

        public int Compare(Extent x, Extent y) => x.Start.CompareTo(y.Start);
    }

    private sealed class BySize : IComparer<Extent>
    {
        public static readonly BySize Instance = new();

        public int Compare(Extent x, Extent y)
        {
            int c = x.UsableSize.CompareTo(y.UsableSize);
            return c != 0 ? c : x.Start.CompareTo(y.Start);
        }
    }
}
