using System.Globalization;

namespace Vfio.Benchmarks;

/// <summary>One measured quantity, printed as <c>name: value</c>.</summary>
internal readonly record struct Metric(string Name, double Value, string Format = "0.###")
{
    public override string ToString() =>
        Name + ": " + Value.ToString(Format, CultureInfo.InvariantCulture);
}

/// <summary>Where a benchmark finds what it needs outside the managed program.</summary>
/// <param name="NativeDirectory">The folder holding the compiled C baselines (run.sh builds them).</param>
internal sealed record BenchmarkOptions(string NativeDirectory);

/// <summary>
/// A benchmark: measures one area of the library and reports one or more metrics. The first
/// metric it reports is its headline number; the others give context (absolute costs, allocation).
/// </summary>
internal interface IBenchmark
{
    /// <summary>The name selected on the command line; the headline metric's name.</summary>
    string Name { get; }

    /// <summary>One line for <c>--list</c>: what is measured and the target.</summary>
    string Description { get; }

    /// <summary>Runs the measurement; throws if it cannot be made.</summary>
    IReadOnlyList<Metric> Run(BenchmarkOptions options);
}
