namespace Vfio.Samples;

/// <summary>How an open device reaches the kernel, in a few words for a report line.</summary>
internal static class BackendDescription
{
    /// <summary>"type1v2 IOMMU container" (legacy backend) or "iommufd IOAS 1" (iommufd backend).</summary>
    public static string Of(VfioDevice device) => device.AddressSpace switch
    {
        IommufdAddressSpace ioas => $"iommufd IOAS {ioas.IoasId}",
        _ => $"{device.Group?.Container?.IommuTypeName ?? "no"} IOMMU container",
    };
}
