namespace Vfio.Samples;

/// <summary>How an open device reaches the kernel, in a few words for a report line; and the samples' --backend value.</summary>
internal static class BackendDescription
{
    /// <summary>The value of <c>--backend</c>: legacy or iommufd (any case); false for anything else.</summary>
    public static bool TryParse(string value, out VfioBackend backend)
    {
        backend = default;
        if (value.Equals("legacy", StringComparison.OrdinalIgnoreCase) || value.Equals("iommufd", StringComparison.OrdinalIgnoreCase))
        {
            backend = value.Equals("legacy", StringComparison.OrdinalIgnoreCase) ? VfioBackend.Legacy : VfioBackend.Iommufd;
            return true;
        }
        return false;
    }

    /// <summary>"type1v2 IOMMU container" (legacy backend) or "iommufd IOAS 1" (iommufd backend).</summary>
    public static string Of(VfioDevice device) => device.AddressSpace switch
    {
        IommufdAddressSpace ioas => $"iommufd IOAS {ioas.IoasId}",
        _ => $"{device.Group?.Container?.IommuTypeName ?? "no"} IOMMU container",
    };
}
