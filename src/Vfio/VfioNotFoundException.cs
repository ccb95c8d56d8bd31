using System.Globalization;
using Vfio.Interop;

namespace Vfio;

/// <summary>The object or path was not there (ENOENT, ENODEV).</summary>
public class VfioNotFoundException : VfioException
{
    /// <inheritdoc cref="VfioException(string)"/>
    public VfioNotFoundException(string message) : base(message) { }

    /// <inheritdoc cref="VfioException(string, Exception)"/>
    public VfioNotFoundException(string message, Exception innerException) : base(message, innerException) { }

    /// <inheritdoc cref="VfioException()"/>
    public VfioNotFoundException() { }

    internal VfioNotFoundException(string message, string operation, int errno, ErrorTarget target)
        : base(message, operation, errno, target) { }
}
