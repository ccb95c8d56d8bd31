using System.Runtime.InteropServices;

namespace Vfio.Interop;

// <linux/iommufd.h>: the /dev/iommu file's ioctls (objects, IO address spaces, options, the VFIO
// compatibility IOAS, hardware page tables, hardware info, dirty tracking). The header first appeared
// in Linux 6.2, so every item carries UapiSince: the ABI test reports them absent from older headers.

/// <summary>
/// Constants and ioctl request numbers of <c>&lt;linux/iommufd.h&gt;</c>, named exactly as the C macros
/// and enum values.
/// </summary>
/// <remarks>
/// Every struct starts with <c>size</c>, which the caller sets to the size it knows. The kernel
/// accepts a shorter struct down to the size of its first version, and a longer one only when the
/// bytes it does not know are zero (E2BIG otherwise). Common errnos: ENOTTY for an unknown ioctl,
/// EOPNOTSUPP for a known field with a value the kernel does not support, EINVAL for a wrong field,
/// ENOENT for an id or IOVA that does not exist, EOVERFLOW when the arithmetic overflows.
/// Like VFIO's, the request numbers encode no size: <c>_IO(IOMMUFD_TYPE, IOMMUFD_CMD_*)</c>.
/// </remarks>
internal static class IommufdUapi
{
    [UapiSince("6.2", "IOMMUFD_TYPE")]
    public const uint IOMMUFD_TYPE = ';';

    // The command numbers (an anonymous enum in the header; each is guarded by its ioctl's macro).
    [UapiSince("6.2", "IOMMU_DESTROY")]
    public const uint IOMMUFD_CMD_BASE = 0x80;
    [UapiSince("6.2", "IOMMU_DESTROY")]
    public const uint IOMMUFD_CMD_DESTROY = IOMMUFD_CMD_BASE;
    [UapiSince("6.2", "IOMMU_IOAS_ALLOC")]
    public const uint IOMMUFD_CMD_IOAS_ALLOC = 0x81;
    [UapiSince("6.2", "IOMMU_IOAS_ALLOW_IOVAS")]
    public const uint IOMMUFD_CMD_IOAS_ALLOW_IOVAS = 0x82;
    [UapiSince("6.2", "IOMMU_IOAS_COPY")]
    public const uint IOMMUFD_CMD_IOAS_COPY = 0x83;
    [UapiSince("6.2", "IOMMU_IOAS_IOVA_RANGES")]
    public const uint IOMMUFD_CMD_IOAS_IOVA_RANGES = 0x84;
    [UapiSince("6.2", "IOMMU_IOAS_MAP")]
    public const uint IOMMUFD_CMD_IOAS_MAP = 0x85;
    [UapiSince("6.2", "IOMMU_IOAS_UNMAP")]
    public const uint IOMMUFD_CMD_IOAS_UNMAP = 0x86;
    [UapiSince("6.2", "IOMMU_OPTION")]
    public const uint IOMMUFD_CMD_OPTION = 0x87;
    [UapiSince("6.2", "IOMMU_VFIO_IOAS")]
    public const uint IOMMUFD_CMD_VFIO_IOAS = 0x88;
    [UapiSince("6.6", "IOMMU_HWPT_ALLOC")]
    public const uint IOMMUFD_CMD_HWPT_ALLOC = 0x89;
    [UapiSince("6.6", "IOMMU_GET_HW_INFO")]
    public const uint IOMMUFD_CMD_GET_HW_INFO = 0x8a;
    [UapiSince("6.7", "IOMMU_HWPT_SET_DIRTY_TRACKING")]
    public const uint IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING = 0x8b;
    [UapiSince("6.7", "IOMMU_HWPT_GET_DIRTY_BITMAP")]
    public const uint IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP = 0x8c;

    // ---- IOMMU_DESTROY ----
    /// <summary>
    /// Destroys any destroyable object by id (an IOAS, a HWPT). EBUSY while something still uses it
    /// (an IOAS with an attached device); ENOENT for an id that names nothing.
    /// </summary>
    [UapiSince("6.2", "IOMMU_DESTROY")]
    public static readonly nuint IOMMU_DESTROY = Ioc._IO(IOMMUFD_TYPE, IOMMUFD_CMD_DESTROY);

