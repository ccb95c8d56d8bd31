using Vfio.Interop;

namespace Vfio.Testing;

/// <summary>
/// The IOVA-to-memory mappings a device's DMA goes through: a type1 container's, or the IOAS its
/// iommufd page table belongs to. Device models reach memory only through this.
/// </summary>
internal interface IDmaMappings
{
    /// <summary>The pinned mapping that contains <paramref name="iova"/>, or null (the device faults).</summary>
    DmaMapping? Find(ulong iova);
}

/// <summary>How an iommufd context charges pinned pages to RLIMIT_MEMLOCK (enum iopt_pages_account_mode).</summary>
internal enum PinAccounting
{
    /// <summary>To the user's locked_vm, shared by every process of the user (IOPT_PAGES_ACCOUNT_USER, the default).</summary>
    User,

    /// <summary>To the process's mm locked_vm, as VFIO type1 does (IOPT_PAGES_ACCOUNT_MM).</summary>
    Mm,
}

/// <summary>
/// The user memory one IOMMU_IOAS_MAP named (struct iopt_pages): page-aligned, with a pin count per
/// page, shared by every area that maps a slice of it (IOMMU_IOAS_COPY shares it across IOASes).
/// A page is charged to the locked-memory limit once, when its first pin comes.
/// </summary>
internal sealed class IoasPages(ulong uptr, ulong pageCount, bool writable, PinAccounting accounting)
{
    private int[]? _pins;

    /// <summary>The page-aligned start of the user memory.</summary>
    public ulong Uptr { get; } = uptr;

    public ulong PageCount { get; } = pageCount;

    public bool Writable { get; } = writable;

    public PinAccounting Accounting { get; } = accounting;

    /// <summary>Counts the pins of pages [first, last]; returns how many went from unpinned to pinned.</summary>
    public ulong Pin(ulong first, ulong last, int delta)
    {
        _pins ??= new int[PageCount];
        ulong changed = 0;
        for (ulong i = first; i <= last; i++)
        {
            int before = _pins[i];
            _pins[i] += delta;
            if ((before == 0) != (_pins[i] == 0))
            {
                changed++;
            }
        }
        return changed;
    }

    /// <summary>How many of pages [first, last] are not pinned yet.</summary>
    public ulong Unpinned(ulong first, ulong last)
    {
        ulong count = 0;
        for (ulong i = first; i <= last; i++)
        {
            if (_pins is null || _pins[i] == 0)
            {
                count++;
            }
        }
        return count;
    }
}

/// <summary>
/// One mapping of an IOAS (struct iopt_area): a slice of an <see cref="IoasPages"/> at an IOVA.
/// Pinned (and reachable by devices) while the IOAS has a hardware page table.
/// </summary>
internal sealed class IoasArea(ulong iova, ulong length, IoasPages pages, ulong startByte, bool read, bool write)
{
    public ulong Iova { get; } = iova;

    public ulong Length { get; } = length;

    public ulong Last => Iova + Length - 1;

    public IoasPages Pages { get; } = pages;

    /// <summary>Where the slice starts, in bytes from <see cref="IoasPages.Uptr"/>.</summary>
    public ulong StartByte { get; } = startByte;

    public bool Read { get; } = read;

    public bool Write { get; } = write;

    /// <summary>The pinned memory while the IOAS has a domain, or null.</summary>
    public DmaMapping? Pinned { get; set; }

    public ulong FirstPage => StartByte / SimulatedKernel.PageSize;

    public ulong LastPage => (StartByte + Length - 1) / SimulatedKernel.PageSize;

    public ulong UserVa => Pages.Uptr + StartByte;
}

/// <summary>
/// An IO address space (struct iommufd_ioas and its io_pagetable), as Linux 7.x's
/// drivers/iommu/iommufd/io_pagetable.c keeps it: the areas sorted by IOVA, the reserved ranges
/// (each with its owner: a page table's aperture or a device's reserved regions), the allowed ranges,
/// the IOVA alignment (1 until a page table joins, then the IOMMU's smallest page) and the hardware
/// page tables (domains) that hold its mappings. Pages are pinned only while a domain exists: a map
/// into an IOAS without one only records the range, and the first domain pins everything.
/// </summary>
internal sealed class IoasObject : IommufdObject, IDmaMappings
{
    private const ulong PageSize = SimulatedKernel.PageSize;

