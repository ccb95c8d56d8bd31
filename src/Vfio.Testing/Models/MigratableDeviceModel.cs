using System.Buffers.Binary;
using System.Numerics;
using Vfio.Interop;

namespace Vfio.Testing;

/// <summary>
/// A PCI function with migration v2, as a vendor migration driver (mlx5, hisi_acc) presents one: its
/// device state is BAR0's memory; VFIO_DEVICE_FEATURE_MIGRATION reports <see cref="Capabilities"/>;
/// a SET of MIG_DEVICE_STATE to any supported state is walked arc by arc over the shortest path, as
/// drivers do with the core's <c>vfio_mig_get_next_state</c>; STOP_COPY and PRE_COPY open a read-only
/// data session streaming the state, RESUMING a write-only one that is checked and loaded when the
/// device leaves RESUMING. Optionally it logs its own DMA writes (DMA_LOGGING_*).
/// </summary>
/// <remarks>
/// <para>Data session semantics follow the drivers: reads and writes are streams (pread and pwrite
/// fail with ESPIPE); a saving session reads to end of stream (0) once in STOP_COPY, and fails with
/// ENOMSG in PRE_COPY when nothing more is there now (a write to BAR0 makes new dirty data); a session
/// whose state was left fails with ENODEV. Reset (VFIO_DEVICE_RESET, and the device's last close)
/// returns the device to RUNNING and ends the session.</para>
/// <para>The stream is a sequence of records (magic, identity, length, the state's bytes); the last
/// record loaded wins. A truncated or foreign stream fails RESUMING -&gt; STOP with EINVAL and the device stays in RESUMING.</para>
/// <para>Derive from it to model your own device's migration: override <see cref="SaveDeviceState"/>
/// and <see cref="LoadDeviceState"/> for what the device carries over (by default BAR0's memory), the
/// BAR accessors for its registers, <see cref="OnReset"/> (calling the base) for its reset, and call
/// <see cref="MarkStateChanged"/> when its state changes other than through BAR0, so that a PRE_COPY
/// session has new data to give.</para>
/// </remarks>
public class MigratableDeviceModel : PciDeviceModel
{
    private const uint RecordMagic = 0x524d4656; // "VFMR"
    private const int RecordHeader = 16;
    private const int MaxResumeBytes = 64 << 20;

    private readonly byte[] _state;
    private VfioMigrationState _migrationState = VfioMigrationState.Running;
    private MigrationDataFile? _session;
    private (VfioMigrationState From, VfioMigrationState To, int Errno, VfioMigrationState LeaveIn)? _failArc;
    private List<(ulong Start, ulong End)>? _logRanges;
    private ulong _logPageSize;
    private readonly SortedSet<ulong> _dirtyPages = [];

    /// <summary>Creates the function: vendor 0x1234, device 0x11f0, a BAR0 of <paramref name="stateSize"/> bytes holding the device state.</summary>
    /// <param name="capabilities">The migration flags it reports; must include <see cref="VfioMigrationCapabilities.StopCopy"/>.</param>
    /// <param name="stateSize">BAR0's size: a power of two, at least 4096.</param>
    public MigratableDeviceModel(VfioMigrationCapabilities capabilities = VfioMigrationCapabilities.StopCopy | VfioMigrationCapabilities.P2P, int stateSize = 4096)
        : this(0x1234, 0x11f0, 0x00ff00, capabilities, stateSize)
    {
    }

    /// <summary>Creates a derived model's function with its own identity; BAR0 is <paramref name="stateSize"/> bytes of state unless the BAR accessors say otherwise.</summary>
    /// <param name="vendorId">The PCI vendor id.</param>
    /// <param name="deviceId">The PCI device id; with the vendor id, the identity a stream must carry to be loaded.</param>
    /// <param name="classCode">The 24-bit class code.</param>
    /// <param name="capabilities">The migration flags it reports; must include <see cref="VfioMigrationCapabilities.StopCopy"/>.</param>
    /// <param name="stateSize">BAR0's size: a power of two, at least 4096.</param>
    protected MigratableDeviceModel(ushort vendorId, ushort deviceId, uint classCode, VfioMigrationCapabilities capabilities, int stateSize)
        : base(vendorId, deviceId, classCode, isExpress: true)
    {
        if ((capabilities & VfioMigrationCapabilities.StopCopy) == 0 || ((ulong)capabilities & ~7UL) != 0)
        {
            throw new ArgumentException("Migration capabilities are STOP_COPY, optionally with P2P and PRE_COPY.", nameof(capabilities));
        }
        if (stateSize < 4096 || !BitOperations.IsPow2(stateSize))
        {
            throw new ArgumentOutOfRangeException(nameof(stateSize), stateSize, "The state size is a power of two of at least 4096.");
        }
        Capabilities = capabilities;
        _state = new byte[stateSize];
        DefineBar(0, (ulong)stateSize);
        MsiVectors = 1;
    }

