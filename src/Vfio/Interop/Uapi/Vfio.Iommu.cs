using System.Runtime.InteropServices;

namespace Vfio.Interop;

// <linux/vfio.h>: the Type1 IOMMU container ioctls (info and its capabilities, map, unmap with the
// dirty bitmap, enable/disable, dirty page tracking).

internal static partial class VfioUapi
{
    // ---- VFIO_IOMMU_GET_INFO ----
    public static readonly nuint VFIO_IOMMU_GET_INFO = Ioc._IO(VFIO_TYPE, VFIO_BASE + 12);
    public const uint VFIO_IOMMU_INFO_PGSIZES = 1u << 0;
    public const uint VFIO_IOMMU_INFO_CAPS = 1u << 1;

    // IOMMU info capability ids.
    /// <summary>The usable IOVA ranges; a map outside them fails. Reserved regions are excluded.</summary>
    public const uint VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE = 1;
    /// <summary>Present when the IOMMU driver supports dirty page logging.</summary>
    public const uint VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION = 2;
    /// <summary>How many more DMA mappings the container currently allows.</summary>
    public const uint VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL = 3;

    // ---- VFIO_IOMMU_MAP_DMA ----
    public static readonly nuint VFIO_IOMMU_MAP_DMA = Ioc._IO(VFIO_TYPE, VFIO_BASE + 13);
    public const uint VFIO_DMA_MAP_FLAG_READ = 1u << 0;
    public const uint VFIO_DMA_MAP_FLAG_WRITE = 1u << 1;
    /// <summary>
    /// Re-attach a new vaddr to a mapping invalidated by VFIO_DMA_UNMAP_FLAG_VADDR: same iova and size,
    /// same memory object, READ and WRITE clear.
    /// </summary>
    public const uint VFIO_DMA_MAP_FLAG_VADDR = 1u << 2;

    // ---- VFIO_IOMMU_UNMAP_DMA ----
    /// <summary>The size actually unmapped is written back to <c>size</c>.</summary>
    public static readonly nuint VFIO_IOMMU_UNMAP_DMA = Ioc._IO(VFIO_TYPE, VFIO_BASE + 14);
    /// <summary>A vfio_bitmap follows the struct in data[]; its zeroed buffer receives the dirty pages before the unmap.</summary>
    public const uint VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP = 1u << 0;
    /// <summary>Unmap everything; iova and size must be 0. Not with GET_DIRTY_BITMAP.</summary>
    public const uint VFIO_DMA_UNMAP_FLAG_ALL = 1u << 1;
    /// <summary>Do not unmap, only invalidate the vaddr (DMA continues). Not with GET_DIRTY_BITMAP.</summary>
    public const uint VFIO_DMA_UNMAP_FLAG_VADDR = 1u << 2;

    public static readonly nuint VFIO_IOMMU_ENABLE = Ioc._IO(VFIO_TYPE, VFIO_BASE + 15);
    public static readonly nuint VFIO_IOMMU_DISABLE = Ioc._IO(VFIO_TYPE, VFIO_BASE + 16);

    // ---- VFIO_IOMMU_DIRTY_PAGES ----
    /// <summary>Exactly one of START, STOP, GET_BITMAP per call.</summary>
    public static readonly nuint VFIO_IOMMU_DIRTY_PAGES = Ioc._IO(VFIO_TYPE, VFIO_BASE + 17);
    public const uint VFIO_IOMMU_DIRTY_PAGES_FLAG_START = 1u << 0;
    public const uint VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP = 1u << 1;
    /// <summary>
    /// A vfio_iommu_type1_dirty_bitmap_get follows in data[]; argsz covers it but not the bitmap
    /// memory itself. Only the smallest supported page size is accepted.
    /// </summary>
    public const uint VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP = 1u << 2;
}

/// <summary>
/// The C struct has 4 bytes of tail padding after cap_offset (later headers name it <c>pad</c>);
/// sequential layout reproduces it.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal struct vfio_iommu_type1_info
{
    public uint argsz;
    public uint flags;
    /// <summary>Bitmap of supported IOMMU page sizes.</summary>
    public ulong iova_pgsizes;
    public uint cap_offset;
}

[StructLayout(LayoutKind.Sequential)]
internal struct vfio_iova_range
{
    public ulong start;
    /// <summary>Inclusive.</summary>
    public ulong end;
}

[FlexibleArray("iova_ranges", typeof(vfio_iova_range))]
[StructLayout(LayoutKind.Sequential)]
internal struct vfio_iommu_type1_info_cap_iova_range
{
    public vfio_info_cap_header header;
    public uint nr_iovas;
    public uint reserved;
}

[StructLayout(LayoutKind.Sequential)]
internal struct vfio_iommu_type1_info_cap_migration
{
    public vfio_info_cap_header header;
    public uint flags;
    /// <summary>Page sizes supported for dirty page logging.</summary>
    public ulong pgsize_bitmap;
    /// <summary>The largest dirty bitmap, in bytes, one request may ask for.</summary>
    public ulong max_dirty_bitmap_size;
}

[StructLayout(LayoutKind.Sequential)]
internal struct vfio_iommu_type1_info_dma_avail
{
    public vfio_info_cap_header header;
    public uint avail;
}

[StructLayout(LayoutKind.Sequential)]
internal struct vfio_iommu_type1_dma_map
{
    public uint argsz;
    public uint flags;
    public ulong vaddr;
    public ulong iova;
    public ulong size;
}

[StructLayout(LayoutKind.Sequential)]
internal unsafe struct vfio_bitmap
{
    /// <summary>Page size, in bytes, that one bit stands for.</summary>
    public ulong pgsize;
    /// <summary>Size of the buffer at data, in bytes.</summary>
    public ulong size;
    /// <summary>User memory, zeroed by the caller; one bit per page.</summary>
    public ulong* data;
}

/// <summary>With VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP, a vfio_bitmap follows at sizeof in data[].</summary>
[FlexibleArray("data", typeof(byte))]
[StructLayout(LayoutKind.Sequential)]
internal struct vfio_iommu_type1_dma_unmap
{
    public uint argsz;
    public uint flags;
    public ulong iova;
    public ulong size;
}

/// <summary>With FLAG_GET_BITMAP, a vfio_iommu_type1_dirty_bitmap_get follows at sizeof in data[].</summary>
[FlexibleArray("data", typeof(byte))]
[StructLayout(LayoutKind.Sequential)]
internal struct vfio_iommu_type1_dirty_bitmap
{
    public uint argsz;
    public uint flags;
}

[StructLayout(LayoutKind.Sequential)]
internal struct vfio_iommu_type1_dirty_bitmap_get
{
    public ulong iova;
    public ulong size;
    public vfio_bitmap bitmap;
}