    // ---- IOMMU_IOAS_ALLOC ----
    /// <summary>Allocates an IO address space (the container's counterpart); flags must be 0.</summary>
    [UapiSince("6.2", "IOMMU_IOAS_ALLOC")]
    public static readonly nuint IOMMU_IOAS_ALLOC = Ioc._IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_ALLOC);

    // ---- IOMMU_IOAS_IOVA_RANGES ----
    /// <summary>
    /// The IOVA ranges a map may use, narrowed by every attached device's reserved regions. num_iovas
    /// is the array's length in and the total out; EMSGSIZE (with num_iovas set) when the array is too
    /// short, so the caller retries with a bigger one. Query again after every attach and detach.
    /// </summary>
    [UapiSince("6.2", "IOMMU_IOAS_IOVA_RANGES")]
    public static readonly nuint IOMMU_IOAS_IOVA_RANGES = Ioc._IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_IOVA_RANGES);

    // ---- IOMMU_IOAS_ALLOW_IOVAS ----
    /// <summary>
    /// Replaces the IOAS's allowed list: IOVA_RANGES never becomes narrower than it, so an attach that
    /// would reserve inside it fails; automatic IOVA allocation stays inside it.
    /// </summary>
    [UapiSince("6.2", "IOMMU_IOAS_ALLOW_IOVAS")]
    public static readonly nuint IOMMU_IOAS_ALLOW_IOVAS = Ioc._IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_ALLOW_IOVAS);

    // ---- IOMMU_IOAS_MAP and IOMMU_IOAS_COPY (enum iommufd_ioas_map_flags) ----
    /// <summary>Map at the given iova (which must be unused: EEXIST); without it the kernel picks one and returns it.</summary>
    [UapiSince("6.2", "IOMMU_IOAS_MAP")]
    public const uint IOMMU_IOAS_MAP_FIXED_IOVA = 1u << 0;
    [UapiSince("6.2", "IOMMU_IOAS_MAP")]
    public const uint IOMMU_IOAS_MAP_WRITEABLE = 1u << 1;
    [UapiSince("6.2", "IOMMU_IOAS_MAP")]
    public const uint IOMMU_IOAS_MAP_READABLE = 1u << 2;

    /// <summary>Maps user memory at an IOVA; pins the pages and charges them to RLIMIT_MEMLOCK.</summary>
    [UapiSince("6.2", "IOMMU_IOAS_MAP")]
    public static readonly nuint IOMMU_IOAS_MAP = Ioc._IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_MAP);

    /// <summary>Maps, in another IOAS, exactly a range mapped in the source one, sharing its pinned pages.</summary>
    [UapiSince("6.2", "IOMMU_IOAS_COPY")]
    public static readonly nuint IOMMU_IOAS_COPY = Ioc._IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_COPY);

    // ---- IOMMU_IOAS_UNMAP ----
    /// <summary>
    /// Unmaps whole mappings inside [iova, iova + length): a range that cuts a mapping fails, one that
    /// holds none gives ENOENT. iova 0 with length U64_MAX unmaps everything. The length unmapped is
    /// written back.
    /// </summary>
    [UapiSince("6.2", "IOMMU_IOAS_UNMAP")]
    public static readonly nuint IOMMU_IOAS_UNMAP = Ioc._IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_UNMAP);

    // ---- IOMMU_OPTION (enum iommufd_option, enum iommufd_option_ops) ----
    /// <summary>
    /// Global (object_id 0): how pinned pages are charged to RLIMIT_MEMLOCK. 0 (default): to the user
    /// (user->locked_vm, as io_uring and RDMA do); 1: to the process (mm->locked_vm, as VFIO type1
    /// does). Setting it needs CAP_SYS_RESOURCE, and only before anything was pinned.
    /// </summary>
    [UapiSince("6.2", "IOMMU_OPTION")]
    public const uint IOMMU_OPTION_RLIMIT_MODE = 0;
    /// <summary>Per IOAS (object_id is its id): 1 (default) lets contiguous pages map as huge IOMMU pages; 0 maps PAGE_SIZE only.</summary>
    [UapiSince("6.2", "IOMMU_OPTION")]
    public const uint IOMMU_OPTION_HUGE_PAGES = 1;
    [UapiSince("6.2", "IOMMU_OPTION")]
    public const ushort IOMMU_OPTION_OP_SET = 0;
    [UapiSince("6.2", "IOMMU_OPTION")]
    public const ushort IOMMU_OPTION_OP_GET = 1;
    [UapiSince("6.2", "IOMMU_OPTION")]
    public static readonly nuint IOMMU_OPTION = Ioc._IO(IOMMUFD_TYPE, IOMMUFD_CMD_OPTION);

    // ---- IOMMU_VFIO_IOAS (enum iommufd_vfio_ioas_op) ----
    // The IOAS the VFIO compatibility container (/dev/vfio/vfio served by iommufd) uses.
    [UapiSince("6.2", "IOMMU_VFIO_IOAS")]
    public const ushort IOMMU_VFIO_IOAS_GET = 0;
    [UapiSince("6.2", "IOMMU_VFIO_IOAS")]
    public const ushort IOMMU_VFIO_IOAS_SET = 1;
    [UapiSince("6.2", "IOMMU_VFIO_IOAS")]
    public const ushort IOMMU_VFIO_IOAS_CLEAR = 2;
    [UapiSince("6.2", "IOMMU_VFIO_IOAS")]
    public static readonly nuint IOMMU_VFIO_IOAS = Ioc._IO(IOMMUFD_TYPE, IOMMUFD_CMD_VFIO_IOAS);

    // ---- IOMMU_HWPT_ALLOC (enum iommufd_hwpt_alloc_flags, enum iommu_hwpt_data_type) ----
    [UapiSince("6.7", "IOMMU_HWPT_GET_DIRTY_BITMAP")]
    public const uint IOMMU_HWPT_ALLOC_NEST_PARENT = 1u << 0;
    /// <summary>The HWPT tracks dirty IOVAs; only devices whose IOMMU can (IOMMU_HW_CAP_DIRTY_TRACKING) may attach.</summary>
    [UapiSince("6.7", "IOMMU_HWPT_GET_DIRTY_BITMAP")]
    public const uint IOMMU_HWPT_ALLOC_DIRTY_TRACKING = 1u << 1;
    [UapiSince("6.7", "IOMMU_HWPT_GET_DIRTY_BITMAP")]
    public const uint IOMMU_HWPT_DATA_NONE = 0;
    /// <summary>
    /// Allocates a hardware page table (an iommu_domain) for a bound device from an IOAS; the device
    /// then attaches to the HWPT instead of the IOAS. An attach to an IOAS creates one automatically.
    /// </summary>
    [UapiSince("6.6", "IOMMU_HWPT_ALLOC")]
    public static readonly nuint IOMMU_HWPT_ALLOC = Ioc._IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_ALLOC);

    // ---- IOMMU_GET_HW_INFO (enum iommu_hw_info_type, enum iommufd_hw_capabilities) ----
    [UapiSince("6.6", "IOMMU_GET_HW_INFO")]
    public const uint IOMMU_HW_INFO_TYPE_NONE = 0;
    [UapiSince("6.6", "IOMMU_GET_HW_INFO")]
    public const uint IOMMU_HW_INFO_TYPE_INTEL_VTD = 1;
    /// <summary>Intel VT-d erratum 772415 (SPR17): read-only mappings are refused on a nest parent.</summary>
    [UapiSince("6.8", "IOMMU_HWPT_INVALIDATE")]
    public const uint IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17 = 1u << 0;
    /// <summary>The device's IOMMU can track dirty IOVAs: IOMMU_HWPT_SET_DIRTY_TRACKING and GET_DIRTY_BITMAP work.</summary>
    [UapiSince("6.7", "IOMMU_HWPT_GET_DIRTY_BITMAP")]
    public const ulong IOMMU_HW_CAP_DIRTY_TRACKING = 1u << 0;
    /// <summary>
    /// The IOMMU type specific data (iommu_hw_info_vtd for Intel VT-d), the capabilities and the PASID
    /// width of the IOMMU behind a bound device.
    /// </summary>
    [UapiSince("6.6", "IOMMU_GET_HW_INFO")]
    public static readonly nuint IOMMU_GET_HW_INFO = Ioc._IO(IOMMUFD_TYPE, IOMMUFD_CMD_GET_HW_INFO);

    // ---- Dirty tracking ----
    [UapiSince("6.7", "IOMMU_HWPT_SET_DIRTY_TRACKING")]
    public const uint IOMMU_HWPT_DIRTY_TRACKING_ENABLE = 1;
    [UapiSince("6.7", "IOMMU_HWPT_SET_DIRTY_TRACKING")]
    public static readonly nuint IOMMU_HWPT_SET_DIRTY_TRACKING = Ioc._IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_SET_DIRTY_TRACKING);
    /// <summary>Read the dirty bits without clearing them (when the next step is an unmap of the range).</summary>
    [UapiSince("6.7", "IOMMU_HWPT_GET_DIRTY_BITMAP")]
    public const uint IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR = 1;
    [UapiSince("6.7", "IOMMU_HWPT_GET_DIRTY_BITMAP")]
    public static readonly nuint IOMMU_HWPT_GET_DIRTY_BITMAP = Ioc._IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_GET_DIRTY_BITMAP);
}

