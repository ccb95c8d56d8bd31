using System.Buffers.Binary;
using System.Text;

namespace Vfio.Testing;

/// <summary>
/// QEMU 7.2's NVMe controller (<c>-device nvme,serial=...,drive=...</c>, hw/nvme/ctrl.c) with one
/// namespace, as far as a user-space driver meets it: the controller registers, the admin queue,
/// IDENTIFY, creating and deleting I/O queues, and READ, WRITE and FLUSH on an in-memory namespace,
/// with completion entries carrying the phase tag and MSI-X interrupts per completion queue vector.
/// </summary>
/// <remarks>
/// <para>
/// Identity: vendor 0x1b36, device 0x0010, class 0x010802, revision 2, PCI Express. BAR0 is a 16 KiB
/// 64-bit memory BAR: registers at 0x0, doorbells from 0x1000 (stride 4 bytes, CAP.DSTRD = 0), the
/// MSI-X table (65 vectors) at 0x2000 and its pending bits at 0x3000, as QEMU 7.2 lays it out.
/// </para>
/// <para>
/// Registers: CAP (MQES 2047, CQR, TO 7.5 s, NVM and I/O-command-set command sets, MPSMIN 4 KiB,
/// MPSMAX 64 KiB), VS 1.4, INTMS/INTMC (ignored while MSI-X is on), CC, CSTS, AQA, ASQ, ACQ. Setting
/// CC.EN checks what QEMU 7.2 checks (admin queue addresses set and page aligned, MPS within CAP,
/// IOSQES 6 and IOCQES 4, admin queue sizes 2 to 4096) and sets CSTS.RDY, or CSTS.CFS when a check
/// fails; clearing CC.EN resets the controller (queues dropped) and clears CSTS.RDY at once.
/// </para>
/// <para>
/// A doorbell write schedules a pass over the queues (<see cref="DeviceModel.ScheduleWork(ScheduledWork, TimeSpan)"/>:
/// one pass at a time, the model's own reusable work, so the write allocates nothing), as QEMU
/// processes queues on a timer after the write returns; <see cref="DeviceModel.WhenIdleAsync"/> waits for it. Commands and
/// data move by DMA through the simulated IOMMU (PRP1, PRP2 and PRP lists); a command whose data
/// transfer faults completes with Data Transfer Error; a submission or completion entry that cannot
/// be read or written sets CSTS.CFS and stops the controller, as QEMU does.
/// </para>
/// <para>
/// Admin commands: Delete I/O SQ (0x00), Create I/O SQ (0x01), Delete I/O CQ (0x04), Create I/O CQ
/// (0x05), Identify (0x06: CNS 0 namespace, 1 controller, 2 active namespace list). I/O commands:
/// Flush (0x00), Write (0x01), Read (0x02). Any other opcode completes with Invalid Command Opcode;
/// QEMU implements more (features, logs, ...), which this model leaves out. Status codes and the
/// order of their checks follow QEMU 7.2.
/// </para>
/// </remarks>
public sealed class NvmeDeviceModel : PciDeviceModel
{
    /// <summary>QEMU's vendor id for its NVMe controller (Red Hat).</summary>
    public const ushort QemuVendorId = 0x1b36;

    /// <summary>QEMU's NVMe device id.</summary>
    public const ushort QemuDeviceId = 0x0010;

    /// <summary>The class code of an NVM Express controller: mass storage, non-volatile memory, NVMe.</summary>
    public const uint NvmeClassCode = 0x010802;

    /// <summary>The logical block size of the namespace.</summary>
    public const int BlockSize = 512;

    /// <summary>The number of I/O queue pairs (QEMU's max_ioqpairs default).</summary>
    public const int MaxIoQueuePairs = 64;

    /// <summary>The MSI-X vectors (QEMU's msix_qsize default).</summary>
    public const int MsixTableSize = 65;

    /// <summary>The largest queue size, 0-based (CAP.MQES).</summary>
    public const int MaxQueueEntries0 = 0x7ff;