    /// <summary>The largest alignment automatic IOVA allocation asks for (HPAGE_SIZE with transparent hugepages).</summary>
    private const ulong MaxAllocAlignment = SimulatedKernel.HugePageSize;

    private readonly List<IoasArea> _areas = [];
    private readonly List<(ulong Start, ulong Last, object Owner)> _reserved = [];
    private List<(ulong Start, ulong Last)> _allowed = [];
    private readonly List<HwptObject> _domains = [];

    public IoasObject(IommufdContext context)
        : base(context)
    {
    }

    public override string Kind => "IOAS";

    public ulong IovaAlignment { get; private set; } = 1;

    public bool LargePagesDisabled { get; private set; }

    public IReadOnlyList<IoasArea> Areas => _areas;

    public IReadOnlyList<HwptObject> Domains => _domains;

    private SimulatedKernel Kernel => Context.Kernel;

    public override string Describe() =>
        $"IOAS {Id}: {_areas.Count} mapping(s), {_domains.Count} page table(s)";

    /// <inheritdoc/>
    public DmaMapping? Find(ulong iova)
    {
        Kernel.AssertLocked();
        int i = FloorIndex(iova);
        return i >= 0 && _areas[i].Last >= iova ? _areas[i].Pinned : null;
    }

    // ---- Ranges ------------------------------------------------------------------------------

    /// <summary>The usable IOVA ranges: the holes of the reserved ranges (iommufd_ioas_iova_ranges).</summary>
    public List<(ulong Start, ulong Last)> UsableRanges()
    {
        Kernel.AssertLocked();
        var result = new List<(ulong, ulong)>();
        ulong next = 0;
        bool done = false;
        foreach (var (start, last) in Merge(_reserved.Select(r => (r.Start, r.Last))))
        {
            if (start > next)
            {
                result.Add((next, start - 1));
            }
            if (last == ulong.MaxValue)
            {
                done = true;
                break;
            }
            next = Math.Max(next, last + 1);
        }
        if (!done)
        {
            result.Add((next, ulong.MaxValue));
        }
        return result;
    }

    /// <summary>IOMMU_IOAS_ALLOW_IOVAS (iommufd_ioas_load_iovas, iopt_set_allow_iova): replaces the allowed list.</summary>
    public int SetAllowed(IReadOnlyList<(ulong Start, ulong Last)> ranges)
    {
        Kernel.AssertLocked();
        var loaded = new List<(ulong Start, ulong Last)>();
        foreach (var (start, last) in ranges)
        {
            if (start >= last || loaded.Any(r => Intersects(r.Start, r.Last, start, last)))
            {
                return -Errno.EINVAL;
            }
            loaded.Add((start, last));
        }
        if (loaded.Any(a => _reserved.Any(r => Intersects(r.Start, r.Last, a.Start, a.Last))))
        {
            return -Errno.EADDRINUSE;
        }
        _allowed = [.. loaded.OrderBy(r => r.Start)];
        return 0;
    }

    /// <summary>iopt_reserve_iova: fails with EADDRINUSE where a mapping or an allowed range is.</summary>
    public int Reserve(ulong start, ulong last, object owner)
    {
        Kernel.AssertLocked();
        if (_areas.Any(a => Intersects(a.Iova, a.Last, start, last)) || _allowed.Any(a => Intersects(a.Start, a.Last, start, last)))
        {
            return -Errno.EADDRINUSE;
        }
        _reserved.Add((start, last, owner));
        return 0;
    }

    public void RemoveReserved(object owner)
    {
        Kernel.AssertLocked();
        _reserved.RemoveAll(r => ReferenceEquals(r.Owner, owner));
    }

