using Vfio.Interop;

namespace Vfio.Testing;

/// <summary>
/// A migration data session (an anonymous stream file, as the drivers create with
/// <c>anon_inode_getfile</c> and <c>stream_open</c>): read-only for saving, write-only for resuming.
/// Its contents and state are the model's, guarded by the model's lock.
/// </summary>
internal sealed unsafe class MigrationDataFile(SimulatedKernel kernel, MigratableDeviceModel model, bool saving)
    : KernelFile(kernel, saving ? "anon_inode:[vfio_mig_save]" : "anon_inode:[vfio_mig_resume]")
{
    private byte[] _data = [];

    public override SimulatedFileKind Kind => SimulatedFileKind.MigrationData;

    /// <summary>True for a saving session (read), false for resuming (write).</summary>
    public bool Saving { get; } = saving;

    /// <summary>All data is there: reads end with 0 (STOP_COPY).</summary>
    public bool Complete { get; set; }

    /// <summary>The state changed since the last record (PRE_COPY).</summary>
    public bool Dirty { get; set; }

    /// <summary>The session's state was left or the device reset: reads and writes fail with ENODEV.</summary>
    public bool Disabled { get; private set; }

    /// <summary>Where the initial PRE_COPY data ends.</summary>
    public long InitialEnd { get; set; }

    public long Length { get; private set; }

    public long Position { get; private set; }

    public long Available => Length - Position;

    public ReadOnlySpan<byte> Written => _data.AsSpan(0, (int)Length);

    public void Disable() => Disabled = true;

    public void Append(ReadOnlySpan<byte> bytes)
    {
        if (Length + bytes.Length > _data.Length)
        {
            Array.Resize(ref _data, (int)Math.Max(Length + bytes.Length, _data.Length * 2L));
        }
        bytes.CopyTo(_data.AsSpan((int)Length));
        Length += bytes.Length;
    }

    public long Take(Span<byte> buffer)
    {
        int n = (int)Math.Min(buffer.Length, Available);
        _data.AsSpan((int)Position, n).CopyTo(buffer);
        Position += n;
        return n;
    }

    public override long Read(Span<byte> buffer) => Saving ? model.SessionRead(this, buffer) : -Errno.EBADF;

    public override long Write(ReadOnlySpan<byte> buffer) => Saving ? -Errno.EBADF : model.SessionWrite(this, buffer);

    public override long PRead(Span<byte> buffer, long offset) => -Errno.ESPIPE;

    public override long PWrite(ReadOnlySpan<byte> buffer, long offset) => -Errno.ESPIPE;

    public override int Ioctl(nuint request, nint argument)
    {
        if (request != VfioUapi.VFIO_MIG_GET_PRECOPY_INFO || (model.Capabilities & VfioMigrationCapabilities.PreCopy) == 0)
        {
            return -Errno.ENOTTY;
        }
        var info = (vfio_precopy_info*)argument;
        if (info->argsz < sizeof(vfio_precopy_info))
        {
            return -Errno.EINVAL;
        }
        int r = model.SessionPreCopyInfo(this, out ulong initial, out ulong dirty);
        if (r < 0)
        {
            return r;
        }
        info->flags = 0;
        info->initial_bytes = initial;
        info->dirty_bytes = dirty;
        return 0;
    }

    public override short PollEvents(short events) => model.SessionPoll(this, events);
}
