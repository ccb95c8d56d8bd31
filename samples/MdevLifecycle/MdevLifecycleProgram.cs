using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.Logging;
using Vfio;
using Vfio.Testing;

namespace MdevLifecycle;

/// <summary>
/// The sample's program: the whole life of a mediated device — discover the parent and its types,
/// create an mdev, open it, read and write its registers, remove it — printed step by step. It runs
/// on the simulated kernel with an mtty parent by default, and on the machine's kernel with
/// <c>--real</c> (the mtty module loaded: <c>modprobe mtty</c>).
/// </summary>
public static class MdevLifecycleProgram
{
    private const string Usage = "usage: MdevLifecycle [--real] [--parent NAME] [--type TYPE] [--backend legacy|iommufd] [--verbose]   (default: simulated kernel, parent mtty, type mtty-2, the backend the library chooses)";

    /// <summary>Runs the program; returns its exit code (0 when every step passed).</summary>
    /// <param name="args">The command line.</param>
    /// <param name="output">Where the report goes.</param>
    public static async Task<int> RunAsync(IReadOnlyList<string> args, TextWriter output)
    {
        ArgumentNullException.ThrowIfNull(args);
        ArgumentNullException.ThrowIfNull(output);
        bool real = false;
        bool verbose = false;
        string parentName = "mtty";
        string typeId = "mtty-2";
        VfioBackend? backend = null;
        for (int i = 0; i < args.Count; i++)
        {
            switch (args[i])
            {
                case "--real":
                    real = true;
                    break;
                case "--backend":
                    string value = i + 1 < args.Count ? args[++i] : string.Empty;
                    if (!Vfio.Samples.BackendDescription.TryParse(value, out VfioBackend chosen))
                    {
                        await Console.Error.WriteLineAsync("MdevLifecycle: --backend takes legacy or iommufd, not '" + value + "'\n" + Usage).ConfigureAwait(false);
                        return 2;
                    }
                    backend = chosen;
                    break;
                case "--verbose" or "-v":
                    verbose = true;
                    break;
                case "--parent" when i + 1 < args.Count:
                    parentName = args[++i];
                    break;
                case "--type" when i + 1 < args.Count:
                    typeId = args[++i];
                    break;
                case "--help" or "-h":
                    await output.WriteLineAsync(Usage).ConfigureAwait(false);
                    return 0;
                default:
                    await Console.Error.WriteLineAsync("MdevLifecycle: unknown argument '" + args[i] + "'\n" + Usage).ConfigureAwait(false);
                    return 2;
            }
        }

        using var loggerFactory = LoggerFactory.Create(builder =>
        {
            builder.SetMinimumLevel(verbose ? LogLevel.Debug : LogLevel.None);
            if (verbose)
            {
                builder.AddSimpleConsole(o => o.SingleLine = true);
            }
        });

        SimulatedKernel? simulated = null;
        if (!real)
        {
            simulated = new SimulatedKernel();
            simulated.AddMttyParent();
        }
        VfioKernel kernel = simulated ?? VfioKernel.Linux;
        string title = "Mediated device lifecycle (mtty) on " + (simulated is null ? "the Linux kernel" : "the simulated kernel (Vfio.Testing)");
        await output.WriteLineAsync(title).ConfigureAwait(false);
        await output.WriteLineAsync(new string('-', title.Length)).ConfigureAwait(false);

        var steps = new Steps(output);
        var registry = new VfioRegistry(kernel, loggerFactory, new VfioRegistryOptions { Backend = backend });
        await using (registry.ConfigureAwait(false))
        {
            registry.AddDriver(new MttyDriver());
            MdevParent? parent = null;
            MdevType? type = null;
            int availableBefore = 0;
            CreatedMdev<MttyDevice>? mdev = null;
            try
            {
                steps.Run("discover", () =>
                {
                    parent = registry.FindMdevParent(parentName);
                    type = parent.Type(typeId);
                    availableBefore = type.ReadAvailableInstances();
                    return $"{parent.Name}: " + string.Join(", ", parent.Types.Select(t => $"{t.Id} \"{t.Name}\" {t.DeviceApi} ({t.ReadAvailableInstances()} available)"));
                });
                await steps.RunAsync("create", async () =>
                {
                    mdev = await type!.CreateAsync<MttyDevice>().ConfigureAwait(false);
                    int after = type.ReadAvailableInstances();
                    Check(after < availableBefore, $"available_instances of {type.Id} went from {availableBefore} to {after}, not down");
                    return $"{mdev.Uuid} of {type.Id}; available_instances {availableBefore} -> {after}";
                }).ConfigureAwait(false);
                steps.Run("open", () =>
                {
                    var device = mdev!.Device;
                    Check(device.IsOpen, "the device is not open");
                    return $"{device.Name} in emulated group {device.GroupId} ({device.GroupKind}), {device.Ports} port(s), {Vfio.Samples.BackendDescription.Of(device)}";
                });
                steps.Run("config space", () =>
                {
                    var device = mdev!.Device;
                    uint ids = device.ReadConfig32(0x00);
                    uint classRevision = device.ReadConfig32(0x08);
                    Check(ids == 0x32534348, $"vendor/device 0x{ids:x8}, expected 0x32534348");
                    Check(classRevision >> 8 == 0x070002, $"class 0x{classRevision >> 8:x6}, expected 0x070002 (16550 serial)");
                    return $"vendor 0x{ids & 0xffff:x4} device 0x{ids >> 16:x4} class 0x{classRevision >> 8:x6} revision 0x{classRevision & 0xff:x2}";
                });
                steps.Run("uart loopback", () =>
                {
                    var device = mdev!.Device;
                    var sent = "mdev ok!"u8.ToArray();
                    var parts = new List<string>();
                    for (int port = 0; port < device.Ports; port++)
                    {
                        byte[] received = device.Loopback(port, sent);
                        Check(received.AsSpan().SequenceEqual(sent), $"port {port} sent \"{Text(sent)}\" and received \"{Text(received)}\"");
                        Check((device.ReadRegister(port, MttyDevice.LineStatus) & MttyDevice.TransmitterEmpty) != 0, $"port {port}: transmitter not empty after the loopback");
                        device.WriteRegister(port, MttyDevice.Scratch, (byte)(0x5a + port));
                        byte scratch = device.ReadRegister(port, MttyDevice.Scratch);
                        Check(scratch == 0x5a + port, $"port {port}: scratch register read 0x{scratch:x2}");
                        parts.Add($"port {port}: \"{Text(received)}\" back, scratch 0x{scratch:x2}");
                    }
                    return string.Join("; ", parts);
                });
                await steps.RunAsync("remove", async () =>
                {
                    var uuid = mdev!.Uuid;
                    await mdev.DisposeAsync().ConfigureAwait(false);
                    int after = type!.ReadAvailableInstances();
                    Check(after == availableBefore, $"available_instances is {after} after the remove, expected {availableBefore}");
                    Check(!type.ReadDevices().Contains(uuid), $"{uuid} is still listed under {type.Id}/devices");
                    return $"{uuid} gone; available_instances back to {after}";
                }).ConfigureAwait(false);
            }
            finally
            {
                if (mdev is not null)
                {
                    await mdev.DisposeAsync().ConfigureAwait(false);
                }
            }
        }
        if (simulated is not null)
        {
            steps.Run("leak check", () =>
            {
                simulated.AssertNoLeaks();
                return "no file, mapping or DMA mapping left open";
            });
        }
        return steps.Finish();
    }

