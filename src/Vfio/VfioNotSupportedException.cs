using System.Globalization;
using Vfio.Interop;

namespace Vfio;

/// <summary>The kernel or the device does not support the operation (ENOTTY, EOPNOTSUPP).</summary>
public class VfioNotSupportedException : VfioException
{
    /// <inheritdoc cref="VfioException(string)"/>
    public VfioNotSupportedException(string message) : base(message) { }

    /// <inheritdoc cref="VfioException(string, Exception)"/>
    public VfioNotSupportedException(string message, Exception innerException) : base(message, innerException) { }

    /// <inheritdoc cref="VfioException()"/>
    public VfioNotSupportedException() { }

    internal VfioNotSupportedException(string message, string operation, int errno, ErrorTarget target)
        : base(message, operation, errno, target) { }
}
