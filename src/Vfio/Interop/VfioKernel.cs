using System.Runtime.InteropServices;
using Vfio.Interop;

namespace Vfio;

/// <summary>
/// The kernel the library talks to. <see cref="Linux"/> is the running Linux kernel; the
/// <c>Vfio.Testing</c> package provides a simulated kernel with the same behaviour for tests.
/// </summary>
/// <remarks>
/// This type is the library's only meeting point with the kernel: a small set of syscall-level
/// operations (open, close, ioctl, pread, pwrite, mmap, munmap, memfd, eventfd, poll and sysfs access).
/// Its members are internal; driver authors choose a kernel and never call it directly.
/// Every operation returns its result or a negative errno, as the kernel's own calls do, and
/// never throws: errors are turned into exceptions above this layer, in one place.
/// </remarks>
public abstract class VfioKernel
{
    private protected VfioKernel(string sysfsRoot, string devRoot)
    {
        SysfsRoot = sysfsRoot;
        DevRoot = devRoot;
    }

    /// <summary>The real kernel, with sysfs at <c>/sys</c> and device nodes under <c>/dev</c>.</summary>
    public static VfioKernel Linux { get; } = new LinuxKernel("/sys", "/dev");

    /// <summary>
    /// The real kernel with sysfs and device nodes looked up under other roots (a container's
    /// bind mounts, or a copy of a sysfs tree).
    /// </summary>
    /// <param name="sysfsRoot">The folder that stands for <c>/sys</c>.</param>
    /// <param name="devRoot">The folder that stands for <c>/dev</c>.</param>
    public static VfioKernel LinuxAt(string sysfsRoot, string devRoot)
    {
        ArgumentException.ThrowIfNullOrEmpty(sysfsRoot);
        ArgumentException.ThrowIfNullOrEmpty(devRoot);
        return new LinuxKernel(sysfsRoot.TrimEnd('/'), devRoot.TrimEnd('/'));
    }

    /// <summary>Where sysfs is found (<c>/sys</c> on a normal system).</summary>
    public string SysfsRoot { get; }

    /// <summary>Where device nodes are found (<c>/dev</c> on a normal system).</summary>
    public string DevRoot { get; }

    /// <summary>Opens <paramref name="path"/>; returns 0 or a negative errno.</summary>
    internal abstract int Open(string path, int flags, out SafeFd fd);

    /// <summary>Closes a raw descriptor; only <see cref="SafeFd"/> calls it.</summary>
    internal abstract int Close(int fd);

    /// <summary>An ioctl whose argument is a pointer to a uAPI struct; returns its value or a negative errno.</summary>
    internal abstract unsafe int Ioctl(SafeFd fd, nuint request, void* arg);

    /// <summary>An ioctl whose argument is a plain integer (CHECK_EXTENSION, SET_IOMMU).</summary>
    internal abstract int Ioctl(SafeFd fd, nuint request, nint value);

    /// <summary>Reads at an offset; returns the count read or a negative errno.</summary>
    internal abstract long PRead(SafeFd fd, Span<byte> buffer, long offset);

    /// <summary>Writes at an offset; returns the count written or a negative errno.</summary>
    internal abstract long PWrite(SafeFd fd, ReadOnlySpan<byte> buffer, long offset);

    /// <summary>Reads from the current position (eventfds, streams); count or negative errno.</summary>
    internal abstract long Read(SafeFd fd, Span<byte> buffer);

    /// <summary>Writes at the current position (eventfds, streams); count or negative errno.</summary>
    internal abstract long Write(SafeFd fd, ReadOnlySpan<byte> buffer);

    /// <summary>
    /// Maps <paramref name="length"/> bytes of <paramref name="fd"/> at <paramref name="offset"/>,
    /// or anonymous memory when <paramref name="fd"/> is null; returns 0 or a negative errno.
    /// </summary>
    internal abstract int Mmap(SafeFd? fd, nuint length, int prot, int flags, long offset, out SafeMapping mapping);

