using System.Diagnostics;
using Vfio.Interop;

namespace Vfio.Benchmarks;

/// <summary>
/// <c>irq_wake_ratio</c>: asynchronous interrupt wake-ups per second through
/// <see cref="InterruptSet.WaitAsync"/> over those of a C thread blocked in read(2) on an eventfd.
/// Target: at least 0.5, in every round. Measured in both modes of the set: continuations queued to
/// the thread pool (the default) and run inline on the interrupt thread
/// (<see cref="InterruptSet.RunContinuationsInline"/>, <c>irq_wake_inline_ratio</c>). Also
/// <c>irq_alloc_bytes_per_event</c> (target 0) for each mode.
/// </summary>
/// <remarks>
/// Both sides run the same ping-pong: a writer thread signals the interrupt eventfd with write(2),
/// then blocks in read(2) on an acknowledgement eventfd until the handler has run, so every
/// wake-up is counted and none coalesce. The C# handler is an async loop awaiting vector 0 of an
/// interrupt set whose poller thread polls real kernel eventfds (<see cref="VfioKernel.Linux"/>);
/// the set is detached from any device, since writing the eventfd is what a device's interrupt does
/// through vfio-pci. The C side is <c>native/irq_wake_loop.c</c> (a blocking-read thread). Each round
/// runs the default mode, the inline mode and the C side; each side keeps its fastest batch per
/// round; the ratios are the median over rounds, and the <c>_min_</c> ratios the lowest round (the
/// target holds in every round only if that is at least 0.5). Allocation is counted on every thread
/// (<see cref="GC.GetTotalAllocatedBytes(bool)"/>) around batches of N / 4 and N events after
/// warm-up: the per-event cost is the slope between the medians of the two sizes, so a batch's fixed
/// cost (the handler's task) cancels, and the occasional batch during which the thread pool starts a
/// worker thread (about 1 KiB, however many events) does not count. An allocation made by a majority
/// of batches of either size still shows.
/// </remarks>
internal sealed class IrqWakeBenchmark : IBenchmark
{
    private const int EventsPerBatch = 10_000;
    private const int BatchesPerRound = 3;
    private const int Rounds = 5;

    public string Name => "irq_wake_ratio";

    public string Description =>
        "eventfd wake-ups/s through InterruptSet.WaitAsync over a C blocking-read loop (target >= 0.5 in every round), continuations on the pool (default) and inline on the interrupt thread; also irq_wake_min_ratio, irq_wake_inline_ratio, irq_wake_inline_min_ratio, irq_csharp_wakes_per_s, irq_csharp_inline_wakes_per_s, irq_c_wakes_per_s, irq_alloc_bytes_per_event and irq_inline_alloc_bytes_per_event (target 0)";

    public IReadOnlyList<Metric> Run(BenchmarkOptions options)
    {
        string baseline = Path.Combine(options.NativeDirectory, "irq_wake_loop");
        if (!File.Exists(baseline))
        {
            throw new FileNotFoundException($"the C baseline is not built (benchmarks/run.sh builds it): {baseline}", baseline);
        }
        var kernel = VfioKernel.Linux;
        using var set = InterruptSet.Detached(kernel, 1);
        Check(kernel.EventFd(0, 0, out var ack), "eventfd");
        using (ack)
        {
            var pooled = new Mode(false);
            var inline = new Mode(true);
            foreach (var mode in new[] { pooled, inline })
            {
                set.RunContinuationsInline = mode.Inline;
                Measure.WarmUp(() => Batch(kernel, set, ack, 1_000) > 0);
            }
            var cRates = new double[Rounds];
            for (int round = 0; round < Rounds; round++)
            {
                foreach (var mode in new[] { pooled, inline })
                {
                    set.RunContinuationsInline = mode.Inline;
                    mode.RunRound(round, () => Batch(kernel, set, ack, EventsPerBatch / 4), () => Batch(kernel, set, ack, EventsPerBatch));
                }
                cRates[round] = RunC(baseline);
            }
            return
            [
                new Metric(Name, pooled.Ratio(cRates, Measure.Median)),
                new Metric("irq_wake_min_ratio", pooled.Ratio(cRates, r => r.Min())),
                new Metric("irq_wake_inline_ratio", inline.Ratio(cRates, Measure.Median)),
                new Metric("irq_wake_inline_min_ratio", inline.Ratio(cRates, r => r.Min())),
                new Metric("irq_csharp_wakes_per_s", Measure.Median(pooled.Rates), "0"),
                new Metric("irq_csharp_inline_wakes_per_s", Measure.Median(inline.Rates), "0"),
                new Metric("irq_c_wakes_per_s", Measure.Median(cRates), "0"),
                new Metric("irq_alloc_bytes_per_event", pooled.BytesPerEvent(), "0.###"),
                new Metric("irq_inline_alloc_bytes_per_event", inline.BytesPerEvent(), "0.###"),
            ];
        }
    }

