using System.Buffers.Binary;
using System.Text;
using Vfio.Testing;
using static Vfio.Tests.Simulation.RawPciFunction;

namespace Vfio.Tests.Simulation;

/// <summary>The NVMe controller model driven register by register, with no driver logic in between.</summary>
public sealed class NvmeDeviceModelTests : IAsyncLifetime
{
    private const string Address = "0000:00:05.0";
    private const ulong Cap = 0x00;
    private const ulong Cc = 0x14;
    private const ulong Csts = 0x1c;
    private const ulong Aqa = 0x24;
    private const ulong Asq = 0x28;
    private const ulong Acq = 0x30;
    private const uint EnableWithEntrySizes = 1 | (6u << 16) | (4u << 20);

    private readonly SimulatedKernel _kernel = new();
    private readonly NvmeDeviceModel _model = new(serial: "TESTSERIAL", namespaceBlocks: 1024);
    private readonly List<DmaBuffer> _buffers = [];
    private RawPciFunction _function = null!;
    private PciVfioDevice _device = null!;
    private InterruptSet? _msix;

    public async Task InitializeAsync()
    {
        _function = new RawPciFunction(_kernel, Address, _model, iommuGroup: 5);
        _device = _function.Device;
        await Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        await _model.WhenIdleAsync();
        _msix?.Dispose();
        foreach (var buffer in _buffers)
        {
            buffer.Dispose();
        }
        await _function.DisposeAsync();
    }

    private MmioRegion Bar0 => _function.Bar0;

    [Fact]
    public void ConfigSpaceIsQemusNvmeControllerWithTheMsixTableAfterTheDoorbells()
    {
        _device.ReadConfig16(PciConfig.VendorId).Should().Be(0x1b36);
        _device.ReadConfig16(PciConfig.DeviceId).Should().Be(0x0010);
        (_device.ReadConfig32(PciConfig.RevisionId) >> 8).Should().Be(0x010802u);
        int offset = _device.ReadConfig8(PciConfig.CapabilitiesPointer);
        while (offset != 0 && _device.ReadConfig8(offset) != 0x11)
        {
            offset = _device.ReadConfig8(offset + 1);
        }
        offset.Should().NotBe(0, "the controller has an MSI-X capability");
        (_device.ReadConfig16(offset + 2) & 0x7ff).Should().Be(64, "65 vectors, encoded 0-based");
        _device.ReadConfig32(offset + 4).Should().Be(0x2000u, "the table is in BAR0 at 0x2000");
        _device.ReadConfig32(offset + 8).Should().Be(0x3000u, "the pending bits are in BAR0 at 0x3000");
        _device.GetRegionInfo(0).Size.Should().Be(0x4000UL);
        _device.GetRegionInfo(0).CanMmap.Should().BeTrue();
        _device.GetIrqInfo(PciIrq.Msix).Count.Should().Be(65);
        _device.GetIrqInfo(PciIrq.Msi).Count.Should().Be(0);
    }

    [Fact]
    public void RegistersComeOutOfResetAsQemus()
    {
        ulong cap = Bar0.Read32(Cap) | ((ulong)Bar0.Read32(Cap + 4) << 32);
        (cap & 0xffff).Should().Be(0x7ff, "MQES");
        ((cap >> 16) & 1).Should().Be(1, "CQR");
        ((cap >> 24) & 0xff).Should().Be(0xf, "TO");
        ((cap >> 32) & 0xf).Should().Be(0, "DSTRD");
        ((cap >> 37) & 1).Should().Be(1, "the NVM command set");
        ((cap >> 52) & 0xf).Should().Be(4, "MPSMAX");
        Bar0.Read32(0x08).Should().Be(0x0001_0400u, "NVMe 1.4");
        Bar0.Read32(Cc).Should().Be(0u);
        Bar0.Read32(Csts).Should().Be(0u);
        Bar0.Read32(0x1000).Should().Be(0u, "doorbells read as zero");
    }

