using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Vfio.Interop;

namespace Vfio.Benchmarks;

/// <summary>
/// <c>ioctl_breakdown</c>: where the seam's ioctl time goes, layer by layer, for reading
/// <c>ioctl_overhead_ratio</c>. The same FIONREAD on the same pipe as that benchmark, through:
/// a bare P/Invoke on the raw descriptor (the GC transition every P/Invoke pays), the same with
/// <c>SetLastError</c> (which the seam does not use: it reads errno only when a call fails, as C
/// libraries do), the seam's own import and checks without its virtual call, and a
/// <see cref="SafeHandle"/> reference count alone, without a syscall (which the seam does not take
/// per call either). The seam itself is <c>ioctl_csharp_ns</c>. No targets: context only.
/// </summary>
internal sealed unsafe partial class IoctlBreakdownBenchmark : IBenchmark
{
    private const nuint FIONREAD = IoctlOverheadBenchmark.FIONREAD;
    private const int CallsPerBatch = IoctlOverheadBenchmark.CallsPerBatch;

    public string Name => "ioctl_breakdown";

    public string Description =>
        "FIONREAD on a pipe through each interop layer (ns/call): ioctl_bare_pinvoke_ns, ioctl_setlasterror_ns, ioctl_libc_import_ns (the seam without its virtual call), safehandle_addref_release_ns; context, no target";

    public IReadOnlyList<Metric> Run(BenchmarkOptions options)
    {
        (SafeFd readEnd, SafeFd writeEnd) = IoctlOverheadBenchmark.CreatePipe(VfioKernel.Linux);
        using (readEnd)
        using (writeEnd)
        {
            (string Name, Func<int, long> Batch)[] layers =
            [
                ("ioctl_bare_pinvoke_ns", calls => BareBatch(readEnd, calls)),
                ("ioctl_setlasterror_ns", calls => SetLastErrorBatch(readEnd, calls)),
                ("ioctl_libc_import_ns", calls => LibcImportBatch(readEnd, calls)),
                ("safehandle_addref_release_ns", calls => AddRefReleaseBatch(readEnd, calls)),
            ];

            foreach ((string _, Func<int, long> batch) in layers)
            {
                Measure.WarmUp(() => batch(CallsPerBatch) >= 0);
            }

            // Same scheme as ioctl_overhead_ratio: fastest batch per round, median over rounds.
            var rounds = new double[layers.Length][];
            for (int i = 0; i < layers.Length; i++)
            {
                rounds[i] = new double[IoctlOverheadBenchmark.Rounds];
            }
            for (int round = 0; round < IoctlOverheadBenchmark.Rounds; round++)
            {
                for (int i = 0; i < layers.Length; i++)
                {
                    double best = double.MaxValue;
                    for (int batch = 0; batch < IoctlOverheadBenchmark.BatchesPerRound; batch++)
                    {
                        long ticks = layers[i].Batch(CallsPerBatch);
                        if (ticks < 0)
                        {
                            throw new InvalidOperationException($"FIONREAD failed in {layers[i].Name}");
                        }
                        best = Math.Min(best, Measure.NanosecondsPerCall(ticks, CallsPerBatch));
                    }
                    rounds[i][round] = best;
                }
            }

            return [.. layers.Select((layer, i) => new Metric(layer.Name, Measure.Median(rounds[i]), "0.0"))];
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static long BareBatch(SafeFd fd, int calls)
    {
        int raw = fd.Value;
        int failures = 0;
        long start = Stopwatch.GetTimestamp();
        for (int i = 0; i < calls; i++)
        {
            int available = -1;
            if (ioctl_bare(raw, FIONREAD, &available) < 0 || available != 0)
            {
                failures++;
            }
        }
        long elapsed = Stopwatch.GetTimestamp() - start;
        return failures == 0 ? elapsed : -1;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static long SetLastErrorBatch(SafeFd fd, int calls)
    {
        int raw = fd.Value;
        int failures = 0;
        long start = Stopwatch.GetTimestamp();
        for (int i = 0; i < calls; i++)
        {
            int available = -1;
            if (ioctl_setlasterror(raw, FIONREAD, &available) < 0 || available != 0)
            {
                failures++;
            }
        }
        long elapsed = Stopwatch.GetTimestamp() - start;
        return failures == 0 ? elapsed : -1;
    }

    /// <summary>What <c>LinuxKernel.Ioctl</c> does inline: the closed-file check, the fast import, errno only on failure.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static long LibcImportBatch(SafeFd fd, int calls)
    {
        int failures = 0;
        long start = Stopwatch.GetTimestamp();
        for (int i = 0; i < calls; i++)
        {
            int available = -1;
            int result = Interop.Interop.Libc.ioctl_fast(fd.IsClosed ? -1 : fd.Value, FIONREAD, &available);
            if ((result >= 0 ? result : -Marshal.GetLastSystemError()) < 0 || available != 0)
            {
                failures++;
            }
        }
        long elapsed = Stopwatch.GetTimestamp() - start;
        return failures == 0 ? elapsed : -1;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static long AddRefReleaseBatch(SafeFd fd, int calls)
    {
        long start = Stopwatch.GetTimestamp();
        for (int i = 0; i < calls; i++)
        {
            bool added = false;
            fd.DangerousAddRef(ref added);
            fd.DangerousRelease();
        }
        return Stopwatch.GetTimestamp() - start;
    }

    [LibraryImport("libc", EntryPoint = "ioctl")]
    private static partial int ioctl_bare(int fd, nuint request, void* arg);

    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    private static partial int ioctl_setlasterror(int fd, nuint request, void* arg);
}