    private static string Text(byte[] bytes) => System.Text.Encoding.ASCII.GetString(bytes);

    private static void Check(bool condition, string failure)
    {
        if (!condition)
        {
            throw new InvalidOperationException(failure);
        }
    }

    /// <summary>Prints one line per step; stops at the first failure.</summary>
    private sealed class Steps(TextWriter output)
    {
        private readonly Stopwatch _total = Stopwatch.StartNew();
        private int _passed;
        private bool _failed;

        public void Run(string name, Func<string> step) => RunAsync(name, () => Task.FromResult(step())).GetAwaiter().GetResult();

        public async Task RunAsync(string name, Func<Task<string>> step)
        {
            if (_failed)
            {
                return;
            }
            var watch = Stopwatch.StartNew();
            try
            {
                string detail = await step().ConfigureAwait(false);
                _passed++;
                output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"[  ok] {name,-14} {watch.Elapsed.TotalMilliseconds,7:0.0} ms  {detail}"));
            }
#pragma warning disable CA1031 // The failure is the step's result.
            catch (Exception e)
#pragma warning restore CA1031
            {
                _failed = true;
                output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"[FAIL] {name,-14} {watch.Elapsed.TotalMilliseconds,7:0.0} ms  {e.GetType().Name}: {e.Message}"));
            }
        }

        public int Finish()
        {
            output.WriteLine(_failed
                ? $"Failed after {_passed} step(s)."
                : string.Create(CultureInfo.InvariantCulture, $"All {_passed} steps passed in {_total.Elapsed.TotalMilliseconds:0} ms."));
            return _failed ? 1 : 0;
        }
    }
}