    [Fact]
    public void EnablingWithoutAdminQueuesSetsTheFatalStatus()
    {
        Bar0.Write32(Cc, EnableWithEntrySizes);
        Bar0.Read32(Csts).Should().Be(0x2u, "CSTS.CFS without CSTS.RDY");
    }

    [Fact]
    public void EnablingWithEntrySizesOtherThan64And16BytesSetsTheFatalStatus()
    {
        SetAdminQueues(4);
        Bar0.Write32(Cc, 1);
        Bar0.Read32(Csts).Should().Be(0x2u);
    }

    [Fact]
    public async Task EnableSetsReadyAndDisableDropsTheQueuesAndClearsIt()
    {
        var admin = EnableWithAdminQueues(4);
        var io = await CreateIoQueuesAsync(admin);
        _model.IoQueues.SubmissionQueues.Should().Equal(1);
        int completed = _model.CommandsCompleted;

        Bar0.Write32(Cc, 0);

        Bar0.Read32(Csts).Should().Be(0u);
        _model.IoQueues.SubmissionQueues.Should().BeEmpty();
        _model.IoQueues.CompletionQueues.Should().BeEmpty();
        // The doorbells of a disabled controller lead nowhere: nothing is processed.
        io.Submit(Command(0x00, nsid: 1));
        await _model.WhenIdleAsync();
        _model.CommandsCompleted.Should().Be(completed);
    }

    [Fact]
    public async Task IdentifyControllerCompletesByMsixVectorZeroWithThePhaseTagSet()
    {
        var admin = EnableWithAdminQueues(4);
        var data = Buffer(4096);
        ushort cid = admin.Submit(Command(0x06, prp1: data.Iova, cdw10: 1));

        var entry = await admin.CompleteAsync(Soon());

        entry.Phase.Should().BeTrue();
        entry.CommandId.Should().Be(cid);
        entry.Status.Should().Be(0);
        entry.SubmissionHead.Should().Be(1);
        entry.SubmissionQueueId.Should().Be(0);
        var d = data.Span;
        BinaryPrimitives.ReadUInt16LittleEndian(d).Should().Be(0x1b36);
        Encoding.ASCII.GetString(d.Slice(4, 20)).Should().Be("TESTSERIAL          ");
        Encoding.ASCII.GetString(d.Slice(24, 40)).TrimEnd().Should().Be("QEMU NVMe Ctrl");
        Encoding.ASCII.GetString(d.Slice(64, 8)).TrimEnd().Should().Be("7.2.22", "QEMU reports its version");
        d[512].Should().Be(0x66);
        d[513].Should().Be(0x44);
    }

    [Fact]
    public async Task IdentifyNamespaceOneGivesItsSizeAndFiveHundredTwelveByteBlocks()
    {
        var admin = EnableWithAdminQueues(4);
        var data = Buffer(4096);
        admin.Submit(Command(0x06, nsid: 1, prp1: data.Iova, cdw10: 0));
        (await admin.CompleteAsync(Soon())).Status.Should().Be(0);
        BinaryPrimitives.ReadUInt64LittleEndian(data.Span).Should().Be(1024UL);
        int format = data.Span[26] & 0xf;
        data.Span[128 + (4 * format) + 2].Should().Be(9, "2^9 = 512-byte blocks");
    }

    [Fact]
    public async Task IdentifyOfNamespaceZeroFailsWithInvalidNamespace()
    {
        var admin = EnableWithAdminQueues(4);
        var data = Buffer(4096);
        admin.Submit(Command(0x06, nsid: 0, prp1: data.Iova, cdw10: 0));
        (await admin.CompleteAsync(Soon())).Status.Should().Be(0x400b);
    }

