using System.Globalization;

namespace Vfio;

/// <summary>
/// An IOMMU group as sysfs shows it now: its members (of any bus) with their drivers, and whether
/// VFIO can use it.
/// </summary>
/// <param name="Id">The group number.</param>
/// <param name="Kind">Its kind: a real IOMMU group or a no-IOMMU one.</param>
/// <param name="Members">Its devices, by name, with their drivers.</param>
public sealed record IommuGroupInfo(int Id, IommuGroupKind Kind, IReadOnlyList<IommuGroupMember> Members)
{
    /// <summary>
    /// The members bound to a driver that uses the kernel's DMA API: while any is, the group is not
    /// viable (VFIO_GROUP_GET_STATUS) and cannot be attached to a container.
    /// </summary>
    public IReadOnlyList<IommuGroupMember> BlockingMembers => [.. Members.Where(m => m.BlocksGroup)];

    /// <summary>True when no member blocks the group.</summary>
    public bool IsViable => !Members.Any(m => m.BlocksGroup);

    /// <summary>True when a member is bound to a vfio driver (the group then has its <c>/dev/vfio</c> node).</summary>
    public bool HasVfioMember => Members.Any(m => m.Driver is not null && KernelDrivers.IsVfio(m.Driver));

    /// <summary>
    /// The group's node, <c>/dev/vfio/N</c> (or <c>/dev/vfio/noiommu-N</c>), under the kernel's device root;
    /// it exists while a member is bound to a vfio driver.
    /// </summary>
    /// <param name="kernel">The kernel whose device root to use.</param>
    public string NodePath(VfioKernel kernel)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        return IommuGroup.NodePathFor(kernel, Id, Kind);
    }

    /// <summary>Reads one group.</summary>
    /// <param name="kernel">The kernel to read.</param>
    /// <param name="id">The group number.</param>
    /// <exception cref="VfioNotFoundException">There is no such group.</exception>
    public static IommuGroupInfo Read(VfioKernel kernel, int id)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        var sysfs = new SysfsReader(kernel);
        string dir = "kernel/iommu_groups/" + id.ToString(CultureInfo.InvariantCulture);
        if (!sysfs.Exists(dir))
        {
            throw new VfioNotFoundException($"No IOMMU group {id} ({kernel.Sys(dir)}).");
        }
        return Read(sysfs, id);
    }

    /// <summary>Reads every IOMMU group, in number order.</summary>
    /// <param name="kernel">The kernel to read.</param>
    public static IReadOnlyList<IommuGroupInfo> ReadAll(VfioKernel kernel)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        var sysfs = new SysfsReader(kernel);
        var result = new List<IommuGroupInfo>();
        foreach (string name in sysfs.List("kernel/iommu_groups", KernelNameKind.GroupId))
        {
            result.Add(Read(sysfs, int.Parse(name, NumberStyles.None, CultureInfo.InvariantCulture)));
        }
        result.Sort((a, b) => a.Id.CompareTo(b.Id));
        return result;
    }

    internal static IommuGroupInfo Read(SysfsReader sysfs, int id)
    {
        string dir = "kernel/iommu_groups/" + id.ToString(CultureInfo.InvariantCulture);
        var target = ErrorTarget.Group(id);
        var members = sysfs.List(dir + "/devices", KernelNameKind.Device, target)
            .Order(StringComparer.Ordinal)
            .Select(name => new IommuGroupMember(name, sysfs.ReadLinkName(dir + "/devices/" + name + "/driver", target)))
            .ToList();
        var kind = sysfs.ReadText(dir + "/name", target) == "vfio-noiommu" ? IommuGroupKind.NoIommu : IommuGroupKind.Iommu;
        return new IommuGroupInfo(id, kind, members);
    }
}

/// <summary>A device of an IOMMU group.</summary>
/// <param name="Name">Its name on its bus (a PCI address, a platform device name).</param>
/// <param name="Driver">The driver it is bound to, or null.</param>
public sealed record IommuGroupMember(string Name, string? Driver)
{
    /// <summary>True when its driver uses the kernel's DMA API, which keeps the group from being viable.</summary>
    public bool BlocksGroup => Driver is not null && !KernelDrivers.ManagesDma(Driver);

    /// <inheritdoc/>
    public override string ToString() => Driver is null ? Name + " (no driver)" : Name + " (" + Driver + ")";
}