    /// <summary>A device's reserved regions (iopt_table_enforce_dev_resv_regions): the holes between the IOMMU's usable ranges, e.g. the MSI window.</summary>
    public int ReserveDeviceRegions(object owner)
    {
        Kernel.AssertLocked();
        var usable = Kernel.IovaRanges;
        for (int i = 1; i < usable.Count; i++)
        {
            if (usable[i].Start > usable[i - 1].End + 1)
            {
                int r = Reserve(usable[i - 1].End + 1, usable[i].Start - 1, owner);
                if (r < 0)
                {
                    RemoveReserved(owner);
                    return r;
                }
            }
        }
        return 0;
    }

    // ---- Map, copy, unmap --------------------------------------------------------------------

    /// <summary>iopt_map_user_pages: maps [userVa, userVa + length) at iova (in with FIXED_IOVA, out otherwise).</summary>
    public int Map(ulong userVa, ulong length, ref ulong iova, uint flags)
    {
        Kernel.AssertLocked();
        if (userVa + length < userVa)
        {
            return -Errno.EOVERFLOW;
        }
        // iopt_alloc_pages: the iommu API uses size_t lengths, kept clear of DIV_ROUND_UP's overflow.
        if (length == 0 || length > ulong.MaxValue - PageSize)
        {
            return -Errno.EINVAL;
        }
        ulong uptr = userVa & ~(PageSize - 1);
        ulong startByte = userVa - uptr;
        bool writable = (flags & IommufdUapi.IOMMU_IOAS_MAP_WRITEABLE) != 0;
        var pages = new IoasPages(uptr, (length + startByte + PageSize - 1) / PageSize, writable, Context.Accounting);
        return MapSlices([(pages, startByte, length)], length, ref iova, flags);
    }

    /// <summary>
    /// iopt_get_pages: the slices of the areas that cover [iova, iova + length) without a gap,
    /// starting in the area that holds iova; ENOENT when they do not cover it.
    /// </summary>
    public int Slices(ulong iova, ulong length, out List<(IoasPages Pages, ulong StartByte, ulong Length)> slices)
    {
        Kernel.AssertLocked();
        slices = [];
        if (length == 0)
        {
            return -Errno.EINVAL;
        }
        ulong last = iova + length - 1;
        if (last < iova)
        {
            return -Errno.EOVERFLOW;
        }
        ulong cursor = iova;
        int i = FloorIndex(iova);
        while (i >= 0 && i < _areas.Count && _areas[i].Iova <= cursor && _areas[i].Last >= cursor)
        {
            var area = _areas[i];
            ulong end = Math.Min(last, area.Last);
            slices.Add((area.Pages, area.StartByte + (cursor - area.Iova), end - cursor + 1));
            if (end == last)
            {
                return 0;
            }
            cursor = end + 1;
            i++;
        }
        slices.Clear();
        return -Errno.ENOENT;
    }

    /// <summary>iopt_map_pages: inserts one area per slice, back to back from iova, and pins them if a domain exists.</summary>
    public int MapSlices(List<(IoasPages Pages, ulong StartByte, ulong Length)> slices, ulong length, ref ulong iova, uint flags)
    {
        Kernel.AssertLocked();
        bool read = (flags & IommufdUapi.IOMMU_IOAS_MAP_READABLE) != 0;
        bool write = (flags & IommufdUapi.IOMMU_IOAS_MAP_WRITEABLE) != 0;
        // iopt_alloc_area_pages
        if ((length & (IovaAlignment - 1)) != 0 || length == 0)
        {
            return -Errno.EINVAL;
        }
        if ((flags & IommufdUapi.IOMMU_IOAS_MAP_FIXED_IOVA) == 0)
        {
            int r = AllocateIova(slices[0].Pages.Uptr + slices[0].StartByte, length, out iova);
            if (r < 0)
            {
                return r;
            }
        }
        else
        {
            int r = CheckIova(iova, length);
            if (r < 0)
            {
                return r;
            }
        }
        var added = new List<IoasArea>();
        ulong at = iova;
        foreach (var (pages, startByte, sliceLength) in slices)
        {
            // iopt_insert_area
            int r = write && !pages.Writable ? -Errno.EPERM
                : ((startByte % PageSize) & (IovaAlignment - 1)) != 0 ? -Errno.EINVAL
                : 0;
            if (r < 0)
            {
                foreach (var a in added)
                {
                    _areas.Remove(a);
                }
                return r;
            }
            var area = new IoasArea(at, sliceLength, pages, startByte, read, write);
            _areas.Insert(FloorIndex(at) + 1, area);
            added.Add(area);
            at += sliceLength;
        }
        // iopt_fill_domains_pages: a domain needs the pages now.
        if (_domains.Count > 0)
        {
            int r = PinAll(added);
            if (r < 0)
            {
                foreach (var a in added)
                {
                    _areas.Remove(a);
                }
                return r;
            }
        }
        return 0;
    }