    [Fact]
    public async Task ThePhaseTagFlipsWhenTheCompletionQueueWraps()
    {
        var admin = EnableWithAdminQueues(2);
        var data = Buffer(4096);
        var phases = new List<bool>();
        for (int i = 0; i < 3; i++)
        {
            admin.Submit(Command(0x06, prp1: data.Iova, cdw10: 1));
            var entry = await admin.CompleteAsync(Soon());
            entry.Status.Should().Be(0);
            phases.Add(entry.Phase);
        }
        phases.Should().Equal(true, true, false);
    }

    [Fact]
    public async Task AnUnknownAdminOpcodeFailsWithInvalidCommandOpcodeAndDoNotRetry()
    {
        var admin = EnableWithAdminQueues(4);
        admin.Submit(Command(0x7f));
        (await admin.CompleteAsync(Soon())).Status.Should().Be(0x4001);
    }

    [Fact]
    public async Task QueueCommandsAreCheckedInQemusOrder()
    {
        var admin = EnableWithAdminQueues(8);
        var cq = Buffer(4096);
        var sq = Buffer(4096);

        admin.Submit(Command(0x01, prp1: sq.Iova, cdw10: 1 | (15u << 16), cdw11: 1 | (1u << 16)));
        (await admin.CompleteAsync(Soon())).Status.Should().Be(0x4100, "CREATE I/O SQ names a completion queue that does not exist");

        admin.Submit(Command(0x05, prp1: cq.Iova, cdw10: 1 | (15u << 16), cdw11: 0x3 | (65u << 16)));
        (await admin.CompleteAsync(Soon())).Status.Should().Be(0x4108, "vector 65 is past the 65-entry MSI-X table");

        admin.Submit(Command(0x05, prp1: cq.Iova + 8, cdw10: 1 | (15u << 16), cdw11: 0x3 | (1u << 16)));
        (await admin.CompleteAsync(Soon())).Status.Should().Be(0x4013, "the queue is not page aligned");

        admin.Submit(Command(0x05, prp1: cq.Iova, cdw10: 1, cdw11: 0x3 | (1u << 16)));
        (await admin.CompleteAsync(Soon())).Status.Should().Be(0x4102, "a one-entry queue is too small");

        admin.Submit(Command(0x05, prp1: cq.Iova, cdw10: 1 | (15u << 16), cdw11: 0x3 | (1u << 16)));
        (await admin.CompleteAsync(Soon())).Status.Should().Be(0);

        admin.Submit(Command(0x05, prp1: cq.Iova, cdw10: 1 | (15u << 16), cdw11: 0x3 | (1u << 16)));
        (await admin.CompleteAsync(Soon())).Status.Should().Be(0x4101, "queue 1 exists");

        admin.Submit(Command(0x01, prp1: sq.Iova, cdw10: 1 | (15u << 16), cdw11: 1 | (1u << 16)));
        (await admin.CompleteAsync(Soon())).Status.Should().Be(0);

        admin.Submit(Command(0x04, cdw10: 1));
        (await admin.CompleteAsync(Soon())).Status.Should().Be(0x010c, "the completion queue still has a submission queue");

        admin.Submit(Command(0x00, cdw10: 2));
        (await admin.CompleteAsync(Soon())).Status.Should().Be(0x4101, "there is no submission queue 2");

        admin.Submit(Command(0x00, cdw10: 1));
        (await admin.CompleteAsync(Soon())).Status.Should().Be(0);
        admin.Submit(Command(0x04, cdw10: 1));
        (await admin.CompleteAsync(Soon())).Status.Should().Be(0);
        _model.IoQueues.CompletionQueues.Should().BeEmpty();
    }

