using System.Buffers.Binary;
using System.Numerics;
using Vfio.Interop;

namespace Vfio.Testing;

/// <summary>
/// A PCI function with migration v2, as a vendor migration driver (mlx5, hisi_acc) presents one:
/// VFIO_DEVICE_FEATURE_MIGRATION reports <see cref="Capabilities"/>; a SET of MIG_DEVICE_STATE to any
/// supported state is walked arc by arc over the shortest path, as drivers do with the core's
/// <c>vfio_mig_get_next_state</c>; STOP_COPY and PRE_COPY open a read-only data session streaming the
/// device state, RESUMING a write-only one that is checked and loaded when the device leaves RESUMING.
/// Optionally it logs its own DMA writes (DMA_LOGGING_*).
/// </summary>
/// <remarks>
/// <para>Used as it is, the device state is BAR0's memory. Derive from it to model your own device's
/// migration: the protected constructor takes your identity and migration flags, and you define BARs,
/// interrupts and capabilities as for any <see cref="PciDeviceModel"/>; <see cref="SaveState"/> gives
/// the bytes your device's state migrates as, <see cref="LoadState"/> takes them back on the
/// destination, <see cref="OnMigrationStateChanged"/> follows each arc (stop your background work in
/// STOP, for example), and <see cref="MarkStateDirty"/> tells a PRE_COPY session that there is more to
/// read. All of them run with the model's lock held, like every hook.</para>
/// <para>Data session semantics follow the drivers: reads and writes are streams (pread and pwrite
/// fail with ESPIPE); a saving session reads to end of stream (0) once in STOP_COPY, and fails with
/// ENOMSG in PRE_COPY when nothing more is there now; a session whose state was left fails with
/// ENODEV. Reset (VFIO_DEVICE_RESET, and the device's last close) returns the device to RUNNING and
/// ends the session.</para>
/// <para>The stream is a sequence of records (magic, identity, length, state bytes); the last record
/// loaded wins. A truncated or foreign stream, or one <see cref="LoadState"/> refuses, fails
/// RESUMING -&gt; STOP with EINVAL and the device stays in RESUMING.</para>
/// </remarks>
public class MigratableDeviceModel : PciDeviceModel
{
    private const uint RecordMagic = 0x524d4656; // "VFMR"
    private const int RecordHeader = 16;
    private const int MaxResumeBytes = 64 << 20;

    private readonly byte[]? _state;
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
        : this(0x1234, 0x11f0, 0x00ff00, capabilities)
    {
        if (stateSize < 4096 || !BitOperations.IsPow2(stateSize))
        {
            throw new ArgumentOutOfRangeException(nameof(stateSize), stateSize, "The state size is a power of two of at least 4096.");
        }
        _state = new byte[stateSize];
        DefineBar(0, (ulong)stateSize);
        MsiVectors = 1;
    }

