using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio.Benchmarks;

/// <summary>
/// <c>mmio_copy_ratio</c>: a 4 KiB buffer copied into a mapping and back out through
/// <see cref="MmioRegion.Write(ulong, ReadOnlySpan{byte})"/> and <see cref="MmioRegion.Read(ulong, Span{byte})"/>,
/// over the same copies in C with volatile, naturally aligned accesses (<c>native/mmio_copy.c</c>).
/// Target: at most 1.2.
/// </summary>
/// <remarks>
/// Both sides copy 4 KiB in at a 4 KiB-aligned offset that walks 64 KiB of shared anonymous memory,
/// then the same 4 KiB out, with 8-byte volatile accesses in the body and one bounds check per copy.
/// The C side runs as a process of its own (no system call is timed, so the process makes no
/// difference). <c>mmio_copy_vs_write32_speedup</c> and <c>mmio_copy_vs_write8_speedup</c> compare
/// with what a driver wrote before the bulk copy existed: a loop of <see cref="MmioRegion.Write32"/>
/// and <see cref="MmioRegion.Read32"/> over the buffer's words, or of the 8-bit accessors over its
/// bytes. Cached memory is the worst case for every ratio: on a device each access costs the bus
/// transaction, and a loop of narrower accesses makes more of them.
/// </remarks>
internal sealed unsafe class MmioCopyBenchmark : IBenchmark
{
    private const int Length = 64 * 1024;
    private const int Copy = 4096;
    private const int CopiesPerBatch = 2000;
    private const int BatchesPerRound = 10;
    private const int Rounds = 15;

    public string Name => "mmio_copy_ratio";

    public string Description =>
        "4 KiB copied into a mapping and back out through MmioRegion.Write/Read over the same copies in C with volatile aligned 8-byte accesses (target <= 1.2); also mmio_copy_ns, mmio_copy_c_ns per copy pair, mmio_copy_gbps, mmio_copy_vs_write32_speedup, mmio_copy_vs_write8_speedup (loops of single accesses over the bulk copy)";

    public IReadOnlyList<Metric> Run(BenchmarkOptions options)
    {
        string baseline = Path.Combine(options.NativeDirectory, "mmio_copy");
        if (!File.Exists(baseline))
        {
            throw new FileNotFoundException($"the C baseline is not built (benchmarks/run.sh builds it): {baseline}", baseline);
        }
        int rc = VfioKernel.Linux.Mmap(null, Length, Flags.PROT_READ | Flags.PROT_WRITE, Flags.MAP_SHARED, 0, out SafeMapping mapping);
        if (rc < 0)
        {
            throw new InvalidOperationException($"mmap of {Length} bytes of anonymous memory failed: errno {-rc}");
        }
        using MmioRegion region = MmioRegion.OverMemory(mapping, "anonymous memory");
        byte[] source = new byte[Copy];
        byte[] destination = new byte[Copy];
        for (int i = 0; i < Copy; i++)
        {
            source[i] = (byte)(i * 7);
        }

        // Every loop must copy the buffer in and out whole.
        foreach (Func<MmioRegion, byte[], byte[], long> loop in new Func<MmioRegion, byte[], byte[], long>[] { BulkBatch, Word32Batch, ByteBatch })
        {
            Array.Clear(destination);
            loop(region, source, destination);
            if (!source.AsSpan().SequenceEqual(destination))
            {
                throw new InvalidOperationException("a copy loop did not read back what it wrote");
            }
        }

        Measure.WarmUp(() => BulkBatch(region, source, destination) >= 0 && Word32Batch(region, source, destination) >= 0 && ByteBatch(region, source, destination) >= 0);

        var bulk = new double[Rounds];
        var word32 = new double[Rounds];
        var bytes = new double[Rounds];
        var c = new double[Rounds];
        for (int round = 0; round < Rounds; round++)
        {
            if (round % 2 == 1)
            {
                c[round] = Measure.RunNative(baseline, CopiesPerBatch, BatchesPerRound);
            }
            bulk[round] = Best(() => BulkBatch(region, source, destination));
            word32[round] = Best(() => Word32Batch(region, source, destination));
            bytes[round] = Best(() => ByteBatch(region, source, destination));
            if (round % 2 == 0)
            {
                c[round] = Measure.RunNative(baseline, CopiesPerBatch, BatchesPerRound);
            }
        }
        double bulkNs = Measure.Median(bulk);
        return
        [
            new Metric("mmio_copy_ratio", Measure.Median([.. bulk.Select((b, i) => b / c[i])]), "0.000"),
            new Metric("mmio_copy_ns", bulkNs, "0.0"),
            new Metric("mmio_copy_c_ns", Measure.Median(c), "0.0"),
            new Metric("mmio_copy_gbps", 2.0 * Copy / bulkNs, "0.00"),
            new Metric("mmio_copy_vs_write32_speedup", Measure.Median([.. word32.Select((w, i) => w / bulk[i])]), "0.00"),
            new Metric("mmio_copy_vs_write8_speedup", Measure.Median([.. bytes.Select((b, i) => b / bulk[i])]), "0.00"),
        ];
    }