    [Fact]
    public async Task WrittenBlocksReachTheNamespaceAndReadBackByTheIoQueuesVector()
    {
        var admin = EnableWithAdminQueues(4);
        var io = await CreateIoQueuesAsync(admin);
        var source = Buffer(4096);
        var destination = Buffer(4096);
        new Random(3).NextBytes(source.Span[..4096]);

        io.Submit(Command(0x01, nsid: 1, prp1: source.Iova, cdw10: 16, cdw12: 7));
        (await io.CompleteAsync(Soon())).Status.Should().Be(0);
        _model.ReadBlocks(16, 8).Should().Equal(source.Span[..4096].ToArray());

        io.Submit(Command(0x02, nsid: 1, prp1: destination.Iova, cdw10: 16, cdw12: 7));
        var entry = await io.CompleteAsync(Soon());
        entry.Status.Should().Be(0);
        entry.SubmissionQueueId.Should().Be(1);
        destination.Span[..4096].ToArray().Should().Equal(source.Span[..4096].ToArray());
    }

    [Fact]
    public async Task EachIoCompletionQueueInterruptsOnItsOwnVectorAndAPolledOneOnNone()
    {
        var admin = EnableWithAdminQueues(4, vectors: 3);
        var first = await CreateIoQueuesAsync(admin, id: 1, vector: 1);
        var second = await CreateIoQueuesAsync(admin, id: 2, vector: 2);
        var polled = await CreateIoQueuesAsync(admin, id: 3, vector: 0, interrupts: false);
        var buffer = Buffer(4096);
        await _model.WhenIdleAsync();
        int adminMessages = _model.MessagesSent(0);

        first.Submit(Command(0x02, nsid: 1, prp1: buffer.Iova, cdw10: 0, cdw12: 7));
        (await first.CompleteAsync(Soon())).SubmissionQueueId.Should().Be(1);
        second.Submit(Command(0x02, nsid: 1, prp1: buffer.Iova, cdw10: 8, cdw12: 7));
        (await second.CompleteAsync(Soon())).SubmissionQueueId.Should().Be(2);
        polled.Submit(Command(0x02, nsid: 1, prp1: buffer.Iova, cdw10: 16, cdw12: 7));
        var entry = await polled.CompleteAsync(Soon());
        await _model.WhenIdleAsync();

        entry.SubmissionQueueId.Should().Be(3);
        entry.Status.Should().Be(0);
        _model.MessagesSent(1).Should().Be(1);
        _model.MessagesSent(2).Should().Be(1);
        _model.MessagesSent(0).Should().Be(adminMessages, "the polled queue was created with vector 0 but without interrupts");
        _model.MessagesSent(3).Should().Be(0);
    }

    [Fact]
    public async Task TransfersOverPagesFollowPrp2AndPrpLists()
    {
        var admin = EnableWithAdminQueues(4);
        var io = await CreateIoQueuesAsync(admin);
        var pages = Buffer(3 * 4096);
        var list = Buffer(4096);
        new Random(5).NextBytes(pages.Span[..(3 * 4096)]);

        // Two pages: PRP1 and PRP2.
        io.Submit(Command(0x01, nsid: 1, prp1: pages.Iova, prp2: pages.Iova + 4096, cdw10: 0, cdw12: 15));
        (await io.CompleteAsync(Soon())).Status.Should().Be(0);
        _model.ReadBlocks(0, 16).Should().Equal(pages.Span[..8192].ToArray());

        // Three pages: PRP1 and a list of two entries.
        BinaryPrimitives.WriteUInt64LittleEndian(list.Span, pages.Iova + 4096);
        BinaryPrimitives.WriteUInt64LittleEndian(list.Span[8..], pages.Iova + 8192);
        io.Submit(Command(0x01, nsid: 1, prp1: pages.Iova, prp2: list.Iova, cdw10: 100, cdw12: 23));
        (await io.CompleteAsync(Soon())).Status.Should().Be(0);
        _model.ReadBlocks(100, 24).Should().Equal(pages.Span[..(3 * 4096)].ToArray());
    }

