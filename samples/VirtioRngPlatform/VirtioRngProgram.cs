using System.Globalization;
using Vfio;
using Vfio.Samples;
using Vfio.Testing;

namespace VirtioRngPlatform;

/// <summary>
/// The sample's program: finds a virtio-mmio entropy device bound to vfio-platform, checks its
/// registers and interrupt, sets up its virtqueue in DMA memory and reads random bytes from it,
/// printed step by step. It runs on the simulated kernel by default (a machine without an IOMMU,
/// vfio in no-IOMMU mode, <see cref="VirtioMmioRngModel"/> as <c>LNRO0005:00</c>) and on the
/// machine's kernel with <c>--real</c> (see docs/platform.md for binding the device).
/// </summary>
public static class VirtioRngProgram
{
    private const string Usage = "usage: VirtioRngPlatform [--real]   (default: the simulated kernel)";

    /// <summary>The name ACPI gives the first virtio-mmio transport.</summary>
    public const string SimulatedName = "LNRO0005:00";

    /// <summary>Runs the program; returns its exit code (0 when every step passed).</summary>
    /// <param name="args">The command line.</param>
    /// <param name="output">Where the report goes.</param>
    public static async Task<int> RunAsync(IReadOnlyList<string> args, TextWriter output)
    {
        ArgumentNullException.ThrowIfNull(args);
        ArgumentNullException.ThrowIfNull(output);
        bool real = args is ["--real"];
        if (!real && args.Count > 0)
        {
            await Console.Error.WriteLineAsync(args is ["--help"] or ["-h"] ? Usage : "VirtioRngPlatform: unknown argument '" + args[0] + "'\n" + Usage).ConfigureAwait(false);
            return args is ["--help"] or ["-h"] ? 0 : 2;
        }
        SimulatedKernel? simulated = null;
        if (!real)
        {
            simulated = new SimulatedKernel { Iommu = SimulatedIommuState.Absent, UnsafeNoIommuMode = true, PlatformResetRequired = false };
            simulated.AddPlatformDevice(SimulatedName, new VirtioMmioRngModel(), 0, SimulatedGroupKind.NoIommu, "vfio-platform");
        }
        var report = new StepReport(output);
        report.Title("virtio entropy device through vfio-platform on " + (real ? "the Linux kernel" : "the simulated kernel (Vfio.Testing)"));
        var registry = new VfioRegistry(simulated ?? VfioKernel.Linux);
        await using (registry.ConfigureAwait(false))
        {
            registry.AddDriver(new VirtioRngDriver());
            VirtioRngDevice? device = null;
            await report.StepAsync("probe", async () =>
            {
                var probe = await registry.ProbeAsync().ConfigureAwait(false);
                device = probe.Registered.OfType<VirtioRngDevice>().FirstOrDefault()
                    ?? throw new InvalidOperationException("no virtio-mmio transport bound to vfio-platform" + string.Concat(probe.Failures.Select(f => "; " + f.Device + ": " + f.Error.Message)));
                return $"{device.Name} (ACPI {device.AcpiHid ?? "-"}{(device.Compatible.Count > 0 ? ", compatible " + device.Compatible[0] : "")}) in {device.GroupKind} group {device.GroupId}";
            }).ConfigureAwait(false);
            if (device is null)
            {
                return report.Finish();
            }
            using (device.Open())
            {
                await report.StepAsync("registers", () =>
                {
                    var region = device.GetRegions()[0];
                    return Task.FromResult(string.Create(CultureInfo.InvariantCulture,
                        $"region 0: 0x{region.Size:x} bytes{(region.CanMmap ? ", mapped" : " through the device file")}; magic 0x{device.ReadRegister(0):x8}, version {device.TransportVersion}, device id {device.ReadRegister(8)}, vendor 0x{device.Vendor:x8}"));
                }).ConfigureAwait(false);
                await report.StepAsync("interrupt", () =>
                {
                    var info = device.InterruptInfo!;
                    return Task.FromResult($"interrupt 0: {info.Trigger.ToString().ToLowerInvariant()}-triggered{(info.Info.AutoMasked ? ", automasked" : "")}{(info.Maskable ? ", maskable" : "")}; reset {(device.CanReset ? "available" : "none (reset_required=0)")}");
                }).ConfigureAwait(false);
                await report.StepAsync("virtqueue", () =>
                {
                    var (queue, data) = device.DeviceAddresses;
                    string kind = device.GroupKind == IommuGroupKind.NoIommu ? "physical addresses (no IOMMU)" : "IOVAs";
                    return Task.FromResult(string.Create(CultureInfo.InvariantCulture,
                        $"{VirtioRngDevice.QueueSize} entries at 0x{queue:x}, buffer at 0x{data:x} ({kind}); status 0x{device.ReadRegister(0x70):x}"));
                }).ConfigureAwait(false);
                byte[] first = [];
                await report.StepAsync("random", async () =>
                {
                    using var timeout = new CancellationTokenSource(StepReport.StepTimeout);
                    first = await device.ReadRandomAsync(32, timeout.Token).ConfigureAwait(false);
                    byte[] second = await device.ReadRandomAsync(32, timeout.Token).ConfigureAwait(false);
                    if (first.Length == 0 || first.All(b => b == 0) || first.AsSpan().SequenceEqual(second))
                    {
                        throw new InvalidOperationException($"the device gave {Convert.ToHexString(first)} then {Convert.ToHexString(second)}");
                    }
                    return string.Create(CultureInfo.InvariantCulture,
                        $"{first.Length} + {second.Length} bytes after {device.Interrupts} interrupt(s): {Convert.ToHexString(first)}");
                }).ConfigureAwait(false);
            }
        }
        simulated?.AssertNoLeaks();
        return report.Finish();
    }
}
