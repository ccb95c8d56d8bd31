using System.Globalization;
using Microsoft.Extensions.Logging;
using Vfio;
using Vfio.Samples;
using Vfio.Testing;

namespace EduDriver;

/// <summary>
/// The sample's program: finds QEMU's edu device through the registry, opens it and exercises it
/// step by step, printing what it did. Without a device address it runs against the simulated
/// kernel with an edu model; with one (e.g. <c>0000:00:02.0</c>) it runs against the machine's
/// kernel through /dev/vfio.
/// </summary>
public static class EduDriverProgram
{
    /// <summary>How long any one step may wait for the device.</summary>
    private static readonly TimeSpan StepTimeout = TimeSpan.FromSeconds(30);

    /// <summary>Runs the program; returns its exit code (0 when every step passed).</summary>
    /// <param name="args">An optional PCI address and <c>--verbose</c> for the library's logs.</param>
    /// <param name="output">Where the report goes.</param>
    public static async Task<int> RunAsync(IReadOnlyList<string> args, TextWriter output)
    {
        ArgumentNullException.ThrowIfNull(args);
        ArgumentNullException.ThrowIfNull(output);
        if (SampleCommandLine.Parse("EduDriver", args, output, out int exitCode) is not { } commandLine)
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
            simulated.AddPciDevice("0000:00:03.0", new EduDeviceModel(), iommuGroup: 3);
            kernel = simulated;
        }
        else
        {
            kernel = VfioKernel.Linux;
        }

        var report = new StepReport(output);
        report.Title("QEMU edu device driver on " + (simulated is null ? "the Linux kernel (/dev/vfio)" : "the simulated kernel (Vfio.Testing)"));
        await using (var registry = new VfioRegistry(kernel, loggerFactory))
        {
            registry.AddDriver(new EduPciDriver());
            EduDevice? device = null;
            await report.StepAsync("probe", async () =>
            {
                var result = await registry.ProbeAsync().ConfigureAwait(false);
                foreach (var failure in result.Failures)
                {
                    report.Detail($"{failure.Driver} failed on {failure.Device}: {failure.Error.Message}");
                }
                device = result.Registered.OfType<EduDevice>().FirstOrDefault(d => address is null || d.Address == address);
                if (device is null)
                {
                    string where = address is null ? "any device" : address.Value.ToString();
                    throw new InvalidOperationException($"no edu device (1234:11e8) bound to vfio-pci at {where}; bind it with: echo vfio-pci > /sys/bus/pci/devices/ADDRESS/driver_override && echo ADDRESS > /sys/bus/pci/drivers_probe");
                }
                return $"{result.Registered.Count} device(s) registered, edu at {device.Address}";
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
                return Task.FromResult($"{device.Address} (group {device.GroupId}, {device.Group?.Container?.IommuTypeName ?? "no"} IOMMU container, {device.InterruptMode} interrupts)");
            }).ConfigureAwait(false);
            if (opened)
            {
                try
                {
                    await RunStepsAsync(device, report).ConfigureAwait(false);
                }
                finally
                {
                    reference.Dispose();
                }
            }

            await report.StepAsync("unregister", async () =>
            {
                using var timeout = new CancellationTokenSource(StepTimeout);
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

    private static async Task RunStepsAsync(EduDevice device, StepReport report)
    {
        await report.StepAsync("identification", () =>
        {
            uint id = device.ReadIdentification();
            if ((id & 0xff) != 0xed)
            {
                throw new InvalidOperationException($"read 0x{id:x8}, not an edu device (low byte should be 0xed)");
            }
            return Task.FromResult($"0x{id:x8} (edu version {id >> 24}.{(id >> 16) & 0xff})");
        }).ConfigureAwait(false);

        await report.StepAsync("liveness", () =>
        {
            const uint Probe = 0x12345678;
            if (!device.CheckLiveness(Probe))
            {
                throw new InvalidOperationException("the device did not answer the bitwise inverse");
            }
            return Task.FromResult($"wrote 0x{Probe:x8}, read back 0x{~Probe:x8} (its inverse)");
        }).ConfigureAwait(false);

        await report.StepAsync("factorial", async () =>
        {
            using var timeout = new CancellationTokenSource(StepTimeout);
            uint result = await device.ComputeFactorialAsync(10, timeout.Token).ConfigureAwait(false);
            if (result != 3628800)
            {
                throw new InvalidOperationException($"10! came back as {result}, not 3628800");
            }
            return $"10! = {result}, completion by {device.InterruptMode} interrupt";
        }).ConfigureAwait(false);

        await report.StepAsync("dma round trip", async () =>
        {
            const int Size = 4096;
            using var timeout = new CancellationTokenSource(StepTimeout);
            using var source = device.AllocateDmaBuffer(Size, DmaAccess.DeviceReads);
            using var destination = device.AllocateDmaBuffer(Size, DmaAccess.DeviceWrites);
            for (int i = 0; i < Size; i++)
            {
                source.Span[i] = (byte)((i * 7) + (i >> 8));
            }
            destination.Span.Clear();
            // The device's buffer takes at most 4095 bytes at once: two halves, through the same device bytes.
            const int Half = Size / 2;
            for (int offset = 0; offset < Size; offset += Half)
            {
                await device.CopyToDeviceAsync(source, offset, 0, Half, timeout.Token).ConfigureAwait(false);
                await device.CopyFromDeviceAsync(destination, offset, 0, Half, timeout.Token).ConfigureAwait(false);
            }
            int mismatch = source.Span[..Size].SequenceEqual(destination.Span[..Size]) ? -1 : FirstDifference(source.Span, destination.Span, Size);
            if (mismatch >= 0)
            {
                throw new InvalidOperationException($"byte {mismatch} differs: sent 0x{source.Span[mismatch]:x2}, got 0x{destination.Span[mismatch]:x2}");
            }
            return $"{Size} bytes host (IOVA 0x{source.Iova:x}) -> device buffer -> host (IOVA 0x{destination.Iova:x}), identical";
        }).ConfigureAwait(false);

        await report.StepAsync("reset", () =>
        {
            if (device.Info is { CanReset: false })
            {
                report.Skip("not supported by this device (the kernel reports no VFIO_DEVICE_FLAGS_RESET)");
                return Task.FromResult(string.Empty);
            }
            device.Reset();
            uint id = device.ReadIdentification();
            return Task.FromResult($"reset, identification still 0x{id:x8}");
        }).ConfigureAwait(false);
    }

    private static int FirstDifference(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b, int length)
    {
        for (int i = 0; i < length; i++)
        {
            if (a[i] != b[i])
            {
                return i;
            }
        }
        return -1;
    }
}
