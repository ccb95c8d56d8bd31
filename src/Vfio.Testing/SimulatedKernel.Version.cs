namespace Vfio.Testing;

/// <summary>
/// The Linux version the simulated kernel behaves as, where versions differ in what user space sees.
/// </summary>
/// <remarks>
/// <para>What depends on the version (each place in the simulation says which version does what):</para>
/// <list type="bullet">
/// <item><description>6.1: the legacy container and group API only; every VFIO device has its sysfs
/// <c>vfio-dev/vfioN</c> node, but there is neither <c>/dev/iommu</c> nor a device cdev.</description></item>
/// <item><description>6.2: <c>/dev/iommu</c> (when <see cref="IommufdEnabled"/>): IO address spaces,
/// map, unmap, copy, IOVA ranges, options.</description></item>
/// <item><description>6.6: the device cdev <c>/dev/vfio/devices/vfioN</c> (when <see cref="DeviceCdevEnabled"/>),
/// its bind, attach and detach ioctls, hot reset in its dev-id form, <c>IOMMU_HWPT_ALLOC</c> and
/// <c>IOMMU_GET_HW_INFO</c> (without capabilities).</description></item>
/// <item><description>6.7: <c>IOMMU_GET_HW_INFO</c> reports capabilities (<c>out_capabilities</c>) and the
/// dirty-tracking ioctls exist.</description></item>
/// <item><description>after 6.12: <c>IOMMU_GET_HW_INFO</c> sets the "no PCI ATS" capability bit for a
/// device without ATS (absent from 6.12's header, present in 7.2's).</description></item>
/// </list>
/// <para>The configuration switches stay separate: a kernel of a version that has a feature may be
/// built without it (no Debian kernel enables IOMMUFD). A feature is there when the version has it
/// and its switch is on.</para>
/// </remarks>
public sealed partial class SimulatedKernel
{
    /// <summary>
    /// The Linux version the kernel behaves as where versions differ: 7.2 by default (Debian's
    /// linux-source-7.2, which the iommufd simulation follows); <c>new Version(6, 1)</c> for Debian 12's
    /// kernel. Set it before the code under test opens anything. See the type's remarks for what it changes.
    /// </summary>
    public Version LinuxVersion { get; set; } = new(7, 2);

    /// <summary>Whether <c>/dev/iommu</c> exists: the version has it (6.2) and the kernel was built with it.</summary>
    internal bool HasIommufd => IommufdEnabled && LinuxVersion >= new Version(6, 2);

    /// <summary>Whether devices get <c>/dev/vfio/devices/vfioN</c>: the version has it (6.6) and the kernel was built with it (it needs IOMMUFD).</summary>
    internal bool HasDeviceCdev => HasIommufd && DeviceCdevEnabled && LinuxVersion >= new Version(6, 6);

    /// <summary>Whether what arrived in Linux <paramref name="major"/>.<paramref name="minor"/> exists (an ioctl, a struct field, a flag).</summary>
    internal bool Since(int major, int minor) => LinuxVersion >= new Version(major, minor);
}
