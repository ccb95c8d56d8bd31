using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using Microsoft.Extensions.Logging;
using Vfio;

namespace NvmeDriver;

/// <summary>What the controller's CAP and VS registers say.</summary>
/// <param name="Raw">CAP as read.</param>
/// <param name="Version">VS as read.</param>
public readonly record struct NvmeCapabilities(ulong Raw, uint Version)
{
    /// <summary>The largest queue the controller accepts, in entries (CAP.MQES + 1).</summary>
    public int MaxQueueEntries => (int)(Raw & 0xffff) + 1;

    /// <summary>Whether queues must be physically contiguous (CAP.CQR).</summary>
    public bool ContiguousQueuesRequired => (Raw & (1UL << 16)) != 0;

    /// <summary>How long the controller may take to become ready or not ready (CAP.TO, in 500 ms units).</summary>
    public TimeSpan ReadyTimeout => TimeSpan.FromMilliseconds(500 * ((Raw >> 24) & 0xff));

    /// <summary>The doorbell stride in bytes: 4 &lt;&lt; CAP.DSTRD.</summary>
    public int DoorbellStride => 4 << (int)((Raw >> 32) & 0xf);

    /// <summary>Whether the NVM command set is supported (CAP.CSS bit 0).</summary>
    public bool SupportsNvmCommandSet => (Raw & (1UL << 37)) != 0;

    /// <summary>The smallest memory page size (4 KiB &lt;&lt; CAP.MPSMIN).</summary>
    public int MinPageSize => 4096 << (int)((Raw >> 48) & 0xf);

    /// <summary>The largest memory page size (4 KiB &lt;&lt; CAP.MPSMAX).</summary>
    public int MaxPageSize => 4096 << (int)((Raw >> 52) & 0xf);

    /// <summary>The specification version, e.g. "1.4".</summary>
    public string VersionText => Version >> 16 == 0 ? "unknown" : string.Create(CultureInfo.InvariantCulture,
        $"{Version >> 16}.{(Version >> 8) & 0xff}{((Version & 0xff) != 0 ? "." + (Version & 0xff).ToString(CultureInfo.InvariantCulture) : string.Empty)}");
}

/// <summary>What IDENTIFY CONTROLLER returned.</summary>
/// <param name="VendorId">The PCI vendor id.</param>
/// <param name="SerialNumber">The serial number, trimmed.</param>
/// <param name="ModelNumber">The model number, trimmed.</param>
/// <param name="FirmwareRevision">The firmware revision, trimmed.</param>
/// <param name="MaxTransferPages">The largest transfer in minimum-size pages (0 for no limit).</param>
/// <param name="NamespaceCount">The number of namespaces the controller supports (NN).</param>
/// <param name="SubmissionEntrySize">The required submission queue entry size (SQES, log2).</param>
/// <param name="CompletionEntrySize">The required completion queue entry size (CQES, log2).</param>
public sealed record NvmeControllerIdentity(ushort VendorId, string SerialNumber, string ModelNumber, string FirmwareRevision, int MaxTransferPages, uint NamespaceCount, int SubmissionEntrySize, int CompletionEntrySize);

/// <summary>What IDENTIFY NAMESPACE returned.</summary>
/// <param name="NamespaceId">The namespace.</param>
/// <param name="BlockCount">Its size in logical blocks (NSZE).</param>
/// <param name="BlockSize">The logical block size of the format in use.</param>
public sealed record NvmeNamespace(uint NamespaceId, ulong BlockCount, int BlockSize)
{
    /// <summary>The size in bytes.</summary>
    public ulong Bytes => BlockCount * (ulong)BlockSize;
}