    private const int PageSize = 4096;
    private const int RegisterEnd = 0x1000;
    private const ulong DoorbellBase = 0x1000;
    private const ulong DoorbellEnd = DoorbellBase + (2 * (MaxIoQueuePairs + 1) * 4);
    private const ulong MsixTable = 0x2000;
    private const ulong MsixPba = 0x3000;
    private const uint MaxNamespaces = 256;
    private const uint BroadcastNsid = 0xffff_ffff;
    private const int Mdts = 7;

    private const uint CcEnable = 0x1;
    private const uint CstsReady = 0x1;
    private const uint CstsFatal = 0x2;
    private const uint CstsShutdownComplete = 0x8;

    // Status field values as QEMU encodes them: SCT in bits 10:8, SC in bits 7:0, DNR bit 14.
    private const ushort Dnr = 0x4000;
    private const ushort StatusSuccess = 0x0000;
    private const ushort StatusInvalidOpcode = 0x0001;
    private const ushort StatusInvalidField = 0x0002;
    private const ushort StatusDataTransferError = 0x0004;
    private const ushort StatusInvalidNamespace = 0x000b;
    private const ushort StatusInvalidPrpOffset = 0x0013;
    private const ushort StatusLbaRange = 0x0080;
    private const ushort StatusInvalidCqid = 0x0100;
    private const ushort StatusInvalidQid = 0x0101;
    private const ushort StatusMaxQueueSizeExceeded = 0x0102;
    private const ushort StatusInvalidIrqVector = 0x0108;
    private const ushort StatusInvalidQueueDeletion = 0x010c;

    private readonly byte[] _registers = new byte[0x40];
    private readonly byte[] _storage;
    private readonly SubmissionQueue?[] _sqs = new SubmissionQueue?[MaxIoQueuePairs + 1];
    private readonly CompletionQueue?[] _cqs = new CompletionQueue?[MaxIoQueuePairs + 1];
    private readonly ScheduledWork _pass;
    private readonly int[] _messages = new int[MsixTableSize];
    private int _commands;

    /// <summary>Creates the controller as QEMU's <c>-device nvme,serial=SERIAL,drive=...</c> does.</summary>
    /// <param name="serial">The serial number (at most 20 characters).</param>
    /// <param name="namespaceBlocks">The size of namespace 1 in 512-byte blocks (16 MiB by default).</param>
    public NvmeDeviceModel(string serial = "VFIONVME01", long namespaceBlocks = 32768)
        : base(QemuVendorId, QemuDeviceId, NvmeClassCode, isExpress: true)
    {
        ArgumentNullException.ThrowIfNull(serial);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(serial.Length, 20);
        ArgumentOutOfRangeException.ThrowIfLessThan(namespaceBlocks, 1L);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(namespaceBlocks, (long)(int.MaxValue / BlockSize));
        Serial = serial;
        NamespaceBlocks = namespaceBlocks;
        _storage = new byte[namespaceBlocks * BlockSize];
        Revision = 0x02;
        SubsystemVendorId = 0x1af4;
        SubsystemId = 0x1100;
        DefineBar(0, 0x4000, PciBarKind.Memory64);
        MsixVectors = MsixTableSize;
        MsixBar = 0;
        MsixTableOffset = MsixTable;
        MsixPbaOffset = MsixPba;
        InterruptPin = 1;
        // QEMU 7.2's layout on q35's root bus: MSI-X at 0x40, PCI Express (a root complex integrated
        // endpoint with FLR) at 0x80, power management with No_Soft_Reset at 0x60, listed in that order.
        PlaceCapability(0x11, 0x40);
        PlaceCapability(0x10, 0x80);
        PlaceCapability(0x01, 0x60);
        PowerManagementNoSoftReset = true;
        FunctionLevelReset = true;
        ExpressPortType = PciExpressPortType.RootComplexIntegratedEndpoint;
        int express = FindCapability(0x10)!.Offset;
        BinaryPrimitives.WriteUInt32LittleEndian(ConfigSpace[(express + 0x0c)..], 0x0000_0411); // link: 2.5 GT/s x1, L0s
        BinaryPrimitives.WriteUInt32LittleEndian(ConfigSpace[(express + 0x24)..], 0x0030_0000); // device capabilities 2
        SetWritable(express + 8, 2, 0x000f); // device control: the error reporting enables, as QEMU's wmask
        _pass = CreateWork(ProcessQueues);
        ResetRegisters();
    }

