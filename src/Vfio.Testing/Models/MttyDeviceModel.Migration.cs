using System.Buffers.Binary;
using Vfio.Interop;

namespace Vfio.Testing;

// Migration v2 of the kernel's mtty sample (samples/vfio-mdev/mtty.c, Linux 6.7 and later; 6.1's mtty
// has none): STOP_COPY, P2P and PRE_COPY, a data size, and DMA logging that logs nothing (mtty does
// no DMA). The stream is mtty's struct mtty_data byte for byte: a 24-byte header (magic, version
// 1.0, the port count, flags 0) and each port's struct serial_port (36 bytes: the 8 UART registers,
// the 16-byte loopback FIFO with head, tail and count, dlab, overrun, the divisor, fcr, the FIFO
// size and the trigger level). A stream saved from the real mtty resumes here and the other way round.
public sealed partial class MttyDeviceModel : IMigrationDriver
{
    /// <summary>MTTY_MAGIC: the first 8 bytes of every mtty migration stream.</summary>
    public const ulong MigrationMagic = 0x7e9d09898c3e2c4e;

    /// <summary>offsetof(struct mtty_data, ports): the header before the ports.</summary>
    internal const int MigrationHeaderSize = 24;

    /// <summary>sizeof(struct serial_port) on x86-64.</summary>
    internal const int SerialPortSize = 36;

    private const VfioMigrationCapabilities MttyCapabilities =
        VfioMigrationCapabilities.StopCopy | VfioMigrationCapabilities.P2P | VfioMigrationCapabilities.PreCopy;

    private VfioMigrationState _migrationState = VfioMigrationState.Running;
    private MttyMigrationFile? _saving;
    private MttyMigrationFile? _resuming;

    /// <summary>The migration state the device is in (mdev_state->state).</summary>
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

    /// <summary>The bytes a whole stream of this device has (mtty_data_size): the header and one <c>serial_port</c> per port.</summary>
    public int MigrationDataSize => MigrationHeaderSize + Ports * SerialPortSize;

    VfioMigrationCapabilities IMigrationDriver.Capabilities => MttyCapabilities;

    bool IMigrationDriver.ReportsDataSize => true;

    bool IMigrationDriver.SupportsDmaLogging => true;

    int IMigrationDriver.GetMigrationState(out VfioMigrationState state)
    {
        lock (Gate)
        {
            state = _migrationState;
            return 0;
        }
    }

    int IMigrationDriver.GetMigrationDataSize(out ulong length)
    {
        length = (ulong)MigrationDataSize;
        return 0;
    }

    // mtty_set_state: one arc at a time over the core's next-state table; a failed arc leaves the
    // device in the state before it.
    int IMigrationDriver.SetMigrationState(VfioMigrationState target, out KernelFile? file)
    {
        file = null;
        lock (Gate)
        {
            while (_migrationState != target)
            {
                var path = MigrationPlanner.Plan(_migrationState, target, MttyCapabilities, out _);
                if (path is null || path.Length == 0)
                {
                    return -Errno.EINVAL; // vfio_mig_get_next_state
                }
                var next = path[0];
                int r = Step(_migrationState, next, out var opened);
                if (r < 0)
                {
                    return r;
                }
                _migrationState = next;
                if (opened is not null)
                {
                    file = opened;
                }
            }
            return 0;
        }
    }

    // mtty_step_state
    private int Step(VfioMigrationState from, VfioMigrationState to, out MttyMigrationFile? opened)
    {
        opened = null;
        switch ((from, to))
        {
            case (VfioMigrationState.Resuming, VfioMigrationState.Stop):
                int r = LoadState();
                if (r < 0)
                {
                    return r;
                }
                DisableFiles();
                return 0;
            case (VfioMigrationState.PreCopy, VfioMigrationState.Running):
            case (VfioMigrationState.PreCopyP2P, VfioMigrationState.RunningP2P):
            case (VfioMigrationState.StopCopy, VfioMigrationState.Stop):
                DisableFiles();
                return 0;
            case (VfioMigrationState.Running, VfioMigrationState.PreCopy):
            case (VfioMigrationState.RunningP2P, VfioMigrationState.PreCopyP2P):
            case (VfioMigrationState.Stop, VfioMigrationState.StopCopy):
            case (VfioMigrationState.PreCopyP2P, VfioMigrationState.StopCopy):
                // mtty_save_device_data: a saving file exists already when PRE_COPY opened it; STOP_COPY
                // then appends the ports to it and returns no new file.
                if (_saving is null)
                {
                    _saving = opened = new MttyMigrationFile(Device!.Kernel, this, saving: true);
                    _saving.Append(Header());
                }
                if (to == VfioMigrationState.StopCopy)
                {
                    for (int i = 0; i < Ports; i++)
                    {
                        _saving.Append(SavePort(_ports[i]));
                    }
                }
                return 0;
            case (VfioMigrationState.Stop, VfioMigrationState.Resuming):
                _resuming = opened = new MttyMigrationFile(Device!.Kernel, this, saving: false);
                return 0;
            default:
                return 0; // the P2P arcs and STOP -> RUNNING_P2P: mtty does no DMA and has nothing to stop
        }
    }

    // mtty_close disables the data files and does nothing else to the device; the migration state stays as it was.
    internal override void Disable()
    {
        lock (Gate)
        {
            DisableFiles();
        }
    }

