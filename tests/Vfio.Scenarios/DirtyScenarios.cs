using System.Runtime.InteropServices;
using Vfio.Interop;
using static Vfio.Interop.VfioUapi;

namespace Vfio.Scenarios;

/// <summary>
/// Dirty page tracking of the type1 IOMMU (<c>VFIO_IOMMU_DIRTY_PAGES</c> and the dirty bitmap of
/// <c>VFIO_IOMMU_UNMAP_DMA</c>): through the library's <see cref="DirtyPageTracking"/> on the edu
/// device's container, and at the errno level the checks the kernel makes of page sizes, bitmap
/// sizes and ranges. type1 cannot see device writes: with a vfio-pci device in the container every
/// mapped page reads dirty at every read, the same on Linux 6.1 and 7.x. iommufd's compatibility
/// container has no type1 dirty tracking at all, which the scenarios check where the kernel has it.
/// </summary>
internal static unsafe class DirtyScenarios
{
    /// <summary>DIRTY_BITMAP_SIZE_MAX: the bitmap bytes for INT_MAX pages.</summary>
    private const ulong MaxBitmapBytes = 256UL << 20;

    private const ulong Page = 4096;

    /// <summary>The scenarios that track through the library's container: they skip in mode iommufd, which has none.</summary>
    public static IReadOnlyList<Scenario> InTheContainer { get; } =
    [
        new("dirty_type1_reports_every_mapped_page", EveryMappedPageDirty),
        new("dirty_type1_unmap_reports_the_buffer", UnmapReportsTheBuffer),
    ];

    /// <summary>Every dirty tracking scenario, in the order they run.</summary>
    public static IReadOnlyList<Scenario> All { get; } =
    [
        .. InTheContainer,
        new("dirty_type1_kernel_checks_page_and_bitmap_sizes", KernelChecks),
        new("dirty_type1_one_read_over_mappings_off_a_bitmap_word_is_stale", StaleMultiMappingRead),
        new("dirty_type1_needs_type1v2", NeedsType1v2),
    ];