    /// <summary>The serial number IDENTIFY CONTROLLER reports.</summary>
    public string Serial { get; }

    /// <summary>The model number IDENTIFY CONTROLLER reports, as QEMU's.</summary>
    public static string ModelNumber => "QEMU NVMe Ctrl";

    /// <summary>
    /// The firmware revision IDENTIFY CONTROLLER reports: QEMU puts its own version there (Debian 12's
    /// QEMU 7.2 says "7.2.22").
    /// </summary>
    public string FirmwareRevision { get; init; } = "7.2.22";

    /// <summary>The size of namespace 1 in blocks of <see cref="BlockSize"/> bytes.</summary>
    public long NamespaceBlocks { get; }

    /// <summary>The controller status register (CSTS).</summary>
    public uint ControllerStatus
    {
        get
        {
            lock (Gate)
            {
                return Register32(0x1c);
            }
        }
    }

    /// <summary>The I/O queues that exist now (admin queues not counted): submission and completion queue ids.</summary>
    public (int[] SubmissionQueues, int[] CompletionQueues) IoQueues
    {
        get
        {
            lock (Gate)
            {
                return ([.. Enumerable.Range(1, MaxIoQueuePairs).Where(i => _sqs[i] is not null)], [.. Enumerable.Range(1, MaxIoQueuePairs).Where(i => _cqs[i] is not null)]);
            }
        }
    }

    /// <summary>How many commands the controller completed since it was created.</summary>
    public int CommandsCompleted
    {
        get
        {
            lock (Gate)
            {
                return _commands;
            }
        }
    }

