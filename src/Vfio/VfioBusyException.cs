using System.Globalization;
using Vfio.Interop;

namespace Vfio;

/// <summary>Something else holds the object (EBUSY).</summary>
public class VfioBusyException : VfioException
{
    /// <inheritdoc cref="VfioException(string)"/>
    public VfioBusyException(string message) : base(message) { }

    /// <inheritdoc cref="VfioException(string, Exception)"/>
    public VfioBusyException(string message, Exception innerException) : base(message, innerException) { }

    /// <inheritdoc cref="VfioException()"/>
    public VfioBusyException() { }

    internal VfioBusyException(string message, string operation, int errno, ErrorTarget target)
        : base(message, operation, errno, target) { }
}
