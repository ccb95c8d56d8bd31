using System.Diagnostics.CodeAnalysis;
using System.Globalization;

namespace Vfio.Interop;

/// <summary>
/// The one place where an errno becomes an exception. The seam returns negative errnos; callers
/// above it hand them here with the operation and the object concerned.
/// </summary>
internal static class VfioErrors
{
    /// <summary>Returns <paramref name="result"/> when it is not negative, otherwise throws for <c>-result</c>.</summary>
    public static int Check(int result, string operation, ErrorTarget target = default)
    {
        if (result < 0)
        {
            Throw(-result, operation, target);
        }
        return result;
    }

    /// <inheritdoc cref="Check(int, string, ErrorTarget)"/>
    public static long Check(long result, string operation, ErrorTarget target = default)
    {
        if (result < 0)
        {
            Throw((int)-result, operation, target);
        }
        return result;
    }

    [DoesNotReturn]
    public static void Throw(int errno, string operation, ErrorTarget target = default, string? hint = null) =>
        throw Create(errno, operation, target, hint);

    /// <summary>Builds the exception for <paramref name="errno"/>: its type, message and hint.</summary>
    public static VfioException Create(int errno, string operation, ErrorTarget target = default, string? hint = null)
    {
        string message = string.Create(CultureInfo.InvariantCulture,
            $"{operation}{(target == default ? "" : " (" + target + ")")} failed: {Errno.Name(errno)} ({Errno.Describe(errno)})");
        hint ??= DefaultHint(errno);
        if (hint is not null)
        {
            message += ". " + hint;
        }

        return errno switch
        {
            Errno.ENOENT or Errno.ENODEV => new VfioNotFoundException(message, operation, errno, target),
            Errno.EACCES or Errno.EPERM => new VfioAccessDeniedException(message, operation, errno, target),
            Errno.EBUSY => new VfioBusyException(message, operation, errno, target),
            Errno.ENOTTY or Errno.EOPNOTSUPP => new VfioNotSupportedException(message, operation, errno, target),
            _ => new VfioException(message, operation, errno, target),
        };
    }

    private static string? DefaultHint(int errno) => errno switch
    {
        Errno.EACCES or Errno.EPERM =>
            "Run as root, or give this user access to the /dev/vfio node (its owner or an udev rule), and check the memlock limit for DMA",
        Errno.EBUSY => "Another open holds it: only one open of a group is allowed, and a device in use must be closed first",
        Errno.ENOENT or Errno.ENODEV => "Check that the device is bound to a vfio driver and that the vfio modules are loaded",
        Errno.ENOTTY => "The kernel does not know this request: it may be older than the feature",
        _ => null,
    };
}
