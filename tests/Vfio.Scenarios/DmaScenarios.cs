using System.Globalization;
using System.Runtime.InteropServices;
using EduDriver;
using Vfio.Interop;
using static Vfio.Interop.Interop;
using static Vfio.Interop.VfioUapi;

namespace Vfio.Scenarios;

/// <summary>
/// DMA: what the type1 IOMMU reports (page sizes, IOVA ranges, mappings available), how it refuses
/// maps (overlap, the mapping limit), unmap-all, and the library's own checks, limits and hugepages
/// on top. Module parameters and the hugepage pool are changed through sysfs and restored.
/// </summary>
internal static class DmaScenarios
{
    private const string EntryLimitPath = "module/vfio_iommu_type1/parameters/dma_entry_limit";
    private const string HugePagesPath = "kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    /// <summary>Every DMA scenario, in the order they run.</summary>
    public static IReadOnlyList<Scenario> All { get; } =
    [
        new("dma_iommu_info_caps_as_linux_6_1", IommuInfoCaps),
        new("dma_avail_counts_maps_and_unmap_all", DmaAvailAndUnmapAll),
        new("dma_map_overlap_variants_eexist", MapOverlapVariants),
        new("dma_entry_limit_enospc_and_library_check", EntryLimit),
        new("dma_library_refuses_bad_iovas", LibraryRefusesBadIovas),
        new("dma_hugepages_pool_empty_then_reserved", HugePages),
    ];

    public static void IommuInfoCaps(ScenarioContext context)
    {
        using var files = new VfioFiles(context);
        files.OpenReadyContainer();
        byte[] buffer = files.InfoWithCaps<vfio_iommu_type1_info>(files.Container!, VFIO_IOMMU_GET_INFO, nameof(VFIO_IOMMU_GET_INFO));
        var info = MemoryMarshal.Read<vfio_iommu_type1_info>(buffer);
        context.Note(FormattableString.Invariant($"iova_pgsizes 0x{info.iova_pgsizes:x}"));
        var ids = new List<uint>();
        ulong migrationPageSizes = 0;
        for (uint offset = info.cap_offset; offset != 0 && ids.Count < 16;)
        {
            var header = MemoryMarshal.Read<vfio_info_cap_header>(buffer.AsSpan((int)offset));
            ids.Add(header.id);
            Check.Equal((ushort)1, header.version, "version of capability " + header.id);
            if (header.id == VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION)
            {
                migrationPageSizes = MemoryMarshal.Read<vfio_iommu_type1_info_cap_migration>(buffer.AsSpan((int)offset)).pgsize_bitmap;
            }
            offset = header.next;
        }
        context.Note("capability ids in chain order: " + string.Join(", ", ids));
        IommuInfo parsed = IommuInfo.Parse(buffer);
        context.Note(FormattableString.Invariant($"DMA mappings available: {parsed.DmaMappingsAvailable}"));
        Check.Equal(info.iova_pgsizes, parsed.PageSizes, "page sizes as the library reads them");
        if (context.IommufdServesContainer)
        {
            // iommufd's compatibility container (drivers/iommu/iommufd/vfio_compat.c) has no type1
            // dirty tracking, so no migration capability, and no count of mappings: its limit is the
            // memory cgroup's, and DMA_AVAIL is always U32_MAX.
            Check.Equal("3,1", string.Join(",", ids), "capability order under iommufd's compatibility container (DMA_AVAIL, IOVA ranges)");
            Check.Equal(uint.MaxValue, parsed.DmaMappingsAvailable ?? 0, "DMA_AVAIL of iommufd's compatibility container (U32_MAX)");
        }
        else
        {
            Check.Equal("2,3,1", string.Join(",", ids), "capability order (migration, DMA_AVAIL, IOVA ranges)");
            Check.Equal(info.iova_pgsizes & (~info.iova_pgsizes + 1), migrationPageSizes, "the migration capability's page sizes (only the smallest)");
            Check.Equal((uint)EntryLimitOf(context), parsed.DmaMappingsAvailable ?? 0, "DMA_AVAIL of a fresh container (the module's dma_entry_limit)");
        }
        Check.True(parsed.IovaRanges.Count > 0 && parsed.IovaRanges[0].Start < 0x1000_0000, "no valid IOVA below 256 MiB");
    }

