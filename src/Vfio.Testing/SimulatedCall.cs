namespace Vfio.Testing;

/// <summary>The kinds of system call the simulated kernel answers, for failure injection.</summary>
public enum SimulatedCall
{
    /// <summary><c>open(2)</c>.</summary>
    Open,

    /// <summary><c>close(2)</c>.</summary>
    Close,

    /// <summary><c>ioctl(2)</c>, with a pointer or an integer argument.</summary>
    Ioctl,

    /// <summary><c>pread(2)</c>.</summary>
    PRead,

    /// <summary><c>pwrite(2)</c>.</summary>
    PWrite,

    /// <summary><c>read(2)</c>.</summary>
    Read,

    /// <summary><c>write(2)</c>.</summary>
    Write,

    /// <summary><c>mmap(2)</c>, of a file or of anonymous memory, and over a mapping in place (<c>MAP_FIXED</c>).</summary>
    Mmap,

    /// <summary><c>munmap(2)</c>.</summary>
    Munmap,

    /// <summary><c>memfd_create(2)</c>.</summary>
    MemFd,

    /// <summary><c>eventfd(2)</c>.</summary>
    EventFd,

    /// <summary><c>poll(2)</c>.</summary>
    Poll,

    /// <summary><c>readlink(2)</c>.</summary>
    ReadLink,

    /// <summary>Listing a folder (<c>getdents64(2)</c>).</summary>
    ListDirectory,

    /// <summary><c>statx(2)</c>.</summary>
    Stat,

    /// <summary><c>faccessat(2)</c>.</summary>
    Access,

    /// <summary><c>chown(2)</c>.</summary>
    Chown,

    /// <summary><c>getrlimit(2)</c>.</summary>
    GetResourceLimit,

    /// <summary><c>capget(2)</c>.</summary>
    GetCapabilities,

    /// <summary><c>uname(2)</c>.</summary>
    Uname,
}
