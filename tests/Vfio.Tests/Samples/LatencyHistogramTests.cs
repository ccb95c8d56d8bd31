using System.Diagnostics;
using NvmeDriver;

namespace Vfio.Tests.Samples;

/// <summary>The NVMe load generator's latency histogram: percentiles within a bucket's width, merging, and an empty one.</summary>
public class LatencyHistogramTests
{
    [Fact]
    public void PercentilesAreWithinOneSixtyFourthOfTheExactValue()
    {
        var histogram = new LatencyHistogram();
        var values = Enumerable.Range(1, 10_000).Select(i => (long)i * 997).ToArray();
        foreach (long value in values)
        {
            histogram.Record(value);
        }

        foreach (double percent in new[] { 1.0, 50, 90, 99, 99.9 })
        {
            long exact = values[(int)Math.Ceiling(values.Length * percent / 100) - 1];
            double got = histogram.Percentile(percent).TotalNanoseconds / 1e9 * Stopwatch.Frequency;
            got.Should().BeApproximately(exact, exact / 64.0, $"p{percent}");
        }
        histogram.Count.Should().Be(10_000);
        histogram.TotalTicks.Should().Be(values.Sum());
    }

    [Fact]
    public void SmallValuesAreExactAndAMergedHistogramCountsBoth()
    {
        var first = new LatencyHistogram();
        var second = new LatencyHistogram();
        first.Record(3);
        first.Record(-5);
        second.Record(100);
        second.Record(100);

        first.Add(second);

        first.Count.Should().Be(4);
        first.TotalTicks.Should().Be(203, "a negative latency counts as 0");
        first.Percentile(25).Should().Be(Stopwatch.GetElapsedTime(0, 0));
        first.Percentile(50).Should().Be(Stopwatch.GetElapsedTime(0, 3));
        first.Percentile(100).Should().Be(Stopwatch.GetElapsedTime(0, 100));
    }

    [Fact]
    public void AnEmptyHistogramHasZeroPercentilesAndAClearedOneIsEmpty()
    {
        var histogram = new LatencyHistogram();
        histogram.Percentile(99).Should().Be(TimeSpan.Zero);
        histogram.Mean.Should().Be(TimeSpan.Zero);

        histogram.Record(1_000_000);
        histogram.Clear();

        histogram.Count.Should().Be(0);
        histogram.Percentile(50).Should().Be(TimeSpan.Zero);
        histogram.Invoking(h => h.Percentile(101)).Should().Throw<ArgumentOutOfRangeException>();
    }
}