    public static unsafe void DmaAvailAndUnmapAll(ScenarioContext context)
    {
        using var files = new VfioFiles(context);
        files.OpenReadyContainer();
        uint before = Avail(files);
        var memory = files.Memory(0x3000);
        // type1 counts every mapping against dma_entry_limit; iommufd's compatibility container does
        // not count them (its DMA_AVAIL stays U32_MAX).
        bool counts = !context.IommufdServesContainer;
        for (int i = 0; i < 3; i++)
        {
            Check.Ok(files.MapDma(memory, (ulong)i * 0x1000, 0x500000 + ((ulong)i * 0x10000), 0x1000), "VFIO_IOMMU_MAP_DMA " + i);
            Check.Equal(counts ? before - (uint)i - 1 : before, Avail(files), "DMA_AVAIL after " + (i + 1) + " maps");
        }
        var unmap = new vfio_iommu_type1_dma_unmap { argsz = (uint)sizeof(vfio_iommu_type1_dma_unmap), flags = VFIO_DMA_UNMAP_FLAG_ALL };
        Check.Ok(files.Kernel.Ioctl(files.Container!, VFIO_IOMMU_UNMAP_DMA, &unmap), "VFIO_IOMMU_UNMAP_DMA with VFIO_DMA_UNMAP_FLAG_ALL");
        Check.Equal(0x3000UL, unmap.size, "bytes unmapped by unmap-all");
        Check.Equal(before, Avail(files), "DMA_AVAIL after unmap-all");
        var bad = new vfio_iommu_type1_dma_unmap { argsz = (uint)sizeof(vfio_iommu_type1_dma_unmap), flags = VFIO_DMA_UNMAP_FLAG_ALL, iova = 0x500000, size = 0x1000 };
        Check.Fails(files.Kernel.Ioctl(files.Container!, VFIO_IOMMU_UNMAP_DMA, &bad), Errno.EINVAL, "unmap-all with a range");
    }

    public static void MapOverlapVariants(ScenarioContext context)
    {
        using var files = new VfioFiles(context);
        files.OpenReadyContainer();
        var memory = files.Memory(0x5000);
        Check.Ok(files.MapDma(memory, 0, 0x400000, 0x3000), "VFIO_IOMMU_MAP_DMA [0x400000, 0x403000)");
        Check.Fails(files.MapDma(memory, 0, 0x3ff000, 0x2000), Errno.EEXIST, "a map straddling the mapping's start");
        Check.Fails(files.MapDma(memory, 0, 0x402000, 0x2000), Errno.EEXIST, "a map straddling the mapping's end");
        Check.Fails(files.MapDma(memory, 0, 0x3ff000, 0x5000), Errno.EEXIST, "a map containing the mapping");
        Check.Fails(files.MapDma(memory, 0, 0x401000, 0x1000), Errno.EEXIST, "a map inside the mapping");
        Check.Ok(files.MapDma(memory, 0x3000, 0x403000, 0x1000), "a map right after the mapping");
        Check.Ok(files.MapDma(memory, 0x4000, 0x3ff000, 0x1000), "a map right before the mapping");
        Check.Equal(0x5000UL, UnmapAll(files), "bytes unmapped");
    }

