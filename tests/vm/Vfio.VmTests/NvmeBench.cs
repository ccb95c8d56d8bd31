using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using NvmeDriver;

namespace Vfio.VmTests;

/// <summary>
/// The guest side of benchmarks/vm/run-nvme-bench.sh: the same workloads on two identically
/// configured NVMe controllers, one through the kernel's nvme driver (fio, engines io_uring with and
/// without polling, and libaio), one through the library (the NVMe sample's load generator, polling
/// and MSI-X). Prints a table of IOPS and latency percentiles per run, where the library's time per
/// I/O went, and the ratios <c>nvme_qd1_read_iops_ratio</c>, <c>nvme_qd32_read_iops_ratio</c> and
/// <c>nvme_qd1_write_iops_ratio</c> (the library's best mode over the kernel's best engine) as
/// <c>name: value</c> lines. Exits 1 when any run could not produce its figures.
/// </summary>
internal static class NvmeBench
{
    private const string Usage = "usage: Vfio.VmTests --nvme-bench ADDRESS --kernel-disk DEVICE [--seconds N] [--warm-up N] [--region-mib N] [--rounds N]";

    private static readonly Workload[] Workloads =
    [
        new("randread", Write: false, Depth: 1, Ratio: "nvme_qd1_read_iops_ratio"),
        new("randread", Write: false, Depth: 32, Ratio: "nvme_qd32_read_iops_ratio"),
        new("randwrite", Write: true, Depth: 1, Ratio: "nvme_qd1_write_iops_ratio"),
        new("randwrite", Write: true, Depth: 32, Ratio: null),
    ];

    // fio's fastest settings for each engine: registered buffers and files skip per-I/O page pinning and file lookups.
    private static readonly FioEngine[] Engines =
    [
        new("kernel io_uring", "io_uring", ["--fixedbufs=1", "--registerfiles=1"]),
        new("kernel io_uring polled", "io_uring", ["--hipri=1", "--fixedbufs=1", "--registerfiles=1"]),
        new("kernel libaio", "libaio", []),
    ];

    private static readonly (string Name, NvmeCompletionMode Mode)[] LibraryModes =
    [
        ("library polled", NvmeCompletionMode.Polling),
        ("library MSI-X", NvmeCompletionMode.Interrupt),
    ];

