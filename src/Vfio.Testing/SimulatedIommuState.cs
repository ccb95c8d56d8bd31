namespace Vfio.Testing;

/// <summary>Whether the simulated machine has an IOMMU, and whether its kernel turned it on.</summary>
public enum SimulatedIommuState
{
    /// <summary>
    /// An Intel IOMMU the firmware describes (ACPI DMAR table) and the kernel enabled (<c>intel_iommu=on</c>):
    /// <c>/sys/class/iommu/dmar0</c> and IOMMU groups.
    /// </summary>
    On,

    /// <summary>The firmware describes an Intel IOMMU (ACPI DMAR table) but the kernel did not enable it: no IOMMU groups.</summary>
    Off,

    /// <summary>No IOMMU at all: no DMAR table, no <c>/sys/class/iommu</c> entry (a VM without a virtual IOMMU).</summary>
    Absent,
}