    public static Task EveryMappedPageDirty(ScenarioContext context) => EduScenarios.WithOpenEduAsync(InContainer(context), device =>
    {
        VfioContainer container = device.Group!.Container!;
        if (context.IommufdServesContainer)
        {
            var refused = Check.Throws<VfioNotSupportedException>(() => container.StartDirtyPageTracking(), "StartDirtyPageTracking on iommufd's compatibility container");
            context.Note(refused.Message);
            return Task.CompletedTask;
        }
        using DmaBuffer a = device.AllocateDmaBuffer(4 * Page);
        using DmaBuffer b = device.AllocateDmaBuffer(2 * Page, DmaAccess.DeviceReads);
        using DmaBuffer c = device.AllocateDmaBuffer(Page, DmaAccess.DeviceWrites);
        using (DirtyPageTracking tracking = container.StartDirtyPageTracking())
        {
            Check.Equal(Page, tracking.PageSize, "the tracking page size (the IOMMU's smallest)");
            Check.Equal(MaxBitmapBytes, tracking.MaxBitmapBytes, "the largest bitmap the kernel takes");
            Check.Throws<InvalidOperationException>(() => container.StartDirtyPageTracking(), "a second start while tracking");

            // No device has written anything; type1 says every page is dirty, and says it again.
            for (int read = 1; read <= 2; read++)
            {
                DirtyPageBitmap bits = tracking.Read(a);
                Check.True(bits.AllDirty && bits.PageCount == 4, $"read {read} of a 4-page buffer: {bits}");
            }

            // A range over all three buffers and whatever lies between: the buffers' pages, nothing else.
            ulong start = Math.Min(a.Iova, Math.Min(b.Iova, c.Iova));
            ulong end = Math.Max(a.Iova + a.Length, Math.Max(b.Iova + b.Length, c.Iova + c.Length));
            DirtyPageBitmap all = tracking.Read(start, end - start);
            Check.Equal(7, all.DirtyPageCount, $"dirty pages over 0x{start:x}-0x{end:x}");
            foreach (ulong page in all.DirtyPages())
            {
                Check.True(new[] { a, b, c }.Any(buffer => page >= buffer.Iova && page < buffer.Iova + buffer.Length), $"page 0x{page:x} is outside every buffer but dirty");
            }
            context.Note(FormattableString.Invariant($"buffers at 0x{a.Iova:x}, 0x{b.Iova:x}, 0x{c.Iova:x}: {all}"));

            // Two buffers 16 pages apart, with gaps between and after them, read together again and again:
            // only their pages, at every read. (One kernel call over both would report pages of the gaps
            // from the second read on: dirty_type1_one_read_over_mappings_off_a_bitmap_word_is_stale.)
            const ulong Base = 0x800000;
            using DmaBuffer d = device.AllocateDmaBuffer(8 * Page, iova: Base);
            using DmaBuffer e = device.AllocateDmaBuffer(4 * Page, iova: Base + (16 * Page));
            for (int read = 1; read <= 3; read++)
            {
                DirtyPageBitmap two = tracking.Read(Base, 32 * Page);
                context.Note(FormattableString.Invariant($"read {read} of 0x{Base:x}+32 pages: {two}, words 0x{two.Words[0]:x}"));
                Check.Equal(0xf00ffUL, two.Words[0], $"read {read} of buffers at pages 0-7 and 16-19 of 32");
            }

            // A range that cuts a buffer is refused by the kernel, and the error says what the range must be.
            var cut = Check.Throws<VfioException>(() => tracking.Read(a.Iova + Page, Page), "a read of a range cutting a buffer");
            Check.Equal(Errno.EINVAL, cut.Errno, "errno of a range cutting a buffer");
            Check.True(cut.Message.Contains("whole mappings", StringComparison.Ordinal), "the error does not say why: " + cut.Message);
            Check.Throws<ArgumentException>(() => tracking.Read(a.Iova + 0x800, Page), "a misaligned range");
        }
        return Task.CompletedTask;
    });

    public static Task UnmapReportsTheBuffer(ScenarioContext context) => EduScenarios.WithOpenEduAsync(InContainer(context), device =>
    {
        VfioContainer container = device.Group!.Container!;
        if (context.IommufdServesContainer)
        {
            Check.Throws<VfioNotSupportedException>(() => container.StartDirtyPageTracking(), "StartDirtyPageTracking on iommufd's compatibility container");
            return Task.CompletedTask;
        }
        using DmaBuffer kept = device.AllocateDmaBuffer(2 * Page);
        using DmaBuffer dropped = device.AllocateDmaBuffer(3 * Page);
        int mappings = container.DmaMappingCount;
        var tracking = container.StartDirtyPageTracking();
        DirtyPageBitmap bits;
        using (tracking)
        {
            bits = tracking.Unmap(dropped);
            Check.True(bits.AllDirty && bits.PageCount == 3, "the unmapped buffer's bitmap: " + bits);
            Check.True(!dropped.IsMapped, "the buffer is still mapped after Unmap");
            Check.Equal(mappings - 1, container.DmaMappingCount, "mappings after the unmap");
            Check.True(dropped.Span.Length == (int)(3 * Page), "the unmapped buffer's memory is gone");
            Check.Throws<ArgumentException>(() => tracking.Unmap(dropped), "a second unmap of the same buffer");
            Check.True(tracking.Read(kept).AllDirty, "the remaining buffer is not all dirty");
        }
        Check.True(!tracking.IsActive, "tracking is active after Dispose");
        Check.Throws<ObjectDisposedException>(() => tracking.Read(kept), "a read after the tracking stopped");

        // Stopped tracking: the kernel refuses a read. Started again, it reports again.
        using (var again = container.StartDirtyPageTracking())
        {
            Check.True(again.Read(kept).AllDirty, "the buffer after tracking restarted");
        }
        context.Note("unmapped " + bits);
        return Task.CompletedTask;
    });