    /// <summary>
    /// How many interrupts the controller sent for MSI-X vector <paramref name="vector"/> since it was
    /// created: one per pass over the queues that posted completions to a completion queue created
    /// with interrupts enabled (CDW11.IEN) on that vector; none for a polled completion queue.
    /// </summary>
    /// <param name="vector">The vector, 0 to <see cref="MsixTableSize"/> - 1.</param>
    public int MessagesSent(int vector)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(vector);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(vector, MsixTableSize);
        lock (Gate)
        {
            return _messages[vector];
        }
    }

    /// <summary>The head of completion queue <paramref name="queueId"/> as the driver last wrote it to its doorbell, or -1 when the queue does not exist.</summary>
    /// <param name="queueId">The completion queue's id (0 for the admin queue).</param>
    public int CompletionQueueHead(int queueId)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(queueId);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(queueId, MaxIoQueuePairs);
        lock (Gate)
        {
            return _cqs[queueId]?.Head ?? -1;
        }
    }

    /// <summary>A copy of <paramref name="count"/> blocks of namespace 1 from <paramref name="lba"/>.</summary>
    /// <param name="lba">The first block.</param>
    /// <param name="count">How many blocks.</param>
    public byte[] ReadBlocks(long lba, int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(lba);
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(lba + count, NamespaceBlocks);
        lock (Gate)
        {
            return _storage.AsSpan((int)(lba * BlockSize), count * BlockSize).ToArray();
        }
    }

    /// <inheritdoc/>
    protected override ulong ReadBar(int bar, ulong offset, int size)
    {
        if (bar == 0 && offset >= MsixTable)
        {
            return base.ReadBar(bar, offset, size);
        }
        if (bar != 0 || offset >= RegisterEnd)
        {
            return 0; // QEMU: doorbells and the space up to the MSI-X table read as zero
        }
        return ReadStore(_registers, offset, size);
    }

    /// <inheritdoc/>
    protected override void WriteBar(int bar, ulong offset, int size, ulong value)
    {
        if (bar != 0)
        {
            return;
        }
        if (offset >= MsixTable)
        {
            base.WriteBar(bar, offset, size, value);
            return;
        }
        if (offset >= DoorbellBase)
        {
            if (size == 4 && (offset & 3) == 0 && offset < DoorbellEnd)
            {
                Doorbell((int)((offset - DoorbellBase) / 4), (uint)value);
            }
            return;
        }
        if ((offset & 3) != 0 || size < 4)
        {
            return; // QEMU logs misaligned or small register writes as guest errors
        }
        for (int done = 0; done < size; done += 4)
        {
            WriteRegister(offset + (ulong)done, (uint)(value >> (8 * done)));
        }
    }

    /// <summary>
    /// A function reset, as QEMU 7.2's nvme_pci_reset does it: the queues are dropped (and, as for any
    /// QEMU PCI function, the MSI-X table masked), while the controller registers keep what was written
    /// (the VM suite shows AQA unchanged across an FLR).
    /// </summary>
    protected override void OnReset()
    {
        base.OnReset();
        ResetController();
    }

    private uint Register32(int offset) => BinaryPrimitives.ReadUInt32LittleEndian(_registers.AsSpan(offset));

    private void SetRegister32(int offset, uint value) => BinaryPrimitives.WriteUInt32LittleEndian(_registers.AsSpan(offset), value);

    private ulong Register64(int offset) => BinaryPrimitives.ReadUInt64LittleEndian(_registers.AsSpan(offset));

    private void ResetRegisters()
    {
        Array.Clear(_registers);
        ulong cap = MaxQueueEntries0
            | (1UL << 16) // CQR: queues must be physically contiguous
            | (0xfUL << 24) // TO: 15 x 500 ms
            | (0UL << 32) // DSTRD: 4-byte doorbell stride
            | ((0x01UL | 0x40UL | 0x80UL) << 37) // CSS: NVM, I/O command sets, admin only
            | (0UL << 48) // MPSMIN: 4 KiB
            | (4UL << 52); // MPSMAX: 64 KiB
        BinaryPrimitives.WriteUInt64LittleEndian(_registers, cap);
        SetRegister32(0x08, 0x0001_0400);
    }

    private void WriteRegister(ulong offset, uint value)
    {
        switch (offset)
        {
            case 0x0c when !MsixEnabled: // INTMS
                SetRegister32(0x0c, Register32(0x0c) | value);
                break;
            case 0x10 when !MsixEnabled: // INTMC
                SetRegister32(0x0c, Register32(0x0c) & ~value);
                break;
            case 0x14:
                WriteControllerConfiguration(value);
                break;
            case 0x24: // AQA
            case 0x28: // ASQ, low and high
            case 0x2c:
            case 0x30: // ACQ, low and high
            case 0x34:
                SetRegister32((int)offset, value);
                break;
        }
    }

    private void WriteControllerConfiguration(uint value)
    {
        uint old = Register32(0x14);
        SetRegister32(0x14, value);
        uint csts = Register32(0x1c);
        uint shutdown = (value >> 14) & 0x3;
        if (shutdown != 0 && ((old >> 14) & 0x3) == 0)
        {
            csts |= CstsShutdownComplete;
        }
        else if (shutdown == 0 && ((old >> 14) & 0x3) != 0)
        {
            csts &= ~CstsShutdownComplete;
        }
        if ((value & CcEnable) != 0 && (old & CcEnable) == 0)
        {
            csts = StartController() ? csts | CstsReady : CstsFatal;
        }
        else if ((value & CcEnable) == 0 && (old & CcEnable) != 0)
        {
            ResetController();
            csts &= ~CstsReady;
        }
        SetRegister32(0x1c, csts);
    }

    /// <summary>QEMU 7.2's nvme_start_ctrl checks, then the admin queue pair.</summary>
    private bool StartController()
    {
        uint cc = Register32(0x14);
        ulong cap = Register64(0x00);
        uint mps = (cc >> 7) & 0xf;
        ulong pageSize = 1UL << (int)(12 + mps);
        ulong asq = Register64(0x28);
        ulong acq = Register64(0x30);
        uint aqa = Register32(0x24);
        uint asqs = aqa & 0xfff;
        uint acqs = (aqa >> 16) & 0xfff;
        uint iosqes = (cc >> 16) & 0xf;
        uint iocqes = (cc >> 20) & 0xf;
        if (_cqs[0] is not null || _sqs[0] is not null || asq == 0 || acq == 0
            || (asq & (pageSize - 1)) != 0 || (acq & (pageSize - 1)) != 0
            || mps < ((cap >> 48) & 0xf) || mps > ((cap >> 52) & 0xf)
            || iocqes != 4 || iosqes != 6
            || asqs == 0 || acqs == 0)
        {
            return false;
        }
        _cqs[0] = new CompletionQueue(0, acq, (int)acqs + 1, vector: 0, interruptsEnabled: true) { SubmissionQueues = 1 };
        _sqs[0] = new SubmissionQueue(0, asq, (int)asqs + 1, cqid: 0);
        return true;
    }

    private void ResetController()
    {
        Array.Clear(_sqs);
        Array.Clear(_cqs);
    }

    private void Doorbell(int index, uint value)
    {
        int qid = index / 2;
        if (index % 2 == 0)
        {
            if (_sqs[qid] is not { } sq || value >= (uint)sq.Size)
            {
                return; // QEMU: an asynchronous event for an invalid doorbell write; the value is dropped
            }
            sq.Tail = (int)value;
        }
        else
        {
            if (_cqs[qid] is not { } cq || value >= (uint)cq.Size)
            {
                return;
            }
            cq.Head = (int)value;
        }
        Start();
    }

    /// <summary>
    /// Schedules a pass over the queues unless one is scheduled already (it will see this doorbell too:
    /// a pass reads the doorbells under the lock the write holds). The work is the model's own, so a
    /// doorbell write allocates nothing, as a driver's I/O path may expect.
    /// </summary>
    private void Start() => ScheduleWork(_pass);

    private bool Failed => (Register32(0x1c) & CstsFatal) != 0;

    private void ProcessQueues()
    {
        Span<byte> command = stackalloc byte[64];
        foreach (var sq in _sqs)
        {
            if (sq is null || _cqs[sq.Cqid] is not { } cq)
            {
                continue;
            }
            bool posted = false;
            while (!Failed && _sqs[sq.Id] == sq && sq.Head != sq.Tail && !cq.IsFull)
            {
                if (!DmaRead(sq.Address + ((ulong)sq.Head * 64), command))
                {
                    Fail();
                    break;
                }
                sq.Head = (sq.Head + 1) % sq.Size;
                ushort status = sq.Id == 0 ? AdminCommand(command) : IoCommand(command);
                if (!Post(cq, sq, BinaryPrimitives.ReadUInt16LittleEndian(command[2..]), status))
                {
                    break;
                }
                posted = true;
            }
            if (posted && cq.InterruptsEnabled && !Failed)
            {
                Interrupt(cq.Vector);
            }
        }
    }

    /// <summary>QEMU replaces CSTS with CFS alone: the controller is no longer ready.</summary>
    private void Fail() => SetRegister32(0x1c, CstsFatal);

    private bool Post(CompletionQueue cq, SubmissionQueue sq, ushort cid, ushort status)
    {
        Span<byte> entry = stackalloc byte[16];
        entry.Clear();
        BinaryPrimitives.WriteUInt16LittleEndian(entry[8..], (ushort)sq.Head);
        BinaryPrimitives.WriteUInt16LittleEndian(entry[10..], (ushort)sq.Id);
        BinaryPrimitives.WriteUInt16LittleEndian(entry[12..], cid);
        BinaryPrimitives.WriteUInt16LittleEndian(entry[14..], (ushort)((status << 1) | (cq.Phase ? 1 : 0)));
        if (!DmaWrite(cq.Address + ((ulong)cq.Tail * 16), entry))
        {
            Fail();
            return false;
        }
        _commands++;
        cq.Tail++;
        if (cq.Tail == cq.Size)
        {
            cq.Tail = 0;
            cq.Phase = !cq.Phase;
        }
        return true;
    }

    private void Interrupt(int vector)
    {
        if (MsixEnabled)
        {
            _messages[vector]++;
            RaiseInterrupt(2, vector);
        }
        else if ((Register32(0x0c) & (1u << vector)) == 0)
        {
            SignalInterrupt(0);
        }
    }

    private ushort AdminCommand(ReadOnlySpan<byte> c)
    {
        byte opcode = c[0];
        uint nsid = BinaryPrimitives.ReadUInt32LittleEndian(c[4..]);
        ulong prp1 = BinaryPrimitives.ReadUInt64LittleEndian(c[24..]);
        ulong prp2 = BinaryPrimitives.ReadUInt64LittleEndian(c[32..]);
        uint cdw10 = BinaryPrimitives.ReadUInt32LittleEndian(c[40..]);
        uint cdw11 = BinaryPrimitives.ReadUInt32LittleEndian(c[44..]);
        int qid = (int)(cdw10 & 0xffff);
        int qsize = (int)(cdw10 >> 16);
        ulong pageMask = PageSize - 1;
        switch (opcode)
        {
            case 0x00: // Delete I/O SQ
                if (qid == 0 || qid > MaxIoQueuePairs || _sqs[qid] is null)
                {
                    return StatusInvalidQid | Dnr;
                }
                _cqs[_sqs[qid]!.Cqid]!.SubmissionQueues--;
                _sqs[qid] = null;
                return StatusSuccess;
            case 0x01: // Create I/O SQ
            {
                int cqid = (int)(cdw11 >> 16);
                if (cqid == 0 || cqid > MaxIoQueuePairs || _cqs[cqid] is null)
                {
                    return StatusInvalidCqid | Dnr;
                }
                if (qid == 0 || qid > MaxIoQueuePairs || _sqs[qid] is not null)
                {
                    return StatusInvalidQid | Dnr;
                }
                if (qsize == 0 || qsize > MaxQueueEntries0)
                {
                    return StatusMaxQueueSizeExceeded | Dnr;
                }
                if ((prp1 & pageMask) != 0)
                {
                    return StatusInvalidPrpOffset | Dnr;
                }
                if ((cdw11 & 1) == 0)
                {
                    return StatusInvalidField | Dnr;
                }
                _sqs[qid] = new SubmissionQueue(qid, prp1, qsize + 1, cqid);
                _cqs[cqid]!.SubmissionQueues++;
                return StatusSuccess;
            }
            case 0x04: // Delete I/O CQ
                if (qid == 0 || qid > MaxIoQueuePairs || _cqs[qid] is null)
                {
                    return StatusInvalidCqid | Dnr;
                }
                if (_cqs[qid]!.SubmissionQueues > 0)
                {
                    return StatusInvalidQueueDeletion;
                }
                _cqs[qid] = null;
                return StatusSuccess;
            case 0x05: // Create I/O CQ
            {
                int vector = (int)(cdw11 >> 16);
                if (qid == 0 || qid > MaxIoQueuePairs || _cqs[qid] is not null)
                {
                    return StatusInvalidQid | Dnr;
                }
                if (qsize == 0 || qsize > MaxQueueEntries0)
                {
                    return StatusMaxQueueSizeExceeded | Dnr;
                }
                if ((prp1 & pageMask) != 0)
                {
                    return StatusInvalidPrpOffset | Dnr;
                }
                if ((!MsixEnabled && vector != 0) || vector >= MsixTableSize)
                {
                    return StatusInvalidIrqVector | Dnr;
                }
                if ((cdw11 & 1) == 0)
                {
                    return StatusInvalidField | Dnr;
                }
                _cqs[qid] = new CompletionQueue(qid, prp1, qsize + 1, vector, interruptsEnabled: (cdw11 & 2) != 0);
                return StatusSuccess;
            }
            case 0x06: // Identify
                return Identify((byte)cdw10, nsid, prp1, prp2);
            default:
                return StatusInvalidOpcode | Dnr;
        }
    }

    private ushort Identify(byte cns, uint nsid, ulong prp1, ulong prp2)
    {
        var data = new byte[PageSize];
        switch (cns)
        {
            case 0x00:
                if (nsid == 0 || nsid == BroadcastNsid || nsid > MaxNamespaces)
                {
                    return StatusInvalidNamespace | Dnr;
                }
                if (nsid == 1)
                {
                    FillIdentifyNamespace(data);
                }
                break;
            case 0x01:
                FillIdentifyController(data);
                break;
            case 0x02:
                if (nsid >= 0xffff_fffe)
                {
                    return StatusInvalidNamespace | Dnr;
                }
                if (nsid < 1)
                {
                    BinaryPrimitives.WriteUInt32LittleEndian(data, 1);
                }
                break;
            default:
                return StatusInvalidField | Dnr;
        }
        return Transfer(prp1, prp2, data, toHost: true);
    }

    private void FillIdentifyController(Span<byte> d)
    {
        BinaryPrimitives.WriteUInt16LittleEndian(d, QemuVendorId);
        BinaryPrimitives.WriteUInt16LittleEndian(d[2..], SubsystemVendorId);
        Padded(d.Slice(4, 20), Serial);
        Padded(d.Slice(24, 40), ModelNumber);
        Padded(d.Slice(64, 8), FirmwareRevision);
        d[72] = 6; // RAB
        d[73] = 0x00; // IEEE OUI 52:54:00, least significant byte first
        d[74] = 0x54;
        d[75] = 0x52;
        d[77] = Mdts;
        BinaryPrimitives.WriteUInt32LittleEndian(d[80..], 0x0001_0400); // VER
        d[512] = 0x66; // SQES: 64-byte entries
        d[513] = 0x44; // CQES: 16-byte entries
        BinaryPrimitives.WriteUInt32LittleEndian(d[516..], MaxNamespaces); // NN
        Padded(d.Slice(768, 256), "nqn.2019-08.org.qemu:" + Serial); // SUBNQN
    }

    private void FillIdentifyNamespace(Span<byte> d)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(d, (ulong)NamespaceBlocks); // NSZE
        BinaryPrimitives.WriteUInt64LittleEndian(d[8..], (ulong)NamespaceBlocks); // NCAP
        BinaryPrimitives.WriteUInt64LittleEndian(d[16..], (ulong)NamespaceBlocks); // NUSE
        d[25] = 7; // NLBAF: eight formats, 0-based
        d[26] = 0; // FLBAS: format 0
        // QEMU 7.2's formats: 512 and 4096 bytes, each with 0, 8, 16 and 64 bytes of metadata.
        ReadOnlySpan<ushort> metadata = [0, 8, 16, 64];
        for (int i = 0; i < 8; i++)
        {
            var format = d.Slice(128 + (4 * i), 4);
            BinaryPrimitives.WriteUInt16LittleEndian(format, metadata[i % 4]);
            format[2] = (byte)(i < 4 ? 9 : 12);
        }
    }

    private static void Padded(Span<byte> field, string text)
    {
        field.Fill((byte)' ');
        Encoding.ASCII.GetBytes(text.AsSpan(0, Math.Min(text.Length, field.Length)), field);
    }

    private ushort IoCommand(ReadOnlySpan<byte> c)
    {
        byte opcode = c[0];
        uint nsid = BinaryPrimitives.ReadUInt32LittleEndian(c[4..]);
        if (nsid == 0 || (nsid != BroadcastNsid && nsid > MaxNamespaces))
        {
            return StatusInvalidNamespace | Dnr;
        }
        if (nsid != 1)
        {
            return StatusInvalidField | Dnr;
        }
        switch (opcode)
        {
            case 0x00: // Flush
                return StatusSuccess;
            case 0x01: // Write
            case 0x02: // Read
            {
                ulong prp1 = BinaryPrimitives.ReadUInt64LittleEndian(c[24..]);
                ulong prp2 = BinaryPrimitives.ReadUInt64LittleEndian(c[32..]);
                ulong slba = BinaryPrimitives.ReadUInt64LittleEndian(c[40..]);
                long blocks = (BinaryPrimitives.ReadUInt32LittleEndian(c[48..]) & 0xffff) + 1;
                long length = blocks * BlockSize;
                if (length > PageSize << Mdts)
                {
                    return StatusInvalidField | Dnr;
                }
                if (slba > (ulong)NamespaceBlocks || (ulong)blocks > (ulong)NamespaceBlocks - slba)
                {
                    return StatusLbaRange | Dnr;
                }
                var data = _storage.AsSpan((int)slba * BlockSize, (int)length);
                if (opcode == 0x02)
                {
                    return Transfer(prp1, prp2, data, toHost: true);
                }
                var incoming = new byte[length];
                ushort status = Transfer(prp1, prp2, incoming, toHost: false);
                if (status == StatusSuccess)
                {
                    incoming.CopyTo(data);
                }
                return status;
            }
            default:
                return StatusInvalidOpcode | Dnr;
        }
    }

    /// <summary>Moves <paramref name="data"/> to or from host memory described by PRP1 and PRP2 (a page or a PRP list).</summary>
    private ushort Transfer(ulong prp1, ulong prp2, Span<byte> data, bool toHost)
    {
        const ulong PageMask = PageSize - 1;
        var segments = new List<(ulong Address, int Length)>();
        int first = (int)Math.Min((ulong)data.Length, PageSize - (prp1 & PageMask));
        segments.Add((prp1, first));
        int remaining = data.Length - first;
        if (remaining > 0)
        {
            if (remaining <= PageSize)
            {
                if ((prp2 & PageMask) != 0)
                {
                    return StatusInvalidPrpOffset | Dnr;
                }
                segments.Add((prp2, remaining));
            }
            else
            {
                // A PRP list: entries up to the end of the list's page; the last entry of a full page
                // points to the next list page while more than one entry remains.
                ulong list = prp2;
                Span<byte> entry = stackalloc byte[8];
                while (remaining > 0)
                {
                    int entries = (int)((PageSize - (list & PageMask)) / 8);
                    for (int i = 0; i < entries && remaining > 0; i++)
                    {
                        if (!DmaRead(list + ((ulong)i * 8), entry))
                        {
                            return StatusDataTransferError;
                        }
                        ulong address = BinaryPrimitives.ReadUInt64LittleEndian(entry);
                        if (i == entries - 1 && remaining > PageSize)
                        {
                            list = address;
                            goto NextList;
                        }
                        if ((address & PageMask) != 0)
                        {
                            return StatusInvalidPrpOffset | Dnr;
                        }
                        int length = Math.Min(remaining, PageSize);
                        segments.Add((address, length));
                        remaining -= length;
                    }
                    break;
                NextList:;
                }
            }
        }
        int offset = 0;
        foreach (var (address, length) in segments)
        {
            var piece = data.Slice(offset, length);
            if (!(toHost ? DmaWrite(address, piece) : DmaRead(address, piece)))
            {
                return StatusDataTransferError;
            }
            offset += length;
        }
        return StatusSuccess;
    }

    /// <summary>The model's one reusable thread-pool work item: a pass over the queues.</summary>

    private sealed class SubmissionQueue(int id, ulong address, int size, int cqid)
    {
        public int Id { get; } = id;

        public ulong Address { get; } = address;

        public int Size { get; } = size;

        public int Cqid { get; } = cqid;

        public int Head { get; set; }

        public int Tail { get; set; }
    }

    private sealed class CompletionQueue(int id, ulong address, int size, int vector, bool interruptsEnabled)
    {
        public int Id { get; } = id;

        public ulong Address { get; } = address;

        public int Size { get; } = size;

        public int Vector { get; } = vector;

        public bool InterruptsEnabled { get; } = interruptsEnabled;

        public int Head { get; set; }

        public int Tail { get; set; }

        public bool Phase { get; set; } = true;

        public int SubmissionQueues { get; set; }

        public bool IsFull => (Tail + 1) % Size == Head;
    }
}