    public static Task EntryLimit(ScenarioContext context)
    {
        context.SkipOnIommufdCompat("type1's dma_entry_limit does not exist under iommufd's compatibility container, whose limit is the memory cgroup's");
        const int Limit = 4;
        var sysfs = new SysfsReader(context.Kernel);
        int original = EntryLimitOf(context);
        sysfs.WriteText(EntryLimitPath, Limit.ToString(CultureInfo.InvariantCulture));
        try
        {
            // The kernel: the limit is taken when the IOMMU is set, and the next map is refused with ENOSPC.
            using (var files = new VfioFiles(context))
            {
                files.OpenReadyContainer();
                Check.Equal((uint)Limit, Avail(files), "DMA_AVAIL of a container opened after the limit changed");
                var memory = files.Memory((Limit + 1) * 0x1000UL);
                for (int i = 0; i < Limit; i++)
                {
                    Check.Ok(files.MapDma(memory, (ulong)i * 0x1000, 0x600000 + ((ulong)i * 0x1000), 0x1000), "VFIO_IOMMU_MAP_DMA " + i);
                }
                Check.Fails(files.MapDma(memory, Limit * 0x1000UL, 0x700000, 0x1000), Errno.ENOSPC, "a map beyond dma_entry_limit");
                Check.Equal(Limit * 0x1000UL, UnmapAll(files), "bytes unmapped");
            }
            if (context.Backend == VfioBackend.Iommufd)
            {
                // The library through iommufd: an IOAS counts no mappings, so type1's limit does not apply.
                return EduScenarios.WithOpenEduAsync(context, device =>
                {
                    var buffers = new List<DmaBuffer>();
                    try
                    {
                        for (int i = 0; i <= Limit; i++)
                        {
                            buffers.Add(device.AllocateDmaBuffer(0x1000));
                        }
                        Check.Equal(int.MaxValue - (Limit + 1), device.AddressSpace!.DmaMappingsAvailable, "mappings available in an IOAS (no limit: int.MaxValue less those held)");
                        Check.Equal(Limit + 1, device.AddressSpace!.DmaMappingCount, "mappings beyond dma_entry_limit in the IOAS");
                    }
                    finally
                    {
                        buffers.ForEach(b => b.Dispose());
                    }
                    return Task.CompletedTask;
                });
            }
            // The library: refuses the map itself, before the kernel would, and says which limit.
            return EduScenarios.WithOpenEduAsync(context, device =>
            {
                VfioContainer container = device.Group!.Container!;
                Check.Equal(Limit, container.DmaMappingsAvailable, "the library's count of mappings available");
                var buffers = new List<DmaBuffer>();
                try
                {
                    for (int i = 0; i < Limit; i++)
                    {
                        buffers.Add(device.AllocateDmaBuffer(0x1000));
                    }
                    Check.Equal(0, container.DmaMappingsAvailable, "mappings available when all are used");
                    Check.Equal(0u, container.QueryIommuInfo().DmaMappingsAvailable ?? 99, "the kernel's DMA_AVAIL when all are used");
                    try
                    {
                        buffers.Add(device.AllocateDmaBuffer(0x1000));
                    }
                    catch (VfioResourceLimitException e)
                    {
                        context.Note("limit: " + e.Message);
                        Check.Equal(VfioResourceLimitException.DmaEntryLimit, e.Limit, "the limit named");
                        Check.Equal(0, e.Errno, "errno (the library refused before the kernel)");
                        Check.True(e.Message.Contains("dma_entry_limit", StringComparison.Ordinal), "the message does not name dma_entry_limit");
                        return Task.CompletedTask;
                    }
                    throw new ScenarioFailedException("a map beyond the limit succeeded");
                }
                finally
                {
                    buffers.ForEach(b => b.Dispose());
                }
            });
        }
        finally
        {
            sysfs.WriteText(EntryLimitPath, original.ToString(CultureInfo.InvariantCulture));
        }
    }

    public static Task LibraryRefusesBadIovas(ScenarioContext context) => EduScenarios.WithOpenEduAsync(context, device =>
    {
        IommuAddressSpace container = device.AddressSpace!;
        IovaRange first = container.IommuInfo.IovaRanges[0];
        using DmaBuffer fixedAt = device.AllocateDmaBuffer(0x2000, iova: 0x800000);
        Check.Equal(0x800000UL, fixedAt.Iova, "the fixed IOVA");
        ExpectRefusal(() => device.AllocateDmaBuffer(0x1000, iova: 0x801000), "overlaps", context);
        ExpectRefusal(() => device.AllocateDmaBuffer(0x1000, iova: device.DmaMask + 1), "DMA mask", context);
        if (first.End < ulong.MaxValue - 0x10000)
        {
            ExpectRefusal(() => device.AllocateDmaBuffer(0x2000, iova: (first.End + 1) & ~0xfffUL), "outside the IOMMU's valid ranges", context);
        }
        Check.Equal(1, container.DmaMappingCount, "mappings after the refusals");
        using DmaBuffer chosen = device.AllocateDmaBuffer(0x3000);
        Check.True(chosen.Iova + chosen.Length - 1 <= device.DmaMask, "a chosen IOVA lies above the 28-bit mask");
        Check.True(chosen.Iova + chosen.Length <= 0x800000 || chosen.Iova >= 0x802000, "the chosen IOVA overlaps the fixed one");
        nint inside = (nint)((ulong)chosen.HostAddress + 0x1234);
        Check.Equal(chosen.Iova + 0x1234, container.TranslateToIova(inside) ?? 0, "translation of an address inside a buffer");
        Check.True(container.TranslateToIova((nint)((ulong)chosen.HostAddress + chosen.Length + 0x100000000)) is null, "an address in no buffer was translated");
        return Task.CompletedTask;
    });