    /// <summary>
    /// Maps <paramref name="length"/> bytes of <paramref name="fd"/> at <paramref name="offset"/> over
    /// [<paramref name="address"/>, + <paramref name="length"/>) in place (<c>MAP_FIXED</c>): whatever was
    /// mapped there is replaced in one step, so an access on another thread meets either the old
    /// mapping or the new one, never a hole. Returns 0 or a negative errno.
    /// </summary>
    internal abstract int MmapFixed(nint address, nuint length, int prot, int flags, SafeFd fd, long offset);

    /// <summary>Unmaps [<paramref name="address"/>, + <paramref name="length"/>); only <see cref="SafeMapping"/> and regions call it.</summary>
    internal abstract int Munmap(nint address, nuint length);

    /// <summary>Creates an anonymous memory file (<c>memfd_create</c>), empty; returns 0 or a negative errno.</summary>
    internal abstract int MemFd(string name, out SafeFd fd);

    /// <summary>Creates an eventfd; returns 0 or a negative errno.</summary>
    internal abstract int EventFd(uint initialValue, int flags, out SafeFd fd);

    /// <summary>Waits for events on raw descriptors; returns the count ready, 0 on timeout, or a negative errno.</summary>
    internal abstract int Poll(Span<PollFd> fds, int timeoutMilliseconds);

    /// <summary>Reads a symbolic link's target; returns 0 or a negative errno.</summary>
    internal abstract int ReadLink(string path, out string target);

    /// <summary>Lists the names in a folder (no "." or ".."); returns 0 or a negative errno.</summary>
    internal abstract int ListDirectory(string path, out string[] names);

    /// <summary>A file's type, permission bits and owner, following links (<c>statx(2)</c>); returns 0 or a negative errno.</summary>
    internal abstract int Stat(string path, out FileStatus status);

    /// <summary>
    /// Whether this process may open <paramref name="path"/> as <paramref name="mode"/> asks (<c>R_OK</c>,
    /// <c>W_OK</c>), with its effective ids (<c>faccessat(2)</c> with <c>AT_EACCESS</c>); 0 or a negative errno.
    /// </summary>
    internal abstract int Access(string path, int mode);

    /// <summary>Gives a file to a user and a group (-1 keeps one as it is); returns 0 or a negative errno.</summary>
    internal abstract int Chown(string path, int userId, int groupId);

    /// <summary>A resource limit of this process (<c>getrlimit(2)</c>); <see cref="ulong.MaxValue"/> is unlimited. 0 or a negative errno.</summary>
    internal abstract int GetResourceLimit(int resource, out ulong soft, out ulong hard);

    /// <summary>The effective capability set of this process (<c>capget(2)</c>), one bit per <c>CAP_*</c>; 0 or a negative errno.</summary>
    internal abstract int GetCapabilities(out ulong effective);

    /// <summary>The kernel's release (<c>uname -r</c>, from <c>uname(2)</c>); returns 0 or a negative errno.</summary>
    internal abstract int GetKernelRelease(out string release);

    /// <summary>A path under <see cref="SysfsRoot"/>; <paramref name="relative"/> has no leading slash.</summary>
    internal string Sys(string relative) => SysfsRoot + "/" + relative;

    /// <summary>A path under <see cref="DevRoot"/>; <paramref name="relative"/> has no leading slash.</summary>
    internal string Dev(string relative) => DevRoot + "/" + relative;
}

/// <summary>What <see cref="VfioKernel.Stat"/> reports of a file.</summary>
/// <param name="Mode">The type and permission bits (<c>st_mode</c>: <c>S_IFCHR | 0600</c> for a VFIO group node).</param>
/// <param name="UserId">The owner's user id.</param>
/// <param name="GroupId">The owner's group id.</param>
internal readonly record struct FileStatus(uint Mode, uint UserId, uint GroupId)
{
    public const uint TypeMask = 0xf000;
    public const uint CharacterDevice = 0x2000;
    public const uint Directory = 0x4000;
    public const uint RegularFile = 0x8000;
    public const uint SymbolicLink = 0xa000;

    public bool IsCharacterDevice => (Mode & TypeMask) == CharacterDevice;

    public bool IsDirectory => (Mode & TypeMask) == Directory;

    /// <summary>The permission bits (<c>0600</c>).</summary>
    public uint Permissions => Mode & 0xfff;
}

/// <summary>A <c>struct pollfd</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct PollFd
{
    public int fd;
    public short events;
    public short revents;
}