    /// <summary>The migration flags VFIO_DEVICE_FEATURE_MIGRATION reports.</summary>
    public VfioMigrationCapabilities Capabilities { get; }

    /// <summary>
    /// Whether the kernel answers VFIO_DEVICE_FEATURE_MIG_DATA_SIZE, as Linux 6.2 and later do. False by
    /// default: Linux 6.1 does not know the feature (ENOTTY).
    /// </summary>
    public bool ReportsDataSize { get; init; }

    /// <summary>Whether the device can log its DMA writes (DMA_LOGGING_START/STOP/REPORT); false by default, as for vfio-pci.</summary>
    public bool SupportsDmaLogging { get; init; }

    /// <summary>The migration state the device is in.</summary>
    public VfioMigrationState MigrationState
    {
        get
        {
            lock (Gate)
            {
                return _migrationState;
            }
        }
    }

    /// <summary>A copy of the device state, as <see cref="SaveDeviceState"/> gives it (by default BAR0's memory).</summary>
    public byte[] GetDeviceState()
    {
        lock (Gate)
        {
            return SaveDeviceState();
        }
    }

    /// <summary>
    /// The state the device carries over, a new array each call (the stream record's payload): by
    /// default a copy of BAR0's memory. Called with the model's lock held (as the BAR accessors are), on entering
    /// PRE_COPY and STOP_COPY and for each PRE_COPY read after <see cref="MarkStateChanged"/>.
    /// </summary>
    protected virtual byte[] SaveDeviceState() => (byte[])_state.Clone();

    /// <summary>
    /// Loads the state a stream carried, on RESUMING -&gt; STOP (the last record's payload, from a
    /// device of the same vendor and device id); false refuses it: the arc fails with EINVAL and the
    /// device stays in RESUMING. By default: BAR0's memory, whose size the state must have. Called
    /// with the model's lock held.
    /// </summary>
    /// <param name="state">The payload of the last record.</param>
    protected virtual bool LoadDeviceState(ReadOnlySpan<byte> state)
    {
        if (state.Length != _state.Length)
        {
            return false;
        }
        state.CopyTo(_state);
        return true;
    }

    /// <summary>
    /// Tells an open PRE_COPY session that the device state changed (writes to BAR0 do it themselves):
    /// its next read gives a new record, and <c>VFIO_MIG_GET_PRECOPY_INFO</c> counts it as dirty bytes.
    /// Call it from a BAR accessor or another handler the simulated kernel calls (the model's lock is held there).
    /// </summary>
    protected void MarkStateChanged()
    {
        if (_session is { Saving: true, Complete: false } session)
        {
            session.Dirty = true;
        }
    }

    /// <summary>
    /// Makes the next arc <paramref name="from"/> -&gt; <paramref name="to"/> fail with <paramref name="errno"/>,
    /// leaving the device in <paramref name="leaveIn"/> (ERROR by default; <paramref name="from"/> for a clean failure).
    /// </summary>
    /// <param name="from">The arc's start.</param>
    /// <param name="to">The arc's end.</param>
    /// <param name="errno">The errno the SET returns.</param>
    /// <param name="leaveIn">Where the device is left.</param>
    public void FailNextArc(VfioMigrationState from, VfioMigrationState to, int errno = Errno.EIO, VfioMigrationState leaveIn = VfioMigrationState.Error)
    {
        lock (Gate)
        {
            _failArc = (from, to, errno, leaveIn);
        }
    }

    /// <summary>The device writing memory at <paramref name="iova"/> by DMA; logged when DMA logging covers it.</summary>
    /// <param name="iova">Where.</param>
    /// <param name="data">What.</param>
    /// <returns>False when the IOMMU refused the write (see <see cref="SimulatedKernel.DmaFaults"/>).</returns>
    public bool WriteMemory(ulong iova, ReadOnlySpan<byte> data)
    {
        bool ok = DmaWrite(iova, data);
        lock (Gate)
        {
            if (ok && _logRanges is not null && data.Length > 0)
            {
                for (ulong page = iova / _logPageSize; page <= (iova + (ulong)data.Length - 1) / _logPageSize; page++)
                {
                    ulong at = page * _logPageSize;
                    if (_logRanges.Any(r => at + _logPageSize > r.Start && at < r.End))
                    {
                        _dirtyPages.Add(page);
                    }
                }
            }
        }
        return ok;
    }

    /// <inheritdoc/>
    protected override ulong ReadBar(int bar, ulong offset, int size) => bar == 0 ? ReadStore(_state, offset, size) : base.ReadBar(bar, offset, size);