    private static double Best(Func<long> batch)
    {
        double best = double.MaxValue;
        for (int i = 0; i < BatchesPerRound; i++)
        {
            best = Math.Min(best, Measure.NanosecondsPerCall(batch(), CopiesPerBatch));
        }
        return best;
    }

    /// <summary>The bulk copies, in and out; returns the elapsed ticks.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static long BulkBatch(MmioRegion region, byte[] source, byte[] destination)
    {
        long start = Stopwatch.GetTimestamp();
        for (int i = 0; i < CopiesPerBatch; i++)
        {
            ulong offset = (ulong)(i * Copy) & (Length - 1);
            region.Write(offset, source);
            region.Read(offset, destination);
        }
        long elapsed = Stopwatch.GetTimestamp() - start;
        return Consume(destination, elapsed);
    }

    /// <summary>The same with a loop of 32-bit accessors over the buffer's words.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static long Word32Batch(MmioRegion region, byte[] source, byte[] destination)
    {
        ReadOnlySpan<uint> from = MemoryMarshal.Cast<byte, uint>(source.AsSpan());
        Span<uint> into = MemoryMarshal.Cast<byte, uint>(destination.AsSpan());
        long start = Stopwatch.GetTimestamp();
        for (int i = 0; i < CopiesPerBatch; i++)
        {
            ulong offset = (ulong)(i * Copy) & (Length - 1);
            for (int w = 0; w < from.Length; w++)
            {
                region.Write32(offset + (ulong)(w * 4), from[w]);
            }
            for (int w = 0; w < into.Length; w++)
            {
                into[w] = region.Read32(offset + (ulong)(w * 4));
            }
        }
        long elapsed = Stopwatch.GetTimestamp() - start;
        return Consume(destination, elapsed);
    }

    /// <summary>The same with a loop of 8-bit accessors over the buffer's bytes.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static long ByteBatch(MmioRegion region, byte[] source, byte[] destination)
    {
        long start = Stopwatch.GetTimestamp();
        for (int i = 0; i < CopiesPerBatch; i++)
        {
            ulong offset = (ulong)(i * Copy) & (Length - 1);
            for (int b = 0; b < source.Length; b++)
            {
                region.Write8(offset + (ulong)b, source[b]);
            }
            for (int b = 0; b < destination.Length; b++)
            {
                destination[b] = region.Read8(offset + (ulong)b);
            }
        }
        long elapsed = Stopwatch.GetTimestamp() - start;
        return Consume(destination, elapsed);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static long Consume(byte[] destination, long elapsed) => destination[Copy - 1] == 0xa5 && destination[0] == 0xa5 ? elapsed + 1 : elapsed;
}
