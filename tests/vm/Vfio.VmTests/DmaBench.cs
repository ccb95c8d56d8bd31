using System.Diagnostics;
using System.Globalization;

namespace Vfio.VmTests;

/// <summary>
/// The guest side of benchmarks/vm/run-dma-bench.sh: what DMA mapping and opening a device cost
/// through the library against the same sequence of system calls from C
/// (benchmarks/native/dma_map_bench.c, run as a process of its own), once per backend on one device:
/// the legacy container (type1) and iommufd (the device cdev bound to /dev/iommu).
/// <list type="bullet">
/// <item>map + unmap: <see cref="VfioDevice.AllocateDmaBuffer"/> and <see cref="DmaBuffer.Dispose"/> of a 4 KiB and a
/// 2 MiB buffer (anonymous memory populated up front, mapped for the device to read and write, unmapped,
/// freed), against C's mmap, MAP, UNMAP and munmap of the same sizes;</item>
/// <item>open-to-ready: the first <see cref="VfioDevice.Open"/> of a registered device until it returns, and the
/// dispose that closes it again, against C opening the group and container (or the cdev and iommufd), attaching
/// the device, reading its info and wiring the request notifier as the library does, and closing it all.</item>
/// </list>
/// An untimed first pass prints the calls the library makes for each (from <see cref="TracingKernel"/>).
/// Rounds alternate which side runs first, so that load on the machine falls on both alike; each
/// ratio is the median of the per-round ratios, printed as <c>name: value</c> lines:
/// <c>dma_map_ratio_legacy</c> and <c>dma_map_ratio_iommufd</c> (the 4 KiB and the 2 MiB map + unmap
/// together, library over C) and <c>device_open_ratio_legacy</c> and <c>device_open_ratio_iommufd</c>,
/// with the times behind them, and <c>device_open_thread_us</c>: a thread started and joined, which
/// every open and close of the library paid for the REQ notifier's poller before the registry's
/// notifiers shared one thread (for comparison). Exits 1 when a run could
/// not produce its figures.
/// </summary>
internal static class DmaBench
{
    private const string Usage = "usage: Vfio.VmTests --dma-bench ADDRESS --native PATH [--rounds N] [--map-iterations N] [--huge-iterations N] [--open-iterations N]";
    private const ulong SmallBuffer = 4096;
    private const ulong LargeBuffer = 2UL << 20;

    private static readonly (VfioBackend Backend, string Name)[] Backends = [(VfioBackend.Legacy, "legacy"), (VfioBackend.Iommufd, "iommufd")];

