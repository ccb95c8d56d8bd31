using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio.Testing;

/// <summary>
/// A migration data file as the drivers create one on entering a saving or resuming state (an
/// <c>anon_inode</c> file opened with <c>stream_open</c>): read-only for saving, write-only for
/// resuming (the VFS refuses the other direction with EBADF), no pread or pwrite (<c>stream_open</c>
/// clears FMODE_PREAD and FMODE_PWRITE: ESPIPE). Its bytes are a buffer read from a position; what
/// a read, a write and <c>VFIO_MIG_GET_PRECOPY_INFO</c> do is the driver's. Guarded by the model's lock.
/// </summary>
internal abstract unsafe class MigrationStreamFile(SimulatedKernel kernel, string path, bool saving, int capacity)
    : KernelFile(kernel, path)
{
    private byte[] _data = new byte[capacity];

    public override SimulatedFileKind Kind => SimulatedFileKind.MigrationData;

    /// <summary>True for a saving file (read), false for resuming (write).</summary>
    public bool Saving { get; } = saving;

    /// <summary>The device left the file's state, was reset or closed: reads and writes fail with ENODEV.</summary>
    public bool Disabled { get; protected set; }

    /// <summary>The bytes filled.</summary>
    public long Length { get; protected set; }

    /// <summary>The file position (f_pos).</summary>
    public long Position { get; protected set; }

    public long Available => Length - Position;

    public ReadOnlySpan<byte> Written => _data.AsSpan(0, (int)Length);

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

    public sealed override long Read(Span<byte> buffer) => Saving ? SaveRead(buffer) : -Errno.EBADF;

    public sealed override long Write(ReadOnlySpan<byte> buffer) => Saving ? -Errno.EBADF : ResumeWrite(buffer);

    public sealed override long PRead(Span<byte> buffer, long offset) => -Errno.ESPIPE;

    public sealed override long PWrite(ReadOnlySpan<byte> buffer, long offset) => -Errno.ESPIPE;

    /// <summary>VFIO_MIG_GET_PRECOPY_INFO: ENOTTY where the driver has none, EINVAL for a short argsz, then the driver's answer.</summary>
    public sealed override int Ioctl(nuint request, nint argument)
    {
        if (request != VfioUapi.VFIO_MIG_GET_PRECOPY_INFO || !HasPreCopyInfo)
        {
            return -Errno.ENOTTY;
        }
        var info = (vfio_precopy_info*)argument;
        if (info->argsz < sizeof(vfio_precopy_info))
        {
            return -Errno.EINVAL;
        }
        return PreCopyInfo(info);
    }

    /// <summary>The driver's read of a saving file.</summary>
    protected abstract long SaveRead(Span<byte> buffer);

    /// <summary>The driver's write of a resuming file.</summary>
    protected abstract long ResumeWrite(ReadOnlySpan<byte> buffer);

    /// <summary>Whether the file answers VFIO_MIG_GET_PRECOPY_INFO.</summary>
    protected abstract bool HasPreCopyInfo { get; }

    /// <summary>Fills the caller's <paramref name="info"/> (argsz checked); 0 or a negative errno.</summary>
    protected abstract int PreCopyInfo(vfio_precopy_info* info);
}