    /// <inheritdoc/>
    protected override void WriteBar(int bar, ulong offset, int size, ulong value)
    {
        if (bar != 0)
        {
            base.WriteBar(bar, offset, size, value);
            return;
        }
        WriteStore(_state, offset, size, value);
        MarkStateChanged(); // PRE_COPY tracks changes made while running
    }

    /// <inheritdoc/>
    protected override void OnReset()
    {
        base.OnReset();
        Array.Clear(_state);
        _migrationState = VfioMigrationState.Running;
        EndSession();
        _logRanges = null;
        _dirtyPages.Clear();
    }

    internal int GetMigrationState(out VfioMigrationState state)
    {
        lock (Gate)
        {
            state = _migrationState;
            return 0;
        }
    }

    internal int GetMigrationDataSize(out ulong length)
    {
        lock (Gate)
        {
            length = (ulong)(RecordHeader + SaveDeviceState().Length);
            return 0;
        }
    }

    /// <summary>The driver's set_state: steps the arcs to <paramref name="target"/>; a file when the last arc opened a session.</summary>
    internal int SetMigrationState(VfioMigrationState target, out KernelFile? file)
    {
        file = null;
        lock (Gate)
        {
            while (_migrationState != target)
            {
                // The core's next-state helper: EINVAL for a state the device lacks, ERROR, or a forbidden arc.
                var path = MigrationPlanner.Plan(_migrationState, target, Capabilities, out _);
                if (path is null || path.Length == 0)
                {
                    return -Errno.EINVAL;
                }
                var next = path[0];
                if (_failArc is { } fail && fail.From == _migrationState && fail.To == next)
                {
                    _failArc = null;
                    _migrationState = fail.LeaveIn;
                    if (!(MigrationPlanner.IsSaving(fail.LeaveIn) || fail.LeaveIn == VfioMigrationState.Resuming))
                    {
                        EndSession();
                    }
                    return -fail.Errno;
                }
                int r = Step(_migrationState, next, out var opened);
                if (r < 0)
                {
                    return r;
                }
                _migrationState = next;
                if (opened is not null)
                {
                    if (next != target)
                    {
                        return -Errno.EINVAL; // only the last arc may open a session (the drivers WARN otherwise)
                    }
                    file = opened;
                }
            }
            return 0;
        }
    }

    private int Step(VfioMigrationState from, VfioMigrationState to, out MigrationDataFile? opened)
    {
        opened = null;
        var kernel = Device!.Kernel;
        switch ((from, to))
        {
            case (VfioMigrationState.Stop, VfioMigrationState.StopCopy):
                EndSession();
                _session = opened = new MigrationDataFile(kernel, this, saving: true);
                _session.Append(Record());
                _session.Complete = true;
                return 0;
            case (VfioMigrationState.Running, VfioMigrationState.PreCopy):
            case (VfioMigrationState.RunningP2P, VfioMigrationState.PreCopyP2P):
                EndSession();
                _session = opened = new MigrationDataFile(kernel, this, saving: true);
                _session.Append(Record());
                _session.InitialEnd = _session.Length;
                return 0;
            case (VfioMigrationState.PreCopy, VfioMigrationState.StopCopy):
            case (VfioMigrationState.PreCopyP2P, VfioMigrationState.StopCopy):
                _session!.Append(Record());
                _session.Complete = true;
                return 0;
            case (VfioMigrationState.Stop, VfioMigrationState.Resuming):
                EndSession();
                _session = opened = new MigrationDataFile(kernel, this, saving: false);
                return 0;
            case (VfioMigrationState.Resuming, VfioMigrationState.Stop):
                int r = Load(_session!.Written);
                if (r == 0)
                {
                    EndSession();
                }
                return r;
            case (VfioMigrationState.StopCopy, VfioMigrationState.Stop):
            case (VfioMigrationState.PreCopy, VfioMigrationState.Running):
            case (VfioMigrationState.PreCopyP2P, VfioMigrationState.RunningP2P):
                EndSession();
                return 0;
            default:
                return 0; // RUNNING, RUNNING_P2P, STOP and the P2P arcs of PRE_COPY change how the device runs, not the session
        }
    }

    private void EndSession()
    {
        _session?.Disable();
        _session = null;
    }

    private byte[] Record()
    {
        byte[] state = SaveDeviceState();
        var record = new byte[RecordHeader + state.Length];
        BinaryPrimitives.WriteUInt32LittleEndian(record, RecordMagic);
        BinaryPrimitives.WriteUInt16LittleEndian(record.AsSpan(4), VendorId);
        BinaryPrimitives.WriteUInt16LittleEndian(record.AsSpan(6), DeviceId);
        BinaryPrimitives.WriteUInt32LittleEndian(record.AsSpan(8), (uint)state.Length);
        state.CopyTo(record, RecordHeader);
        return record;
    }