    public static void KernelChecks(ScenarioContext context)
    {
        const ulong Iova = 0x400000;
        // The second mapping starts 64 pages (one bitmap word) after the first: type1 shifts a mapping's own
        // bitmap in place to its bit offset in the caller's and clears only its first bits afterwards, so a
        // mapping at an offset that is not a multiple of 64 reads stale bits at the next read
        // (dirty_type1_one_read_over_mappings_off_a_bitmap_word_is_stale).
        using var files = TwoMappings(context, Iova, 64);
        var bitmap = new ulong[4];
        if (context.IommufdServesContainer)
        {
            // vfio_compat.c: VFIO_IOMMU_DIRTY_PAGES is not one of its ioctls, and its unmap takes only FLAG_ALL.
            Check.Fails(Dirty(files, VFIO_IOMMU_DIRTY_PAGES_FLAG_START), Errno.ENOTTY, "DIRTY_PAGES START on iommufd's compatibility container");
            Check.Fails(UnmapDirty(files, Iova, 8 * Page, Page, bitmap), Errno.EINVAL, "UNMAP_DMA with GET_DIRTY_BITMAP on iommufd's compatibility container");
            return;
        }

        // Before START there is nothing to read.
        Check.Fails(GetBitmap(files, Iova, 8 * Page, Page, bitmap), Errno.EINVAL, "GET_BITMAP before START");
        Check.Fails(UnmapDirty(files, Iova, 8 * Page, Page, bitmap), Errno.EINVAL, "UNMAP_DMA with a bitmap before START");
        Check.Fails(Dirty(files, VFIO_IOMMU_DIRTY_PAGES_FLAG_START | VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP), Errno.EINVAL, "DIRTY_PAGES with START and STOP");
        Check.Fails(Dirty(files, 0), Errno.EINVAL, "DIRTY_PAGES without a flag");
        Check.Fails(Dirty(files, 1u << 3), Errno.EINVAL, "DIRTY_PAGES with an unknown flag");
        Check.Ok(Dirty(files, VFIO_IOMMU_DIRTY_PAGES_FLAG_START), "DIRTY_PAGES START");
        Check.Ok(Dirty(files, VFIO_IOMMU_DIRTY_PAGES_FLAG_START), "DIRTY_PAGES START while started");

        // Page size: only the IOMMU's smallest. Bitmap size: not 0, at least a bit per page in whole
        // 64-bit words, at most DIRTY_BITMAP_SIZE_MAX. Range: aligned, not empty, whole mappings.
        Check.Fails(GetBitmap(files, Iova, 8 * Page, 2 * Page, bitmap), Errno.EINVAL, "GET_BITMAP at twice the page size");
        Check.Fails(GetBitmap(files, Iova, 8 * Page, 2UL << 20, bitmap), Errno.EINVAL, "GET_BITMAP at 2 MiB pages");
        Check.Fails(GetBitmap(files, Iova, 8 * Page, Page, bitmap, bitmapBytes: 0), Errno.EINVAL, "GET_BITMAP with a bitmap of 0 bytes");
        Check.Fails(GetBitmap(files, Iova, 128 * Page, Page, bitmap, bitmapBytes: 8), Errno.EINVAL, "GET_BITMAP of 128 pages into 64 bits");
        Check.Fails(GetBitmap(files, Iova, 8 * Page, Page, bitmap, bitmapBytes: MaxBitmapBytes + 8), Errno.EINVAL, "GET_BITMAP with a bitmap over DIRTY_BITMAP_SIZE_MAX");
        Check.Fails(GetBitmap(files, Iova + 0x800, 8 * Page, Page, bitmap), Errno.EINVAL, "GET_BITMAP at a misaligned IOVA");
        Check.Fails(GetBitmap(files, Iova, 0, Page, bitmap), Errno.EINVAL, "GET_BITMAP of 0 bytes");
        Check.Fails(GetBitmap(files, Iova + Page, 4 * Page, Page, bitmap), Errno.EINVAL, "GET_BITMAP of a range starting inside a mapping");
        Check.Fails(GetBitmap(files, Iova, 4 * Page, Page, bitmap), Errno.EINVAL, "GET_BITMAP of a range ending inside a mapping");
        Check.Fails(Dirty(files, VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP), Errno.EINVAL, "GET_BITMAP without its range (argsz of the header alone)");

        // The whole span: both mappings' pages, not the gap; a second read says the same.
        for (int read = 1; read <= 2; read++)
        {
            Array.Clear(bitmap);
            Check.Ok(GetBitmap(files, Iova, 68 * Page, Page, bitmap), "GET_BITMAP of both mappings and the gap");
            Check.Equal(0xffUL, bitmap[0], $"bitmap word 0 of read {read} (pages 0-7 dirty)");
            Check.Equal(0xfUL, bitmap[1], $"bitmap word 1 of read {read} (pages 64-67 dirty)");
        }
        // Exactly the bytes a bitmap needs, in whole words, are enough.
        Array.Clear(bitmap);
        Check.Ok(GetBitmap(files, Iova, 8 * Page, Page, bitmap, bitmapBytes: 8), "GET_BITMAP of 8 pages into one word");
        Check.Equal(0xffUL, bitmap[0], "bitmap of the first mapping alone");

        // The unmap's bitmap: the same rules (and never with FLAG_ALL); the mapping stays when refused.
        Check.Fails(UnmapDirty(files, Iova, 8 * Page, 2 * Page, bitmap), Errno.EINVAL, "UNMAP_DMA with a bitmap at twice the page size");
        Check.Fails(UnmapDirty(files, Iova, 8 * Page, Page, bitmap, bitmapBytes: 0), Errno.EINVAL, "UNMAP_DMA with a bitmap of 0 bytes");
        Check.Fails(UnmapDirty(files, 0, 0, Page, bitmap, flags: VFIO_DMA_UNMAP_FLAG_ALL), Errno.EINVAL, "UNMAP_DMA with a bitmap and FLAG_ALL");
        Check.Fails(UnmapDirty(files, Iova, 8 * Page, Page, bitmap, withBitmap: false), Errno.EINVAL, "UNMAP_DMA with GET_DIRTY_BITMAP but no vfio_bitmap after it");
        Array.Clear(bitmap);
        Check.Ok(UnmapDirty(files, Iova, 8 * Page, Page, bitmap, out ulong unmapped), "UNMAP_DMA of the first mapping with its bitmap");
        Check.Equal(8 * Page, unmapped, "bytes unmapped");
        Check.Equal(0xffUL, bitmap[0], "the unmapped mapping's bitmap");

        // STOP: reads are refused again; STOP twice is fine.
        Check.Ok(Dirty(files, VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP), "DIRTY_PAGES STOP");
        Check.Ok(Dirty(files, VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP), "DIRTY_PAGES STOP while stopped");
        Check.Fails(GetBitmap(files, Iova + 64 * Page, 4 * Page, Page, bitmap), Errno.EINVAL, "GET_BITMAP after STOP");
        Check.Ok(files.UnmapDma(Iova + 64 * Page, 4 * Page, out _), "VFIO_IOMMU_UNMAP_DMA of the second mapping");
    }

