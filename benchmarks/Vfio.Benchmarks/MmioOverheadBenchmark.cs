using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;
using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio.Benchmarks;

/// <summary>
/// <c>mmio_overhead_ratio</c>: typed register access through <see cref="MmioRegion"/> over a raw
/// volatile pointer loop on the same mapping. Target: at most 1.2.
/// </summary>
/// <remarks>
/// <para>
/// The mapping is 64 KiB of shared anonymous memory from <c>mmap(2)</c> through
/// <see cref="VfioKernel.Linux"/>, wrapped in a region the way a mapped BAR is (a BAR needs a device,
/// which this machine has none of). Memory answers in a few cycles where a real BAR takes hundreds
/// of nanoseconds per uncached access, so the ratio here is the worst case: on a device the checks
/// vanish in the access time. Both loops do the same work per iteration, a 32-bit write and a
/// 32-bit read at a register offset that walks the mapping, the write carrying what the last read
/// returned (a dependent chain, as a driver's write-then-poll); both are kept out of line so the
/// JIT cannot fold one loop into its caller. <c>mmio_independent_ratio</c> runs the same pair of
/// loops with independent writes, which on cached memory measures instruction throughput: the
/// worst case, reported for context. Each side keeps its fastest batch per round; rounds
/// alternate which side goes first; the ratio is the median over rounds of the per-round ratio.
/// </para>
/// <para>
/// What C pays for the same check: <c>native/mmio_loop.c</c> runs the same dependent loop raw
/// (<c>mmio_loop_raw</c>) and through a region struct that bounds- and alignment-checks every access
/// (<c>mmio_loop_checked</c>), as a C driver library does, in each round after the C# sides.
/// <c>mmio_c_checked_ratio</c> is C checked over C raw, <c>mmio_typed_vs_c_checked_ratio</c> the typed
/// C# loop over the checked C loop: the honest comparison for a bounds-checked accessor.
/// </para>
/// </remarks>
internal sealed unsafe class MmioOverheadBenchmark : IBenchmark
{
    private const int Length = 64 * 1024;
    private const int AccessesPerBatch = 200_000;
    private const int BatchesPerRound = 10;
    private const int Rounds = 15;

    public string Name => "mmio_overhead_ratio";

    public string Description =>
        "dependent 32-bit write+read-back through MmioRegion over a raw volatile pointer loop, same mapping (target <= 1.2); also mmio_raw_ns, mmio_typed_ns per pair, mmio_independent_ratio (independent accesses, throughput-bound worst case), and the same loop in C raw and bounds-checked (mmio_c_raw_ns, mmio_c_checked_ns, mmio_c_checked_ratio, mmio_typed_vs_c_checked_ratio)";

    public IReadOnlyList<Metric> Run(BenchmarkOptions options)
    {
        string rawBaseline = Path.Combine(options.NativeDirectory, "mmio_loop_raw");
        string checkedBaseline = Path.Combine(options.NativeDirectory, "mmio_loop_checked");
        foreach (string baseline in new[] { rawBaseline, checkedBaseline })
        {
            if (!File.Exists(baseline))
            {
                throw new FileNotFoundException($"the C baseline is not built (benchmarks/run.sh builds it): {baseline}", baseline);
            }
        }
        VfioKernel kernel = VfioKernel.Linux;
        int rc = kernel.Mmap(null, Length, Flags.PROT_READ | Flags.PROT_WRITE, Flags.MAP_SHARED, 0, out SafeMapping mapping);
        if (rc < 0)
        {
            throw new InvalidOperationException($"mmap of {Length} bytes of anonymous memory failed: errno {-rc}");
        }
        using MmioRegion region = MmioRegion.OverMemory(mapping, "anonymous memory");
        byte* raw = (byte*)mapping.Address;

        // Both loops must reach the same memory: what one side writes the other reads back.
        region.Write32(8, 0x12345678);
        Volatile.Write(ref *(uint*)(raw + 12), 0x9abcdef0);
        if (Volatile.Read(ref *(uint*)(raw + 8)) != 0x12345678 || region.Read32(12) != 0x9abcdef0)
        {
            throw new InvalidOperationException("the region and the raw pointer do not reach the same memory");
        }

        Measure.WarmUp(() => TypedBatch(region) >= 0 && RawBatch(raw) >= 0 && TypedIndependentBatch(region) >= 0 && RawIndependentBatch(raw) >= 0 && HoistedBatch(raw, Length / 4) >= 0);

        var (ratio, rawNs, typedNs, typedRounds) = Compare(() => RawBatch(raw), () => TypedBatch(region));
        var (independentRatio, _, _, _) = Compare(() => RawIndependentBatch(raw), () => TypedIndependentBatch(region));
        var (hoistedRatio, _, hoistedNs, _) = Compare(() => RawBatch(raw), () => HoistedBatch(raw, Length / 4));
        var cRaw = new double[Rounds];
        var cChecked = new double[Rounds];
        for (int round = 0; round < Rounds; round++)
        {
            cRaw[round] = Measure.RunNative(rawBaseline, AccessesPerBatch, BatchesPerRound);
            cChecked[round] = Measure.RunNative(checkedBaseline, AccessesPerBatch, BatchesPerRound);
        }
        return
        [
            new Metric("mmio_overhead_ratio", ratio, "0.000"),
            new Metric("mmio_raw_ns", rawNs, "0.00"),
            new Metric("mmio_typed_ns", typedNs, "0.00"),
            new Metric("mmio_independent_ratio", independentRatio, "0.000"),
            new Metric("mmio_hoisted_ns", hoistedNs, "0.00"),
            new Metric("mmio_hoisted_ratio", hoistedRatio, "0.000"),
            new Metric("mmio_c_raw_ns", Measure.Median(cRaw), "0.00"),
            new Metric("mmio_c_checked_ns", Measure.Median(cChecked), "0.00"),
            new Metric("mmio_c_checked_ratio", Measure.Median([.. cChecked.Select((c, i) => c / cRaw[i])]), "0.000"),
            new Metric("mmio_typed_vs_c_checked_ratio", Measure.Median(typedRounds) / Measure.Median(cChecked), "0.000"),
        ];
    }

