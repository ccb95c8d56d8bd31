using Vfio.Interop;

namespace Vfio;

public abstract partial class VfioDevice
{
    /// <summary>
    /// The highest IOVA the device can put on the bus (all ones for 64-bit DMA, the default). A
    /// driver whose device has fewer address bits sets it in its constructor: QEMU's edu device has 28.
    /// </summary>
    public ulong DmaMask { get; protected set; } = ulong.MaxValue;

    /// <summary>
    /// Allocates page-aligned memory and maps it into the device's IOMMU at an IOVA below
    /// <see cref="DmaMask"/> inside the IOMMU's valid ranges (or at <paramref name="iova"/>).
    /// The device must be open.
    /// </summary>
    /// <param name="length">The length in bytes, rounded up to the IOMMU page size.</param>
    /// <param name="access">Which way the device may use it.</param>
    /// <param name="iova">A fixed IOVA, or null to let the library choose.</param>
    /// <param name="pages">Normal pages (the default) or 2 MiB hugepages; see <see cref="DmaPages"/>.</param>
    /// <exception cref="VfioResourceLimitException">The container's DMA mapping limit, the locked-memory limit or the hugepage pool is exhausted.</exception>
    /// <exception cref="VfioException">No room, an overlap, outside the valid ranges or the mask, or the kernel refused.</exception>
    public DmaBuffer AllocateDmaBuffer(ulong length, DmaAccess access = DmaAccess.ReadWrite, ulong? iova = null, DmaPages pages = DmaPages.Normal) =>
        DmaBuffer.Allocate(this, length, access, iova, pages);

    /// <summary>
    /// Asks the kernel about the IOMMU behind the device (<c>IOMMU_GET_HW_INFO</c>): its kind, its
    /// registers, whether it can track dirty pages. Information only. The device must be open through
    /// the iommufd backend: the legacy API has no such query.
    /// </summary>
    /// <exception cref="InvalidOperationException">The device is not open.</exception>
    /// <exception cref="VfioNotSupportedException">The device is open through the legacy backend.</exception>
    /// <exception cref="VfioException">The kernel refused.</exception>
    public IommuHardwareInfo GetIommuHardwareInfo()
    {
        var attachment = Attachment;
        if (attachment.Backend is not IommufdBackend iommufd)
        {
            throw new VfioNotSupportedException(
                $"{Name} is open through the legacy backend, which has no IOMMU_GET_HW_INFO: the kernel describes the IOMMU's hardware " +
                "only for a device bound to an iommufd (the iommufd backend, Linux 6.6 and later).");
        }
        return iommufd.QueryHardwareInfo(this, attachment);
    }
}
