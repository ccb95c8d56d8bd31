using System.Globalization;

namespace Vfio;

/// <summary>The object an error concerns: an IOMMU group, a device, a region.</summary>
internal readonly record struct ErrorTarget(int? GroupId = null, string? Device = null, int? RegionIndex = null)
{
    public static ErrorTarget None => default;

    public static ErrorTarget Group(int groupId) => new(GroupId: groupId);

    public override string ToString()
    {
        var parts = new List<string>(3);
        if (GroupId is int g)
        {
            parts.Add("group " + g.ToString(CultureInfo.InvariantCulture));
        }
        if (Device is not null)
        {
            parts.Add("device " + Device);
        }
        if (RegionIndex is int r)
        {
            parts.Add("region " + r.ToString(CultureInfo.InvariantCulture));
        }
        return string.Join(", ", parts);
    }
}
