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
            // .NET reports opendir's ENOTDIR (a file, such as a sysfs attribute) as a missing folder too.
            names = [];
            return File.Exists(path) ? -Errno.ENOTDIR : -Errno.ENOENT;
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

    // struct statx: stx_uid at 20, stx_gid at 24, stx_mode (16 bits) at 28; 256 bytes in all.
    internal override int Stat(string path, out FileStatus status)
    {
        byte* buffer = stackalloc byte[256];
        if (Libc.statx(Flags.AT_FDCWD, path, 0, Flags.STATX_BASIC_STATS, buffer) != 0)
        {
            status = default;
            return LastErrno();
        }
        status = new FileStatus(*(ushort*)(buffer + 28), *(uint*)(buffer + 20), *(uint*)(buffer + 24));
        return 0;
    }

    internal override int Access(string path, int mode) =>
        Libc.faccessat(Flags.AT_FDCWD, path, mode, Flags.AT_EACCESS) == 0 ? 0 : LastErrno();

    internal override int Chown(string path, int userId, int groupId) =>
        Libc.chown(path, unchecked((uint)userId), unchecked((uint)groupId)) == 0 ? 0 : LastErrno();

    internal override int GetResourceLimit(int resource, out ulong soft, out ulong hard)
    {
        ulong* limits = stackalloc ulong[2];
        if (Libc.getrlimit(resource, limits) != 0)
        {
            soft = hard = 0;
            return LastErrno();
        }
        soft = limits[0];
        hard = limits[1];
        return 0;
    }

    internal override int GetCapabilities(out ulong effective)
    {
        // struct __user_cap_header_struct { version, pid } and two struct __user_cap_data_struct
        // { effective, permitted, inheritable }, the second holding capabilities 32 to 63.
        uint* header = stackalloc uint[2];
        header[0] = Flags.LINUX_CAPABILITY_VERSION_3;
        header[1] = 0;
        uint* data = stackalloc uint[6];
        if (Libc.capget(header, data) != 0)
        {
            effective = 0;
            return LastErrno();
        }
        effective = data[0] | ((ulong)data[3] << 32);
        return 0;
    }

    internal override int GetKernelRelease(out string release)
    {
        // struct utsname: six fields of 65 bytes (sysname, nodename, release, ...).
        const int Field = 65;
        byte* buffer = stackalloc byte[Field * 6];
        if (Libc.uname(buffer) != 0)
        {
            release = string.Empty;
            return LastErrno();
        }
        release = Marshal.PtrToStringUTF8((nint)(buffer + (2 * Field))) ?? string.Empty;
        return 0;
    }
}