    /// <summary>iopt_unmap_iova_range: unmaps whole areas inside [start, last]; an area that sticks out ends it with ENOENT.</summary>
    public int Unmap(ulong start, ulong last, out ulong unmapped)
    {
        Kernel.AssertLocked();
        unmapped = 0;
        while (true)
        {
            int i = FirstIntersecting(start, last);
            if (i < 0)
            {
                return 0;
            }
            var area = _areas[i];
            if (area.Iova < start || area.Last > last)
            {
                return -Errno.ENOENT; // what was unmapped before stays unmapped
            }
            Unpin(area);
            _areas.RemoveAt(i);
            unmapped += area.Length;
            if (area.Last >= last)
            {
                return 0;
            }
            start = area.Last + 1;
        }
    }

    /// <summary>Unmaps everything (iopt_unmap_all), as IOMMU_DESTROY and the file's release do.</summary>
    public ulong UnmapAll()
    {
        Kernel.AssertLocked();
        _ = Unmap(0, ulong.MaxValue, out ulong unmapped);
        return unmapped;
    }

    // ---- Domains (hardware page tables) -----------------------------------------------------

    /// <summary>
    /// iopt_table_add_domain: the IOVA alignment grows to the IOMMU's smallest page (existing areas must
    /// conform: EADDRINUSE), the aperture's outside is reserved, and the first domain pins every area.
    /// </summary>
    public int AddDomain(HwptObject hwpt)
    {
        Kernel.AssertLocked();
        ulong pageSizes = Kernel.IommuPageSizes;
        ulong newAlignment = Math.Max(pageSizes & (~pageSizes + 1), IovaAlignment);
        if (newAlignment > PageSize)
        {
            return -Errno.EINVAL;
        }
        if (newAlignment != IovaAlignment && !AreasAligned(newAlignment))
        {
            return -Errno.EADDRINUSE;
        }
        var usable = Kernel.IovaRanges;
        if (usable.Count > 0)
        {
            int r = usable[0].Start != 0 ? Reserve(0, usable[0].Start - 1, hwpt) : 0;
            if (r == 0 && usable[^1].End != ulong.MaxValue)
            {
                r = Reserve(usable[^1].End + 1, ulong.MaxValue, hwpt);
            }
            if (r < 0)
            {
                RemoveReserved(hwpt);
                return r;
            }
        }
        if (_domains.Count == 0)
        {
            int r = PinAll(_areas);
            if (r < 0)
            {
                RemoveReserved(hwpt);
                return r;
            }
        }
        IovaAlignment = newAlignment;
        _domains.Add(hwpt);
        return 0;
    }

    /// <summary>iopt_table_remove_domain: the last domain unpins every area; the alignment is computed again.</summary>
    public void RemoveDomain(HwptObject hwpt)
    {
        Kernel.AssertLocked();
        if (!_domains.Remove(hwpt))
        {
            return;
        }
        if (_domains.Count == 0)
        {
            foreach (var area in _areas)
            {
                Unpin(area);
            }
        }
        RemoveReserved(hwpt);
        _ = RecalculateAlignment();
    }

