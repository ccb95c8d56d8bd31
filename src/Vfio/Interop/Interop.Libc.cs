using System.Runtime.InteropServices;

namespace Vfio.Interop;

internal static partial class Interop
{
    /// <summary>
    /// The C library's system call wrappers: one import per function, errno kept by SetLastError.
    /// Calls on an open file take its raw number: the file is owned by a <see cref="SafeFd"/>, and the
    /// library holds a counted reference on the object that owns it (an open device, a group held by
    /// the registry) around every call, so a per-call SafeHandle reference count would only add cost
    /// on the ioctl fast path.
    /// </summary>
    internal static unsafe partial class Libc
    {
        private const string Name = "libc";

        [LibraryImport(Name, EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
        internal static partial int open(string path, int flags);

        [LibraryImport(Name, EntryPoint = "close", SetLastError = true)]
        internal static partial int close(int fd);

        [LibraryImport(Name, EntryPoint = "ioctl", SetLastError = true)]
        internal static partial int ioctl(int fd, nuint request, void* arg);

        /// <summary>
        /// The ioctl of the fast path. SetLastError's stub clears errno before every call and reads it
        /// after every call; both happen in managed code after the transition, as they would here,
        /// so this import reads errno only when the call failed (<see cref="LinuxKernel"/>) and saves
        /// the two reads on every successful call (measured: ioctl_overhead_ratio in benchmarks/).
        /// </summary>
        [LibraryImport(Name, EntryPoint = "ioctl")]
        internal static partial int ioctl_fast(int fd, nuint request, void* arg);

        [LibraryImport(Name, EntryPoint = "ioctl", SetLastError = true)]
        internal static partial int ioctl(int fd, nuint request, nint value);

        [LibraryImport(Name, EntryPoint = "pread", SetLastError = true)]
        internal static partial nint pread(int fd, byte* buffer, nuint count, long offset);

        [LibraryImport(Name, EntryPoint = "pwrite", SetLastError = true)]
        internal static partial nint pwrite(int fd, byte* buffer, nuint count, long offset);

        [LibraryImport(Name, EntryPoint = "read", SetLastError = true)]
        internal static partial nint read(int fd, byte* buffer, nuint count);

        [LibraryImport(Name, EntryPoint = "write", SetLastError = true)]
        internal static partial nint write(int fd, byte* buffer, nuint count);

        [LibraryImport(Name, EntryPoint = "mmap", SetLastError = true)]
        internal static partial nint mmap(nint address, nuint length, int prot, int flags, int fd, long offset);

        [LibraryImport(Name, EntryPoint = "munmap", SetLastError = true)]
        internal static partial int munmap(nint address, nuint length);

        [LibraryImport(Name, EntryPoint = "memfd_create", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
        internal static partial int memfd_create(string name, uint flags);

        [LibraryImport(Name, EntryPoint = "eventfd", SetLastError = true)]
        internal static partial int eventfd(uint initval, int flags);

        [LibraryImport(Name, EntryPoint = "poll", SetLastError = true)]
        internal static partial int poll(PollFd* fds, nuint nfds, int timeout);

        [LibraryImport(Name, EntryPoint = "readlink", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
        internal static partial nint readlink(string path, byte* buffer, nuint size);

        /// <summary>statx(2): its struct has the same layout on every architecture, unlike struct stat.</summary>
        [LibraryImport(Name, EntryPoint = "statx", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
        internal static partial int statx(int dirfd, string path, int flags, uint mask, byte* buffer);

        [LibraryImport(Name, EntryPoint = "faccessat", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
        internal static partial int faccessat(int dirfd, string path, int mode, int flags);

        [LibraryImport(Name, EntryPoint = "chown", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
        internal static partial int chown(string path, uint owner, uint group);

        [LibraryImport(Name, EntryPoint = "getrlimit", SetLastError = true)]
        internal static partial int getrlimit(int resource, ulong* limits);

        [LibraryImport(Name, EntryPoint = "capget", SetLastError = true)]
        internal static partial int capget(uint* header, uint* data);

        [LibraryImport(Name, EntryPoint = "uname", SetLastError = true)]
        internal static partial int uname(byte* buffer);
    }

    /// <summary>Flags of open(2), mmap(2), memfd_create(2), eventfd(2) and poll(2) on Linux x86-64 and arm64.</summary>
    internal static class Flags
    {
        public const int O_RDONLY = 0;
        public const int O_WRONLY = 1;
        public const int O_RDWR = 2;
        public const int O_NONBLOCK = 0x800;
        public const int O_CLOEXEC = 0x80000;

        public const int PROT_NONE = 0;
        public const int PROT_READ = 1;
        public const int PROT_WRITE = 2;

        public const int MAP_SHARED = 0x01;
        public const int MAP_PRIVATE = 0x02;
        public const int MAP_FIXED = 0x10;
        public const int MAP_ANONYMOUS = 0x20;
        public const int MAP_LOCKED = 0x2000;
        public const int MAP_POPULATE = 0x8000;
        public const int MAP_HUGETLB = 0x40000;

        public const uint MFD_CLOEXEC = 0x1;

        public const int EFD_NONBLOCK = 0x800;
        public const int EFD_CLOEXEC = 0x80000;

        public const short POLLIN = 0x1;
        public const short POLLOUT = 0x4;
        public const short POLLERR = 0x8;
        public const short POLLHUP = 0x10;
        public const short POLLNVAL = 0x20;

        public static readonly nint MAP_FAILED = -1;

        public const int R_OK = 4;
        public const int W_OK = 2;

        public const int AT_FDCWD = -100;
        public const int AT_EACCESS = 0x200;
        public const uint STATX_BASIC_STATS = 0x7ff;

        /// <summary>RLIMIT_MEMLOCK (the same number on x86-64 and arm64).</summary>
        public const int RLIMIT_MEMLOCK = 8;

        /// <summary>CAP_IPC_LOCK: lock memory beyond RLIMIT_MEMLOCK (VFIO's type1 IOMMU does not charge its pins).</summary>
        public const int CAP_IPC_LOCK = 14;

        /// <summary>_LINUX_CAPABILITY_VERSION_3: capget with two 32-bit words per set.</summary>
        public const uint LINUX_CAPABILITY_VERSION_3 = 0x20080522;
    }
}
