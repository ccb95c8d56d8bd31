using System.Diagnostics;
using System.Numerics;

namespace NvmeDriver;

/// <summary>
/// Latencies counted in log-linear buckets, as fio counts its completion latencies: 64 buckets per
/// power of two, so a percentile is exact to within 1/64 (about 1.6 %) of its value. Recording
/// allocates nothing; one histogram per thread, merged at the end.
/// </summary>
public sealed class LatencyHistogram
{
    private const int SubBucketBits = 6;
    private const int SubBuckets = 1 << SubBucketBits;

    // Values below 2 * SubBuckets ticks are exact (one bucket each); every power of two above has SubBuckets buckets.
    private readonly long[] _counts = new long[(64 - SubBucketBits + 1) * SubBuckets];

    /// <summary>How many latencies were recorded.</summary>
    public long Count { get; private set; }

    /// <summary>The sum of every latency recorded, in <see cref="Stopwatch"/> ticks.</summary>
    public long TotalTicks { get; private set; }

    /// <summary>Counts one latency.</summary>
    /// <param name="ticks">The latency in <see cref="Stopwatch"/> ticks (negative counts as 0).</param>
    public void Record(long ticks)
    {
        ulong value = ticks > 0 ? (ulong)ticks : 0;
        _counts[Bucket(value)]++;
        Count++;
        TotalTicks += (long)value;
    }

    /// <summary>Adds another histogram's counts to this one.</summary>
    /// <param name="other">The histogram to add.</param>
    public void Add(LatencyHistogram other)
    {
        ArgumentNullException.ThrowIfNull(other);
        for (int i = 0; i < _counts.Length; i++)
        {
            _counts[i] += other._counts[i];
        }
        Count += other.Count;
        TotalTicks += other.TotalTicks;
    }

    /// <summary>Forgets every latency.</summary>
    public void Clear()
    {
        Array.Clear(_counts);
        Count = 0;
        TotalTicks = 0;
    }

    /// <summary>The latency below which <paramref name="percent"/> % of the recorded ones fall (the middle of its bucket), or zero when none were recorded.</summary>
    /// <param name="percent">From 0 to 100.</param>
    public TimeSpan Percentile(double percent)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(percent);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(percent, 100);
        if (Count == 0)
        {
            return TimeSpan.Zero;
        }
        long rank = Math.Max(1, (long)Math.Ceiling(Count * percent / 100));
        long seen = 0;
        for (int i = 0; i < _counts.Length; i++)
        {
            seen += _counts[i];
            if (seen >= rank)
            {
                var (low, width) = Range(i);
                return Stopwatch.GetElapsedTime(0, (long)(low + ((width - 1) / 2)));
            }
        }
        return Stopwatch.GetElapsedTime(0, TotalTicks);
    }

    /// <summary>The mean latency, or zero when none were recorded.</summary>
    public TimeSpan Mean => Count == 0 ? TimeSpan.Zero : Stopwatch.GetElapsedTime(0, TotalTicks / Count);

    private static int Bucket(ulong value)
    {
        if (value < 2 * SubBuckets)
        {
            return (int)value;
        }
        int exponent = BitOperations.Log2(value) - SubBucketBits; // 1 or more
        return ((exponent + 1) * SubBuckets) + (int)((value >> exponent) - SubBuckets);
    }

    /// <summary>The first value of bucket <paramref name="index"/> and how many values it holds.</summary>
    private static (ulong Low, ulong Width) Range(int index)
    {
        if (index < 2 * SubBuckets)
        {
            return ((ulong)index, 1);
        }
        int exponent = (index / SubBuckets) - 1;
        ulong sub = (ulong)(index % SubBuckets) + SubBuckets;
        return (sub << exponent, 1UL << exponent);
    }
}
