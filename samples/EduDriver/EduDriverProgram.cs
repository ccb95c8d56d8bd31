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
    /// <summary>Runs the program; returns its exit code (0 when every step passed).</summary>
    /// <param name="args">An optional PCI address and <c>--verbose</c> for the library's logs.</param>
    /// <param name="output">Where the report goes.</param>
    public static Task<int> RunAsync(IReadOnlyList<string> args, TextWriter output) => new PciSampleProgram<EduDevice>
    {
        Name = "EduDriver",
        Title = "QEMU edu device driver",
        CreateDriver = () => new EduPciDriver(),
        Simulated = ("0000:00:03.0", 3),
        CreateModel = () => new EduDeviceModel(),
        DescribeFound = device => $"edu at {device.Address}",
        DescribeMissing = where => $"no edu device (1234:11e8) bound to vfio-pci at {where}; bind it with: echo vfio-pci > /sys/bus/pci/devices/ADDRESS/driver_override && echo ADDRESS > /sys/bus/pci/drivers_probe",
        DescribeOpened = device => $"{device.InterruptMode} interrupts",
        RunSteps = RunStepsAsync,
    }.RunAsync(args, output);

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
            using var timeout = new CancellationTokenSource(StepReport.StepTimeout);
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
            using var timeout = new CancellationTokenSource(StepReport.StepTimeout);
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
