using System.Globalization;
using Vfio;
using Vfio.Samples;
using Vfio.Testing;

namespace NvmeDriver;

/// <summary>
/// The sample's program: finds an NVMe controller through the registry and runs it from reset to a
/// verified block write and read, step by step, printing what it did. Without a device address it
/// runs against the simulated kernel with a model of QEMU's NVMe controller; with one (e.g.
/// <c>0000:00:06.0</c>) it runs against the machine's kernel through /dev/vfio.
/// </summary>
/// <remarks>The program writes 8 blocks at LBA 8 and 128 blocks at LBA 64 of namespace 1: only point it at a disk whose data may be overwritten.</remarks>
public static class NvmeDriverProgram
{
    /// <summary>The first block the program writes.</summary>
    public const ulong TestLba = 8;

    /// <summary>How many blocks it writes and reads back (one 4 KiB page of 512-byte blocks).</summary>
    public const int TestBlocks = 8;

    /// <summary>The first block of the 64 KiB transfer that takes a PRP list.</summary>
    public const ulong LargeLba = 64;

    /// <summary>Runs the program; returns its exit code (0 when every step passed).</summary>
    /// <param name="args">An optional PCI address and <c>--verbose</c> for the library's logs.</param>
    /// <param name="output">Where the report goes.</param>
    public static Task<int> RunAsync(IReadOnlyList<string> args, TextWriter output) => RunAsync(args, output, model: null);

    /// <summary>Runs the program on the simulated kernel with the given controller model (for tests).</summary>
    /// <param name="args">Arguments as for <see cref="RunAsync(IReadOnlyList{string}, TextWriter)"/>, without an address.</param>
    /// <param name="output">Where the report goes.</param>
    /// <param name="model">The simulated controller, or null for a new one.</param>
    public static Task<int> RunAsync(IReadOnlyList<string> args, TextWriter output, NvmeDeviceModel? model) => new PciSampleProgram<NvmeController>
    {
        Name = "NvmeDriver",
        Title = "NVMe controller driver",
        CreateDriver = () => new NvmePciDriver(),
        Simulated = ("0000:00:05.0", 5),
        CreateModel = () => model ?? new NvmeDeviceModel(),
        DescribeFound = device => $"NVMe controller {device.VendorId:x4}:{device.DeviceId:x4} at {device.Address}",
        DescribeMissing = where => $"no NVMe controller (class 0x010802) bound to vfio-pci at {where}; unbind it from nvme and bind it with: echo ADDRESS > /sys/bus/pci/devices/ADDRESS/driver/unbind; echo vfio-pci > /sys/bus/pci/devices/ADDRESS/driver_override; echo ADDRESS > /sys/bus/pci/drivers_probe",
        DescribeOpened = _ => "BAR0 mapped",
        RunSteps = RunStepsAsync,
    }.RunAsync(args, output);

    private static async Task RunStepsAsync(NvmeController device, StepReport report)
    {
        await report.StepAsync("registers", () =>
        {
            var cap = device.ReadCapabilities();
            if (!cap.SupportsNvmCommandSet)
            {
                throw new InvalidOperationException($"CAP 0x{cap.Raw:x16} does not list the NVM command set");
            }
            return Task.FromResult(string.Create(CultureInfo.InvariantCulture,
                $"NVMe {cap.VersionText}, CAP 0x{cap.Raw:x16}: queues up to {cap.MaxQueueEntries} entries, doorbell stride {cap.DoorbellStride}, timeout {cap.ReadyTimeout.TotalMilliseconds} ms, pages {cap.MinPageSize / 1024}-{cap.MaxPageSize / 1024} KiB"));
        }).ConfigureAwait(false);

        bool ready = false;
        await report.StepAsync("disable", async () =>
        {
            using var timeout = new CancellationTokenSource(StepReport.StepTimeout);
            var took = await device.DisableAsync(timeout.Token).ConfigureAwait(false);
            return Ms($"CC.EN=0, CSTS.RDY=0 after {took.TotalMilliseconds:0.0} ms");
        }).ConfigureAwait(false);

        await report.StepAsync("admin queues", () =>
        {
            var (sq, cq) = device.ConfigureAdminQueues(32);
            return Task.FromResult($"32-entry admin SQ at IOVA 0x{sq:x}, CQ at IOVA 0x{cq:x}; AQA, ASQ, ACQ set");
        }).ConfigureAwait(false);

        await report.StepAsync("enable", async () =>
        {
            using var timeout = new CancellationTokenSource(StepReport.StepTimeout);
            var took = await device.EnableAsync(timeout.Token).ConfigureAwait(false);
            ready = true;
            return Ms($"CC.EN=1 (4 KiB pages, IOSQES 6, IOCQES 4), CSTS.RDY=1 after {took.TotalMilliseconds:0.0} ms");
        }).ConfigureAwait(false);
        if (!ready)
        {
            return;
        }

        bool interrupts = false;
        await report.StepAsync("msi-x", () =>
        {
            int offered = device.EnableMsix();
            interrupts = true;
            return Task.FromResult($"2 of {offered} vectors enabled: admin CQ on {NvmeController.AdminVector}, I/O queue pair 1's CQ on 1");
        }).ConfigureAwait(false);
        if (interrupts)
        {
            await RunCommandsAsync(device, report).ConfigureAwait(false);
        }

        await report.StepAsync("shutdown", async () =>
        {
            using var timeout = new CancellationTokenSource(StepReport.StepTimeout);
            var took = await device.DisableAsync(timeout.Token).ConfigureAwait(false);
            return Ms($"CC.EN=0, CSTS.RDY=0 after {took.TotalMilliseconds:0.0} ms; queue memory released");
        }).ConfigureAwait(false);
    }

