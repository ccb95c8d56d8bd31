using System.Diagnostics;
using System.Globalization;
using System.Runtime;

namespace Vfio.Benchmarks;

/// <summary>Timing shared by the benchmarks.</summary>
internal static class Measure
{
    /// <summary>
    /// Runs <paramref name="batch"/> until tiered compilation has settled: at least half a second,
    /// then until no method has been compiled for a quarter of a second (tier-1 code with dynamic
    /// PGO replaces tier-0 code in the background after a method's first 30 calls and a short
    /// delay), at most five seconds. <paramref name="batch"/> returns false on failure.
    /// </summary>
    public static void WarmUp(Func<bool> batch)
    {
        var total = Stopwatch.StartNew();
        var quiet = Stopwatch.StartNew();
        long compiled = JitInfo.GetCompiledMethodCount();
        while ((total.ElapsedMilliseconds < 500 || quiet.ElapsedMilliseconds < 250) && total.ElapsedMilliseconds < 5_000)
        {
            if (!batch())
            {
                throw new InvalidOperationException("the benchmarked operation failed during warm-up");
            }
            long now = JitInfo.GetCompiledMethodCount();
            if (now != compiled)
            {
                compiled = now;
                quiet.Restart();
            }
        }
    }

    /// <summary>Nanoseconds per call of a batch that took <paramref name="ticks"/> <see cref="Stopwatch"/> ticks.</summary>
    public static double NanosecondsPerCall(long ticks, int calls) => ticks * (1e9 / Stopwatch.Frequency) / calls;

    /// <summary>The median of <paramref name="values"/> (the mean of the middle two for an even count).</summary>
    public static double Median(IReadOnlyCollection<double> values)
    {
        double[] sorted = [.. values.Order()];
        int middle = sorted.Length / 2;
        return sorted.Length % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
    }

    /// <summary>Runs a C baseline with integer arguments and returns the single number it prints on stdout.</summary>
    public static double RunNative(string program, params int[] arguments)
    {
        var start = new ProcessStartInfo(program)
        {
            RedirectStandardOutput = true,
            UseShellExecute = false,
        };
        foreach (int argument in arguments)
        {
            start.ArgumentList.Add(argument.ToString(CultureInfo.InvariantCulture));
        }
        using Process process = Process.Start(start) ?? throw new InvalidOperationException($"could not start {program}");
        string output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"{program} exited with {process.ExitCode}");
        }
        return double.Parse(output.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture);
    }
}