    public static async Task HugePages(ScenarioContext context)
    {
        var sysfs = new SysfsReader(context.Kernel);
        string original = sysfs.ReadText(HugePagesPath)?.Trim() ?? throw new ScenarioFailedException("no 2 MiB hugepage pool in sysfs");
        try
        {
            sysfs.WriteText(HugePagesPath, "0");
            await EduScenarios.WithOpenEduAsync(context, device =>
            {
                try
                {
                    device.AllocateDmaBuffer(0x1000, pages: DmaPages.Huge).Dispose();
                    throw new ScenarioFailedException("a hugepage buffer was allocated with an empty pool");
                }
                catch (VfioResourceLimitException e)
                {
                    context.Note("empty pool: " + e.Message);
                    Check.Equal(VfioResourceLimitException.HugePages, e.Limit, "the limit named");
                    Check.True(e.Message.Contains("/proc/sys/vm/nr_hugepages", StringComparison.Ordinal), "the message does not say how to reserve hugepages");
                }
                using DmaBuffer fallback = device.AllocateDmaBuffer(0x1000, pages: DmaPages.HugeIfAvailable);
                Check.True(!fallback.IsHugePages, "the fallback buffer claims hugepages");
                Check.Equal(0x1000UL, fallback.Length, "the fallback buffer's length");
                return Task.CompletedTask;
            }).ConfigureAwait(false);

            sysfs.WriteText(HugePagesPath, "2");
            Check.Equal("2", sysfs.ReadText(HugePagesPath)?.Trim() ?? "", "hugepages reserved");
            await EduScenarios.WithOpenEduAsync(context, async device =>
            {
                using DmaBuffer huge = device.AllocateDmaBuffer(0x1000, pages: DmaPages.Huge);
                context.Note(FormattableString.Invariant($"hugepage buffer at IOVA 0x{huge.Iova:x}, 0x{huge.Length:x} bytes"));
                Check.True(huge.IsHugePages, "the buffer is not backed by hugepages");
                Check.Equal(DmaBuffer.HugePageSize, huge.Length, "the length rounded to 2 MiB");
                Check.Equal(0UL, huge.Iova % DmaBuffer.HugePageSize, "the IOVA's 2 MiB alignment");
                Check.Equal(0UL, (ulong)huge.HostAddress % DmaBuffer.HugePageSize, "the memory's 2 MiB alignment");
                // The device reads and writes it: a round trip through its buffer, at the far end of the 2 MiB.
                using var timeout = new CancellationTokenSource(Timeout);
                int at = (int)DmaBuffer.HugePageSize - 0x1000;
                for (int i = 0; i < 256; i++)
                {
                    huge.Span[at + i] = (byte)(i ^ 0x5a);
                }
                await device.CopyToDeviceAsync(huge, at, 0, 256, timeout.Token).ConfigureAwait(false);
                await device.CopyFromDeviceAsync(huge, 0, 0, 256, timeout.Token).ConfigureAwait(false);
                for (int i = 0; i < 256; i++)
                {
                    Check.Equal((byte)(i ^ 0x5a), huge.Span[i], "byte " + i + " after the device's round trip");
                }
            }).ConfigureAwait(false);
        }
        finally
        {
            sysfs.WriteText(HugePagesPath, original);
        }
    }

    private static void ExpectRefusal(Func<DmaBuffer> allocate, string reason, ScenarioContext context)
    {
        try
        {
            allocate().Dispose();
        }
        catch (VfioException e) when (e is not VfioResourceLimitException)
        {
            context.Note("refused: " + e.Message);
            Check.True(e.Message.Contains(reason, StringComparison.Ordinal), "the refusal does not say '" + reason + "': " + e.Message);
            Check.Equal(0, e.Errno, "errno (the library refused before the kernel)");
            return;
        }
        throw new ScenarioFailedException("an allocation that " + reason + " succeeded");
    }

    private static int EntryLimitOf(ScenarioContext context) =>
        int.Parse(new SysfsReader(context.Kernel).ReadText(EntryLimitPath)?.Trim() ?? throw new ScenarioFailedException("no " + EntryLimitPath), CultureInfo.InvariantCulture);

    private static uint Avail(VfioFiles files)
    {
        byte[] buffer = files.InfoWithCaps<vfio_iommu_type1_info>(files.Container!, VFIO_IOMMU_GET_INFO, nameof(VFIO_IOMMU_GET_INFO));
        return IommuInfo.Parse(buffer).DmaMappingsAvailable ?? throw new ScenarioFailedException("no DMA_AVAIL capability");
    }

    private static unsafe ulong UnmapAll(VfioFiles files)
    {
        var unmap = new vfio_iommu_type1_dma_unmap { argsz = (uint)sizeof(vfio_iommu_type1_dma_unmap), flags = VFIO_DMA_UNMAP_FLAG_ALL };
        Check.Ok(files.Kernel.Ioctl(files.Container!, VFIO_IOMMU_UNMAP_DMA, &unmap), "VFIO_IOMMU_UNMAP_DMA (all)");
        return unmap.size;
    }
}