    private static async Task RunCommandsAsync(NvmeController device, StepReport report)
    {
        await report.StepAsync("identify ctrl", async () =>
        {
            using var timeout = new CancellationTokenSource(StepReport.StepTimeout);
            var id = await device.IdentifyControllerAsync(timeout.Token).ConfigureAwait(false);
            if (id.SubmissionEntrySize != 6 || id.CompletionEntrySize != 4)
            {
                throw new InvalidOperationException($"the controller wants 2^{id.SubmissionEntrySize}-byte SQ and 2^{id.CompletionEntrySize}-byte CQ entries; the driver uses 64 and 16");
            }
            string transfer = id.MaxTransferPages == 0 ? "no limit" : $"{id.MaxTransferPages * device.ControllerCapabilities.MinPageSize / 1024} KiB";
            return $"model '{id.ModelNumber}', serial '{id.SerialNumber}', firmware '{id.FirmwareRevision}', vendor 0x{id.VendorId:x4}, {id.NamespaceCount} namespaces, max transfer {transfer}";
        }).ConfigureAwait(false);

        NvmeNamespace? ns = null;
        await report.StepAsync("identify ns 1", async () =>
        {
            using var timeout = new CancellationTokenSource(StepReport.StepTimeout);
            var found = await device.IdentifyNamespaceAsync(1, timeout.Token).ConfigureAwait(false);
            if (found.BlockCount < LargeLba + 128 + 1)
            {
                throw new InvalidOperationException($"namespace 1 has {found.BlockCount} blocks, too few for the test");
            }
            ns = found;
            return Ms($"{found.BlockCount} blocks of {found.BlockSize} bytes ({found.Bytes / 1024.0 / 1024.0:0.##} MiB)");
        }).ConfigureAwait(false);

        NvmeQueuePair? interrupted = null;
        NvmeQueuePair? polled = null;
        await report.StepAsync("io queues", async () =>
        {
            using var timeout = new CancellationTokenSource(StepReport.StepTimeout);
            interrupted = await device.CreateIoQueuePairAsync(1, 64, NvmeCompletionMode.Interrupt, timeout.Token).ConfigureAwait(false);
            polled = await device.CreateIoQueuePairAsync(2, 64, NvmeCompletionMode.Polling, timeout.Token).ConfigureAwait(false);
            return "queue pair 1 (64 entries, CQ on MSI-X vector 1), queue pair 2 (64 entries, CQ polled)";
        }).ConfigureAwait(false);

        if (interrupted is not null && polled is not null && ns is not null)
        {
            await ReadWriteAsync(device, ns, interrupted, polled, report).ConfigureAwait(false);
        }

        if (interrupted is not null)
        {
            await report.StepAsync("delete queues", async () =>
            {
                using var timeout = new CancellationTokenSource(StepReport.StepTimeout);
                foreach (var pair in device.IoQueues.ToList())
                {
                    await device.DeleteIoQueuePairAsync(pair, timeout.Token).ConfigureAwait(false);
                }
                return polled is null ? "DELETE I/O SQ 1, DELETE I/O CQ 1" : "DELETE I/O SQ and CQ 1, DELETE I/O SQ and CQ 2";
            }).ConfigureAwait(false);
        }
    }

