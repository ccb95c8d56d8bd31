using System.Globalization;
using Vfio.Interop;

namespace Vfio;

/// <summary>The caller lacks the permission (EACCES, EPERM).</summary>
public class VfioAccessDeniedException : VfioException
{
    /// <inheritdoc cref="VfioException(string)"/>
    public VfioAccessDeniedException(string message) : base(message) { }

    /// <inheritdoc cref="VfioException(string, Exception)"/>
    public VfioAccessDeniedException(string message, Exception innerException) : base(message, innerException) { }

    /// <inheritdoc cref="VfioException()"/>
    public VfioAccessDeniedException() { }

    internal VfioAccessDeniedException(string message, string operation, int errno, ErrorTarget target)
        : base(message, operation, errno, target) { }
}
