using Vfio;
using Vfio.Testing;

namespace Vfio.Samples;

/// <summary>
/// The program of a sample that drives one PCI device: it parses the command line, runs on the
/// simulated kernel with the sample's device model (no address) or on the machine's kernel (an
/// address), finds the device through the registry, opens it, runs the sample's own steps,
/// unregisters it and, on the simulated kernel, checks that nothing was left open — each as one
/// line of a <see cref="StepReport"/>.
/// </summary>
/// <typeparam name="TDevice">The device type the sample's driver registers.</typeparam>
internal sealed class PciSampleProgram<TDevice>
    where TDevice : PciVfioDevice
{
    /// <summary>The program's name, for messages (e.g. <c>EduDriver</c>).</summary>
    public required string Name { get; init; }

    /// <summary>What the program is, for its title; " on" and the kernel follow.</summary>
    public required string Title { get; init; }

    /// <summary>The driver that registers the device.</summary>
    public required Func<VfioDriver> CreateDriver { get; init; }

    /// <summary>Where the device sits on the simulated kernel: its address and IOMMU group.</summary>
    public required (string Address, int IommuGroup) Simulated { get; init; }

    /// <summary>The device model for the simulated kernel.</summary>
    public required Func<PciDeviceModel> CreateModel { get; init; }

    /// <summary>What the probe found, after "N device(s) registered, " (e.g. "edu at 0000:00:03.0").</summary>
    public required Func<TDevice, string> DescribeFound { get; init; }

    /// <summary>The probe's error when no device was found at the given place, saying how to bind one.</summary>
    public required Func<string, string> DescribeMissing { get; init; }

    /// <summary>The last part of the open step's line, after group and container.</summary>
    public required Func<TDevice, string> DescribeOpened { get; init; }

    /// <summary>The sample's own steps, run while the device is open.</summary>
    public required Func<TDevice, StepReport, Task> RunSteps { get; init; }

    /// <summary>Runs the program; returns its exit code (0 when every step passed).</summary>
    /// <param name="args">An optional PCI address and <c>--verbose</c> for the library's logs.</param>
    /// <param name="output">Where the report goes.</param>
    public async Task<int> RunAsync(IReadOnlyList<string> args, TextWriter output)
    {
        ArgumentNullException.ThrowIfNull(args);
        ArgumentNullException.ThrowIfNull(output);
        if (SampleCommandLine.Parse(Name, args, output, out int exitCode) is not { } commandLine)
        {
            return exitCode;
        }
        var address = commandLine.Address;
        using var loggerFactory = commandLine.CreateLoggerFactory();

        SimulatedKernel? simulated = null;
        VfioKernel kernel;
        if (address is null)
        {
            simulated = new SimulatedKernel();
            simulated.AddPciDevice(Simulated.Address, CreateModel(), Simulated.IommuGroup);
            kernel = simulated;
        }
        else
        {
            kernel = VfioKernel.Linux;
        }

        var report = new StepReport(output);
        report.Title(Title + " on " + (simulated is null ? "the Linux kernel (/dev/vfio)" : "the simulated kernel (Vfio.Testing)"));
        await using (var registry = new VfioRegistry(kernel, loggerFactory))
        {
            registry.AddDriver(CreateDriver());
            TDevice? device = null;
            await report.StepAsync("probe", async () =>
            {
                var result = await registry.ProbeAsync().ConfigureAwait(false);
                foreach (var failure in result.Failures)
                {
                    report.Detail($"{failure.Driver} failed on {failure.Device}: {failure.Error.Message}");
                }
                foreach (var skipped in result.NotOnVfio)
                {
                    report.Detail(skipped.Hint);
                }
                device = result.Registered.OfType<TDevice>().FirstOrDefault(d => address is null || d.Address == address);
                if (device is null)
                {
                    throw new InvalidOperationException(DescribeMissing(address is null ? "any device" : address.Value.ToString()));
                }
                return $"{result.Registered.Count} device(s) registered, {DescribeFound(device)}";
            }).ConfigureAwait(false);
            if (device is null)
            {
                return report.Finish();
            }

            bool opened = false;
            DeviceReference reference = default;
            await report.StepAsync("open", () =>
            {
                reference = device.Open();
                opened = true;
                return Task.FromResult($"{device.Address} (group {device.GroupId}, {device.Group?.Container?.IommuTypeName ?? "no"} IOMMU container, {DescribeOpened(device)})");
            }).ConfigureAwait(false);
            if (opened)
            {
                try
                {
                    await RunSteps(device, report).ConfigureAwait(false);
                }
                finally
                {
                    reference.Dispose();
                }
            }

            await report.StepAsync("unregister", async () =>
            {
                using var timeout = new CancellationTokenSource(StepReport.StepTimeout);
                await registry.UnregisterAsync(device, timeout.Token).ConfigureAwait(false);
                device.Dispose();
                return "unregistered and disposed";
            }).ConfigureAwait(false);
        }
        if (simulated is not null)
        {
            await report.StepAsync("leak check", () =>
            {
                simulated.AssertNoLeaks();
                return Task.FromResult("no file, mapping or DMA mapping left open");
            }).ConfigureAwait(false);
        }
        return report.Finish();
    }
}