    /// <summary>
    /// type1's GET_BITMAP over two mappings, the second 16 pages after the first (not a multiple of 64):
    /// update_user_bitmap shifts the second mapping's own bitmap left in place by 16 and ORs in the
    /// caller's word (the first mapping's bits), and vfio_iova_dirty_bitmap clears only its 4 pages'
    /// bits afterwards. The first read is right; the second reports pages 20-23 and 32-35, which no
    /// mapping holds, and the neighbours' pages shifted along. Reading each mapping from its own start
    /// (what DirtyPageTracking.Read does) never shifts, and masked to the mapping's pages is exact
    /// even after the stale reads (the kernel copies whole words, stale bits and all).
    /// </summary>
    public static void StaleMultiMappingRead(ScenarioContext context)
    {
        context.SkipOnIommufdCompat("it has no VFIO_IOMMU_DIRTY_PAGES at all (ENOTTY, checked by dirty_type1_kernel_checks_page_and_bitmap_sizes)");
        const ulong Iova = 0x800000;
        using var files = TwoMappings(context, Iova, 16);
        Check.Ok(Dirty(files, VFIO_IOMMU_DIRTY_PAGES_FLAG_START), "DIRTY_PAGES START");
        var bitmap = new ulong[1];
        ulong[] expected = [0xf00ffUL, 0xf00ff00ffUL, 0xf00ff00ff00ffUL];
        for (int read = 0; read < expected.Length; read++)
        {
            Array.Clear(bitmap);
            Check.Ok(GetBitmap(files, Iova, 20 * Page, Page, bitmap), $"GET_BITMAP of both mappings, read {read + 1}");
            context.Note(FormattableString.Invariant($"read {read + 1} of pages 0-19: 0x{bitmap[0]:x}"));
            Check.Equal(expected[read], bitmap[0], $"read {read + 1} of pages 0-7 and 16-19 in one call (type1's stale bits)");
        }
        Array.Clear(bitmap);
        Check.Ok(GetBitmap(files, Iova + (16 * Page), 4 * Page, Page, bitmap), "GET_BITMAP of the second mapping alone");
        context.Note(FormattableString.Invariant($"the second mapping alone, from its start: 0x{bitmap[0]:x}"));
        Check.Equal(0xfUL, bitmap[0] & 0xf, "the second mapping's 4 pages, read from its start");
        Array.Clear(bitmap);
        Check.Ok(GetBitmap(files, Iova, 8 * Page, Page, bitmap), "GET_BITMAP of the first mapping alone");
        Check.Equal(0xffUL, bitmap[0], "the first mapping's 8 pages, read from its start");
        Check.Ok(Dirty(files, VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP), "DIRTY_PAGES STOP");
        Check.Ok(files.UnmapDma(Iova, 8 * Page, out _), "VFIO_IOMMU_UNMAP_DMA of the first mapping");
        Check.Ok(files.UnmapDma(Iova + (16 * Page), 4 * Page, out _), "VFIO_IOMMU_UNMAP_DMA of the second mapping");
    }

