using System.Runtime.InteropServices;
using System.Text;
using static Vfio.Interop.Interop;

namespace Vfio.Interop;

/// <summary>The running Linux kernel, reached through the C library.</summary>
internal sealed unsafe class LinuxKernel : VfioKernel
{
    public LinuxKernel(string sysfsRoot, string devRoot)
        : base(sysfsRoot, devRoot)
    {
    }

    // The errno the generated stub saved right after the call, before anything else could change it.
    private static int LastErrno() => -Marshal.GetLastPInvokeError();

    // A file disposed before the call is refused as the kernel refuses a closed descriptor.
    private static int Live(SafeFd fd) => fd.IsClosed ? -1 : fd.Value;

    internal override int Open(string path, int flags, out SafeFd fd)
    {
        int raw = Libc.open(path, flags | Flags.O_CLOEXEC);
        if (raw < 0)
        {
            fd = null!;
            return LastErrno();
        }
        fd = new SafeFd(this, raw);
        return 0;
    }

    internal override int Close(int fd) => Libc.close(fd) == 0 ? 0 : LastErrno();

    internal override int Ioctl(SafeFd fd, nuint request, void* arg)
    {
        int result = Libc.ioctl_fast(Live(fd), request, arg);
        return result >= 0 ? result : -Marshal.GetLastSystemError();
    }

    internal override int Ioctl(SafeFd fd, nuint request, nint value)
    {
        int result = Libc.ioctl(Live(fd), request, value);
        return result >= 0 ? result : LastErrno();
    }

    internal override long PRead(SafeFd fd, Span<byte> buffer, long offset)
    {
        fixed (byte* p = buffer)
        {
            nint n = Libc.pread(Live(fd), p, (nuint)buffer.Length, offset);
            return n >= 0 ? n : LastErrno();
        }
    }

    internal override long PWrite(SafeFd fd, ReadOnlySpan<byte> buffer, long offset)
    {
        fixed (byte* p = buffer)
        {
            nint n = Libc.pwrite(Live(fd), p, (nuint)buffer.Length, offset);
            return n >= 0 ? n : LastErrno();
        }
    }

    internal override long Read(SafeFd fd, Span<byte> buffer)
    {
        fixed (byte* p = buffer)
        {
            nint n = Libc.read(Live(fd), p, (nuint)buffer.Length);
            return n >= 0 ? n : LastErrno();
        }
    }

    internal override long Write(SafeFd fd, ReadOnlySpan<byte> buffer)
    {
        fixed (byte* p = buffer)
        {
            nint n = Libc.write(Live(fd), p, (nuint)buffer.Length);
            return n >= 0 ? n : LastErrno();
        }
    }

    internal override int Mmap(SafeFd? fd, nuint length, int prot, int flags, long offset, out SafeMapping mapping)
    {
        bool added = false;
        try
        {
            int raw = -1;
            if (fd is not null)
            {
                fd.DangerousAddRef(ref added);
                raw = fd.Value;
            }
            else
            {
                flags |= Flags.MAP_ANONYMOUS;
            }
            nint address = Libc.mmap(0, length, prot, flags, raw, offset);
            if (address == Flags.MAP_FAILED)
            {
                mapping = null!;
                return LastErrno();
            }
            mapping = new SafeMapping(this, address, length);
            return 0;
        }
        finally
        {
            if (added)
            {
                fd!.DangerousRelease();
            }
        }
    }

    internal override int MmapFixed(nint address, nuint length, int prot, int flags, SafeFd fd, long offset)
    {
        bool added = false;
        try
        {
            fd.DangerousAddRef(ref added);
            nint mapped = Libc.mmap(address, length, prot, flags | Flags.MAP_FIXED, fd.Value, offset);
            if (mapped == Flags.MAP_FAILED)
            {
                return LastErrno();
            }
            // MAP_FIXED maps at the address or fails; anything else would be a kernel bug.
            return mapped == address ? 0 : -Errno.EFAULT;
        }
        finally
        {
            if (added)
            {
                fd.DangerousRelease();
            }
        }
    }

    internal override int Munmap(nint address, nuint length) => Libc.munmap(address, length) == 0 ? 0 : LastErrno();

    internal override int MemFd(string name, out SafeFd fd)
    {
        int raw = Libc.memfd_create(name, Flags.MFD_CLOEXEC);
        if (raw < 0)
        {
            fd = null!;
            return LastErrno();
        }
        fd = new SafeFd(this, raw);
        return 0;
    }

    internal override int EventFd(uint initialValue, int flags, out SafeFd fd)
    {
        int raw = Libc.eventfd(initialValue, flags | Flags.EFD_CLOEXEC);
        if (raw < 0)
        {
            fd = null!;
            return LastErrno();
        }
        fd = new SafeFd(this, raw);
        return 0;
    }

    internal override int Poll(Span<PollFd> fds, int timeoutMilliseconds)
    {
        fixed (PollFd* p = fds)
        {
            int n = Libc.poll(p, (nuint)fds.Length, timeoutMilliseconds);
            return n >= 0 ? n : LastErrno();
        }
    }

    internal override int ReadLink(string path, out string target)
    {
        const int Size = 4096;
        byte* buffer = stackalloc byte[Size];
        nint n = Libc.readlink(path, buffer, Size);
        if (n < 0)
        {
            target = string.Empty;
            return LastErrno();
        }
        target = Encoding.UTF8.GetString(buffer, (int)n);
        return 0;
    }

    internal override int ListDirectory(string path, out string[] names)
    {
        try
        {
            names = Directory.EnumerateFileSystemEntries(path).Select(Path.GetFileName).ToArray()!;
            Array.Sort(names, StringComparer.Ordinal);
            return 0;
        }
        catch (DirectoryNotFoundException)
        {
            names = [];
            return -Errno.ENOENT;
        }
        catch (UnauthorizedAccessException)
        {
            names = [];
            return -Errno.EACCES;
        }
        catch (IOException)
        {
            names = [];
            return -Errno.ENOTDIR;
        }
    }
}
