using System.Buffers.Binary;
using Vfio.Interop;

namespace Vfio;

/// <summary>The kind of IOMMU behind a device, as <c>IOMMU_GET_HW_INFO</c> numbers it (<c>enum iommu_hw_info_type</c>).</summary>
public enum IommuHardwareType
{
    /// <summary>The IOMMU driver reports no type specific data.</summary>
    None = 0,

    /// <summary>Intel VT-d: the data holds its capability and extended capability registers.</summary>
    IntelVtd = 1,
}

/// <summary>
/// What the kernel reports about the IOMMU behind a device opened through the iommufd backend
/// (<c>IOMMU_GET_HW_INFO</c>, Linux 6.6 and later): information only, the library does not act on it.
/// </summary>
/// <param name="Type">The IOMMU's kind; other numbers are other IOMMUs' (ARM SMMUv3 is 2), named as the kernel numbers them.</param>
/// <param name="Capabilities">The <c>IOMMU_HW_CAP_*</c> bits (reported since Linux 6.7; 0 before).</param>
/// <param name="MaxPasidLog2">The width of the PASIDs the device can use; 0 without PASID support.</param>
/// <param name="Data">The type specific data as the kernel wrote it (for Intel VT-d: flags, then the two registers).</param>
public sealed record IommuHardwareInfo(IommuHardwareType Type, ulong Capabilities, int MaxPasidLog2, ReadOnlyMemory<byte> Data)
{
    /// <summary>The IOMMU can track dirty IOVAs (<c>IOMMU_HW_CAP_DIRTY_TRACKING</c>); QEMU's intel-iommu cannot.</summary>
    public bool CanTrackDirtyPages => (Capabilities & IommufdUapi.IOMMU_HW_CAP_DIRTY_TRACKING) != 0;

    /// <summary>Intel VT-d's capability register (VT-d spec 11.4.2), or null for another IOMMU.</summary>
    public ulong? IntelVtdCapability => VtdRegister(8);

    /// <summary>Intel VT-d's extended capability register (VT-d spec 11.4.3), or null for another IOMMU.</summary>
    public ulong? IntelVtdExtendedCapability => VtdRegister(16);

    // struct iommu_hw_info_vtd: flags and a reserved word, then cap_reg and ecap_reg.
    private ulong? VtdRegister(int offset) =>
        Type == IommuHardwareType.IntelVtd && Data.Length >= offset + 8 ? BinaryPrimitives.ReadUInt64LittleEndian(Data.Span[offset..]) : null;
}