    /// <summary>IOMMU_OPTION_HUGE_PAGES set (iopt_disable_large_pages, iopt_enable_large_pages).</summary>
    public int SetLargePages(bool enabled)
    {
        Kernel.AssertLocked();
        if (enabled)
        {
            LargePagesDisabled = false;
            _ = RecalculateAlignment();
            return 0;
        }
        if (LargePagesDisabled)
        {
            return 0;
        }
        // Not once domains hold mappings.
        if (_domains.Count > 0 && _areas.Count > 0)
        {
            return -Errno.EINVAL;
        }
        LargePagesDisabled = true;
        int r = RecalculateAlignment();
        if (r < 0)
        {
            LargePagesDisabled = false;
        }
        return r;
    }

    /// <summary>Tears the IOAS down (iommufd_ioas_destroy): every area unmapped and unpinned.</summary>
    public override void Destroy() => UnmapAll();

    // ---- Internals ---------------------------------------------------------------------------

    /// <summary>iopt_calculate_iova_alignment.</summary>
    private int RecalculateAlignment()
    {
        ulong alignment = LargePagesDisabled ? PageSize : 1;
        if (_domains.Count > 0)
        {
            ulong pageSizes = Kernel.IommuPageSizes;
            alignment = Math.Max(alignment, pageSizes & (~pageSizes + 1));
        }
        if (alignment > IovaAlignment && !AreasAligned(alignment))
        {
            return -Errno.EADDRINUSE;
        }
        IovaAlignment = alignment;
        return 0;
    }

    private bool AreasAligned(ulong alignment) =>
        _areas.All(a => ((a.Iova | a.Length | (a.StartByte % PageSize)) & (alignment - 1)) == 0);

    /// <summary>iopt_check_iova: a fixed IOVA must be aligned, clear of reserved ranges (EINVAL) and unmapped (EEXIST).</summary>
    private int CheckIova(ulong iova, ulong length)
    {
        if ((iova & (IovaAlignment - 1)) != 0)
        {
            return -Errno.EINVAL;
        }
        ulong last = iova + length - 1;
        if (last < iova)
        {
            return -Errno.EOVERFLOW;
        }
        if (_reserved.Any(r => Intersects(r.Start, r.Last, iova, last)))
        {
            return -Errno.EINVAL;
        }
        return FirstIntersecting(iova, last) >= 0 ? -Errno.EEXIST : 0;
    }

    /// <summary>
    /// iopt_alloc_iova: the lowest free IOVA (never 0) inside the allowed ranges, outside reserved
    /// ranges and areas, aligned like the user address (up to 2 MiB) so huge pages stay possible,
    /// keeping the address's offset within its page.
    /// </summary>
    private int AllocateIova(ulong addr, ulong length, out ulong iova)
    {
        iova = 0;
        ulong pageOffset = addr % PageSize;
        if (length == 0 || length >= ulong.MaxValue / 2)
        {
            return -Errno.EOVERFLOW;
        }
        ulong alignment = RoundUpPowerOfTwo(length);
        if (addr != 0)
        {
            alignment = Math.Min(alignment, addr & (~addr + 1));
        }
        alignment = Math.Min(alignment, MaxAllocAlignment);
        if (alignment < IovaAlignment)
        {
            return -Errno.EINVAL;
        }
        const ulong First = PageSize;
        const ulong Last = ulong.MaxValue - PageSize;
        var allowed = _allowed.Count == 0
            ? [(First, Last)]
            : Merge(_allowed).Where(a => a.Last >= First && a.Start <= Last).Select(a => (Math.Max(a.Start, First), Math.Min(a.Last, Last))).ToList();
        var used = Merge(_reserved.Select(r => (r.Start, r.Last)).Concat(_areas.Select(a => (a.Iova, a.Last))));
        foreach (var (allowedStart, allowedLast) in allowed)
        {
            ulong spanStart = allowedStart;
            if (!FitsAligned(ref spanStart, allowedLast, length, alignment, pageOffset))
            {
                continue;
            }
            ulong holeStart = spanStart;
            foreach (var (start, last) in used.Where(u => u.Last >= spanStart && u.Start <= allowedLast).Append((allowedLast + 1, allowedLast + 1)))
            {
                if (start > holeStart)
                {
                    ulong candidate = holeStart;
                    if (FitsAligned(ref candidate, Math.Min(start - 1, allowedLast), length, alignment, pageOffset))
                    {
                        iova = candidate;
                        return 0;
                    }
                }
                if (last == ulong.MaxValue)
                {
                    break;
                }
                holeStart = Math.Max(holeStart, last + 1);
            }
        }
        return -Errno.ENOSPC;
    }