/// <summary>
/// A user-space driver for an NVM Express controller (class code 0x010802), written only against
/// the library's public API: it brings the controller up with an admin queue pair in DMA memory,
/// takes completions by MSI-X interrupt (phase tags, doorbells with CAP.DSTRD), identifies the
/// controller and a namespace, creates one I/O queue pair and reads and writes blocks.
/// </summary>
/// <remarks>
/// Commands are issued one at a time per queue. The controller uses 4 KiB memory pages (CC.MPS 0),
/// so every transfer here is at most one page and needs PRP1 only.
/// </remarks>
public sealed class NvmeController : PciVfioDevice
{
    /// <summary>The class code of an NVM Express controller.</summary>
    public const uint NvmeClassCode = 0x010802;

    /// <summary>The memory page size the driver configures (CC.MPS = 0).</summary>
    public const int PageSize = 4096;

    /// <summary>The MSI-X vector of the admin completion queue.</summary>
    public const int AdminVector = 0;

    /// <summary>The MSI-X vector of the I/O completion queue.</summary>
    public const int IoVector = 1;

    private const ulong RegCap = 0x00;
    private const ulong RegVersion = 0x08;
    private const ulong RegConfiguration = 0x14;
    private const ulong RegStatus = 0x1c;
    private const ulong RegAdminQueueAttributes = 0x24;
    private const ulong RegAdminSubmissionQueue = 0x28;
    private const ulong RegAdminCompletionQueue = 0x30;
    private const ulong DoorbellBase = 0x1000;

    private const uint CcEnable = 1;
    private const uint CcIoSqEntrySize = 6u << 16; // 64-byte submission entries
    private const uint CcIoCqEntrySize = 4u << 20; // 16-byte completion entries
    private const uint CstsReady = 1;
    private const uint CstsFatal = 2;

    private const byte OpDeleteIoSq = 0x00;
    private const byte OpCreateIoSq = 0x01;
    private const byte OpDeleteIoCq = 0x04;
    private const byte OpCreateIoCq = 0x05;
    private const byte OpIdentify = 0x06;
    private const byte OpWrite = 0x01;
    private const byte OpRead = 0x02;

    private MmioRegion? _bar0;
    private InterruptSet? _interrupts;
    private QueuePair? _admin;
    private QueuePair? _io;

    /// <summary>Creates the device; no kernel I/O until it is opened.</summary>
    /// <param name="context">The discovered function.</param>
    public NvmeController(PciDeviceContext context)
        : base(context)
    {
    }

    /// <summary>CAP and VS, read when the device was opened.</summary>
    public NvmeCapabilities ControllerCapabilities { get; private set; }

    /// <summary>The I/O queue pair's id once created, else 0.</summary>
    public int IoQueueId => _io?.Id ?? 0;

    private MmioRegion Bar0 => _bar0 ?? throw new InvalidOperationException($"The NVMe controller {Name} is not open.");

    /// <summary>Reads CAP and VS again.</summary>
    public NvmeCapabilities ReadCapabilities()
    {
        // CAP as two 32-bit halves: a 64-bit access is optional for a controller.
        ulong cap = Bar0.Read32(RegCap) | ((ulong)Bar0.Read32(RegCap + 4) << 32);
        ControllerCapabilities = new NvmeCapabilities(cap, Bar0.Read32(RegVersion));
        return ControllerCapabilities;
    }

    /// <summary>The controller status register (CSTS).</summary>
    public uint ReadStatus() => Bar0.Read32(RegStatus);

    /// <summary>
    /// Clears CC.EN and waits for CSTS.RDY to clear, at most CAP.TO; the controller drops its queues.
    /// Queue memory the driver held is released.
    /// </summary>
    /// <param name="cancellationToken">Stops waiting.</param>
    /// <returns>How long the controller took.</returns>
    public async Task<TimeSpan> DisableAsync(CancellationToken cancellationToken = default)
    {
        uint cc = Bar0.Read32(RegConfiguration);
        if ((cc & CcEnable) != 0)
        {
            Bar0.Write32(RegConfiguration, cc & ~CcEnable);
        }
        var took = await WaitReadyAsync(ready: false, cancellationToken).ConfigureAwait(false);
        _io?.Dispose();
        _io = null;
        _admin?.Dispose();
        _admin = null;
        NvmeLog.Disabled(Logger, Name, took.TotalMilliseconds);
        return took;
    }

