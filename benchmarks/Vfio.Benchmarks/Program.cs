using Vfio.Benchmarks;

// Usage: Vfio.Benchmarks [all | NAME...] [--native-dir DIR] [--list]
// Prints each metric as a "name: value" line on stdout; diagnostics go to stderr.
// Exit codes: 0 all selected benchmarks ran, 1 a benchmark failed, 2 bad command line.

IBenchmark[] all =
[
    new IoctlOverheadBenchmark(),
    new IoctlBreakdownBenchmark(),
    new IrqWakeBenchmark(),
    new IovaTranslateBenchmark(),
    new MmioOverheadBenchmark(),
    new MmioCopyBenchmark(),
    new DeviceReferenceBenchmark(),
];

var selected = new List<IBenchmark>();
string nativeDirectory = Path.Combine(AppContext.BaseDirectory, "native");

for (int i = 0; i < args.Length; i++)
{
    string arg = args[i];
    switch (arg)
    {
        case "--list":
            foreach (IBenchmark b in all)
            {
                Console.WriteLine(b.Name + "\t" + b.Description);
            }
            return 0;
        case "--native-dir" when i + 1 < args.Length:
            nativeDirectory = args[++i];
            break;
        case "all":
            selected.AddRange(all);
            break;
        default:
            IBenchmark? match = Array.Find(all, b => string.Equals(b.Name, arg, StringComparison.Ordinal));
            if (match is null)
            {
                Console.Error.WriteLine($"unknown benchmark or option '{arg}'; --list shows the benchmarks");
                return 2;
            }
            selected.Add(match);
            break;
    }
}

if (selected.Count == 0)
{
    selected.AddRange(all);
}

var options = new BenchmarkOptions(Path.GetFullPath(nativeDirectory));
int exitCode = 0;
foreach (IBenchmark benchmark in selected.Distinct())
{
    try
    {
        foreach (Metric metric in benchmark.Run(options))
        {
            Console.WriteLine(metric.ToString());
        }
    }
#pragma warning disable CA1031 // One failed benchmark is reported and the others still run.
    catch (Exception e)
#pragma warning restore CA1031
    {
        Console.Error.WriteLine($"{benchmark.Name}: failed: {e}");
        exitCode = 1;
    }
}
return exitCode;