[UapiSince("6.2", "IOMMU_DESTROY")]
[StructLayout(LayoutKind.Sequential)]
internal struct iommu_destroy
{
    public uint size;
    public uint id;
}

[UapiSince("6.2", "IOMMU_IOAS_ALLOC")]
[StructLayout(LayoutKind.Sequential)]
internal struct iommu_ioas_alloc
{
    public uint size;
    public uint flags;
    public uint out_ioas_id;
}

[UapiSince("6.2", "IOMMU_IOAS_IOVA_RANGES")]
[StructLayout(LayoutKind.Sequential)]
internal struct iommu_iova_range
{
    public ulong start;
    /// <summary>Inclusive.</summary>
    public ulong last;
}

[UapiSince("6.2", "IOMMU_IOAS_IOVA_RANGES")]
[StructLayout(LayoutKind.Sequential)]
internal struct iommu_ioas_iova_ranges
{
    public uint size;
    public uint ioas_id;
    /// <summary>In: the length of the allowed_iovas array. Out: the total number of ranges.</summary>
    public uint num_iovas;
    public uint __reserved;
    /// <summary>A pointer to an array of iommu_iova_range.</summary>
    public ulong allowed_iovas;
    /// <summary>Out: the alignment every map's iova and length must have (at most PAGE_SIZE).</summary>
    public ulong out_iova_alignment;
}

