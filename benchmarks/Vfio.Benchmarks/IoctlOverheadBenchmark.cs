using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Vfio.Interop;

namespace Vfio.Benchmarks;

/// <summary>
/// <c>ioctl_overhead_ratio</c>: the cost of one ioctl through the kernel seam
/// (<see cref="VfioKernel.Ioctl(SafeFd, nuint, void*)"/> on <see cref="VfioKernel.Linux"/>) over the
/// cost of the same ioctl issued from C on the same descriptor in the same process. Target: at most 1.10.
/// </summary>
/// <remarks>
/// <para>
/// Both sides issue FIONREAD on the read end of an empty pipe: the pipe driver answers it without
/// blocking or touching data, so the call is a cheap, steady syscall that succeeds (an eventfd has
/// no FIONREAD and would fail with ENOTTY). The C side is <c>native/ioctl_loop.c</c> built as a
/// shared library: one call into it runs and times a whole batch in C, on the benchmark's pipe.
/// </para>
/// <para>
/// Why in the same process: on some machines (measured on AMD EPYC virtual machines) a system call
/// costs about 18 % more in any process with a second thread, in C as in C#, and a .NET process
/// always has several (finalizer, tiered compilation, signal handling). The same C loop run as a
/// process of its own, single-threaded (<c>ioctl_c_process_ns</c>) and with one idle thread
/// (<c>ioctl_c_threaded_process_ns</c>), shows that difference; <c>ioctl_vs_single_thread_process_ratio</c>
/// is the seam against the single-threaded process, the comparison this benchmark used to make.
/// </para>
/// <para>
/// Noise (two cores shared with other builds) only ever adds time, so each side keeps the fastest
/// of several short batches per round; rounds alternate C and C#, swapping which goes first, and
/// the reported numbers are medians over the rounds. The C# loop is warmed up until tiered
/// compilation settles, so it runs the tier-1 code a long-running driver runs.
/// </para>
/// </remarks>
internal sealed partial class IoctlOverheadBenchmark : IBenchmark
{
    internal const nuint FIONREAD = 0x541B;

    // A batch lasts about 3 ms, shorter than a scheduler time slice, so on a loaded machine many
    // batches still run uninterrupted; the fastest batch of a round is that round's cost per call.
    internal const int CallsPerBatch = 20_000;
    internal const int BatchesPerRound = 10;
    internal const int Rounds = 15;

    public string Name => "ioctl_overhead_ratio";

    public string Description =>
        "FIONREAD on a pipe, seam ns/call over C ns/call in the same process (target <= 1.10); also ioctl_c_ns, ioctl_csharp_ns, ioctl_alloc_bytes_per_call (target 0), ioctl_c_process_ns, ioctl_c_threaded_process_ns, ioctl_vs_single_thread_process_ratio";

    public unsafe IReadOnlyList<Metric> Run(BenchmarkOptions options)
    {
        string process = NativeFile(options, "ioctl_loop");
        string threadedProcess = NativeFile(options, "ioctl_loop_threaded");
        nint library = NativeLibrary.Load(NativeFile(options, "libioctl_loop.so"));
        try
        {
            var cBatch = (delegate* unmanaged<int, long, double>)NativeLibrary.GetExport(library, "ioctl_loop_batch");
            return Run(cBatch, process, threadedProcess);
        }
        finally
        {
            NativeLibrary.Free(library);
        }
    }

