using System.Runtime.InteropServices;
using Vfio.Interop;

namespace Vfio;

/// <summary>What a region allows (the <c>VFIO_REGION_INFO_FLAG_*</c> bits).</summary>
[Flags]
public enum RegionAccess
{
    /// <summary>Nothing.</summary>
    None = 0,

    /// <summary>The region can be read.</summary>
    Read = 1,

    /// <summary>The region can be written.</summary>
    Write = 2,

    /// <summary>The region can be mapped into memory.</summary>
    Mmap = 4,

    /// <summary>The kernel described capabilities for the region.</summary>
    Caps = 8,
}

/// <summary>A part of a region that can be mapped, when not all of it can (sparse mmap).</summary>
/// <param name="Offset">The offset in the region.</param>
/// <param name="Size">The length in bytes.</param>
public readonly record struct SparseMmapArea(ulong Offset, ulong Size);

/// <summary>A device-specific region's type (<c>VFIO_REGION_INFO_CAP_TYPE</c>).</summary>
/// <param name="Type">The type (a PCI vendor id with the vendor bit set, or a VFIO_REGION_TYPE_*).</param>
/// <param name="Subtype">The subtype.</param>
public readonly record struct RegionType(uint Type, uint Subtype);

/// <summary>What <c>VFIO_DEVICE_GET_REGION_INFO</c> reports for one region, its capabilities parsed.</summary>
/// <param name="Index">The region index (for PCI: BARs 0-5, ROM 6, config 7, VGA 8).</param>
/// <param name="Size">The region's size in bytes; 0 when the device does not implement it.</param>
/// <param name="Offset">Where the region starts in the device file, for pread, pwrite and mmap.</param>
/// <param name="Flags">What the region allows.</param>
/// <param name="SparseMmapAreas">The mappable parts, when only parts are mappable; null otherwise.</param>
/// <param name="Type">The region's type, for device-specific regions.</param>
/// <param name="MsixMappable">The MSI-X table in this BAR may be mapped.</param>
public sealed record RegionInfo(int Index, ulong Size, ulong Offset, RegionAccess Flags,
    IReadOnlyList<SparseMmapArea>? SparseMmapAreas, RegionType? Type, bool MsixMappable)
{
    /// <summary>True when the region can be mapped (in whole, or in the sparse areas).</summary>
    public bool CanMmap => (Flags & RegionAccess.Mmap) != 0;

    internal static unsafe RegionInfo Query(VfioKernel kernel, SafeFd fd, int index, ErrorTarget target)
    {
        target = target with { RegionIndex = index };
        byte[] buffer = InfoQuery.Run(kernel, fd, VfioUapi.VFIO_DEVICE_GET_REGION_INFO,
            new vfio_region_info { index = (uint)index }, "VFIO_DEVICE_GET_REGION_INFO", target);
        return Parse(buffer, index, target);
    }

    internal static unsafe RegionInfo Parse(ReadOnlySpan<byte> buffer, int index, ErrorTarget target)
    {
        target = target with { RegionIndex = index };
        var info = MemoryMarshal.Read<vfio_region_info>(buffer);
        List<SparseMmapArea>? sparse = null;
        RegionType? type = null;
        bool msix = false;
        if ((info.flags & VfioUapi.VFIO_REGION_INFO_FLAG_CAPS) != 0 && info.cap_offset != 0)
        {
            string what = "region " + index + " of " + target.Device;
            foreach (var cap in InfoQuery.Chain(buffer, info.cap_offset, sizeof(vfio_region_info), what, target))
            {
                switch (cap.Id)
                {
                    case (ushort)VfioUapi.VFIO_REGION_INFO_CAP_SPARSE_MMAP:
                        var head = InfoQuery.Read<vfio_region_info_cap_sparse_mmap>(buffer, cap, what, target: target);
                        long areasBytes = (long)head.nr_areas * sizeof(vfio_region_sparse_mmap_area);
                        InfoQuery.Read<vfio_region_info_cap_sparse_mmap>(buffer, cap, what, areasBytes, target);
                        var areas = MemoryMarshal.Cast<byte, vfio_region_sparse_mmap_area>(
                            buffer.Slice(cap.Offset + sizeof(vfio_region_info_cap_sparse_mmap), (int)areasBytes));
                        sparse = [];
                        foreach (var area in areas)
                        {
                            if (area.offset + area.size < area.offset || area.offset + area.size > info.size)
                            {
                                throw InfoQuery.Malformed(what, $"a sparse mmap area [{area.offset:x}, +{area.size:x}) lies outside the {info.size:x}-byte region", target);
                            }
                            sparse.Add(new SparseMmapArea(area.offset, area.size));
                        }
                        break;
                    case (ushort)VfioUapi.VFIO_REGION_INFO_CAP_TYPE:
                        var t = InfoQuery.Read<vfio_region_info_cap_type>(buffer, cap, what, target: target);
                        type = new RegionType(t.type, t.subtype);
                        break;
                    case (ushort)VfioUapi.VFIO_REGION_INFO_CAP_MSIX_MAPPABLE:
                        msix = true;
                        break;
                }
            }
        }
        return new RegionInfo(index, info.size, info.offset, (RegionAccess)(info.flags & 0xf), sparse, type, msix);
    }
}
