using System.Globalization;
using Vfio.Interop;

namespace Vfio;

/// <summary>
/// A VFIO operation failed. Carries the operation, the kernel's errno and the object concerned
/// (IOMMU group, device address, region), and says what to do where the library knows.
/// </summary>
public class VfioException : IOException
{
    /// <summary>Creates an exception for a failure with no errno (a rule the library enforces itself).</summary>
    public VfioException(string message)
        : base(message)
    {
        Operation = string.Empty;
    }

    /// <summary>Creates an exception for a failure with no errno, wrapping another.</summary>
    public VfioException(string message, Exception innerException)
        : base(message, innerException)
    {
        Operation = string.Empty;
    }

    /// <summary>Creates an exception with no message (for serializers and mocks).</summary>
    public VfioException()
    {
        Operation = string.Empty;
    }

    /// <summary>Creates an exception for a rule the library enforces itself (no errno) that concerns an object.</summary>
    private protected VfioException(string message, ErrorTarget target)
        : base(message)
    {
        Operation = string.Empty;
        GroupId = target.GroupId;
        Device = target.Device;
        RegionIndex = target.RegionIndex;
    }

    internal VfioException(string message, string operation, int errno, ErrorTarget target, Exception? innerException = null)
        : base(message, innerException)
    {
        Operation = operation;
        Errno = errno;
        GroupId = target.GroupId;
        Device = target.Device;
        RegionIndex = target.RegionIndex;
        if (errno != 0)
        {
            HResult = errno;
        }
    }

    /// <summary>What was being done ("VFIO_GROUP_GET_DEVICE_FD", "open /dev/vfio/7").</summary>
    public string Operation { get; }

    /// <summary>The kernel's errno, or 0 when the library itself refused.</summary>
    public int Errno { get; }

    /// <summary>The errno's symbolic name ("EBUSY"), or empty when there is none.</summary>
    public string ErrorName => Errno == 0 ? string.Empty : Vfio.Errno.Name(Errno);

    /// <summary>The IOMMU group concerned, if any.</summary>
    public int? GroupId { get; }

    /// <summary>The device concerned (a PCI address such as 0000:00:03.0, or a device name), if any.</summary>
    public string? Device { get; }

    /// <summary>The region index concerned, if any.</summary>
    public int? RegionIndex { get; }
}
