using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio.Testing;

/// <summary>
/// A data file of mtty's migration (an <c>anon_inode</c> "mtty_mig" opened with <c>stream_open</c>):
/// read-only with <c>mtty_save_fops</c> for saving, write-only with <c>mtty_resume_fops</c> for
/// resuming. Neither has a poll operation, so poll reports it ready at once (the VFS's default
/// mask), and reads never wait. Its contents are the model's, guarded by the model's lock.
/// </summary>
internal sealed unsafe class MttyMigrationFile(SimulatedKernel kernel, MttyDeviceModel model, bool saving)
    : KernelFile(kernel, "anon_inode:mtty_mig")
{
    private byte[] _data = new byte[model.MigrationDataSize];

    public override SimulatedFileKind Kind => SimulatedFileKind.MigrationData;

    /// <summary>The device left the file's state, or closed: reads and writes fail with ENODEV.</summary>
    public bool Disabled { get; private set; }

    /// <summary>The bytes filled (migf->filled_size).</summary>
    public long Length { get; private set; }

    /// <summary>The file position (f_pos).</summary>
    public long Position { get; private set; }

    public ReadOnlySpan<byte> Written => _data.AsSpan(0, (int)Length);

    // mtty_disable_file
    public void Disable()
    {
        Disabled = true;
        Length = 0;
        Position = 0;
    }

    public void Append(ReadOnlySpan<byte> bytes)
    {
        if (Length + bytes.Length > _data.Length)
        {
            Array.Resize(ref _data, (int)(Length + bytes.Length));
        }
        bytes.CopyTo(_data.AsSpan((int)Length));
        Length += bytes.Length;
    }

    public void Seek(long position) => Position = position;

    public long Take(Span<byte> buffer)
    {
        int n = (int)Math.Min(buffer.Length, Length - Position);
        _data.AsSpan((int)Position, n).CopyTo(buffer);
        Position += n;
        return n;
    }

    // The file was opened O_RDONLY or O_WRONLY: the VFS refuses the other direction with EBADF.
    public override long Read(Span<byte> buffer) => saving ? model.SaveRead(this, buffer) : -Errno.EBADF;

    public override long Write(ReadOnlySpan<byte> buffer) => saving ? -Errno.EBADF : model.ResumeWrite(this, buffer);

    // stream_open clears FMODE_PREAD and FMODE_PWRITE.
    public override long PRead(Span<byte> buffer, long offset) => -Errno.ESPIPE;

    public override long PWrite(ReadOnlySpan<byte> buffer, long offset) => -Errno.ESPIPE;

    // mtty_precopy_ioctl on the saving file; the resuming file has no ioctl.
    public override int Ioctl(nuint request, nint argument)
    {
        if (!saving || request != VfioUapi.VFIO_MIG_GET_PRECOPY_INFO)
        {
            return -Errno.ENOTTY;
        }
        var info = (vfio_precopy_info*)argument;
        if (info->argsz < sizeof(vfio_precopy_info))
        {
            return -Errno.EINVAL;
        }
        int r = model.PreCopyInfo(this, out ulong initial);
        if (r < 0)
        {
            return r;
        }
        // Copied back from argsz to dirty_bytes: the caller's flags come back as they were (the
        // kernel leaves them alone unless the caller opted in to VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2).
        info->initial_bytes = initial;
        info->dirty_bytes = 0;
        return 0;
    }

    // No poll operation: DEFAULT_POLLMASK.
    public override short PollEvents(short events) => (short)(events & (Flags.POLLIN | Flags.POLLOUT));
}