    [Fact]
    public async Task IoErrorsAreLbaOutOfRangeInvalidNamespaceAndDataTransferError()
    {
        var admin = EnableWithAdminQueues(4);
        var io = await CreateIoQueuesAsync(admin);
        var buffer = Buffer(4096);

        io.Submit(Command(0x02, nsid: 1, prp1: buffer.Iova, cdw10: 1023, cdw12: 1));
        (await io.CompleteAsync(Soon())).Status.Should().Be(0x4080, "blocks 1023 and 1024 run past the 1024-block namespace");

        io.Submit(Command(0x02, nsid: 0, prp1: buffer.Iova, cdw10: 0, cdw12: 0));
        (await io.CompleteAsync(Soon())).Status.Should().Be(0x400b);

        io.Submit(Command(0x02, nsid: 2, prp1: buffer.Iova, cdw10: 0, cdw12: 0));
        (await io.CompleteAsync(Soon())).Status.Should().Be(0x4002, "namespace 2 is valid but does not exist");

        io.Submit(Command(0x7e, nsid: 1));
        (await io.CompleteAsync(Soon())).Status.Should().Be(0x4001);

        io.Submit(Command(0x02, nsid: 1, prp1: 0x7000_0000, cdw10: 0, cdw12: 0));
        (await io.CompleteAsync(Soon())).Status.Should().Be(0x0004, "nothing is mapped at the address");
        _kernel.DmaFaults.Should().NotBeEmpty();
    }

    [Fact]
    public async Task ADoorbellPastTheQueueSizeIsIgnored()
    {
        _ = EnableWithAdminQueues(4);
        int before = _model.CommandsCompleted;
        Bar0.Write32(0x1000, 4);
        await _model.WhenIdleAsync();
        _model.CommandsCompleted.Should().Be(before);
        Bar0.Read32(Csts).Should().Be(0x1u);
    }

    [Fact]
    public async Task AnUnreadableSubmissionQueueStopsTheControllerWithTheFatalStatus()
    {
        var cq = Buffer(4096);
        Bar0.Write32(Aqa, 3 | (3u << 16));
        Bar0.Write64(Asq, 0x7000_0000);
        Bar0.Write64(Acq, cq.Iova);
        Bar0.Write32(Cc, EnableWithEntrySizes);
        Bar0.Read32(Csts).Should().Be(0x1u, "the controller does not read the queue before the doorbell");

        Bar0.Write32(0x1000, 1);
        await _model.WhenIdleAsync();

        Bar0.Read32(Csts).Should().Be(0x2u, "QEMU replaces CSTS with CFS");
        _kernel.DmaFaults.Should().NotBeEmpty();
        _model.CommandsCompleted.Should().Be(0);
    }

    private DmaBuffer Buffer(int length)
    {
        var buffer = _device.AllocateDmaBuffer((ulong)length);
        buffer.Span.Clear();
        _buffers.Add(buffer);
        return buffer;
    }

    private void SetAdminQueues(int entries)
    {
        var sq = Buffer(4096);
        var cq = Buffer(4096);
        Bar0.Write32(Aqa, (uint)(entries - 1) | ((uint)(entries - 1) << 16));
        Bar0.Write64(Asq, sq.Iova);
        Bar0.Write64(Acq, cq.Iova);
        _adminQueues = (sq, cq);
    }

    private (DmaBuffer Sq, DmaBuffer Cq) _adminQueues;

    private Queue EnableWithAdminQueues(int entries, int vectors = 2)
    {
        SetAdminQueues(entries);
        Bar0.Write32(Cc, EnableWithEntrySizes);
        Bar0.Read32(Csts).Should().Be(0x1u);
        _msix = _device.EnableInterrupts(PciIrq.Msix, count: vectors);
        return new Queue(this, 0, entries, _adminQueues.Sq, _adminQueues.Cq, vector: 0);
    }