    public static async Task<int> RunAsync(IReadOnlyList<string> args, TextWriter output)
    {
        if (Settings.Parse(args) is not { } settings)
        {
            Console.Error.WriteLine(Usage);
            return 2;
        }
        output.WriteLine($"NVMe I/O through the kernel's nvme driver (fio) and through the library (samples/NvmeDriver), same QEMU controller model");
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"kernel: {settings.KernelDisk}; library: {settings.Device}; {settings.TransferBytes / 1024} KiB random I/O over the first {settings.RegionBytes >> 20} MiB, {settings.Duration.TotalSeconds:0} s per run after {settings.WarmUp.TotalSeconds:0} s of warm-up;"));
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{settings.Rounds} rounds, each running every workload on every driver (the order of the drivers rotating), so that load on the machine falls on both sides alike; each figure is the run with the median IOPS"));

        var results = new List<RunResult>();
        await using var registry = new VfioRegistry(VfioKernel.Linux);
        registry.AddDriver(new NvmePciDriver());
        var probe = await registry.ProbeAsync().ConfigureAwait(false);
        var controller = probe.Registered.OfType<NvmeController>().FirstOrDefault(c => c.Address.ToString() == settings.Device);
        if (controller is null)
        {
            Console.Error.WriteLine($"nvme bench: no NVMe controller bound to vfio-pci at {settings.Device}");
            return 1;
        }
        using (controller.Open())
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            await controller.StartAsync(adminEntries: 32, vectors: 2, timeout.Token).ConfigureAwait(false);
            var ns = await controller.IdentifyNamespaceAsync(1, timeout.Token).ConfigureAwait(false);
            // The backend the registry chose: the legacy container on a kernel without iommufd (Debian's 6.1).
            output.WriteLine($"library backend: {controller.Backend?.ToString().ToLowerInvariant()}");
            var drivers = new List<Func<Workload, Task<RunResult>>>();
            drivers.AddRange(Engines.Select(engine => (Func<Workload, Task<RunResult>>)(w => RunFioAsync(settings, w, engine))));
            drivers.AddRange(LibraryModes.Select(mode => (Func<Workload, Task<RunResult>>)(w => RunLibraryAsync(settings, controller, ns, w, mode.Name, mode.Mode))));
            for (int round = 0; round < settings.Rounds; round++)
            {
                Console.Error.WriteLine($"nvme bench: round {round + 1} of {settings.Rounds}");
                foreach (var workload in Workloads)
                {
                    for (int i = 0; i < drivers.Count; i++)
                    {
                        results.Add(await drivers[(i + round) % drivers.Count](workload).ConfigureAwait(false));
                    }
                }
            }
            await controller.DisableAsync(CancellationToken.None).ConfigureAwait(false);
        }
        await registry.UnregisterAsync(controller).ConfigureAwait(false);
        controller.Dispose();

        PrintRuns(output, results);
        PrintPhases(output, results);
        int missing = PrintRatios(output, results);
        output.Flush();
        return results.Any(r => r.Error is not null) || missing > 0 ? 1 : 0;
    }

    private static async Task<RunResult> RunFioAsync(Settings settings, Workload workload, FioEngine engine)
    {
        var start = new ProcessStartInfo("fio")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        string[] arguments =
        [
            "--name=bench", $"--filename={settings.KernelDisk}", "--direct=1", $"--ioengine={engine.Engine}", .. engine.Options,
            $"--rw={workload.Pattern}", $"--bs={settings.TransferBytes}", $"--iodepth={workload.Depth}", $"--size={settings.RegionBytes}",
            "--norandommap=1", "--time_based=1", Seconds("--ramp_time", settings.WarmUp), Seconds("--runtime", settings.Duration),
            "--lat_percentiles=1", "--clat_percentiles=0", "--percentile_list=50:90:99:99.9", "--output-format=json",
        ];
        foreach (string argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }
        try
        {
            using var fio = Process.Start(start) ?? throw new InvalidOperationException("fio did not start");
            var stdout = fio.StandardOutput.ReadToEndAsync();
            var stderr = fio.StandardError.ReadToEndAsync();
            using var timeout = new CancellationTokenSource(settings.WarmUp + settings.Duration + TimeSpan.FromSeconds(60));
            await fio.WaitForExitAsync(timeout.Token).ConfigureAwait(false);
            string json = await stdout.ConfigureAwait(false);
            string errors = (await stderr.ConfigureAwait(false)).Trim();
            if (fio.ExitCode != 0)
            {
                throw new InvalidOperationException($"fio exited with {fio.ExitCode}: {errors}");
            }
            return ParseFio(workload, engine.Name, json);
        }
#pragma warning disable CA1031 // a failed run is reported in the table and fails the benchmark
        catch (Exception e)
#pragma warning restore CA1031
        {
            return RunResult.Failed(workload, engine.Name, e);
        }

        static string Seconds(string option, TimeSpan value) => string.Create(CultureInfo.InvariantCulture, $"{option}={value.TotalSeconds:0.###}");
    }

    /// <summary>fio's JSON (<c>--output-format=json</c>): the job's IOPS, and its total-latency percentiles (<c>--lat_percentiles=1</c>).</summary>
    private static RunResult ParseFio(Workload workload, string driver, string json)
    {
        int brace = json.IndexOf('{', StringComparison.Ordinal);
        if (brace < 0)
        {
            throw new InvalidOperationException($"fio printed no JSON: {json.Trim()}");
        }
        using var document = JsonDocument.Parse(json[brace..]);
        var job = document.RootElement.GetProperty("jobs")[0];
        if (job.GetProperty("error").GetInt32() is int error and not 0)
        {
            throw new InvalidOperationException($"fio's job failed with error {error}");
        }
        var direction = job.GetProperty(workload.Write ? "write" : "read");
        if (!direction.TryGetProperty("lat_ns", out var latency) || !latency.TryGetProperty("percentile", out var percentiles))
        {
            percentiles = direction.GetProperty("clat_ns").GetProperty("percentile");
        }
        double iops = direction.GetProperty("iops").GetDouble();
        if (iops <= 0)
        {
            throw new InvalidOperationException("fio completed no I/O");
        }
        TimeSpan Percentile(string name) => TimeSpan.FromMicroseconds(percentiles.GetProperty(name).GetInt64() / 1000.0);
        return new RunResult(workload, driver, iops, Percentile("50.000000"), Percentile("90.000000"), Percentile("99.000000"), Percentile("99.900000"), null, null, null);
    }

    private static async Task<RunResult> RunLibraryAsync(Settings settings, NvmeController controller, NvmeNamespace ns, Workload workload, string name, NvmeCompletionMode mode)
    {
        var options = new NvmeLoadOptions
        {
            Write = workload.Write,
            Depth = workload.Depth,
            TransferBytes = settings.TransferBytes,
            RegionBytes = settings.RegionBytes,
            Completion = mode,
            Duration = settings.Duration,
            WarmUp = settings.WarmUp,
        };
        try
        {
            var result = await NvmeLoadGenerator.RunAsync(controller, ns, options).ConfigureAwait(false);
            if (result.Ios == 0)
            {
                throw new InvalidOperationException("no command completed in the measured time");
            }
            var latency = result.Latency;
            return new RunResult(workload, name, result.Iops, latency.Percentile(50), latency.Percentile(90), latency.Percentile(99), latency.Percentile(99.9), (result.LoopAllocatedBytes, result.ProcessAllocatedBytes), result.Phases, null);
        }
#pragma warning disable CA1031 // a failed run is reported in the table and fails the benchmark
        catch (Exception e)
#pragma warning restore CA1031
        {
            return RunResult.Failed(workload, name, e);
        }
    }

    private static void PrintRuns(TextWriter output, List<RunResult> results)
    {
        output.WriteLine();
        output.WriteLine($"{"workload",-15} {"driver",-23} {"IOPS",8} {"min-max IOPS",15} {"p50 us",8} {"p90 us",8} {"p99 us",8} {"p99.9 us",9} {"alloc B",12}");
        foreach (var runs in Runs.Of(results))
        {
            foreach (var failed in runs.All.Where(r => r.Error is not null))
            {
                output.WriteLine($"{runs.Workload.Name,-15} {runs.Driver,-23} FAILED: {failed.Error}");
            }
            if (runs.Median is not { } r)
            {
                continue;
            }
            var ok = runs.Succeeded;
            string range = string.Create(CultureInfo.InvariantCulture, $"{ok[0].Iops:0}-{ok[^1].Iops:0}");
            string allocated = r.Allocated is null ? "-" : string.Create(CultureInfo.InvariantCulture,
                $"{ok.Max(run => run.Allocated!.Value.Loop)}/{ok.Max(run => run.Allocated!.Value.Process)}");
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{r.Workload.Name,-15} {r.Driver,-23} {r.Iops,8:0} {range,15} {r.P50.TotalMicroseconds,8:0.0} {r.P90.TotalMicroseconds,8:0.0} {r.P99.TotalMicroseconds,8:0.0} {r.P999.TotalMicroseconds,9:0.0} {allocated,12}"));
        }
        output.WriteLine("alloc B: the most managed bytes any round's library run allocated in its measured seconds, by the I/O loop on its own threads / by the whole process (the runtime's own work too)");
    }

    private static void PrintPhases(TextWriter output, List<RunResult> results)
    {
        var library = Runs.Of(results).Select(r => r.Median).Where(r => r?.Phases is not null).Select(r => r!).ToList();
        if (library.Count == 0)
        {
            return;
        }
        output.WriteLine();
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"Where the library's time per I/O goes (us, median runs; clock reads between the phases of each round, each phase includes one read of {library[0].Phases!.ClockReadNs / 1000:0.00} us):"));
        output.WriteLine($"{"workload",-15} {"driver",-15} {"submit",7} {"SQ bell",8} {"wait",8} {"CQ scan",8} {"CQ bell",8} {"total",8} {"cmds/round",11} {"polls/IO",9} {"wakes/IO",9}");
        foreach (var r in library)
        {
            var p = r.Phases!;
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{r.Workload.Name,-15} {r.Driver.Replace("library ", string.Empty, StringComparison.Ordinal),-15} {p.SubmissionNs / 1000,7:0.0} {p.SubmissionDoorbellNs / 1000,8:0.0} {p.WaitNs / 1000,8:0.0} {p.CompletionScanNs / 1000,8:0.0} {p.CompletionDoorbellNs / 1000,8:0.0} {p.TotalNs / 1000,8:0.0} {p.CommandsPerRound,11:0.0} {p.EmptyPollsPerIo,9:0} {p.WakeUpsPerIo,9:0.00}"));
        }
    }

    /// <summary>Prints each workload's ratio (the best library driver over the best kernel driver, by median IOPS); returns how many could not be computed.</summary>
    private static int PrintRatios(TextWriter output, List<RunResult> results)
    {
        output.WriteLine();
        int missing = 0;
        var medians = Runs.Of(results).Select(r => r.Median).Where(r => r is not null).Select(r => r!).ToList();
        foreach (var workload in Workloads.Where(w => w.Ratio is not null))
        {
            var runs = medians.Where(r => r.Workload == workload).ToList();
            var kernel = runs.Where(r => r.Driver.StartsWith("kernel", StringComparison.Ordinal)).MaxBy(r => r.Iops);
            var library = runs.Where(r => r.Driver.StartsWith("library", StringComparison.Ordinal)).MaxBy(r => r.Iops);
            if (kernel is null || library is null)
            {
                output.WriteLine($"{workload.Ratio}: unavailable (a run failed)");
                missing++;
                continue;
            }
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{workload.Ratio}: {library.Iops / kernel.Iops:0.000}   ({library.Driver} {library.Iops:0} / {kernel.Driver} {kernel.Iops:0} IOPS)"));
        }
        return missing;
    }

    /// <summary>One workload, run on both sides.</summary>
    /// <param name="Pattern">fio's name for it (randread, randwrite).</param>
    /// <param name="Write">Whether it writes.</param>
    /// <param name="Depth">Commands in flight.</param>
    /// <param name="Ratio">The ratio's name, or null when none is printed for it.</param>
    internal sealed record Workload(string Pattern, bool Write, int Depth, string? Ratio)
    {
        public string Name => string.Create(CultureInfo.InvariantCulture, $"{Pattern} QD{Depth}");
    }

    internal sealed record RunResult(Workload Workload, string Driver, double Iops, TimeSpan P50, TimeSpan P90, TimeSpan P99, TimeSpan P999, (long Loop, long Process)? Allocated, NvmeIoPhases? Phases, string? Error)
    {
        public static RunResult Failed(Workload workload, string driver, Exception e) =>
            new(workload, driver, 0, TimeSpan.Zero, TimeSpan.Zero, TimeSpan.Zero, TimeSpan.Zero, null, null, $"{e.GetType().Name}: {e.Message}");
    }

    /// <summary>The runs of one driver on one workload over the rounds: the run with the median IOPS stands for them.</summary>
    private sealed record Runs(Workload Workload, string Driver, List<RunResult> All)
    {
        public List<RunResult> Succeeded => [.. All.Where(r => r.Error is null).OrderBy(r => r.Iops)];

        public RunResult? Median => Succeeded is { Count: > 0 } ok ? ok[(ok.Count - 1) / 2] : null;

        public static List<Runs> Of(List<RunResult> results) =>
            [.. results.GroupBy(r => (r.Workload, r.Driver)).Select(g => new Runs(g.Key.Workload, g.Key.Driver, [.. g]))
                .OrderBy(r => Array.IndexOf(Workloads, r.Workload)).ThenBy(r => DriverOrder(r.Driver))];

        private static int DriverOrder(string driver) =>
            Array.FindIndex(Engines, e => e.Name == driver) is int e and >= 0 ? e : Engines.Length + Array.FindIndex(LibraryModes, m => m.Name == driver);
    }

    private sealed record FioEngine(string Name, string Engine, string[] Options);

    private sealed record Settings(string Device, string KernelDisk, TimeSpan Duration, TimeSpan WarmUp, ulong RegionBytes, int TransferBytes, int Rounds)
    {
        public static Settings? Parse(IReadOnlyList<string> args)
        {
            string? device = null;
            string? disk = null;
            double seconds = 3;
            double warmUp = 1;
            ulong regionMib = 32;
            int rounds = 5;
            bool read = OptionPairs.Read(args, (name, value) => name switch
            {
                "--device" => (device = value) is not null,
                "--kernel-disk" => (disk = value) is not null,
                "--seconds" => double.TryParse(value, CultureInfo.InvariantCulture, out seconds) && seconds > 0,
                "--warm-up" => double.TryParse(value, CultureInfo.InvariantCulture, out warmUp) && warmUp >= 0,
                "--region-mib" => ulong.TryParse(value, CultureInfo.InvariantCulture, out regionMib) && regionMib > 0,
                "--rounds" => OptionPairs.Positive(value, out rounds),
                _ => false,
            });
            if (!read || device is null || disk is null)
            {
                return null;
            }
            return new Settings(device, disk, TimeSpan.FromSeconds(seconds), TimeSpan.FromSeconds(warmUp), regionMib << 20, 4096, rounds);
        }
    }
}
