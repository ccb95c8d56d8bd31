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
/// takes admin completions by MSI-X interrupt (phase tags, doorbells with CAP.DSTRD), identifies the
/// controller and a namespace, and creates I/O queue pairs (<see cref="NvmeQueuePair"/>) whose
/// completions come by interrupt or by polling, to read and write blocks.
/// </summary>
/// <remarks>
/// The controller uses 4 KiB memory pages (CC.MPS 0). Admin commands run one at a time; an I/O queue
/// pair runs up to its capacity at once (see <see cref="NvmeQueuePair"/> and <see cref="NvmeLoadGenerator"/>).
/// Queue pair n completes on MSI-X vector n; the admin queues on vector 0.
/// </remarks>
public sealed class NvmeController : PciVfioDevice
{
    /// <summary>The class code of an NVM Express controller.</summary>
    public const uint NvmeClassCode = 0x010802;

    /// <summary>The memory page size the driver configures (CC.MPS = 0).</summary>
    public const int PageSize = 4096;

    /// <summary>The MSI-X vector of the admin completion queue.</summary>
    public const int AdminVector = 0;

    /// <summary>The largest queue the driver creates, in entries (the specification allows 65536).</summary>
    public const int MaxQueueEntries = 4096;

    internal const ulong DoorbellBase = 0x1000;
    internal const uint CstsFatal = 2;

    private const ulong RegCap = 0x00;
    private const ulong RegVersion = 0x08;
    private const ulong RegConfiguration = 0x14;
    private const ulong RegStatus = 0x1c;
    private const ulong RegAdminQueueAttributes = 0x24;
    private const ulong RegAdminSubmissionQueue = 0x28;
    private const ulong RegAdminCompletionQueue = 0x30;

    private const uint CcEnable = 1;
    private const uint CcIoSqEntrySize = 6u << 16; // 64-byte submission entries
    private const uint CcIoCqEntrySize = 4u << 20; // 16-byte completion entries
    private const uint CstsReady = 1;

    private readonly Dictionary<int, NvmeQueuePair> _ioQueues = [];
    private MmioRegion? _bar0;
    private InterruptSet? _interrupts;
    private NvmeQueuePair? _admin;

    /// <summary>Creates the device; no kernel I/O until it is opened.</summary>
    /// <param name="context">The discovered function.</param>
    public NvmeController(PciDeviceContext context)
        : base(context)
    {
    }

    /// <summary>CAP and VS, read when the device was opened.</summary>
    public NvmeCapabilities ControllerCapabilities { get; private set; }

    /// <summary>The I/O queue pairs that exist now, by id.</summary>
    public IReadOnlyCollection<NvmeQueuePair> IoQueues => _ioQueues.Values;

    /// <summary>How many MSI-X vectors are enabled (0 before <see cref="EnableMsix"/>).</summary>
    public int MsixVectors => _interrupts?.Count ?? 0;

    internal ILogger DriverLogger => Logger;

    internal InterruptSet Interrupts => _interrupts ?? throw new InvalidOperationException($"MSI-X is not enabled on {Name}; call EnableMsix first.");

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
        ReleaseQueues();
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
        _admin = null;
        _admin = new NvmeQueuePair(this, Bar0, 0, entries, NvmeCompletionMode.Interrupt, AdminVector, ControllerCapabilities.DoorbellStride, prpLists: false);
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

