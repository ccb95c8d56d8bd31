using System.Diagnostics;
using System.Runtime.CompilerServices;
using Vfio.Testing;

namespace Vfio.Benchmarks;

/// <summary>
/// <c>device_ref_pair_ns</c>: one <see cref="VfioDevice.TryGet"/> and the <see cref="DeviceReference.Dispose"/>
/// that pairs it, uncontended, on a registered device. Target: under 20 ns.
/// </summary>
/// <remarks>
/// The device is registered on the simulated kernel (taking a reference does no kernel I/O, so the
/// kernel does not matter). Each batch takes and releases 1 M references on one thread; the metric
/// is the median over rounds of the fastest batch per round. Also <c>device_ref_alloc_bytes_per_pair</c>:
/// the managed bytes a pair allocates on this thread.
/// </remarks>
internal sealed class DeviceReferenceBenchmark : IBenchmark
{
    private const int PairsPerBatch = 1_000_000;
    private const int BatchesPerRound = 5;
    private const int Rounds = 9;

    public string Name => "device_ref_pair_ns";

    public string Description =>
        "ns per uncontended TryGet + Dispose pair on a registered device (target < 20); also device_ref_alloc_bytes_per_pair";

    public IReadOnlyList<Metric> Run(BenchmarkOptions options)
    {
        var kernel = new SimulatedKernel();
        kernel.AddPciDevice("0000:00:03.0", 0x1234, 0x11e8, 0x00ff00, iommuGroup: 5);
        var registry = new VfioRegistry(kernel);
        using var device = new PlainDevice(registry.FindPci(PciAddress.Parse("0000:00:03.0", null)));
        registry.Register(device);
        try
        {
            Measure.WarmUp(() => Batch(device, 100_000) > 0);
            var rounds = new double[Rounds];
            for (int round = 0; round < Rounds; round++)
            {
                double best = double.MaxValue;
                for (int b = 0; b < BatchesPerRound; b++)
                {
                    best = Math.Min(best, Measure.NanosecondsPerCall(Batch(device, PairsPerBatch), PairsPerBatch));
                }
                rounds[round] = best;
            }
            long before = GC.GetAllocatedBytesForCurrentThread();
            Batch(device, PairsPerBatch);
            double bytes = (GC.GetAllocatedBytesForCurrentThread() - before) / (double)PairsPerBatch;
            if (device.ReferenceCount != 1)
            {
                throw new InvalidOperationException($"{device.ReferenceCount} references left after the batches; every get must have had its put");
            }
            return
            [
                new Metric(Name, Measure.Median(rounds), "0.00"),
                new Metric("device_ref_alloc_bytes_per_pair", bytes, "0.##"),
            ];
        }
        finally
        {
            registry.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }
    }

    /// <summary>Takes and releases <paramref name="pairs"/> references; returns the elapsed ticks.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static long Batch(VfioDevice device, int pairs)
    {
        long start = Stopwatch.GetTimestamp();
        for (int i = 0; i < pairs; i++)
        {
            if (!device.TryGet(out var reference))
            {
                throw new InvalidOperationException("TryGet failed on a registered device");
            }
            reference.Dispose();
        }
        return Stopwatch.GetTimestamp() - start;
    }

    private sealed class PlainDevice(PciDeviceContext context) : PciVfioDevice(context);
}