    /// <summary>I/O queue pair <paramref name="id"/> of 16 entries; its completion queue interrupts on <paramref name="vector"/>, or never.</summary>
    private async Task<Queue> CreateIoQueuesAsync(Queue admin, int id = 1, int vector = 1, bool interrupts = true)
    {
        var sq = Buffer(4096);
        var cq = Buffer(4096);
        uint cqFlags = interrupts ? 0x3u | ((uint)vector << 16) : 0x1u;
        admin.Submit(Command(0x05, prp1: cq.Iova, cdw10: (uint)id | (15u << 16), cdw11: cqFlags));
        (await admin.CompleteAsync(Soon())).Status.Should().Be(0);
        admin.Submit(Command(0x01, prp1: sq.Iova, cdw10: (uint)id | (15u << 16), cdw11: 1 | ((uint)id << 16)));
        (await admin.CompleteAsync(Soon())).Status.Should().Be(0);
        return new Queue(this, id, 16, sq, cq, vector: interrupts ? vector : -1);
    }

    private static byte[] Command(byte opcode, uint nsid = 0, ulong prp1 = 0, ulong prp2 = 0, uint cdw10 = 0, uint cdw11 = 0, uint cdw12 = 0)
    {
        var c = new byte[64];
        c[0] = opcode;
        BinaryPrimitives.WriteUInt32LittleEndian(c.AsSpan(4), nsid);
        BinaryPrimitives.WriteUInt64LittleEndian(c.AsSpan(24), prp1);
        BinaryPrimitives.WriteUInt64LittleEndian(c.AsSpan(32), prp2);
        BinaryPrimitives.WriteUInt32LittleEndian(c.AsSpan(40), cdw10);
        BinaryPrimitives.WriteUInt32LittleEndian(c.AsSpan(44), cdw11);
        BinaryPrimitives.WriteUInt32LittleEndian(c.AsSpan(48), cdw12);
        return c;
    }

    private readonly record struct Entry(ushort SubmissionHead, ushort SubmissionQueueId, ushort CommandId, bool Phase, ushort Status);

    /// <summary>One queue pair seen from the host: a tail to ring, a head and phase to follow.</summary>
    private sealed class Queue(NvmeDeviceModelTests test, int id, int entries, DmaBuffer sq, DmaBuffer cq, int vector)
    {
        private int _tail;
        private int _head;
        private bool _phase = true;
        private ushort _cid = 0x100;

        public ushort Submit(byte[] command)
        {
            ushort cid = _cid++;
            BinaryPrimitives.WriteUInt16LittleEndian(command.AsSpan(2), cid);
            command.CopyTo(sq.Span[(_tail * 64)..]);
            _tail = (_tail + 1) % entries;
            test.Bar0.Write32(0x1000 + (ulong)(8 * id), (uint)_tail);
            return cid;
        }

        public async Task<Entry> CompleteAsync(CancellationToken cancellationToken)
        {
            while (true)
            {
                var e = cq.Span.Slice(_head * 16, 16);
                ushort statusAndPhase = BinaryPrimitives.ReadUInt16LittleEndian(e[14..]);
                if ((statusAndPhase & 1) == (_phase ? 1 : 0))
                {
                    var entry = new Entry(
                        BinaryPrimitives.ReadUInt16LittleEndian(e[8..]),
                        BinaryPrimitives.ReadUInt16LittleEndian(e[10..]),
                        BinaryPrimitives.ReadUInt16LittleEndian(e[12..]),
                        (statusAndPhase & 1) != 0,
                        (ushort)(statusAndPhase >> 1));
                    _head = (_head + 1) % entries;
                    if (_head == 0)
                    {
                        _phase = !_phase;
                    }
                    test.Bar0.Write32(0x1000 + (ulong)(8 * id) + 4, (uint)_head);
                    return entry;
                }
                if (vector < 0)
                {
                    // A polled queue: once the controller is idle, what it posted is in memory.
                    await test._model.WhenIdleAsync(cancellationToken);
                    if ((BinaryPrimitives.ReadUInt16LittleEndian(cq.Span[((_head * 16) + 14)..]) & 1) != (_phase ? 1 : 0))
                    {
                        throw new InvalidOperationException($"the controller went idle without completing a command on queue {id}");
                    }
                    continue;
                }
                await test._msix!.WaitAsync(vector, cancellationToken);
            }
        }
    }
}
