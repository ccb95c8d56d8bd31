namespace Vfio;

/// <summary>
/// Hands out IO virtual addresses inside the IOMMU's valid ranges and below a device's DMA mask,
/// first fit from the bottom, aligned to the IOMMU page size. Allocated ranges are kept sorted, so
/// a lookup is a binary search.
/// </summary>
internal sealed class IovaAllocator
{
    private readonly IReadOnlyList<IovaRange> _valid;
    private readonly ulong _page;
    private readonly List<(ulong Start, ulong Size)> _used = [];

    public IovaAllocator(IReadOnlyList<IovaRange> valid, ulong pageSize)
    {
        _valid = [.. valid.OrderBy(r => r.Start)];
        _page = pageSize;
    }

    public int Count => _used.Count;

    /// <summary>The lowest free, aligned IOVA for <paramref name="size"/> bytes at or below <paramref name="mask"/>; null when none.</summary>
    public ulong? Allocate(ulong size, ulong mask)
    {
        size = AlignUp(size);
        foreach (var range in _valid)
        {
            // IOVA 0 is valid to the IOMMU, but a device that reads 0 as "no address" would be
            // confused; start at the first page.
            ulong candidate = AlignUp(Math.Max(range.Start, _page));
            int i = FirstEndingAfter(candidate);
            while (true)
            {
                if (candidate + size - 1 < candidate || candidate + size - 1 > range.End || candidate + size - 1 > mask)
                {
                    break;
                }
                if (i >= _used.Count || candidate + size <= _used[i].Start)
                {
                    _used.Insert(i, (candidate, size));
                    return candidate;
                }
                candidate = AlignUp(_used[i].Start + _used[i].Size);
                i++;
            }
        }
        return null;
    }

    /// <summary>Reserves a caller-chosen range; false when it overlaps one in use.</summary>
    public bool Reserve(ulong iova, ulong size)
    {
        int i = FirstEndingAfter(iova);
        if (i < _used.Count && _used[i].Start < iova + size)
        {
            return false;
        }
        _used.Insert(i, (iova, size));
        return true;
    }

    public void Free(ulong iova)
    {
        int i = IndexOf(iova);
        if (i >= 0)
        {
            _used.RemoveAt(i);
        }
    }

    public void Clear() => _used.Clear();

    private int IndexOf(ulong start)
    {
        int lo = 0, hi = _used.Count - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            if (_used[mid].Start == start)
            {
                return mid;
            }
            if (_used[mid].Start < start)
            {
                lo = mid + 1;
            }
            else
            {
                hi = mid - 1;
            }
        }
        return -1;
    }

    // The first used range whose end is above address (binary search over sorted, disjoint ranges).
    private int FirstEndingAfter(ulong address)
    {
        int lo = 0, hi = _used.Count;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if (_used[mid].Start + _used[mid].Size <= address)
            {
                lo = mid + 1;
            }
            else
            {
                hi = mid;
            }
        }
        return lo;
    }

    private ulong AlignUp(ulong value) => (value + _page - 1) & ~(_page - 1);
}
