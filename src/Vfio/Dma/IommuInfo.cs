using System.Runtime.InteropServices;
using Vfio.Interop;

namespace Vfio;

/// <summary>A range of IO virtual addresses the IOMMU can translate, both ends inclusive.</summary>
/// <param name="Start">The first valid IOVA.</param>
/// <param name="End">The last valid IOVA.</param>
public readonly record struct IovaRange(ulong Start, ulong End)
{
    /// <summary>True when [iova, iova + size) lies inside the range.</summary>
    public bool Contains(ulong iova, ulong size) => size != 0 && iova >= Start && iova + size - 1 >= iova && iova + size - 1 <= End;
}

/// <summary>What <c>VFIO_IOMMU_GET_INFO</c> reports for a container, its capabilities parsed.</summary>
/// <param name="PageSizes">The page sizes the IOMMU supports, one bit per size (bit 12: 4 KiB).</param>
/// <param name="IovaRanges">The valid IOVA ranges (all of the 64-bit space when the kernel gives none).</param>
/// <param name="DmaMappingsAvailable">How many more DMA mappings the container may create (the kernel's limit, 65535 by default), when reported.</param>
public sealed record IommuInfo(ulong PageSizes, IReadOnlyList<IovaRange> IovaRanges, uint? DmaMappingsAvailable)
{
    /// <summary>The smallest page size: the alignment of every DMA mapping.</summary>
    public ulong MinPageSize => PageSizes == 0 ? 4096 : PageSizes & (~PageSizes + 1);

    internal static unsafe IommuInfo Query(VfioKernel kernel, SafeFd fd, ErrorTarget target)
    {
        byte[] buffer = InfoQuery.Run(kernel, fd, VfioUapi.VFIO_IOMMU_GET_INFO, new vfio_iommu_type1_info(), "VFIO_IOMMU_GET_INFO", target);
        return Parse(buffer);
    }

    internal static unsafe IommuInfo Parse(ReadOnlySpan<byte> buffer)
    {
        var info = MemoryMarshal.Read<vfio_iommu_type1_info>(buffer);
        var ranges = new List<IovaRange>();
        uint? avail = null;
        if ((info.flags & VfioUapi.VFIO_IOMMU_INFO_CAPS) != 0 && info.cap_offset != 0)
        {
            const string What = "the container's IOMMU info";
            foreach (var cap in InfoQuery.Chain(buffer, info.cap_offset, sizeof(vfio_iommu_type1_info), What))
            {
                switch (cap.Id)
                {
                    case (ushort)VfioUapi.VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE:
                        var head = InfoQuery.Read<vfio_iommu_type1_info_cap_iova_range>(buffer, cap, What);
                        long bytes = (long)head.nr_iovas * sizeof(vfio_iova_range);
                        InfoQuery.Read<vfio_iommu_type1_info_cap_iova_range>(buffer, cap, What, bytes);
                        foreach (var r in MemoryMarshal.Cast<byte, vfio_iova_range>(buffer.Slice(cap.Offset + sizeof(vfio_iommu_type1_info_cap_iova_range), (int)bytes)))
                        {
                            if (r.end < r.start)
                            {
                                throw InfoQuery.Malformed(What, $"an IOVA range ends (0x{r.end:x}) before it starts (0x{r.start:x})");
                            }
                            ranges.Add(new IovaRange(r.start, r.end));
                        }
                        break;
                    case (ushort)VfioUapi.VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL:
                        avail = InfoQuery.Read<vfio_iommu_type1_info_dma_avail>(buffer, cap, What).avail;
                        break;
                }
            }
        }
        if (ranges.Count == 0)
        {
            ranges.Add(new IovaRange(0, ulong.MaxValue));
        }
        ulong pageSizes = (info.flags & VfioUapi.VFIO_IOMMU_INFO_PGSIZES) != 0 ? info.iova_pgsizes : 4096;
        return new IommuInfo(pageSizes, ranges, avail);
    }
}
