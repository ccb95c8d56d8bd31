using System.Diagnostics;
using Vfio.Interop;

namespace Vfio.Benchmarks;

/// <summary>
/// <c>irq_wake_ratio</c>: asynchronous interrupt wake-ups per second through
/// <see cref="InterruptSet.WaitAsync"/> over those of a C thread blocked in read(2) on an eventfd.
/// Target: at least 0.5. Also <c>irq_alloc_bytes_per_event</c> (target 0).
/// </summary>
/// <remarks>
/// Both sides run the same ping-pong: a writer thread signals the interrupt eventfd with write(2),
/// then blocks in read(2) on an acknowledgement eventfd until the handler has run, so every
/// wake-up is counted and none coalesce. The C# handler is an async loop awaiting vector 0 of an
/// interrupt set whose poller thread polls real kernel eventfds (<see cref="VfioKernel.Linux"/>);
/// the set is detached from any device, since writing the eventfd is what a device's interrupt does
/// through vfio-pci. The C side is <c>native/irq_wake_loop.c</c> (a blocking-read thread). Rounds
/// alternate the two sides; each side keeps its fastest batch per round; the ratio is the median
/// over rounds. Allocation is counted on every thread (<see cref="GC.GetTotalAllocatedBytes(bool)"/>)
/// around batches of N / 4 and N events after warm-up: the per-event cost is the slope between the
/// medians of the two sizes, so a batch's fixed cost (the handler's task) cancels, and the occasional
/// batch during which the thread pool starts a worker thread (about 1 KiB, however many events) does
/// not count. An allocation made by a majority of batches of either size still shows.
/// </remarks>
internal sealed class IrqWakeBenchmark : IBenchmark
{
    private const int EventsPerBatch = 10_000;
    private const int BatchesPerRound = 3;
    private const int Rounds = 5;

    public string Name => "irq_wake_ratio";

    public string Description =>
        "eventfd wake-ups/s through InterruptSet.WaitAsync over a C blocking-read loop (target >= 0.5); also irq_csharp_wakes_per_s, irq_c_wakes_per_s, irq_alloc_bytes_per_event (target 0)";

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
            Measure.WarmUp(() => Batch(kernel, set, ack, 1_000) > 0);
            var cRates = new double[Rounds];
            var cSharpRates = new double[Rounds];
            var ratios = new double[Rounds];
            var smallBytes = new double[Rounds * BatchesPerRound];
            var largeBytes = new double[Rounds * BatchesPerRound];
            int batch = 0;
            for (int round = 0; round < Rounds; round++)
            {
                double best = 0;
                for (int b = 0; b < BatchesPerRound; b++, batch++)
                {
                    smallBytes[batch] = Allocated(() => Batch(kernel, set, ack, EventsPerBatch / 4));
                    largeBytes[batch] = Allocated(() => best = Math.Max(best, Batch(kernel, set, ack, EventsPerBatch)));
                }
                cSharpRates[round] = best;
                cRates[round] = RunC(baseline);
                ratios[round] = cSharpRates[round] / cRates[round];
            }
            // A batch's fixed cost (its handler's task) cancels in the difference; the median drops
            // the few batches into which the thread pool's growth (a new worker thread) happens to fall.
            double perEvent = Math.Max(0, Measure.Median(largeBytes) - Measure.Median(smallBytes)) / (EventsPerBatch - (EventsPerBatch / 4));
            return
            [
                new Metric(Name, Measure.Median(ratios)),
                new Metric("irq_csharp_wakes_per_s", Measure.Median(cSharpRates), "0"),
                new Metric("irq_c_wakes_per_s", Measure.Median(cRates), "0"),
                new Metric("irq_alloc_bytes_per_event", perEvent, "0.###"),
            ];
        }
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