    // The edu device's container, ready, with 8 pages mapped at iova and 4 pages secondAt pages after it.
    private static VfioFiles TwoMappings(ScenarioContext context, ulong iova, ulong secondAt)
    {
        var files = new VfioFiles(context);
        try
        {
            files.OpenReadyContainer();
            files.OpenDevice();
            var memory = files.Memory(12 * Page);
            Check.Ok(files.MapDma(memory, 0, iova, 8 * Page), "VFIO_IOMMU_MAP_DMA of pages 0-7");
            Check.Ok(files.MapDma(memory, 8 * Page, iova + (secondAt * Page), 4 * Page), $"VFIO_IOMMU_MAP_DMA of pages {secondAt}-{secondAt + 3}");
            return files;
        }
        catch
        {
            files.Dispose();
            throw;
        }
    }

    public static void NeedsType1v2(ScenarioContext context)
    {
        context.SkipOnIommufdCompat("iommufd's compatibility container has no VFIO_IOMMU_DIRTY_PAGES at all (ENOTTY, checked by dirty_type1_kernel_checks_page_and_bitmap_sizes)");
        using var files = new VfioFiles(context);
        files.OpenContainer();
        files.OpenGroup();
        files.SetContainer();
        files.SetIommu(VFIO_TYPE1_IOMMU);
        Check.Fails(Dirty(files, VFIO_IOMMU_DIRTY_PAGES_FLAG_START), Errno.EACCES, "DIRTY_PAGES START on a type1 (v1) container");
    }