    // mtty_disable_files
    private void DisableFiles()
    {
        _saving?.Disable();
        _saving = null;
        _resuming?.Disable();
        _resuming = null;
    }

    // The header of struct mtty_data: magic, major_ver 1, minor_ver 0, nr_ports, flags 0.
    private byte[] Header()
    {
        var header = new byte[MigrationHeaderSize];
        BinaryPrimitives.WriteUInt64LittleEndian(header, MigrationMagic);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(8), 1);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(12), 0);
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(16), (uint)Ports);
        return header;
    }

    // struct serial_port as x86-64 lays it out (padding zero, as mtty's kzalloc'ed state has it).
    private static byte[] SavePort(Port port)
    {
        var bytes = new byte[SerialPortSize];
        port.Registers.CopyTo(bytes, 0);
        port.Fifo.CopyTo(bytes, 8);
        bytes[24] = (byte)port.Head;
        bytes[25] = (byte)port.Tail;
        bytes[26] = (byte)port.Count;
        bytes[27] = port.Dlab ? (byte)1 : (byte)0;
        bytes[28] = port.Overrun ? (byte)1 : (byte)0;
        BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(30), port.Divisor);
        bytes[32] = port.Fcr;
        bytes[33] = (byte)port.MaxFifo;
        bytes[34] = (byte)port.TriggerLevel;
        return bytes;
    }

    private static void LoadPort(Port port, ReadOnlySpan<byte> bytes)
    {
        bytes[..8].CopyTo(port.Registers);
        bytes.Slice(8, FifoSize).CopyTo(port.Fifo);
        port.Head = bytes[24];
        port.Tail = bytes[25];
        port.Count = bytes[26];
        port.Dlab = bytes[27] != 0;
        port.Overrun = bytes[28] != 0;
        port.Divisor = BinaryPrimitives.ReadUInt16LittleEndian(bytes[30..]);
        port.Fcr = bytes[32];
        port.MaxFifo = bytes[33];
        port.TriggerLevel = bytes[34];
    }

    // mtty_load_state: the header was checked as it was written; only the length is checked here.
    private int LoadState()
    {
        var data = _resuming!.Written;
        if (data.Length < MigrationDataSize)
        {
            return -Errno.EINVAL;
        }
        for (int i = 0; i < Ports; i++)
        {
            LoadPort(_ports[i], data.Slice(MigrationHeaderSize + i * SerialPortSize, SerialPortSize));
        }
        return 0;
    }

    // ---- The data files (mtty_save_fops, mtty_resume_fops), called by MttyMigrationFile ----------

    // mtty_save_read
    internal long SaveRead(MttyMigrationFile file, Span<byte> buffer)
    {
        lock (Gate)
        {
            if (file.Disabled)
            {
                return -Errno.ENODEV;
            }
            if (file.Position > file.Length)
            {
                return -Errno.EINVAL;
            }
            return file.Take(buffer); // 0 at the end, in PRE_COPY too (mtty never answers ENOMSG)
        }
    }

    // mtty_precopy_ioctl, after vfio_check_precopy_ioctl: only in the PRE_COPY states.
    internal int PreCopyInfo(MttyMigrationFile file, out ulong initial)
    {
        lock (Gate)
        {
            initial = 0;
            if (_migrationState is not (VfioMigrationState.PreCopy or VfioMigrationState.PreCopyP2P))
            {
                return -Errno.EINVAL;
            }
            if (file.Disabled)
            {
                return -Errno.ENODEV;
            }
            if (file.Position > file.Length)
            {
                return -Errno.EINVAL;
            }
            initial = (ulong)(file.Length - file.Position);
            return 0;
        }
    }

    // mtty_resume_write: at most a whole stream; the header is checked when the bytes written cross
    // its end, and a bad one fails that write with EFAULT although its bytes are kept.
    internal long ResumeWrite(MttyMigrationFile file, ReadOnlySpan<byte> data)
    {
        if (file.Position + data.Length > MigrationDataSize)
        {
            return -Errno.ENOMEM;
        }
        lock (Gate)
        {
            if (file.Disabled)
            {
                return -Errno.ENODEV;
            }
            long before = file.Length;
            file.Append(data);
            file.Seek(file.Length);
            if (before < MigrationHeaderSize && file.Length >= MigrationHeaderSize)
            {
                var header = file.Written;
                if (BinaryPrimitives.ReadUInt64LittleEndian(header) != MigrationMagic
                    || BinaryPrimitives.ReadUInt32LittleEndian(header[20..]) != 0
                    || BinaryPrimitives.ReadUInt32LittleEndian(header[8..]) != 1
                    || BinaryPrimitives.ReadUInt32LittleEndian(header[12..]) != 0
                    || BinaryPrimitives.ReadUInt32LittleEndian(header[16..]) != (uint)Ports)
                {
                    return -Errno.EFAULT;
                }
            }
            return data.Length;
        }
    }

    // mtty's log_ops: starting, stopping and reading succeed and nothing is ever dirty.
    int IMigrationDriver.StartDmaLogging(IReadOnlyList<(ulong Iova, ulong Length)> ranges, ref ulong pageSize) => 0;

    int IMigrationDriver.StopDmaLogging() => 0;

    int IMigrationDriver.ReportDmaLogging(ulong iova, ulong length, ulong pageSize, Span<ulong> bitmap) => 0;
}