    /// <summary>
    /// Creates a migratable function of your own: define its BARs, interrupts and capabilities, and
    /// override <see cref="SaveState"/> and <see cref="LoadState"/> (by default the state is empty).
    /// </summary>
    /// <param name="vendorId">The vendor id.</param>
    /// <param name="deviceId">The device id.</param>
    /// <param name="classCode">The 24-bit class code.</param>
    /// <param name="capabilities">The migration flags it reports; must include <see cref="VfioMigrationCapabilities.StopCopy"/>.</param>
    /// <param name="isExpress">True for a PCI Express function (the default, as migratable devices are).</param>
    protected MigratableDeviceModel(ushort vendorId, ushort deviceId, uint classCode, VfioMigrationCapabilities capabilities, bool isExpress = true)
        : base(vendorId, deviceId, classCode, isExpress)
    {
        if ((capabilities & VfioMigrationCapabilities.StopCopy) == 0 || ((ulong)capabilities & ~7UL) != 0)
        {
            throw new ArgumentException("Migration capabilities are STOP_COPY, optionally with P2P and PRE_COPY.", nameof(capabilities));
        }
        Capabilities = capabilities;
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

    /// <summary>A copy of the device state: what <see cref="SaveState"/> gives now (by default BAR0's memory).</summary>
    public byte[] GetDeviceState()
    {
        lock (Gate)
        {
            return SaveState();
        }
    }

    /// <summary>
    /// The device's state as the migration stream carries it: taken when a saving session starts
    /// (entering STOP_COPY or PRE_COPY) and again for what changed in PRE_COPY. By default BAR0's
    /// memory, or nothing for a device made with the protected constructor. Runs with the model's lock held.
    /// </summary>
    protected virtual byte[] SaveState() => _state is null ? [] : (byte[])_state.Clone();

    /// <summary>
    /// Takes a state <see cref="SaveState"/> produced (on this device or another of the same kind) when
    /// the device leaves RESUMING. Return false to refuse it: RESUMING -&gt; STOP then fails with EINVAL and
    /// the device stays in RESUMING. By default BAR0's memory, which must be as long. Runs with the model's lock held.
    /// </summary>
    /// <param name="state">The bytes of the last record of the stream.</param>
    protected virtual bool LoadState(ReadOnlySpan<byte> state)
    {
        if (_state is null)
        {
            return state.IsEmpty;
        }
        if (state.Length != _state.Length)
        {
            return false;
        }
        state.CopyTo(_state);
        return true;
    }

    /// <summary>
    /// Called after each arc the device takes (RUNNING -&gt; RUNNING_P2P, ... and back to RUNNING at a
    /// reset), with the model's lock held: stop the device's own work in STOP, resume it in RUNNING.
    /// </summary>
    /// <param name="previous">The state left.</param>
    /// <param name="current">The state entered.</param>
    protected virtual void OnMigrationStateChanged(VfioMigrationState previous, VfioMigrationState current)
    {
    }

    /// <summary>Tells an open PRE_COPY session that the state changed since it was read: its next read gets a new record. The model's lock is held.</summary>
    protected void MarkStateDirty()
    {
        LockAssert.Held(Gate);
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
    protected override ulong ReadBar(int bar, ulong offset, int size) => bar == 0 && _state is not null ? ReadStore(_state, offset, size) : base.ReadBar(bar, offset, size);

    /// <inheritdoc/>
    protected override void WriteBar(int bar, ulong offset, int size, ulong value)
    {
        if (bar != 0 || _state is null)
        {
            base.WriteBar(bar, offset, size, value);
            return;
        }
        WriteStore(_state, offset, size, value);
        MarkStateDirty(); // PRE_COPY tracks changes made while running
    }

    /// <inheritdoc/>
    protected override void OnReset()
    {
        base.OnReset();
        if (_state is not null)
        {
            Array.Clear(_state);
        }
        var from = _migrationState;
        _migrationState = VfioMigrationState.Running;
        EndSession();
        _logRanges = null;
        _dirtyPages.Clear();
        if (from != VfioMigrationState.Running)
        {
            OnMigrationStateChanged(from, VfioMigrationState.Running);
        }
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
            length = (ulong)(RecordHeader + SaveState().Length);
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
                var from = _migrationState;
                int r = Step(from, next, out var opened);
                if (r < 0)
                {
                    return r;
                }
                _migrationState = next;
                OnMigrationStateChanged(from, next);
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
        byte[] state = SaveState();
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
        int length = 0;
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
            length = (int)BinaryPrimitives.ReadUInt32LittleEndian(stream[(at + 8)..]);
            at += RecordHeader + length;
        }
        if (last < 0)
        {
            return -Errno.EINVAL;
        }
        return LoadState(stream.Slice(last + RecordHeader, length)) ? 0 : -Errno.EINVAL;
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
            dirty = (ulong)(file.Available - (long)initial) + (file.Dirty ? (ulong)(RecordHeader + SaveState().Length) : 0);
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