[UapiSince("6.2", "IOMMU_IOAS_ALLOW_IOVAS")]
[StructLayout(LayoutKind.Sequential)]
internal struct iommu_ioas_allow_iovas
{
    public uint size;
    public uint ioas_id;
    public uint num_iovas;
    public uint __reserved;
    public ulong allowed_iovas;
}

[UapiSince("6.2", "IOMMU_IOAS_MAP")]
[StructLayout(LayoutKind.Sequential)]
internal struct iommu_ioas_map
{
    public uint size;
    public uint flags;
    public uint ioas_id;
    public uint __reserved;
    public ulong user_va;
    public ulong length;
    /// <summary>In with FIXED_IOVA; out otherwise.</summary>
    public ulong iova;
}

[UapiSince("6.2", "IOMMU_IOAS_COPY")]
[StructLayout(LayoutKind.Sequential)]
internal struct iommu_ioas_copy
{
    public uint size;
    public uint flags;
    public uint dst_ioas_id;
    public uint src_ioas_id;
    public ulong length;
    public ulong dst_iova;
    public ulong src_iova;
}

[UapiSince("6.2", "IOMMU_IOAS_UNMAP")]
[StructLayout(LayoutKind.Sequential)]
internal struct iommu_ioas_unmap
{
    public uint size;
    public uint ioas_id;
    public ulong iova;
    /// <summary>In: the range's length. Out: the bytes unmapped.</summary>
    public ulong length;
}