    /// <summary>Rounds of raw and typed batches, alternating which goes first; medians of the ratio and of each side's ns.</summary>
    private static (double Ratio, double RawNs, double TypedNs, double[] TypedRounds) Compare(Func<long> rawBatch, Func<long> typedBatch)
    {
        var rawRounds = new double[Rounds];
        var typedRounds = new double[Rounds];
        for (int round = 0; round < Rounds; round++)
        {
            bool rawFirst = round % 2 == 0;
            if (rawFirst)
            {
                rawRounds[round] = Best(rawBatch);
            }
            typedRounds[round] = Best(typedBatch);
            if (!rawFirst)
            {
                rawRounds[round] = Best(rawBatch);
            }
        }
        double[] ratios = [.. typedRounds.Select((typed, round) => typed / rawRounds[round])];
        return (Measure.Median(ratios), Measure.Median(rawRounds), Measure.Median(typedRounds), typedRounds);
    }

    private static double Best(Func<long> batch)
    {
        double best = double.MaxValue;
        for (int i = 0; i < BatchesPerRound; i++)
        {
            best = Math.Min(best, Measure.NanosecondsPerCall(batch(), AccessesPerBatch));
        }
        return best;
    }

    /// <summary>
    /// Writes a 32-bit register and reads it back per iteration through the region, each write
    /// carrying what the previous read returned (as a driver's write-then-poll does); returns the elapsed ticks.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static long TypedBatch(MmioRegion region)
    {
        uint sum = 1;
        long start = Stopwatch.GetTimestamp();
        for (ulong n = 0; n < AccessesPerBatch * 4; n += 4)
        {
            ulong offset = n & (Length - 4);
            region.Write32(offset, sum);
            sum += region.Read32(offset);
        }
        long elapsed = Stopwatch.GetTimestamp() - start;
        return Consume(sum, elapsed);
    }

    /// <summary>The same loop on the raw pointer, with the offset masked to the mapping as the only guard.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static long RawBatch(byte* p)
    {
        uint sum = 1;
        long start = Stopwatch.GetTimestamp();
        for (ulong n = 0; n < AccessesPerBatch * 4; n += 4)
        {
            ulong offset = n & (Length - 4);
            Volatile.Write(ref *(uint*)(p + offset), sum);
            sum += Volatile.Read(ref *(uint*)(p + offset));
        }
        long elapsed = Stopwatch.GetTimestamp() - start;
        return Consume(sum, elapsed);
    }

    /// <summary>
    /// The region's check (rotate, compare against the bound) with the bound and the base held in
    /// locals, as a C compiler keeps a region's fields in registers: what the fast path would cost if
    /// .NET's volatile accesses (acquire and release) let the JIT hoist the region's field loads out of
    /// the loop. The difference to <see cref="TypedBatch"/> is those loads.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static long HoistedBatch(byte* p, ulong end32)
    {
        uint sum = 1;
        long start = Stopwatch.GetTimestamp();
        for (ulong n = 0; n < AccessesPerBatch * 4; n += 4)
        {
            ulong offset = n & (Length - 4);
            if (BitOperations.RotateRight(offset, 2) >= end32)
            {
                throw new InvalidOperationException("out of range");
            }
            Volatile.Write(ref *(uint*)(p + offset), sum);
            if (BitOperations.RotateRight(offset, 2) >= end32)
            {
                throw new InvalidOperationException("out of range");
            }
            sum += Volatile.Read(ref *(uint*)(p + offset));
        }
        long elapsed = Stopwatch.GetTimestamp() - start;
        return Consume(sum, elapsed);
    }

    /// <summary>
    /// Independent accesses: each write's value does not depend on a read, so on cached memory the
    /// loop is bound by instruction throughput and the region's checks (and the JIT keeping the region
    /// in a stack slot around its out-of-line slow path) show in full.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static long TypedIndependentBatch(MmioRegion region)
    {
        uint sum = 0;
        long start = Stopwatch.GetTimestamp();
        for (int i = 0; i < AccessesPerBatch; i++)
        {
            ulong offset = (ulong)(i * 4) & (Length - 4);
            region.Write32(offset, (uint)i);
            sum += region.Read32(offset);
        }
        long elapsed = Stopwatch.GetTimestamp() - start;
        return Consume(sum, elapsed);
    }

    /// <summary>The independent loop on the raw pointer.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static long RawIndependentBatch(byte* p)
    {
        uint sum = 0;
        long start = Stopwatch.GetTimestamp();
        for (int i = 0; i < AccessesPerBatch; i++)
        {
            ulong offset = (ulong)(i * 4) & (Length - 4);
            Volatile.Write(ref *(uint*)(p + offset), (uint)i);
            sum += Volatile.Read(ref *(uint*)(p + offset));
        }
        long elapsed = Stopwatch.GetTimestamp() - start;
        return Consume(sum, elapsed);
    }

    /// <summary>Keeps the sum alive so the reads cannot be dropped; the sum of i over a batch is never this value by accident in practice.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static long Consume(uint sum, long elapsed) => sum == 0xdeadbeef ? elapsed + 1 : elapsed;
}
