namespace Vfio;

/// <summary>
/// The Linux errno values the library meets (asm-generic/errno-base.h and errno.h), to compare with
/// <see cref="VfioException.Errno"/> or to inject failures into a simulated kernel.
/// </summary>
public static class Errno
{
    /// <summary>EPERM.</summary>
    public const int EPERM = 1;
    /// <summary>ENOENT.</summary>
    public const int ENOENT = 2;
    /// <summary>ESRCH.</summary>
    public const int ESRCH = 3;
    /// <summary>EINTR.</summary>
    public const int EINTR = 4;
    /// <summary>EIO.</summary>
    public const int EIO = 5;
    /// <summary>ENXIO.</summary>
    public const int ENXIO = 6;
    /// <summary>E2BIG.</summary>
    public const int E2BIG = 7;
    /// <summary>EBADF.</summary>
    public const int EBADF = 9;
    /// <summary>EAGAIN.</summary>
    public const int EAGAIN = 11;
    /// <summary>ENOMEM.</summary>
    public const int ENOMEM = 12;
    /// <summary>EACCES.</summary>
    public const int EACCES = 13;
    /// <summary>EFAULT.</summary>
    public const int EFAULT = 14;
    /// <summary>EBUSY.</summary>
    public const int EBUSY = 16;
    /// <summary>EEXIST.</summary>
    public const int EEXIST = 17;
    /// <summary>EXDEV.</summary>
    public const int EXDEV = 18;
    /// <summary>ENODEV.</summary>
    public const int ENODEV = 19;
    /// <summary>ENOTDIR.</summary>
    public const int ENOTDIR = 20;
    /// <summary>EISDIR.</summary>
    public const int EISDIR = 21;
    /// <summary>EINVAL.</summary>
    public const int EINVAL = 22;
    /// <summary>ENFILE.</summary>
    public const int ENFILE = 23;
    /// <summary>EMFILE.</summary>
    public const int EMFILE = 24;
    /// <summary>ENOTTY.</summary>
    public const int ENOTTY = 25;
    /// <summary>ENOSPC.</summary>
    public const int ENOSPC = 28;
    /// <summary>ESPIPE.</summary>
    public const int ESPIPE = 29;
    /// <summary>EROFS.</summary>
    public const int EROFS = 30;
    /// <summary>ERANGE.</summary>
    public const int ERANGE = 34;
    /// <summary>EDEADLK.</summary>
    public const int EDEADLK = 35;
    /// <summary>ENOSYS.</summary>
    public const int ENOSYS = 38;
    /// <summary>ENOMSG: a PRE_COPY data session has no more data for now.</summary>
    public const int ENOMSG = 42;
    /// <summary>ENODATA.</summary>
    public const int ENODATA = 61;
    /// <summary>EOVERFLOW.</summary>
    public const int EOVERFLOW = 75;
    /// <summary>EBADFD: a descriptor of the wrong kind (iommufd: the fd given is not an iommufd).</summary>
    public const int EBADFD = 77;
    /// <summary>EMSGSIZE: the output array is too short (iommufd's IOVA ranges say how long it must be).</summary>
    public const int EMSGSIZE = 90;
    /// <summary>EOPNOTSUPP.</summary>
    public const int EOPNOTSUPP = 95;
    /// <summary>EADDRINUSE: an IOVA range the call needs is taken (iommufd: by a mapping, a reservation or an allowed range).</summary>
    public const int EADDRINUSE = 98;
    /// <summary>ETIMEDOUT.</summary>
    public const int ETIMEDOUT = 110;

    /// <summary>The symbolic name of an errno ("EBUSY"), or its number when it has none here.</summary>
    internal static string Name(int errno) => errno switch
    {
        EPERM => nameof(EPERM),
        ENOENT => nameof(ENOENT),
        ESRCH => nameof(ESRCH),
        EINTR => nameof(EINTR),
        EIO => nameof(EIO),
        ENXIO => nameof(ENXIO),
        E2BIG => nameof(E2BIG),
        EBADF => nameof(EBADF),
        EAGAIN => nameof(EAGAIN),
        ENOMEM => nameof(ENOMEM),
        EACCES => nameof(EACCES),
        EFAULT => nameof(EFAULT),
        EBUSY => nameof(EBUSY),
        EEXIST => nameof(EEXIST),
        EXDEV => nameof(EXDEV),
        ENODEV => nameof(ENODEV),
        ENOTDIR => nameof(ENOTDIR),
        EISDIR => nameof(EISDIR),
        EINVAL => nameof(EINVAL),
        ENFILE => nameof(ENFILE),
        EMFILE => nameof(EMFILE),
        ENOTTY => nameof(ENOTTY),
        ENOSPC => nameof(ENOSPC),
        ESPIPE => nameof(ESPIPE),
        EROFS => nameof(EROFS),
        ERANGE => nameof(ERANGE),
        EDEADLK => nameof(EDEADLK),
        ENOSYS => nameof(ENOSYS),
        ENOMSG => nameof(ENOMSG),
        ENODATA => nameof(ENODATA),
        EOVERFLOW => nameof(EOVERFLOW),
        EBADFD => nameof(EBADFD),
        EMSGSIZE => nameof(EMSGSIZE),
        EOPNOTSUPP => nameof(EOPNOTSUPP),
        EADDRINUSE => nameof(EADDRINUSE),
        ETIMEDOUT => nameof(ETIMEDOUT),
        _ => "errno " + errno.ToString(System.Globalization.CultureInfo.InvariantCulture),
    };

    /// <summary>The C library's description of an errno, as strerror gives it.</summary>
    internal static string Describe(int errno) => errno switch
    {
        EPERM => "Operation not permitted",
        ENOENT => "No such file or directory",
        EINTR => "Interrupted system call",
        EIO => "Input/output error",
        ENXIO => "No such device or address",
        EBADF => "Bad file descriptor",
        EAGAIN => "Resource temporarily unavailable",
        ENOMEM => "Cannot allocate memory",
        EACCES => "Permission denied",
        EFAULT => "Bad address",
        EBUSY => "Device or resource busy",
        EEXIST => "File exists",
        ENODEV => "No such device",
        EINVAL => "Invalid argument",
        EMFILE => "Too many open files",
        ENOTTY => "Inappropriate ioctl for device",
        ENOSPC => "No space left on device",
        ERANGE => "Numerical result out of range",
        ENOSYS => "Function not implemented",
        ENOMSG => "No message of desired type",
        EBADFD => "File descriptor in bad state",
        EMSGSIZE => "Message too long",
        EOPNOTSUPP => "Operation not supported",
        EADDRINUSE => "Address already in use",
        ETIMEDOUT => "Connection timed out",
        _ => System.Runtime.InteropServices.Marshal.GetPInvokeErrorMessage(errno),
    };
}
