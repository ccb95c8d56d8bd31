using System.Text;
using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio.Testing;

/// <summary>
/// An open sysfs attribute. A read shows the attribute's current text from the file position; a
/// write hands the whole buffer to the attribute's store, as kernfs does.
/// </summary>
internal sealed class SysfsFile(SimulatedKernel kernel, string path, SysfsNode node, int flags) : KernelFile(kernel, path)
{
    private long _position;

    public override SimulatedFileKind Kind => SimulatedFileKind.Sysfs;

    private bool CanRead => (flags & 3) != Flags.O_WRONLY;

    private bool CanWrite => (flags & 3) != Flags.O_RDONLY;

    public override long Read(Span<byte> buffer)
    {
        long n = PRead(buffer, Interlocked.Read(ref _position));
        if (n > 0)
        {
            Interlocked.Add(ref _position, n);
        }
        return n;
    }

    public override long PRead(Span<byte> buffer, long offset)
    {
        if (node is SysfsDirectory)
        {
            return -Errno.EISDIR;
        }
        if (!CanRead || node is not SysfsAttribute { Readable: true } attribute)
        {
            return -Errno.EBADF;
        }
        if (offset < 0)
        {
            return -Errno.EINVAL;
        }
        string? text = null;
        using (Kernel.Enter())
        {
            if (node.AccessError != 0)
            {
                return -node.AccessError;
            }
            text = attribute.Show?.Invoke();
        }
        byte[] bytes = text is not null ? Encoding.UTF8.GetBytes(text) : attribute.Binary!();
        if (offset >= bytes.Length)
        {
            return 0;
        }
        int n = (int)Math.Min(buffer.Length, bytes.Length - offset);
        bytes.AsSpan((int)offset, n).CopyTo(buffer);
        return n;
    }

    public override long Write(ReadOnlySpan<byte> buffer) => PWrite(buffer, 0);

    public override long PWrite(ReadOnlySpan<byte> buffer, long offset)
    {
        if (node is SysfsDirectory)
        {
            return -Errno.EISDIR;
        }
        if (!CanWrite || node is not SysfsAttribute { Store: { } store })
        {
            return -Errno.EBADF;
        }
        string text = Encoding.UTF8.GetString(buffer);
        using (Kernel.Enter())
        {
            if (node.AccessError != 0)
            {
                return -node.AccessError;
            }
            int r = store(text);
            return r < 0 ? r : buffer.Length;
        }
    }
}