    public static async Task<int> RunAsync(IReadOnlyList<string> args, TextWriter output)
    {
        if (Settings.Parse(args) is not { } settings)
        {
            Console.Error.WriteLine(Usage);
            return 2;
        }
        string sysfs = $"/sys/bus/pci/devices/{settings.Device}";
        if (!Directory.Exists(sysfs))
        {
            Console.Error.WriteLine($"dma bench: no PCI device {settings.Device}");
            return 1;
        }
        int group = int.Parse(Path.GetFileName(new DirectoryInfo($"{sysfs}/iommu_group").ResolveLinkTarget(true)!.FullName), CultureInfo.InvariantCulture);
        string? cdev = Directory.Exists($"{sysfs}/vfio-dev") ? Directory.GetDirectories($"{sysfs}/vfio-dev").Select(Path.GetFileName).FirstOrDefault() : null;
        if (cdev is null)
        {
            Console.Error.WriteLine($"dma bench: {settings.Device} has no vfio-dev entry: the kernel has no VFIO device cdev, so the iommufd backend cannot run");
            return 1;
        }
        output.WriteLine($"DMA map + unmap and device open-to-ready, the library against C, on {settings.Device} (group {group}, cdev /dev/vfio/devices/{cdev}), kernel {Environment.OSVersion.Version}");
        output.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{settings.Rounds} rounds; per round and backend: {settings.OpenIterations} opens, {settings.MapIterations} map + unmap of 4 KiB, {settings.HugeIterations} of 2 MiB, on each side (C first in odd rounds, the library first in even ones)"));

        foreach (var (backend, name) in Backends)
        {
            await TraceAsync(settings, backend, name, output).ConfigureAwait(false);
        }

        // What part of an open and close was the REQ notifier's poller thread when each notifier had
        // its own (started by every open, joined by every close): a thread that does nothing, started and joined.
        long threadStart = Stopwatch.GetTimestamp();
        for (int i = 0; i < settings.OpenIterations; i++)
        {
            var thread = new Thread(() => { }) { IsBackground = true };
            thread.Start();
            thread.Join();
        }
        double threadUs = Microseconds(threadStart, settings.OpenIterations);

        var rounds = Backends.ToDictionary(b => b.Name, _ => new List<(Figures C, Figures Library)>());
        bool failed = false;
        for (int round = 0; round < settings.Rounds; round++)
        {
            Console.Error.WriteLine($"dma bench: round {round + 1} of {settings.Rounds}");
            foreach (var (backend, name) in Backends)
            {
                try
                {
                    Figures c, library;
                    if (round % 2 == 0)
                    {
                        c = await RunNativeAsync(settings, name, group, cdev).ConfigureAwait(false);
                        library = await RunLibraryAsync(settings, backend).ConfigureAwait(false);
                    }
                    else
                    {
                        library = await RunLibraryAsync(settings, backend).ConfigureAwait(false);
                        c = await RunNativeAsync(settings, name, group, cdev).ConfigureAwait(false);
                    }
                    rounds[name].Add((c, library));
                    output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"round {round + 1} {name,-7}  open {library.OpenUs,8:0.0} us (C {c.OpenUs,8:0.0})  4 KiB {library.Map4kUs,7:0.0} us (C {c.Map4kUs,7:0.0})  2 MiB {library.Map2mUs,8:0.0} us (C {c.Map2mUs,8:0.0})"));
                }
                catch (Exception e) when (e is VfioException or InvalidOperationException or IOException or FormatException)
                {
                    Console.Error.WriteLine($"dma bench: round {round + 1}, {name}: {e.GetType().Name}: {e.Message}");
                    failed = true;
                }
            }
        }

        foreach (var (_, name) in Backends)
        {
            var runs = rounds[name];
            if (runs.Count == 0)
            {
                failed = true;
                continue;
            }
            Print(output, $"dma_map_ratio_{name}", Median(runs, r => (r.Library.Map4kUs + r.Library.Map2mUs) / (r.C.Map4kUs + r.C.Map2mUs)));
            Print(output, $"dma_map_4k_ratio_{name}", Median(runs, r => r.Library.Map4kUs / r.C.Map4kUs));
            Print(output, $"dma_map_2m_ratio_{name}", Median(runs, r => r.Library.Map2mUs / r.C.Map2mUs));
            Print(output, $"dma_map_4k_us_{name}", Median(runs, r => r.Library.Map4kUs));
            Print(output, $"dma_map_4k_c_us_{name}", Median(runs, r => r.C.Map4kUs));
            Print(output, $"dma_map_2m_us_{name}", Median(runs, r => r.Library.Map2mUs));
            Print(output, $"dma_map_2m_c_us_{name}", Median(runs, r => r.C.Map2mUs));
            Print(output, $"device_open_ratio_{name}", Median(runs, r => r.Library.OpenUs / r.C.OpenUs));
            Print(output, $"device_open_us_{name}", Median(runs, r => r.Library.OpenUs));
            Print(output, $"device_open_c_us_{name}", Median(runs, r => r.C.OpenUs));
        }
        Print(output, "device_open_thread_us", threadUs);
        return failed ? 1 : 0;
    }

    /// <summary>One untimed open, 4 KiB map + unmap and close through the library, printing the calls each made.</summary>
    private static async Task TraceAsync(Settings settings, VfioBackend backend, string name, TextWriter output)
    {
        var kernel = new TracingKernel(VfioKernel.Linux);
        await using var registry = await OpenRegistryAsync(kernel, backend).ConfigureAwait(false);
        var device = Find(registry, settings.Device);
        kernel.Recording = true;
        var reference = device.Open();
        var open = kernel.Take();
        using (var buffer = device.AllocateDmaBuffer(SmallBuffer))
        {
            output.WriteLine($"library, {name}: map (AllocateDmaBuffer, 4 KiB, at IOVA 0x{buffer.Iova:x}): {string.Join(", ", kernel.Take())}");
        }
        output.WriteLine($"library, {name}: unmap (Dispose): {string.Join(", ", kernel.Take())}");
        reference.Dispose();
        kernel.Recording = false;
        output.WriteLine($"library, {name}: open: {string.Join(", ", open)}");
        output.WriteLine($"library, {name}: close: {string.Join(", ", kernel.Take())}");
    }

    private static async Task<Figures> RunLibraryAsync(Settings settings, VfioBackend backend)
    {
        await using var registry = await OpenRegistryAsync(VfioKernel.Linux, backend).ConfigureAwait(false);
        var device = Find(registry, settings.Device);

        device.Open().Dispose(); // warm-up
        long start = Stopwatch.GetTimestamp();
        for (int i = 0; i < settings.OpenIterations; i++)
        {
            device.Open().Dispose();
        }
        double openUs = Microseconds(start, settings.OpenIterations);

        using var open = device.Open();
        device.AllocateDmaBuffer(SmallBuffer).Dispose();
        device.AllocateDmaBuffer(LargeBuffer).Dispose();
        start = Stopwatch.GetTimestamp();
        for (int i = 0; i < settings.MapIterations; i++)
        {
            device.AllocateDmaBuffer(SmallBuffer).Dispose();
        }
        double map4kUs = Microseconds(start, settings.MapIterations);
        start = Stopwatch.GetTimestamp();
        for (int i = 0; i < settings.HugeIterations; i++)
        {
            device.AllocateDmaBuffer(LargeBuffer).Dispose();
        }
        double map2mUs = Microseconds(start, settings.HugeIterations);
        return new Figures(openUs, map4kUs, map2mUs);
    }

    private static async Task<Figures> RunNativeAsync(Settings settings, string backend, int group, string cdev)
    {
        var start = new ProcessStartInfo(settings.Native)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string arg in (string[])[backend, backend == "legacy" ? $"/dev/vfio/{group}" : $"/dev/vfio/devices/{cdev}", settings.Device,
            Count(settings.OpenIterations), Count(settings.MapIterations), Count(settings.HugeIterations)])
        {
            start.ArgumentList.Add(arg);
        }
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"{settings.Native} did not start");
        var stderr = process.StandardError.ReadToEndAsync();
        string stdout = await process.StandardOutput.ReadToEndAsync().ConfigureAwait(false);
        await process.WaitForExitAsync().ConfigureAwait(false);
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"{settings.Native} {backend} exited with {process.ExitCode}: {(await stderr.ConfigureAwait(false)).Trim()}");
        }
        var values = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(line => line.Split(':', 2, StringSplitOptions.TrimEntries))
            .Where(parts => parts.Length == 2)
            .ToDictionary(parts => parts[0], parts => double.Parse(parts[1], CultureInfo.InvariantCulture));
        return new Figures(Value("open_ns") / 1000, Value("map_4k_ns") / 1000, Value("map_2m_ns") / 1000);

        double Value(string name) => values.TryGetValue(name, out double value) && value > 0
            ? value
            : throw new FormatException($"{settings.Native} {backend} printed no {name}: {stdout.Trim()}");

        static string Count(int value) => value.ToString(CultureInfo.InvariantCulture);
    }

    private static async Task<VfioRegistry> OpenRegistryAsync(VfioKernel kernel, VfioBackend backend)
    {
        var registry = new VfioRegistry(kernel, options: new VfioRegistryOptions { Backend = backend });
        registry.AddDriver(new BenchDriver());
        await registry.ProbeAsync().ConfigureAwait(false);
        return registry;
    }

    private static BenchDevice Find(VfioRegistry registry, string address) =>
        registry.Devices.OfType<BenchDevice>().FirstOrDefault(d => d.Address.ToString() == address)
            ?? throw new InvalidOperationException($"no PCI device bound to vfio-pci at {address}");

    private static double Microseconds(long start, int iterations) => Stopwatch.GetElapsedTime(start).TotalMicroseconds / iterations;

    private static double Median(List<(Figures C, Figures Library)> runs, Func<(Figures C, Figures Library), double> value)
    {
        var sorted = runs.Select(value).Order().ToList();
        return sorted[(sorted.Count - 1) / 2];
    }

    private static void Print(TextWriter output, string name, double value) =>
        output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{name}: {value:0.###}"));

    /// <summary>One side's times in one round: per open + close, per 4 KiB and per 2 MiB map + unmap.</summary>
    private sealed record Figures(double OpenUs, double Map4kUs, double Map2mUs);

    /// <summary>Any PCI device bound to vfio-pci, with nothing of its own: the benchmark needs only its IOMMU.</summary>
    private sealed class BenchDevice(PciDeviceContext context) : PciVfioDevice(context);

    private sealed class BenchDriver() : PciDriver<BenchDevice>("dma-bench", new PciMatch())
    {
        protected internal override BenchDevice CreateDevice(PciDeviceContext context) => new(context);
    }

    private sealed record Settings(string Device, string Native, int Rounds, int OpenIterations, int MapIterations, int HugeIterations)
    {
        public static Settings? Parse(IReadOnlyList<string> args)
        {
            string? device = null;
            string? native = null;
            int rounds = 5, open = 100, map = 2000, huge = 100;
            bool read = OptionPairs.Read(args, (name, value) => name switch
            {
                "--device" => (device = value) is not null,
                "--native" => (native = value) is not null,
                "--rounds" => OptionPairs.Positive(value, out rounds),
                "--open-iterations" => OptionPairs.Positive(value, out open),
                "--map-iterations" => OptionPairs.Positive(value, out map),
                "--huge-iterations" => OptionPairs.Positive(value, out huge),
                _ => false,
            });
            return !read || device is null || native is null ? null : new Settings(device, native, rounds, open, map, huge);
        }
    }
}