    /// <summary>
    /// Skips in mode iommufd, where the library opens the device through its cdev and there is no
    /// container to track with (the errno-level type1 scenarios still run there).
    /// </summary>
    private static ScenarioContext InContainer(ScenarioContext context)
    {
        context.SkipIn(ScenarioMode.Iommufd, "the device opens through iommufd: no container, so no type1 dirty tracking (iommufd's own, IOMMU_HWPT_GET_DIRTY_BITMAP, needs hardware dirty bits the VM's IOMMU lacks)");
        return context;
    }

    private static int Dirty(VfioFiles files, uint flags)
    {
        var dirty = new vfio_iommu_type1_dirty_bitmap { argsz = (uint)sizeof(vfio_iommu_type1_dirty_bitmap), flags = flags };
        return files.Kernel.Ioctl(files.Container!, VFIO_IOMMU_DIRTY_PAGES, &dirty);
    }

    private static int GetBitmap(VfioFiles files, ulong iova, ulong size, ulong pageSize, ulong[] bitmap, ulong? bitmapBytes = null)
    {
        int headerSize = sizeof(vfio_iommu_type1_dirty_bitmap);
        byte* request = stackalloc byte[headerSize + sizeof(vfio_iommu_type1_dirty_bitmap_get)];
        *(vfio_iommu_type1_dirty_bitmap*)request = new vfio_iommu_type1_dirty_bitmap
        {
            argsz = (uint)(headerSize + sizeof(vfio_iommu_type1_dirty_bitmap_get)),
            flags = VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP,
        };
        fixed (ulong* bits = bitmap)
        {
            *(vfio_iommu_type1_dirty_bitmap_get*)(request + headerSize) = new vfio_iommu_type1_dirty_bitmap_get
            {
                iova = iova,
                size = size,
                bitmap = new vfio_bitmap { pgsize = pageSize, size = bitmapBytes ?? (ulong)bitmap.Length * 8, data = bits },
            };
            return files.Kernel.Ioctl(files.Container!, VFIO_IOMMU_DIRTY_PAGES, request);
        }
    }

    private static int UnmapDirty(VfioFiles files, ulong iova, ulong size, ulong pageSize, ulong[] bitmap, ulong? bitmapBytes = null, uint flags = 0, bool withBitmap = true) =>
        UnmapDirty(files, iova, size, pageSize, bitmap, out _, bitmapBytes, flags, withBitmap);

    private static int UnmapDirty(VfioFiles files, ulong iova, ulong size, ulong pageSize, ulong[] bitmap, out ulong unmapped, ulong? bitmapBytes = null, uint flags = 0, bool withBitmap = true)
    {
        int headerSize = sizeof(vfio_iommu_type1_dma_unmap);
        byte* request = stackalloc byte[headerSize + sizeof(vfio_bitmap)];
        var unmap = (vfio_iommu_type1_dma_unmap*)request;
        *unmap = new vfio_iommu_type1_dma_unmap
        {
            argsz = (uint)(headerSize + (withBitmap ? sizeof(vfio_bitmap) : 0)),
            flags = VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP | flags,
            iova = iova,
            size = size,
        };
        fixed (ulong* bits = bitmap)
        {
            *(vfio_bitmap*)(request + headerSize) = new vfio_bitmap { pgsize = pageSize, size = bitmapBytes ?? (ulong)bitmap.Length * 8, data = bits };
            int rc = files.Kernel.Ioctl(files.Container!, VFIO_IOMMU_UNMAP_DMA, request);
            unmapped = unmap->size;
            return rc;
        }
    }
}