    private static unsafe IReadOnlyList<Metric> Run(delegate* unmanaged<int, long, double> cBatch, string process, string threadedProcess)
    {
        VfioKernel kernel = VfioKernel.Linux;
        (SafeFd readEnd, SafeFd writeEnd) = CreatePipe(kernel);
        using (readEnd)
        using (writeEnd)
        {
            if (TimeBatch(kernel, readEnd, 1) < 0 || cBatch(readEnd.Value, 1) < 0)
            {
                throw new InvalidOperationException("FIONREAD on an empty pipe did not return 0 bytes available");
            }

            Measure.WarmUp(() => TimeBatch(kernel, readEnd, CallsPerBatch) >= 0);
            Measure.WarmUp(() => cBatch(readEnd.Value, CallsPerBatch) >= 0);

            var cRounds = new double[Rounds];
            var cSharpRounds = new double[Rounds];
            var processRounds = new double[Rounds];
            var threadedRounds = new double[Rounds];
            long allocated = 0;
            long measuredCalls = 0;
            for (int round = 0; round < Rounds; round++)
            {
                bool cFirst = round % 2 == 0;
                if (cFirst)
                {
                    cRounds[round] = BestC(cBatch, readEnd);
                }

                double best = double.MaxValue;
                for (int batch = 0; batch < BatchesPerRound; batch++)
                {
                    long before = GC.GetAllocatedBytesForCurrentThread();
                    long ticks = TimeBatch(kernel, readEnd, CallsPerBatch);
                    allocated += GC.GetAllocatedBytesForCurrentThread() - before;
                    measuredCalls += CallsPerBatch;
                    if (ticks < 0)
                    {
                        throw new InvalidOperationException("FIONREAD through the seam failed");
                    }
                    best = Math.Min(best, Measure.NanosecondsPerCall(ticks, CallsPerBatch));
                }
                cSharpRounds[round] = best;

                if (!cFirst)
                {
                    cRounds[round] = BestC(cBatch, readEnd);
                }
                processRounds[round] = Measure.RunNative(process, CallsPerBatch, BatchesPerRound);
                threadedRounds[round] = Measure.RunNative(threadedProcess, CallsPerBatch, BatchesPerRound);
            }

            // Each round pairs the two sides a few milliseconds apart, under the same load; the
            // median over rounds discards the rounds a burst of load hit on one side only.
            double[] ratios = [.. cSharpRounds.Select((cSharp, round) => cSharp / cRounds[round])];
            double[] processRatios = [.. cSharpRounds.Select((cSharp, round) => cSharp / processRounds[round])];
            return
            [
                new Metric("ioctl_overhead_ratio", Measure.Median(ratios), "0.000"),
                new Metric("ioctl_c_ns", Measure.Median(cRounds), "0.0"),
                new Metric("ioctl_csharp_ns", Measure.Median(cSharpRounds), "0.0"),
                new Metric("ioctl_alloc_bytes_per_call", (double)allocated / measuredCalls),
                new Metric("ioctl_c_process_ns", Measure.Median(processRounds), "0.0"),
                new Metric("ioctl_c_threaded_process_ns", Measure.Median(threadedRounds), "0.0"),
                new Metric("ioctl_vs_single_thread_process_ratio", Measure.Median(processRatios), "0.000"),
            ];
        }
    }

    /// <summary>The fastest of a round's batches of the C loop, in ns per call.</summary>
    private static unsafe double BestC(delegate* unmanaged<int, long, double> cBatch, SafeFd fd)
    {
        double best = double.MaxValue;
        for (int batch = 0; batch < BatchesPerRound; batch++)
        {
            double perCall = cBatch(fd.Value, CallsPerBatch);
            if (perCall < 0)
            {
                throw new InvalidOperationException("FIONREAD from C failed");
            }
            best = Math.Min(best, perCall);
        }
        return best;
    }

    private static string NativeFile(BenchmarkOptions options, string name)
    {
        string path = Path.Combine(options.NativeDirectory, name);
        return File.Exists(path) ? path : throw new FileNotFoundException($"the C baseline is not built (benchmarks/run.sh builds it): {path}", path);
    }

    /// <summary>
    /// Times <paramref name="calls"/> ioctls through the seam, the same loop as the C baseline's.
    /// Returns the elapsed <see cref="Stopwatch"/> ticks (CLOCK_MONOTONIC, as in C), or -1 if any
    /// call failed. The kernel is taken as <see cref="VfioKernel"/> so the call is the virtual call
    /// the library makes.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static unsafe long TimeBatch(VfioKernel kernel, SafeFd fd, int calls)
    {
        int failures = 0;
        long start = Stopwatch.GetTimestamp();
        for (int i = 0; i < calls; i++)
        {
            int available = -1;
            if (kernel.Ioctl(fd, FIONREAD, &available) < 0 || available != 0)
            {
                failures++;
            }
        }
        long elapsed = Stopwatch.GetTimestamp() - start;
        return failures == 0 ? elapsed : -1;
    }

    internal static unsafe (SafeFd ReadEnd, SafeFd WriteEnd) CreatePipe(VfioKernel kernel)
    {
        const int O_CLOEXEC = 0x80000;
        int* fds = stackalloc int[2];
        if (pipe2(fds, O_CLOEXEC) != 0)
        {
            throw new InvalidOperationException($"pipe2 failed: errno {Marshal.GetLastPInvokeError()}");
        }
        return (new SafeFd(kernel, fds[0]), new SafeFd(kernel, fds[1]));
    }

    [LibraryImport("libc", SetLastError = true)]
    private static unsafe partial int pipe2(int* fds, int flags);
}