    private int Load(ReadOnlySpan<byte> stream)
    {
        int at = 0;
        int last = -1;
        int lastLength = 0;
        while (at < stream.Length)
        {
            if (stream.Length - at < RecordHeader
                || BinaryPrimitives.ReadUInt32LittleEndian(stream[at..]) != RecordMagic
                || BinaryPrimitives.ReadUInt16LittleEndian(stream[(at + 4)..]) != VendorId
                || BinaryPrimitives.ReadUInt16LittleEndian(stream[(at + 6)..]) != DeviceId
                || BinaryPrimitives.ReadUInt32LittleEndian(stream[(at + 8)..]) > (uint)(stream.Length - at - RecordHeader))
            {
                return -Errno.EINVAL;
            }
            last = at;
            lastLength = (int)BinaryPrimitives.ReadUInt32LittleEndian(stream[(at + 8)..]);
            at += RecordHeader + lastLength;
        }
        if (last < 0)
        {
            return -Errno.EINVAL;
        }
        return LoadDeviceState(stream.Slice(last + RecordHeader, lastLength)) ? 0 : -Errno.EINVAL;
    }

    // ---- The data session, called by MigrationDataFile; the Gate is taken here -------------------

    internal long SessionRead(MigrationDataFile file, Span<byte> buffer)
    {
        lock (Gate)
        {
            if (file.Disabled)
            {
                return -Errno.ENODEV;
            }
            if (file.Available == 0 && !file.Complete && file.Dirty)
            {
                file.Dirty = false;
                file.Append(Record());
            }
            if (file.Available == 0)
            {
                return file.Complete ? 0 : -Errno.ENOMSG;
            }
            return file.Take(buffer);
        }
    }

    internal long SessionWrite(MigrationDataFile file, ReadOnlySpan<byte> data)
    {
        lock (Gate)
        {
            if (file.Disabled)
            {
                return -Errno.ENODEV;
            }
            if (file.Length + data.Length > MaxResumeBytes)
            {
                return -Errno.ENOMEM;
            }
            file.Append(data);
            return data.Length;
        }
    }

    internal int SessionPreCopyInfo(MigrationDataFile file, out ulong initial, out ulong dirty)
    {
        lock (Gate)
        {
            initial = dirty = 0;
            if (file.Disabled)
            {
                return -Errno.ENODEV;
            }
            if (!file.Saving || file.Complete)
            {
                return -Errno.EINVAL; // valid only in the PRE_COPY states
            }
            initial = (ulong)Math.Max(0, file.InitialEnd - file.Position);
            dirty = (ulong)(file.Available - (long)initial) + (file.Dirty ? (ulong)(RecordHeader + SaveDeviceState().Length) : 0);
            return 0;
        }
    }

    internal short SessionPoll(MigrationDataFile file, short events)
    {
        lock (Gate)
        {
            const short In = 0x1;
            const short Out = 0x4;
            if (file.Disabled)
            {
                return (short)(events & In);
            }
            if (!file.Saving)
            {
                return (short)(events & Out);
            }
            return file.Available > 0 || file.Complete || file.Dirty ? (short)(events & In) : (short)0;
        }
    }

    // ---- DMA logging (the driver's log_ops) -------------------------------------------------------

    internal int StartDmaLogging(IReadOnlyList<(ulong Iova, ulong Length)> ranges, ref ulong pageSize)
    {
        lock (Gate)
        {
            if (_logRanges is not null)
            {
                return -Errno.EINVAL; // one START until the matching STOP
            }
            ulong chosen = Math.Max(4096UL, BitOperations.RoundUpToPowerOf2(Math.Max(pageSize, 1)));
            _logRanges = [.. ranges.Select(r => (r.Iova, r.Iova + r.Length))];
            _logPageSize = chosen;
            _dirtyPages.Clear();
            pageSize = chosen;
            return 0;
        }
    }

    internal int StopDmaLogging()
    {
        lock (Gate)
        {
            _logRanges = null;
            _dirtyPages.Clear();
            return 0;
        }
    }

    internal int ReportDmaLogging(ulong iova, ulong length, ulong pageSize, Span<ulong> bitmap)
    {
        lock (Gate)
        {
            if (_logRanges is null)
            {
                return -Errno.EINVAL;
            }
            foreach (ulong page in _dirtyPages.ToArray())
            {
                ulong start = page * _logPageSize;
                ulong end = start + _logPageSize;
                if (end <= iova || start >= iova + length)
                {
                    continue;
                }
                for (ulong at = Math.Max(start, iova); at < Math.Min(end, iova + length); at = (at / pageSize + 1) * pageSize)
                {
                    ulong bit = (at - iova) / pageSize;
                    bitmap[(int)(bit / 64)] |= 1UL << (int)(bit % 64);
                }
                _dirtyPages.Remove(page);
            }
            return 0;
        }
    }
}
