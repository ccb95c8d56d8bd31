namespace Vfio.Scenarios;

/// <summary>
/// How the machine's kernel offers VFIO to the scenarios; the VM suites boot each kernel in each of
/// its modes (tests/vm/lib.sh) and pass the mode to the test program.
/// </summary>
internal enum ScenarioMode
{
    /// <summary>VFIO's own container (/dev/vfio/vfio) with the type1 IOMMU driver: the group API as Linux 6.1 offers it.</summary>
    Legacy,

    /// <summary>
    /// The same group and container API, but /dev/vfio/vfio is iommufd's compatibility container
    /// (CONFIG_IOMMUFD_VFIO_CONTAINER, VFIO's container and type1 built out): the type1 ioctls are
    /// answered by iommufd, which differs in places (no type1 module parameters, no dirty tracking).
    /// </summary>
    LegacyCompat,

    /// <summary>The VFIO device cdev (/dev/vfio/devices/vfioN) bound to an iommufd (/dev/iommu).</summary>
    Iommufd,

    /// <summary>
    /// No IOMMU at all, vfio in unsafe no-IOMMU mode (vfio.enable_unsafe_noiommu_mode=1): devices bound
    /// to vfio-pci get groups /dev/vfio/noiommu-N with the no-IOMMU container driver.
    /// </summary>
    NoIommu,
}

/// <summary>The modes' names as the VM suites spell them (legacy, legacy-compat, iommufd, noiommu).</summary>
internal static class ScenarioModes
{
    /// <summary>Reads a mode's name; null when it names none.</summary>
    public static ScenarioMode? Parse(string name) => name switch
    {
        "legacy" => ScenarioMode.Legacy,
        "legacy-compat" => ScenarioMode.LegacyCompat,
        "iommufd" => ScenarioMode.Iommufd,
        "noiommu" => ScenarioMode.NoIommu,
        _ => null,
    };

    /// <summary>The mode's name as the VM suites spell it.</summary>
    public static string Name(this ScenarioMode mode) => mode switch
    {
        ScenarioMode.Legacy => "legacy",
        ScenarioMode.LegacyCompat => "legacy-compat",
        ScenarioMode.NoIommu => "noiommu",
        _ => "iommufd",
    };
}