    private static async Task ReadWriteAsync(NvmeController device, NvmeNamespace ns, NvmeQueuePair interrupted, NvmeQueuePair polled, StepReport report)
    {
        int bytes = TestBlocks * ns.BlockSize;
        using var source = device.AllocateDmaBuffer((ulong)bytes, DmaAccess.DeviceReads);
        using var destination = device.AllocateDmaBuffer((ulong)bytes, DmaAccess.DeviceWrites);
        // A pattern that differs per run, so stale data from an earlier run cannot pass for a read-back.
        int seed = Environment.TickCount;
        new Random(seed).NextBytes(source.Span[..bytes]);

        await report.StepAsync("write", async () =>
        {
            using var timeout = new CancellationTokenSource(StepReport.StepTimeout);
            await interrupted.WriteAsync(ns, TestLba, TestBlocks, source, 0, timeout.Token).ConfigureAwait(false);
            return $"{TestBlocks} blocks at LBA {TestLba} ({bytes} bytes from IOVA 0x{source.Iova:x}, pattern seed {seed})";
        }).ConfigureAwait(false);

        await report.StepAsync("read back", async () =>
        {
            using var timeout = new CancellationTokenSource(StepReport.StepTimeout);
            destination.Span[..bytes].Fill(0xa5);
            await interrupted.ReadAsync(ns, TestLba, TestBlocks, destination, 0, timeout.Token).ConfigureAwait(false);
            Compare(source.Span[..bytes], destination.Span[..bytes]);
            return $"{TestBlocks} blocks at LBA {TestLba} into IOVA 0x{destination.Iova:x}: all {bytes} bytes identical";
        }).ConfigureAwait(false);

        await report.StepAsync("prp list", async () =>
        {
            // 16 pages from an offset inside the first page: PRP1 and a PRP list of 16 entries.
            const int Length = 16 * NvmeController.PageSize;
            const ulong Offset = 512;
            int blocks = Length / ns.BlockSize;
            using var timeout = new CancellationTokenSource(StepReport.StepTimeout);
            using var large = device.AllocateDmaBuffer(Length + NvmeController.PageSize, DmaAccess.ReadWrite);
            using var back = device.AllocateDmaBuffer(Length, DmaAccess.DeviceWrites);
            new Random(seed + 1).NextBytes(large.Span.Slice((int)Offset, Length));
            await polled.WriteAsync(ns, LargeLba, blocks, large, Offset, timeout.Token).ConfigureAwait(false);
            await interrupted.ReadAsync(ns, LargeLba, blocks, back, 0, timeout.Token).ConfigureAwait(false);
            Compare(large.Span.Slice((int)Offset, Length), back.Span[..Length]);
            return $"{Length / 1024} KiB at LBA {LargeLba}: WRITE from offset {Offset} on polled queue 2 (PRP1 + a 16-entry PRP list), READ on queue 1 (PRP1 + a 15-entry list), identical";
        }).ConfigureAwait(false);

        await report.StepAsync("bad command", async () =>
        {
            using var timeout = new CancellationTokenSource(StepReport.StepTimeout);
            try
            {
                await interrupted.ReadAsync(ns, ns.BlockCount - 1, 2, destination, 0, timeout.Token).ConfigureAwait(false);
            }
            catch (NvmeCommandException e) when (e.Status is { Type: 0, Code: 0x80 })
            {
                return $"READ past the end refused: {e.Status}";
            }
            throw new InvalidOperationException($"a READ of blocks {ns.BlockCount - 1} and {ns.BlockCount} (past the end) succeeded");
        }).ConfigureAwait(false);
    }

    private static void Compare(ReadOnlySpan<byte> sent, ReadOnlySpan<byte> got)
    {
        int mismatch = sent.CommonPrefixLength(got);
        if (mismatch < sent.Length)
        {
            throw new InvalidOperationException($"byte {mismatch} differs: wrote 0x{sent[mismatch]:x2}, read 0x{got[mismatch]:x2}");
        }
    }

    private static string Ms(FormattableString text) => text.ToString(CultureInfo.InvariantCulture);
}