    /// <summary>__alloc_iova_check_range.</summary>
    private static bool FitsAligned(ref ulong start, ulong last, ulong length, ulong alignment, ulong pageOffset)
    {
        if (start + (alignment - 1) < start)
        {
            return false;
        }
        ulong aligned = ((start + alignment - 1) & ~(alignment - 1)) | pageOffset;
        if (aligned >= last || last - aligned < length - 1)
        {
            return false;
        }
        start = aligned;
        return true;
    }

    private int PinAll(IEnumerable<IoasArea> areas)
    {
        var pinned = new List<IoasArea>();
        foreach (var area in areas)
        {
            int r = Pin(area);
            if (r < 0)
            {
                foreach (var done in pinned)
                {
                    Unpin(done);
                }
                return r;
            }
            pinned.Add(area);
        }
        return 0;
    }

    /// <summary>
    /// Pins an area's pages (pin_user_pages: EFAULT where nothing is mapped) and charges the newly
    /// pinned ones to RLIMIT_MEMLOCK in the pages' accounting mode (ENOMEM beyond the limit).
    /// </summary>
    private int Pin(IoasArea area)
    {
        if (area.Pinned is not null)
        {
            return 0;
        }
        var vma = Kernel.FindAnonymousLocked(area.UserVa, area.Length);
        if (vma is null)
        {
            return -Errno.EFAULT;
        }
        ulong charge = area.Pages.Unpinned(area.FirstPage, area.LastPage) * PageSize;
        if (!Kernel.TryChargePinnedLocked(area.Pages.Accounting, charge))
        {
            return -Errno.ENOMEM;
        }
        area.Pages.Pin(area.FirstPage, area.LastPage, +1);
        vma.Memory!.Get();
        area.Pinned = new DmaMapping(area.Iova, area.Length, area.UserVa, area.Read, area.Write, vma.Memory);
        return 0;
    }

    private void Unpin(IoasArea area)
    {
        if (area.Pinned is not { } pinned)
        {
            return;
        }
        ulong released = area.Pages.Pin(area.FirstPage, area.LastPage, -1);
        Kernel.UnchargePinnedLocked(area.Pages.Accounting, released * PageSize);
        pinned.Memory.Put();
        area.Pinned = null;
    }

    private int FirstIntersecting(ulong start, ulong last)
    {
        int i = FloorIndex(start);
        if (i >= 0 && _areas[i].Last >= start)
        {
            return i;
        }
        i++;
        return i < _areas.Count && _areas[i].Iova <= last ? i : -1;
    }

    /// <summary>The index of the last area starting at or below <paramref name="iova"/>, or -1.</summary>
    private int FloorIndex(ulong iova) => IovaOrder.Floor(_areas, iova, static a => a.Iova);

    private static bool Intersects(ulong aStart, ulong aLast, ulong bStart, ulong bLast) => aStart <= bLast && bStart <= aLast;

    /// <summary>The union of the intervals, sorted, with touching ones joined.</summary>
    private static List<(ulong Start, ulong Last)> Merge(IEnumerable<(ulong Start, ulong Last)> intervals)
    {
        var merged = new List<(ulong Start, ulong Last)>();
        foreach (var (start, last) in intervals.OrderBy(i => i.Start))
        {
            if (merged.Count > 0 && (merged[^1].Last == ulong.MaxValue || start <= merged[^1].Last + 1))
            {
                merged[^1] = (merged[^1].Start, Math.Max(merged[^1].Last, last));
            }
            else
            {
                merged.Add((start, last));
            }
        }
        return merged;
    }

    private static ulong RoundUpPowerOfTwo(ulong value) =>
        value <= 1 ? 1 : 1UL << (64 - System.Numerics.BitOperations.LeadingZeroCount(value - 1));
}