    /// <summary>One way of running the handler's continuations, and what its rounds measured.</summary>
    private sealed class Mode(bool inline)
    {
        private readonly double[] _smallBytes = new double[Rounds * BatchesPerRound];
        private readonly double[] _largeBytes = new double[Rounds * BatchesPerRound];

        public bool Inline => inline;

        public double[] Rates { get; } = new double[Rounds];

        public void RunRound(int round, Func<double> small, Func<double> large)
        {
            double best = 0;
            for (int b = 0; b < BatchesPerRound; b++)
            {
                int batch = (round * BatchesPerRound) + b;
                _smallBytes[batch] = Allocated(() => small());
                _largeBytes[batch] = Allocated(() => best = Math.Max(best, large()));
            }
            Rates[round] = best;
        }

        /// <summary>The per-round ratios to the C side, reduced (median or minimum).</summary>
        public double Ratio(double[] cRates, Func<double[], double> reduce) => reduce([.. Rates.Select((rate, round) => rate / cRates[round])]);

        // A batch's fixed cost (its handler's task) cancels in the difference; the median drops the
        // few batches into which the thread pool's growth (a new worker thread) happens to fall.
        public double BytesPerEvent() =>
            Math.Max(0, Measure.Median(_largeBytes) - Measure.Median(_smallBytes)) / (EventsPerBatch - (EventsPerBatch / 4));
    }

    /// <summary>One batch of ping-pong wake-ups; returns wake-ups per second.</summary>
    private static double Batch(VfioKernel kernel, InterruptSet set, SafeFd ack, int events)
    {
        var handler = Handle(kernel, set, ack, events);
        var irq = set.EventFdOf(0);
        long start = Stopwatch.GetTimestamp();
        for (int i = 0; i < events; i++)
        {
            Signal(kernel, irq);
            Take(kernel, ack);
        }
        double seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
        handler.GetAwaiter().GetResult();
        return events / seconds;
    }

    /// <summary>Managed bytes that <paramref name="action"/> allocated on every thread of the process.</summary>
    private static double Allocated(Action action)
    {
        long before = GC.GetTotalAllocatedBytes(precise: true);
        action();
        return GC.GetTotalAllocatedBytes(precise: true) - before;
    }

    /// <summary>The driver's interrupt loop: await the vector, acknowledge.</summary>
    private static async Task Handle(VfioKernel kernel, InterruptSet set, SafeFd ack, int events)
    {
        for (int i = 0; i < events; i++)
        {
            ulong fired = await set.WaitAsync(0).ConfigureAwait(false);
            if (fired != 1)
            {
                throw new InvalidOperationException($"a wake-up counted {fired} signals; the ping-pong lost its step");
            }
            Signal(kernel, ack);
        }
    }

    private static void Signal(VfioKernel kernel, SafeFd fd)
    {
        Span<byte> one = stackalloc byte[8];
        one[0] = 1;
        if (kernel.Write(fd, one) != 8)
        {
            throw new InvalidOperationException("write to an eventfd failed");
        }
    }

    private static void Take(VfioKernel kernel, SafeFd fd)
    {
        Span<byte> value = stackalloc byte[8];
        if (kernel.Read(fd, value) != 8)
        {
            throw new InvalidOperationException("read of an eventfd failed");
        }
    }

    private static void Check(int result, string operation)
    {
        if (result < 0)
        {
            throw new InvalidOperationException($"{operation} failed: errno {-result}");
        }
    }

    /// <summary>Runs the C baseline once and returns its fastest batch in wake-ups per second.</summary>
    private static double RunC(string baseline) => Measure.RunNative(baseline, EventsPerBatch, BatchesPerRound);
}