    /// <summary>
    /// Enables MSI-X with <paramref name="vectors"/> vectors: <see cref="AdminVector"/> for the admin
    /// queue, vector n for I/O queue pair n (so up to <paramref name="vectors"/> - 1 interrupt-driven I/O pairs).
    /// </summary>
    /// <param name="vectors">How many vectors (2 or more).</param>
    /// <returns>The number of MSI-X vectors the device offers.</returns>
    public int EnableMsix(int vectors = 2)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(vectors, 2);
        int offered = (int)GetIrqInfo(PciIrq.Msix).Count;
        if (offered < vectors)
        {
            throw new InvalidOperationException($"The NVMe controller {Name} offers {offered} MSI-X vectors; the driver asked for {vectors}.");
        }
        _interrupts?.Dispose();
        _interrupts = null;
        _interrupts = EnableInterrupts(PciIrq.Msix, count: vectors);
        return offered;
    }

    /// <summary>
    /// Brings the controller from any state to ready: <see cref="DisableAsync"/>,
    /// <see cref="ConfigureAdminQueues"/>, <see cref="EnableAsync"/> and <see cref="EnableMsix"/>.
    /// </summary>
    /// <param name="adminEntries">Entries per admin queue.</param>
    /// <param name="vectors">MSI-X vectors: one for the admin queue and one per interrupt-driven I/O queue pair.</param>
    /// <param name="cancellationToken">Stops waiting.</param>
    public async Task StartAsync(int adminEntries = 32, int vectors = 2, CancellationToken cancellationToken = default)
    {
        await DisableAsync(cancellationToken).ConfigureAwait(false);
        ConfigureAdminQueues(adminEntries);
        await EnableAsync(cancellationToken).ConfigureAwait(false);
        EnableMsix(vectors);
    }

    /// <summary>IDENTIFY with CNS 1: the controller's identity.</summary>
    /// <param name="cancellationToken">Stops waiting.</param>
    public async Task<NvmeControllerIdentity> IdentifyControllerAsync(CancellationToken cancellationToken = default)
    {
        using var data = AllocateDmaBuffer(PageSize, DmaAccess.DeviceWrites);
        await Admin.ExecuteAsync("IDENTIFY CONTROLLER", new SubmissionEntry(NvmeOpcode.Identify) { Cdw10 = 1 }, data, 0, PageSize, cancellationToken).ConfigureAwait(false);
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
        await Admin.ExecuteAsync("IDENTIFY NAMESPACE", new SubmissionEntry(NvmeOpcode.Identify) { NamespaceId = namespaceId, Cdw10 = 0 }, data, 0, PageSize, cancellationToken).ConfigureAwait(false);
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

    /// <summary>An I/O queue pair whose completions come by interrupt on vector <paramref name="queueId"/>; see <see cref="CreateIoQueuePairAsync(int, int, NvmeCompletionMode, CancellationToken)"/>.</summary>
    /// <param name="queueId">The queue pair's id (1 or more).</param>
    /// <param name="entries">Entries per queue (2 to CAP.MQES + 1, at most <see cref="MaxQueueEntries"/>).</param>
    /// <param name="cancellationToken">Stops waiting.</param>
    public Task<NvmeQueuePair> CreateIoQueuePairAsync(int queueId = 1, int entries = 64, CancellationToken cancellationToken = default) =>
        CreateIoQueuePairAsync(queueId, entries, NvmeCompletionMode.Interrupt, cancellationToken);

    /// <summary>
    /// CREATE I/O COMPLETION QUEUE (with interrupts on vector <paramref name="queueId"/>, or none when
    /// polled), then CREATE I/O SUBMISSION QUEUE bound to it, each physically contiguous in DMA memory.
    /// </summary>
    /// <param name="queueId">The queue pair's id (1 or more).</param>
    /// <param name="entries">Entries per queue (2 to CAP.MQES + 1, at most <see cref="MaxQueueEntries"/>): up to entries - 1 commands in flight.</param>
    /// <param name="completion">Interrupts or polling.</param>
    /// <param name="cancellationToken">Stops waiting.</param>
    public async Task<NvmeQueuePair> CreateIoQueuePairAsync(int queueId, int entries, NvmeCompletionMode completion, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(queueId, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(queueId, ushort.MaxValue);
        ArgumentOutOfRangeException.ThrowIfLessThan(entries, 2);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(entries, Math.Min(ControllerCapabilities.MaxQueueEntries, MaxQueueEntries));
        if (!Enum.IsDefined(completion))
        {
            throw new ArgumentOutOfRangeException(nameof(completion), completion, "Not an NvmeCompletionMode.");
        }
        if (_ioQueues.ContainsKey(queueId))
        {
            throw new InvalidOperationException($"The NVMe controller {Name} already has I/O queue pair {queueId}.");
        }
        bool interrupt = completion == NvmeCompletionMode.Interrupt;
        if (interrupt && queueId >= MsixVectors)
        {
            throw new InvalidOperationException($"I/O queue pair {queueId} of {Name} completes on MSI-X vector {queueId}, but {MsixVectors} vectors are enabled; call EnableMsix({queueId + 1}) or more.");
        }
        var admin = Admin;
        var pair = new NvmeQueuePair(this, Bar0, queueId, entries, completion, queueId, ControllerCapabilities.DoorbellStride, prpLists: true);
        try
        {
            uint sizeAndId = (uint)queueId | ((uint)(entries - 1) << 16);
            // CDW11: physically contiguous (bit 0), interrupts enabled (bit 1), vector in bits 31:16.
            uint cqFlags = interrupt ? 0x3u | ((uint)queueId << 16) : 0x1u;
            await admin.ExecuteAsync("CREATE I/O CQ", new SubmissionEntry(NvmeOpcode.CreateIoCq) { Prp1 = pair.Completions.Iova, Cdw10 = sizeAndId, Cdw11 = cqFlags }, null, 0, 0, cancellationToken).ConfigureAwait(false);
            try
            {
                // CDW11: physically contiguous, completion queue id in bits 31:16.
                await admin.ExecuteAsync("CREATE I/O SQ", new SubmissionEntry(NvmeOpcode.CreateIoSq) { Prp1 = pair.Submissions.Iova, Cdw10 = sizeAndId, Cdw11 = 0x1 | ((uint)queueId << 16) }, null, 0, 0, cancellationToken).ConfigureAwait(false);
            }
            catch (NvmeCommandException)
            {
                await admin.ExecuteAsync("DELETE I/O CQ", new SubmissionEntry(NvmeOpcode.DeleteIoCq) { Cdw10 = (uint)queueId }, null, 0, 0, cancellationToken).ConfigureAwait(false);
                throw;
            }
        }
        catch
        {
            pair.Dispose();
            throw;
        }
        _ioQueues.Add(queueId, pair);
        NvmeLog.IoQueuesCreated(Logger, Name, queueId, entries, interrupt ? $"MSI-X vector {queueId}" : "polled");
        return pair;
    }

    /// <summary>DELETE I/O SUBMISSION QUEUE, then DELETE I/O COMPLETION QUEUE, and frees their memory.</summary>
    /// <param name="pair">A queue pair of this controller; nothing may be in flight on it.</param>
    /// <param name="cancellationToken">Stops waiting.</param>
    public async Task DeleteIoQueuePairAsync(NvmeQueuePair pair, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(pair);
        if (!_ioQueues.TryGetValue(pair.Id, out var known) || known != pair)
        {
            throw new ArgumentException($"{pair} is not an I/O queue pair of {Name}.", nameof(pair));
        }
        var admin = Admin;
        await admin.ExecuteAsync("DELETE I/O SQ", new SubmissionEntry(NvmeOpcode.DeleteIoSq) { Cdw10 = (uint)pair.Id }, null, 0, 0, cancellationToken).ConfigureAwait(false);
        await admin.ExecuteAsync("DELETE I/O CQ", new SubmissionEntry(NvmeOpcode.DeleteIoCq) { Cdw10 = (uint)pair.Id }, null, 0, 0, cancellationToken).ConfigureAwait(false);
        _ioQueues.Remove(pair.Id);
        pair.Dispose();
    }

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
        ReleaseQueues();
        _interrupts?.Dispose();
        _interrupts = null;
        _bar0?.Dispose();
        _bar0 = null;
    }

    private NvmeQueuePair Admin => _admin ?? throw new InvalidOperationException($"The NVMe controller {Name} has no admin queues; configure and enable it first.");

    private static string Text(ReadOnlySpan<byte> field) => Encoding.ASCII.GetString(field).TrimEnd(' ', '\0');

    private void ReleaseQueues()
    {
        foreach (var pair in _ioQueues.Values)
        {
            pair.Dispose();
        }
        _ioQueues.Clear();
        _admin?.Dispose();
        _admin = null;
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