[UapiSince("6.2", "IOMMU_OPTION")]
[StructLayout(LayoutKind.Sequential)]
internal struct iommu_option
{
    public uint size;
    public uint option_id;
    public ushort op;
    public ushort __reserved;
    public uint object_id;
    public ulong val64;
}

[UapiSince("6.2", "IOMMU_VFIO_IOAS")]
[StructLayout(LayoutKind.Sequential)]
internal struct iommu_vfio_ioas
{
    public uint size;
    public uint ioas_id;
    public ushort op;
    public ushort __reserved;
}

/// <summary>
/// The layout of 6.11 and later. 6.6 ended after <c>__reserved</c> (24 bytes), 6.7 added the
/// user data for nested page tables and 6.11 the fault queue id; the kernel accepts every size.
/// </summary>
[UapiSince("6.6", "IOMMU_HWPT_ALLOC")]
[StructLayout(LayoutKind.Sequential)]
internal struct iommu_hwpt_alloc
{
    public uint size;
    public uint flags;
    public uint dev_id;
    /// <summary>The IOAS (or parent HWPT) to allocate from.</summary>
    public uint pt_id;
    public uint out_hwpt_id;
    public uint __reserved;
    [UapiSince("6.7", "IOMMU_HWPT_GET_DIRTY_BITMAP")]
    public uint data_type;
    [UapiSince("6.7", "IOMMU_HWPT_GET_DIRTY_BITMAP")]
    public uint data_len;
    [UapiSince("6.7", "IOMMU_HWPT_GET_DIRTY_BITMAP")]
    public ulong data_uptr;
    [UapiSince("6.11", "IOMMU_FAULT_QUEUE_ALLOC")]
    public uint fault_id;
    [UapiSince("6.11", "IOMMU_FAULT_QUEUE_ALLOC")]
    public uint __reserved2;
}

/// <summary>
/// The layout of 6.7 and later (out_capabilities). Since then the header also named the first of the
/// reserved bytes <c>out_max_pasid_log2</c> (by 6.12) and overlaid <c>out_data_type</c> with an
/// <c>in_data_type</c> (not mirrored: the library asks for the default type).
/// </summary>
[UapiSince("6.7", "IOMMU_HWPT_GET_DIRTY_BITMAP")]
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct iommu_hw_info
{
    public uint size;
    public uint flags;
    public uint dev_id;
    /// <summary>In: the buffer's length. Out: the length of the data the kernel has.</summary>
    public uint data_len;
    public ulong data_uptr;
    /// <summary>An IOMMU_HW_INFO_TYPE_*: how to read the data.</summary>
    public uint out_data_type;
    /// <summary>The PASID width; 0 without PASID support.</summary>
    public byte out_max_pasid_log2;
    public fixed byte __reserved[3];
    /// <summary>IOMMU_HW_CAP_* bits.</summary>
    public ulong out_capabilities;
}

/// <summary>Intel VT-d's registers (VT-d spec 11.4.2 and 11.4.3), for IOMMU_HW_INFO_TYPE_INTEL_VTD.</summary>
[UapiSince("6.6", "IOMMU_GET_HW_INFO")]
[StructLayout(LayoutKind.Sequential)]
internal struct iommu_hw_info_vtd
{
    public uint flags;
    public uint __reserved;
    public ulong cap_reg;
    public ulong ecap_reg;
}

[UapiSince("6.7", "IOMMU_HWPT_SET_DIRTY_TRACKING")]
[StructLayout(LayoutKind.Sequential)]
internal struct iommu_hwpt_set_dirty_tracking
{
    public uint size;
    public uint flags;
    public uint hwpt_id;
    public uint __reserved;
}

/// <summary>
/// <c>data</c> points to a bitmap of u64 words, one bit per page_size of IOVA from iova; the kernel
/// sets the bits of dirty pages (and clears their dirty state unless NO_CLEAR).
/// </summary>
[UapiSince("6.7", "IOMMU_HWPT_GET_DIRTY_BITMAP")]
[StructLayout(LayoutKind.Sequential)]
internal struct iommu_hwpt_get_dirty_bitmap
{
    public uint size;
    public uint hwpt_id;
    public uint flags;
    public uint __reserved;
    public ulong iova;
    public ulong length;
    public ulong page_size;
    public ulong data;
}