    /// <summary>Allocates the admin queue pair in DMA memory and programs AQA, ASQ and ACQ. The controller must be disabled.</summary>
    /// <param name="entries">Entries per queue (2 to 4096).</param>
    /// <returns>The IOVAs of the submission and completion queues.</returns>
    public (ulong SubmissionQueue, ulong CompletionQueue) ConfigureAdminQueues(int entries = 32)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(entries, 2);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(entries, 4096);
        if ((Bar0.Read32(RegConfiguration) & CcEnable) != 0)
        {
            throw new InvalidOperationException($"The NVMe controller {Name} is enabled; disable it before setting up the admin queues.");
        }
        _admin?.Dispose();
        _admin = new QueuePair(this, 0, entries, AdminVector);
        uint size = (uint)(entries - 1);
        Bar0.Write32(RegAdminQueueAttributes, size | (size << 16));
        WriteRegister64(RegAdminSubmissionQueue, _admin.Submissions.Iova);
        WriteRegister64(RegAdminCompletionQueue, _admin.Completions.Iova);
        return (_admin.Submissions.Iova, _admin.Completions.Iova);
    }

    /// <summary>Sets CC.EN (NVM command set, 4 KiB pages, 64-byte SQ and 16-byte CQ entries) and waits for CSTS.RDY, at most CAP.TO.</summary>
    /// <param name="cancellationToken">Stops waiting.</param>
    /// <returns>How long the controller took.</returns>
    public async Task<TimeSpan> EnableAsync(CancellationToken cancellationToken = default)
    {
        if (_admin is null)
        {
            throw new InvalidOperationException($"The NVMe controller {Name} has no admin queues; call ConfigureAdminQueues first.");
        }
        if (ControllerCapabilities.MinPageSize > PageSize)
        {
            throw new NotSupportedException($"The NVMe controller {Name} needs pages of at least {ControllerCapabilities.MinPageSize} bytes (CAP.MPSMIN); this driver uses {PageSize}.");
        }
        Bar0.Write32(RegConfiguration, CcEnable | CcIoSqEntrySize | CcIoCqEntrySize);
        var took = await WaitReadyAsync(ready: true, cancellationToken).ConfigureAwait(false);
        NvmeLog.Enabled(Logger, Name, took.TotalMilliseconds);
        return took;
    }

    /// <summary>Enables MSI-X with two vectors: <see cref="AdminVector"/> for the admin queue, <see cref="IoVector"/> for the I/O queue.</summary>
    /// <returns>The number of MSI-X vectors the device offers.</returns>
    public int EnableMsix()
    {
        int offered = (int)GetIrqInfo(PciIrq.Msix).Count;
        if (offered < 2)
        {
            throw new InvalidOperationException($"The NVMe controller {Name} offers {offered} MSI-X vectors; the driver needs 2.");
        }
        _interrupts?.Dispose();
        _interrupts = EnableInterrupts(PciIrq.Msix, count: 2);
        return offered;
    }

    /// <summary>IDENTIFY with CNS 1: the controller's identity.</summary>
    /// <param name="cancellationToken">Stops waiting.</param>
    public async Task<NvmeControllerIdentity> IdentifyControllerAsync(CancellationToken cancellationToken = default)
    {
        using var data = AllocateDmaBuffer(PageSize, DmaAccess.DeviceWrites);
        await ExecuteAsync(Admin, "IDENTIFY CONTROLLER", new SubmissionEntry(OpIdentify) { Prp1 = data.Iova, Cdw10 = 1 }, cancellationToken).ConfigureAwait(false);
        var d = data.Span;
        return new NvmeControllerIdentity(
            BinaryPrimitives.ReadUInt16LittleEndian(d),
            Text(d.Slice(4, 20)),
            Text(d.Slice(24, 40)),
            Text(d.Slice(64, 8)),
            d[77] == 0 ? 0 : 1 << d[77],
            BinaryPrimitives.ReadUInt32LittleEndian(d[516..]),
            d[512] & 0xf,
            d[513] & 0xf);
    }

    /// <summary>IDENTIFY with CNS 0: a namespace's size and block size.</summary>
    /// <param name="namespaceId">The namespace (1 for the first).</param>
    /// <param name="cancellationToken">Stops waiting.</param>
    public async Task<NvmeNamespace> IdentifyNamespaceAsync(uint namespaceId, CancellationToken cancellationToken = default)
    {
        using var data = AllocateDmaBuffer(PageSize, DmaAccess.DeviceWrites);
        await ExecuteAsync(Admin, "IDENTIFY NAMESPACE", new SubmissionEntry(OpIdentify) { NamespaceId = namespaceId, Prp1 = data.Iova, Cdw10 = 0 }, cancellationToken).ConfigureAwait(false);
        var d = data.Span;
        ulong blocks = BinaryPrimitives.ReadUInt64LittleEndian(d);
        int format = d[26] & 0xf;
        int lbads = d[128 + (4 * format) + 2];
        if (blocks == 0 || lbads < 9)
        {
            throw new InvalidOperationException($"Namespace {namespaceId} of {Name} is not active (size {blocks}, block size 2^{lbads}).");
        }
        return new NvmeNamespace(namespaceId, blocks, 1 << lbads);
    }

    /// <summary>CREATE I/O COMPLETION QUEUE (interrupts on <see cref="IoVector"/>), then CREATE I/O SUBMISSION QUEUE bound to it.</summary>
    /// <param name="queueId">The queue pair's id (1 or more).</param>
    /// <param name="entries">Entries per queue (2 to CAP.MQES + 1, at most one page of submissions: 64).</param>
    /// <param name="cancellationToken">Stops waiting.</param>
    public async Task CreateIoQueuePairAsync(int queueId = 1, int entries = 64, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(queueId, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(queueId, ushort.MaxValue);
        ArgumentOutOfRangeException.ThrowIfLessThan(entries, 2);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(entries, Math.Min(ControllerCapabilities.MaxQueueEntries, PageSize / 64));
        if (_io is not null)
        {
            throw new InvalidOperationException($"The NVMe controller {Name} already has I/O queue pair {_io.Id}.");
        }
        var pair = new QueuePair(this, queueId, entries, IoVector);
        try
        {
            uint sizeAndId = (uint)queueId | ((uint)(entries - 1) << 16);
            // CDW11: physically contiguous, interrupts enabled, vector in bits 31:16.
            await ExecuteAsync(Admin, "CREATE I/O CQ", new SubmissionEntry(OpCreateIoCq) { Prp1 = pair.Completions.Iova, Cdw10 = sizeAndId, Cdw11 = 0x3 | ((uint)IoVector << 16) }, cancellationToken).ConfigureAwait(false);
            try
            {
                // CDW11: physically contiguous, completion queue id in bits 31:16.
                await ExecuteAsync(Admin, "CREATE I/O SQ", new SubmissionEntry(OpCreateIoSq) { Prp1 = pair.Submissions.Iova, Cdw10 = sizeAndId, Cdw11 = 0x1 | ((uint)queueId << 16) }, cancellationToken).ConfigureAwait(false);
            }
            catch (NvmeCommandException)
            {
                await ExecuteAsync(Admin, "DELETE I/O CQ", new SubmissionEntry(OpDeleteIoCq) { Cdw10 = (uint)queueId }, cancellationToken).ConfigureAwait(false);
                throw;
            }
        }
        catch
        {
            pair.Dispose();
            throw;
        }
        _io = pair;
        NvmeLog.IoQueuesCreated(Logger, Name, queueId, entries);
    }

    /// <summary>DELETE I/O SUBMISSION QUEUE, then DELETE I/O COMPLETION QUEUE, and frees their memory.</summary>
    /// <param name="cancellationToken">Stops waiting.</param>
    public async Task DeleteIoQueuePairAsync(CancellationToken cancellationToken = default)
    {
        var pair = Io;
        await ExecuteAsync(Admin, "DELETE I/O SQ", new SubmissionEntry(OpDeleteIoSq) { Cdw10 = (uint)pair.Id }, cancellationToken).ConfigureAwait(false);
        await ExecuteAsync(Admin, "DELETE I/O CQ", new SubmissionEntry(OpDeleteIoCq) { Cdw10 = (uint)pair.Id }, cancellationToken).ConfigureAwait(false);
        _io = null;
        pair.Dispose();
    }

    /// <summary>WRITE: <paramref name="blocks"/> blocks from the start of <paramref name="source"/> to <paramref name="lba"/>.</summary>
    /// <param name="ns">The namespace.</param>
    /// <param name="lba">The first block.</param>
    /// <param name="blocks">How many blocks (at most one page of data).</param>
    /// <param name="source">The data, mapped for the device to read.</param>
    /// <param name="cancellationToken">Stops waiting.</param>
    public Task WriteAsync(NvmeNamespace ns, ulong lba, int blocks, DmaBuffer source, CancellationToken cancellationToken = default) =>
        TransferAsync(OpWrite, "WRITE", ns, lba, blocks, source, cancellationToken);

    /// <summary>READ: <paramref name="blocks"/> blocks from <paramref name="lba"/> into the start of <paramref name="destination"/>.</summary>
    /// <param name="ns">The namespace.</param>
    /// <param name="lba">The first block.</param>
    /// <param name="blocks">How many blocks (at most one page of data).</param>
    /// <param name="destination">The buffer, mapped for the device to write.</param>
    /// <param name="cancellationToken">Stops waiting.</param>
    public Task ReadAsync(NvmeNamespace ns, ulong lba, int blocks, DmaBuffer destination, CancellationToken cancellationToken = default) =>
        TransferAsync(OpRead, "READ", ns, lba, blocks, destination, cancellationToken);

    /// <inheritdoc/>
    protected override void OnFirstOpen()
    {
        EnableCommand(memorySpace: true, busMaster: true);
        _bar0 = OpenRegion(0);
        ReadCapabilities();
    }

    /// <inheritdoc/>
    protected override void OnLastClose()
    {
        _io?.Dispose();
        _io = null;
        _admin?.Dispose();
        _admin = null;
        _interrupts?.Dispose();
        _interrupts = null;
        _bar0?.Dispose();
        _bar0 = null;
    }

    private QueuePair Admin => _admin ?? throw new InvalidOperationException($"The NVMe controller {Name} has no admin queues; configure and enable it first.");

    private QueuePair Io => _io ?? throw new InvalidOperationException($"The NVMe controller {Name} has no I/O queues; call CreateIoQueuePairAsync first.");

    private static string Text(ReadOnlySpan<byte> field) => Encoding.ASCII.GetString(field).TrimEnd(' ', '\0');

    private async Task TransferAsync(byte opcode, string name, NvmeNamespace ns, ulong lba, int blocks, DmaBuffer buffer, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(ns);
        ArgumentNullException.ThrowIfNull(buffer);
        ArgumentOutOfRangeException.ThrowIfLessThan(blocks, 1);
        if ((long)blocks * ns.BlockSize > PageSize || (ulong)((long)blocks * ns.BlockSize) > buffer.Length)
        {
            throw new ArgumentOutOfRangeException(nameof(blocks), blocks, $"{blocks} blocks of {ns.BlockSize} bytes exceed one {PageSize}-byte page or the {buffer.Length}-byte buffer.");
        }
        var command = new SubmissionEntry(opcode)
        {
            NamespaceId = ns.NamespaceId,
            Prp1 = buffer.Iova,
            Cdw10 = (uint)lba,
            Cdw11 = (uint)(lba >> 32),
            Cdw12 = (uint)(blocks - 1),
        };
        await ExecuteAsync(Io, name, command, cancellationToken).ConfigureAwait(false);
    }

    private void WriteRegister64(ulong offset, ulong value)
    {
        // Low half first, as Linux's lo_hi_writeq: a 64-bit access is optional for a controller.
        Bar0.Write32(offset, (uint)value);
        Bar0.Write32(offset + 4, (uint)(value >> 32));
    }

    private async Task<TimeSpan> WaitReadyAsync(bool ready, CancellationToken cancellationToken)
    {
        // The specification gives no interrupt for CSTS.RDY: poll, with CAP.TO as the deadline.
        var clock = Stopwatch.StartNew();
        var timeout = ControllerCapabilities.ReadyTimeout > TimeSpan.Zero ? ControllerCapabilities.ReadyTimeout : TimeSpan.FromSeconds(1);
        while (true)
        {
            uint status = ReadStatus();
            if (ready && (status & CstsFatal) != 0)
            {
                throw new InvalidOperationException($"The NVMe controller {Name} reported a fatal status (CSTS 0x{status:x}) while enabling: it refused the configuration (CC 0x{Bar0.Read32(RegConfiguration):x}).");
            }
            if (((status & CstsReady) != 0) == ready)
            {
                return clock.Elapsed;
            }
            if (clock.Elapsed > timeout)
            {
                throw new TimeoutException($"The NVMe controller {Name} did not {(ready ? "become ready" : "become not ready")} within CAP.TO ({timeout.TotalMilliseconds} ms); CSTS is 0x{status:x}.");
            }
            await Task.Delay(1, cancellationToken).ConfigureAwait(false);
        }
    }

    private async Task<Completion> ExecuteAsync(QueuePair queue, string name, SubmissionEntry command, CancellationToken cancellationToken)
    {
        var interrupts = _interrupts ?? throw new InvalidOperationException($"MSI-X is not enabled on {Name}; call EnableMsix first.");
        await queue.Gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            ushort cid = queue.NextCommandId();
            command.Write(queue.Submissions.Span.Slice(queue.SubmissionTail * 64, 64), cid);
            queue.SubmissionTail = (queue.SubmissionTail + 1) % queue.Entries;
            // The entry must be in memory before the controller learns of it.
            Interlocked.MemoryBarrier();
            Bar0.Write32(Doorbell(queue.Id, completion: false), (uint)queue.SubmissionTail);
            NvmeLog.Submitted(Logger, Name, name, queue.Id, cid);
            while (true)
            {
                if (queue.TryTakeCompletion(out var completion))
                {
                    Bar0.Write32(Doorbell(queue.Id, completion: true), (uint)queue.CompletionHead);
                    if (completion.CommandId != cid)
                    {
                        throw new InvalidOperationException($"{name} on queue {queue.Id} of {Name}: the controller completed command {completion.CommandId}, not {cid}.");
                    }
                    NvmeLog.Completed(Logger, Name, name, queue.Id, cid, completion.Status.Value);
                    if (!completion.Status.IsSuccess)
                    {
                        throw new NvmeCommandException(name, queue.Id, completion.Status);
                    }
                    return completion;
                }
                if ((ReadStatus() & CstsFatal) != 0)
                {
                    throw new InvalidOperationException($"The NVMe controller {Name} reported a fatal status while running {name}.");
                }
                await interrupts.WaitAsync(queue.Vector, cancellationToken).ConfigureAwait(false);
                Interlocked.MemoryBarrier();
            }
        }
        finally
        {
            queue.Gate.Release();
        }
    }

    private ulong Doorbell(int queueId, bool completion) =>
        DoorbellBase + ((ulong)((2 * queueId) + (completion ? 1 : 0)) * (ulong)ControllerCapabilities.DoorbellStride);

    /// <summary>A 64-byte submission queue entry.</summary>
    private readonly record struct SubmissionEntry(byte Opcode)
    {
        public uint NamespaceId { get; init; }

        public ulong Prp1 { get; init; }

        public ulong Prp2 { get; init; }

        public uint Cdw10 { get; init; }

        public uint Cdw11 { get; init; }

        public uint Cdw12 { get; init; }

        public void Write(Span<byte> entry, ushort commandId)
        {
            entry.Clear();
            entry[0] = Opcode;
            BinaryPrimitives.WriteUInt16LittleEndian(entry[2..], commandId);
            BinaryPrimitives.WriteUInt32LittleEndian(entry[4..], NamespaceId);
            BinaryPrimitives.WriteUInt64LittleEndian(entry[24..], Prp1);
            BinaryPrimitives.WriteUInt64LittleEndian(entry[32..], Prp2);
            BinaryPrimitives.WriteUInt32LittleEndian(entry[40..], Cdw10);
            BinaryPrimitives.WriteUInt32LittleEndian(entry[44..], Cdw11);
            BinaryPrimitives.WriteUInt32LittleEndian(entry[48..], Cdw12);
        }
    }

    private readonly record struct Completion(uint Result, ushort SubmissionHead, ushort SubmissionQueueId, ushort CommandId, NvmeStatus Status);

    /// <summary>A submission queue and its completion queue, each one page of DMA memory.</summary>
    private sealed class QueuePair : IDisposable
    {
        private ushort _nextCommandId;
        private bool _phase = true;

        public QueuePair(NvmeController controller, int id, int entries, int vector)
        {
            Id = id;
            Entries = entries;
            Vector = vector;
            Submissions = controller.AllocateDmaBuffer((ulong)entries * 64, DmaAccess.DeviceReads);
            try
            {
                Completions = controller.AllocateDmaBuffer((ulong)entries * 16, DmaAccess.DeviceWrites);
            }
            catch
            {
                Submissions.Dispose();
                throw;
            }
            Submissions.Span.Clear();
            Completions.Span.Clear();
        }

        public int Id { get; }

        public int Entries { get; }

        public int Vector { get; }

        public DmaBuffer Submissions { get; }

        public DmaBuffer Completions { get; }

        public SemaphoreSlim Gate { get; } = new(1, 1);

        public int SubmissionTail { get; set; }

        public int CompletionHead { get; private set; }

        public ushort NextCommandId() => _nextCommandId++;

        /// <summary>Takes the entry at the head when its phase tag says the controller wrote it in this pass.</summary>
        public bool TryTakeCompletion(out Completion completion)
        {
            var entry = Completions.Span.Slice(CompletionHead * 16, 16);
            uint dw3 = Volatile.Read(ref System.Runtime.CompilerServices.Unsafe.As<byte, uint>(ref entry[12]));
            if (((dw3 >> 16) & 1) != (_phase ? 1u : 0u))
            {
                completion = default;
                return false;
            }
            Interlocked.MemoryBarrier();
            completion = new Completion(
                BinaryPrimitives.ReadUInt32LittleEndian(entry),
                BinaryPrimitives.ReadUInt16LittleEndian(entry[8..]),
                BinaryPrimitives.ReadUInt16LittleEndian(entry[10..]),
                (ushort)dw3,
                new NvmeStatus((ushort)(dw3 >> 17)));
            CompletionHead++;
            if (CompletionHead == Entries)
            {
                CompletionHead = 0;
                _phase = !_phase;
            }
            return true;
        }

        public void Dispose()
        {
            Submissions.Dispose();
            Completions.Dispose();
            Gate.Dispose();
        }
    }
}

/// <summary>Matches any NVM Express controller (class code 0x010802) and creates an <see cref="NvmeController"/> for it.</summary>
public sealed class NvmePciDriver : PciDriver<NvmeController>
{
    /// <summary>Creates the driver.</summary>
    public NvmePciDriver()
        : base("nvme-sample", PciMatch.Class(NvmeController.NvmeClassCode))
    {
    }

    /// <inheritdoc/>
    protected override NvmeController CreateDevice(PciDeviceContext context) => new(context);
}
