using System.Runtime.InteropServices;

namespace Vfio.Interop;

// <linux/vfio.h>: the device fd's info ioctls (device, region, irq), their capabilities, SET_IRQS,
// reset, the vfio-pci region and irq indexes, PCI hot reset, ioeventfd, the mdev display plane, and
// the device cdev's iommufd ioctls (bind, attach, detach).

internal static partial class VfioUapi
{
    // ---- VFIO_DEVICE_GET_INFO ----
    public static readonly nuint VFIO_DEVICE_GET_INFO = Ioc._IO(VFIO_TYPE, VFIO_BASE + 7);
    public const uint VFIO_DEVICE_FLAGS_RESET = 1u << 0;
    public const uint VFIO_DEVICE_FLAGS_PCI = 1u << 1;
    public const uint VFIO_DEVICE_FLAGS_PLATFORM = 1u << 2;
    public const uint VFIO_DEVICE_FLAGS_AMBA = 1u << 3;
    public const uint VFIO_DEVICE_FLAGS_CCW = 1u << 4;
    public const uint VFIO_DEVICE_FLAGS_AP = 1u << 5;
    public const uint VFIO_DEVICE_FLAGS_FSL_MC = 1u << 6;
    public const uint VFIO_DEVICE_FLAGS_CAPS = 1u << 7;

    // Device info capability ids. The s390 zPCI ones' payloads live in <linux/vfio_zdev.h> and are
    // not mirrored here.
    public const uint VFIO_DEVICE_INFO_CAP_ZPCI_BASE = 1;
    public const uint VFIO_DEVICE_INFO_CAP_ZPCI_GROUP = 2;
    public const uint VFIO_DEVICE_INFO_CAP_ZPCI_UTIL = 3;
    public const uint VFIO_DEVICE_INFO_CAP_ZPCI_PFIP = 4;
    /// <summary>vfio-pci: the PCIe AtomicOp completer widths the root port supports (vfio_device_info_cap_pci_atomic_comp).</summary>
    [UapiSince("6.5", "VFIO_DEVICE_INFO_CAP_PCI_ATOMIC_COMP")]
    public const uint VFIO_DEVICE_INFO_CAP_PCI_ATOMIC_COMP = 5;
    [UapiSince("6.5", "VFIO_DEVICE_INFO_CAP_PCI_ATOMIC_COMP")]
    public const uint VFIO_PCI_ATOMIC_COMP32 = 1u << 0;
    [UapiSince("6.5", "VFIO_DEVICE_INFO_CAP_PCI_ATOMIC_COMP")]
    public const uint VFIO_PCI_ATOMIC_COMP64 = 1u << 1;
    [UapiSince("6.5", "VFIO_DEVICE_INFO_CAP_PCI_ATOMIC_COMP")]
    public const uint VFIO_PCI_ATOMIC_COMP128 = 1u << 2;

    // ---- VFIO_DEVICE_GET_REGION_INFO ----
    public static readonly nuint VFIO_DEVICE_GET_REGION_INFO = Ioc._IO(VFIO_TYPE, VFIO_BASE + 8);
    public const uint VFIO_REGION_INFO_FLAG_READ = 1u << 0;
    public const uint VFIO_REGION_INFO_FLAG_WRITE = 1u << 1;
    public const uint VFIO_REGION_INFO_FLAG_MMAP = 1u << 2;
    public const uint VFIO_REGION_INFO_FLAG_CAPS = 1u << 3;

    // Region capability ids.
    /// <summary>
    /// Only the listed areas of an mmap-able region may be mapped; mapping elsewhere (e.g. over a
    /// PCI MSI-X table) may fail or misbehave.
    /// </summary>
    public const uint VFIO_REGION_INFO_CAP_SPARSE_MMAP = 1;
    public const uint VFIO_REGION_INFO_CAP_TYPE = 2;
    /// <summary>
    /// The MSI-X table's BAR may be mmapped in full (reaching registers sharing its page); MSI-X is
    /// still configured through VFIO_DEVICE_SET_IRQS. The capability has no payload.
    /// </summary>
    public const uint VFIO_REGION_INFO_CAP_MSIX_MAPPABLE = 3;
    /// <summary>Deprecated: no longer provided by the kernel.</summary>
    public const uint VFIO_REGION_INFO_CAP_NVLINK2_SSATGT = 4;
    /// <summary>Deprecated: no longer provided by the kernel.</summary>
    public const uint VFIO_REGION_INFO_CAP_NVLINK2_LNKSPD = 5;

    // Region types (vfio_region_info_cap_type.type), global per bus driver. A PCI vendor type is
    // VFIO_REGION_TYPE_PCI_VENDOR_TYPE | vendor id.
    public const uint VFIO_REGION_TYPE_PCI_VENDOR_TYPE = 1u << 31;
    public const uint VFIO_REGION_TYPE_PCI_VENDOR_MASK = 0xffff;
    public const uint VFIO_REGION_TYPE_GFX = 1;
    public const uint VFIO_REGION_TYPE_CCW = 2;
    public const uint VFIO_REGION_TYPE_MIGRATION_DEPRECATED = 3;

    // Region subtypes, per type.
    public const uint VFIO_REGION_SUBTYPE_INTEL_IGD_OPREGION = 1;
    public const uint VFIO_REGION_SUBTYPE_INTEL_IGD_HOST_CFG = 2;
    public const uint VFIO_REGION_SUBTYPE_INTEL_IGD_LPC_CFG = 3;
    /// <summary>Deprecated: region no longer provided.</summary>
    public const uint VFIO_REGION_SUBTYPE_NVIDIA_NVLINK2_RAM = 1;
    /// <summary>Deprecated: region no longer provided.</summary>
    public const uint VFIO_REGION_SUBTYPE_IBM_NVLINK2_ATSD = 1;
    public const uint VFIO_REGION_SUBTYPE_GFX_EDID = 1;
    public const uint VFIO_REGION_SUBTYPE_CCW_ASYNC_CMD = 1;
    public const uint VFIO_REGION_SUBTYPE_CCW_SCHIB = 2;
    public const uint VFIO_REGION_SUBTYPE_CCW_CRW = 3;
    public const uint VFIO_REGION_SUBTYPE_MIGRATION_DEPRECATED = 1;

    // vfio_region_gfx_edid.link_state
    public const uint VFIO_DEVICE_GFX_LINK_STATE_UP = 1;
    public const uint VFIO_DEVICE_GFX_LINK_STATE_DOWN = 2;

    // ---- VFIO_DEVICE_GET_IRQ_INFO ----
    public static readonly nuint VFIO_DEVICE_GET_IRQ_INFO = Ioc._IO(VFIO_TYPE, VFIO_BASE + 9);
    public const uint VFIO_IRQ_INFO_EVENTFD = 1u << 0;
    /// <summary>The index supports ACTION_MASK and ACTION_UNMASK.</summary>
    public const uint VFIO_IRQ_INFO_MASKABLE = 1u << 1;
    /// <summary>
    /// After signalling, VFIO masks the line and the user must unmask it to get the next interrupt
    /// (level-triggered, e.g. INTx).
    /// </summary>
    public const uint VFIO_IRQ_INFO_AUTOMASKED = 1u << 2;
    /// <summary>
    /// The vectors of the index are set up as a set: enabling more requires disabling the whole index
    /// first (MSI, MSI-X).
    /// </summary>
    public const uint VFIO_IRQ_INFO_NORESIZE = 1u << 3;

    // ---- VFIO_DEVICE_SET_IRQS ----
    public static readonly nuint VFIO_DEVICE_SET_IRQS = Ioc._IO(VFIO_TYPE, VFIO_BASE + 10);
    public const uint VFIO_IRQ_SET_DATA_NONE = 1u << 0;
    /// <summary>data[] holds one <c>__u8</c> bool per vector in [start, start + count).</summary>
    public const uint VFIO_IRQ_SET_DATA_BOOL = 1u << 1;
    /// <summary>data[] holds one <c>__s32</c> eventfd per vector; -1 de-assigns (or skips) a vector.</summary>
    public const uint VFIO_IRQ_SET_DATA_EVENTFD = 1u << 2;
    // MASK/UNMASK are user-to-kernel signalling (irqfds); TRIGGER is kernel-to-user.
    public const uint VFIO_IRQ_SET_ACTION_MASK = 1u << 3;
    public const uint VFIO_IRQ_SET_ACTION_UNMASK = 1u << 4;
    public const uint VFIO_IRQ_SET_ACTION_TRIGGER = 1u << 5;
    public const uint VFIO_IRQ_SET_DATA_TYPE_MASK =
        VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_DATA_EVENTFD;
    public const uint VFIO_IRQ_SET_ACTION_TYPE_MASK =
        VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_ACTION_UNMASK | VFIO_IRQ_SET_ACTION_TRIGGER;

    // ---- VFIO_DEVICE_RESET ----
    public static readonly nuint VFIO_DEVICE_RESET = Ioc._IO(VFIO_TYPE, VFIO_BASE + 11);

    // ---- vfio-pci's fixed region and irq indexes (anonymous enums in the header) ----
    // Unimplemented regions report size 0, unimplemented irq indexes count 0.
    public const uint VFIO_PCI_BAR0_REGION_INDEX = 0;
    public const uint VFIO_PCI_BAR1_REGION_INDEX = 1;
    public const uint VFIO_PCI_BAR2_REGION_INDEX = 2;
    public const uint VFIO_PCI_BAR3_REGION_INDEX = 3;
    public const uint VFIO_PCI_BAR4_REGION_INDEX = 4;
    public const uint VFIO_PCI_BAR5_REGION_INDEX = 5;
    public const uint VFIO_PCI_ROM_REGION_INDEX = 6;
    public const uint VFIO_PCI_CONFIG_REGION_INDEX = 7;
    /// <summary>
    /// Legacy VGA ranges (I/O 0x3b0-0x3bb, 0x3c0-0x3df, MMIO 0xa0000-0xbffff), each at its identity
    /// offset from the region's offset.
    /// </summary>
    public const uint VFIO_PCI_VGA_REGION_INDEX = 8;
    /// <summary>Fixed user ABI: indexes from 9 on are device specific and described by a type capability.</summary>
    public const uint VFIO_PCI_NUM_REGIONS = 9;

    public const uint VFIO_PCI_INTX_IRQ_INDEX = 0;
    public const uint VFIO_PCI_MSI_IRQ_INDEX = 1;
    public const uint VFIO_PCI_MSIX_IRQ_INDEX = 2;
    public const uint VFIO_PCI_ERR_IRQ_INDEX = 3;
    public const uint VFIO_PCI_REQ_IRQ_INDEX = 4;
    public const uint VFIO_PCI_NUM_IRQS = 5;

    // vfio-ccw's fixed indexes (also anonymous enums of this header).
    public const uint VFIO_CCW_CONFIG_REGION_INDEX = 0;
    public const uint VFIO_CCW_NUM_REGIONS = 1;
    public const uint VFIO_CCW_IO_IRQ_INDEX = 0;
    public const uint VFIO_CCW_CRW_IRQ_INDEX = 1;
    public const uint VFIO_CCW_REQ_IRQ_INDEX = 2;
    public const uint VFIO_CCW_NUM_IRQS = 3;

    // ---- PCI hot reset ----
    /// <summary>ENOSPC when the buffer is too small (argsz and count then say how much is needed); ENODEV if unsupported.</summary>
    public static readonly nuint VFIO_DEVICE_GET_PCI_HOT_RESET_INFO = Ioc._IO(VFIO_TYPE, VFIO_BASE + 12);
    /// <summary>
    /// Set on the info of a device opened as a cdev: the entries carry devids (of the caller's iommufd),
    /// not group ids.
    /// </summary>
    [UapiSince("6.6", "VFIO_PCI_HOT_RESET_FLAG_DEV_ID")]
    public const uint VFIO_PCI_HOT_RESET_FLAG_DEV_ID = 1u << 0;
    /// <summary>With DEV_ID: the caller owns every affected device, so the reset may be called with an empty fd array.</summary>
    [UapiSince("6.6", "VFIO_PCI_HOT_RESET_FLAG_DEV_ID")]
    public const uint VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED = 1u << 1;
    /// <summary>A dependent device without a devid in the caller's iommufd but in an IOMMU group the caller owns.</summary>
    [UapiSince("6.6", "VFIO_PCI_DEVID_OWNED")]
    public const int VFIO_PCI_DEVID_OWNED = 0;
    /// <summary>A dependent device the caller does not own (not bound to a vfio driver, or opened elsewhere).</summary>
    [UapiSince("6.6", "VFIO_PCI_DEVID_NOT_OWNED")]
    public const int VFIO_PCI_DEVID_NOT_OWNED = -1;
    /// <summary>
    /// Legacy API: the caller proves ownership of every affected group by passing an fd for each. On a
    /// cdev the fd array is empty, and the ownership comes from the iommufd (FLAG_DEV_ID_OWNED).
    /// </summary>
    public static readonly nuint VFIO_DEVICE_PCI_HOT_RESET = Ioc._IO(VFIO_TYPE, VFIO_BASE + 13);

    // ---- mdev display ----
    public static readonly nuint VFIO_DEVICE_QUERY_GFX_PLANE = Ioc._IO(VFIO_TYPE, VFIO_BASE + 14);
    public const uint VFIO_GFX_PLANE_TYPE_PROBE = 1u << 0;
    public const uint VFIO_GFX_PLANE_TYPE_DMABUF = 1u << 1;
    public const uint VFIO_GFX_PLANE_TYPE_REGION = 1u << 2;
    public static readonly nuint VFIO_DEVICE_GET_GFX_DMABUF = Ioc._IO(VFIO_TYPE, VFIO_BASE + 15);

    // ---- VFIO_DEVICE_IOEVENTFD ----
    /// <summary>
    /// The kernel writes <c>data</c> at <c>offset</c> when the eventfd fires. vfio-pci supports BAR
    /// regions only, excluding the MSI-X table.
    /// </summary>
    public static readonly nuint VFIO_DEVICE_IOEVENTFD = Ioc._IO(VFIO_TYPE, VFIO_BASE + 16);
    public const uint VFIO_DEVICE_IOEVENTFD_8 = 1u << 0;
    public const uint VFIO_DEVICE_IOEVENTFD_16 = 1u << 1;
    public const uint VFIO_DEVICE_IOEVENTFD_32 = 1u << 2;
    public const uint VFIO_DEVICE_IOEVENTFD_64 = 1u << 3;
    public const uint VFIO_DEVICE_IOEVENTFD_SIZE_MASK = 0xf;

    // ---- The device cdev (/dev/vfio/devices/vfioN) and iommufd ----
    /// <summary>
    /// Binds a device opened through its cdev to an iommufd and returns its devid there. Every other
    /// device ioctl fails with EINVAL until then; closing the device file unbinds.
    /// </summary>
    [UapiSince("6.6", "VFIO_DEVICE_BIND_IOMMUFD")]
    public static readonly nuint VFIO_DEVICE_BIND_IOMMUFD = Ioc._IO(VFIO_TYPE, VFIO_BASE + 18);
    /// <summary>token_uuid_ptr carries the VF token a VF of a PF with VFIO_DEVICE_FEATURE_PCI_VF_TOKEN needs.</summary>
    [UapiSince("6.17", "VFIO_DEVICE_BIND_FLAG_TOKEN")]
    public const uint VFIO_DEVICE_BIND_FLAG_TOKEN = 1u << 0;
    /// <summary>
    /// Attaches a bound device to an IOAS or HWPT (pt_id; out: the HWPT used). Attaching again while
    /// attached replaces the page table.
    /// </summary>
    [UapiSince("6.6", "VFIO_DEVICE_ATTACH_IOMMUFD_PT")]
    public static readonly nuint VFIO_DEVICE_ATTACH_IOMMUFD_PT = Ioc._IO(VFIO_TYPE, VFIO_BASE + 19);
    [UapiSince("6.15", "VFIO_DEVICE_ATTACH_PASID")]
    public const uint VFIO_DEVICE_ATTACH_PASID = 1u << 0;
    /// <summary>Detaches a device from its page table; its DMA is blocked afterwards.</summary>
    [UapiSince("6.6", "VFIO_DEVICE_DETACH_IOMMUFD_PT")]
    public static readonly nuint VFIO_DEVICE_DETACH_IOMMUFD_PT = Ioc._IO(VFIO_TYPE, VFIO_BASE + 20);
    [UapiSince("6.15", "VFIO_DEVICE_DETACH_PASID")]
    public const uint VFIO_DEVICE_DETACH_PASID = 1u << 0;
}

/// <summary>
/// 6.7 named the tail padding <c>pad</c> (making the struct 24 bytes, and where the kernel puts the
/// first capability); older headers end at cap_offset (20 bytes). The kernel takes either size.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal struct vfio_device_info
{
    public uint argsz;
    public uint flags;
    /// <summary>Max region index + 1.</summary>
    public uint num_regions;
    /// <summary>Max irq index + 1.</summary>
    public uint num_irqs;
    /// <summary>Offset of the first capability from the start of this struct (when FLAGS_CAPS).</summary>
    public uint cap_offset;
    // No vfio.h macro arrived with it; IOMMU_HWPT_GET_DIRTY_BITMAP is of the same release.
    [UapiSince("6.7", "IOMMU_HWPT_GET_DIRTY_BITMAP")]
    public uint pad;
}

[UapiSince("6.5", "VFIO_DEVICE_INFO_CAP_PCI_ATOMIC_COMP")]
[StructLayout(LayoutKind.Sequential)]
internal struct vfio_device_info_cap_pci_atomic_comp
{
    public vfio_info_cap_header header;
    /// <summary>VFIO_PCI_ATOMIC_COMP* bits.</summary>
    public uint flags;
    public uint reserved;
}

/// <summary>
/// A too-small argsz is not an error: the kernel sets FLAG_CAPS, leaves cap_offset 0 and raises
/// argsz to the size needed, so the caller retries with a bigger buffer.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal struct vfio_region_info
{
    public uint argsz;
    public uint flags;
    public uint index;
    public uint cap_offset;
    public ulong size;
    /// <summary>Offset of the region within the device fd (for pread/pwrite/mmap).</summary>
    public ulong offset;
}

[StructLayout(LayoutKind.Sequential)]
internal struct vfio_region_sparse_mmap_area
{
    public ulong offset;
    public ulong size;
}

[FlexibleArray("areas", typeof(vfio_region_sparse_mmap_area))]
[StructLayout(LayoutKind.Sequential)]
internal struct vfio_region_info_cap_sparse_mmap
{
    public vfio_info_cap_header header;
    public uint nr_areas;
    public uint reserved;
}

[StructLayout(LayoutKind.Sequential)]
internal struct vfio_region_info_cap_type
{
    public vfio_info_cap_header header;
    public uint type;
    public uint subtype;
}

[StructLayout(LayoutKind.Sequential)]
internal struct vfio_region_gfx_edid
{
    public uint edid_offset;
    public uint edid_max_size;
    public uint edid_size;
    public uint max_xres;
    public uint max_yres;
    public uint link_state;
}

[StructLayout(LayoutKind.Sequential)]
internal struct vfio_region_info_cap_nvlink2_ssatgt
{
    public vfio_info_cap_header header;
    public ulong tgt;
}

[StructLayout(LayoutKind.Sequential)]
internal struct vfio_region_info_cap_nvlink2_lnkspd
{
    public vfio_info_cap_header header;
    public uint link_speed;
    public uint __pad;
}

[StructLayout(LayoutKind.Sequential)]
internal struct vfio_irq_info
{
    public uint argsz;
    public uint flags;
    public uint index;
    public uint count;
}

/// <summary>data[] (bools or eventfds, per the DATA flag) follows at sizeof, one entry per vector.</summary>
[FlexibleArray("data", typeof(byte))]
[StructLayout(LayoutKind.Sequential)]
internal struct vfio_irq_set
{
    public uint argsz;
    public uint flags;
    public uint index;
    public uint start;
    public uint count;
}

/// <summary>
/// The C struct starts with a union: <c>group_id</c> for a device opened through its group,
/// <c>devid</c> (with VFIO_PCI_HOT_RESET_FLAG_DEV_ID) for one opened as a cdev.
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = 8)]
internal struct vfio_pci_dependent_device
{
    [FieldOffset(0)] public uint group_id;
    /// <summary>The devid in the caller's iommufd, VFIO_PCI_DEVID_OWNED (0) or VFIO_PCI_DEVID_NOT_OWNED (~0).</summary>
    [UapiSince("6.6", "VFIO_PCI_DEVID_OWNED")]
    [FieldOffset(0)] public uint devid;
    [FieldOffset(4)] public ushort segment;
    [FieldOffset(6)] public byte bus;
    /// <summary>PCI_SLOT(devfn) = devfn >> 3, PCI_FUNC(devfn) = devfn &amp; 7.</summary>
    [FieldOffset(7)] public byte devfn;
}

[FlexibleArray("devices", typeof(vfio_pci_dependent_device))]
[StructLayout(LayoutKind.Sequential)]
internal struct vfio_pci_hot_reset_info
{
    public uint argsz;
    public uint flags;
    public uint count;
}

/// <summary>group_fds[] (<c>__s32</c>, one per affected group) follows at sizeof.</summary>
[FlexibleArray("group_fds", typeof(int))]
[StructLayout(LayoutKind.Sequential)]
internal struct vfio_pci_hot_reset
{
    public uint argsz;
    public uint flags;
    public uint count;
}

/// <summary>
/// The C struct ends in an anonymous union of <c>region_index</c> and <c>dmabuf_id</c> (which one is
/// meaningful depends on the plane type flag); explicit layout overlays them.
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = 64)]
internal struct vfio_device_gfx_plane_info
{
    [FieldOffset(0)] public uint argsz;
    [FieldOffset(4)] public uint flags;
    [FieldOffset(8)] public uint drm_plane_type;
    [FieldOffset(12)] public uint drm_format;
    [FieldOffset(16)] public ulong drm_format_mod;
    [FieldOffset(24)] public uint width;
    [FieldOffset(28)] public uint height;
    [FieldOffset(32)] public uint stride;
    [FieldOffset(36)] public uint size;
    [FieldOffset(40)] public uint x_pos;
    [FieldOffset(44)] public uint y_pos;
    [FieldOffset(48)] public uint x_hot;
    [FieldOffset(52)] public uint y_hot;
    [FieldOffset(56)] public uint region_index;
    [FieldOffset(56)] public uint dmabuf_id;
}

[StructLayout(LayoutKind.Sequential)]
internal struct vfio_device_ioeventfd
{
    public uint argsz;
    public uint flags;
    public ulong offset;
    public ulong data;
    /// <summary>-1 de-assigns.</summary>
    public int fd;
}

/// <summary>The layout of 6.17 and later (token_uuid_ptr); 6.6 ended at out_devid (16 bytes). The kernel takes either size.</summary>
[UapiSince("6.6", "VFIO_DEVICE_BIND_IOMMUFD")]
[StructLayout(LayoutKind.Sequential)]
internal struct vfio_device_bind_iommufd
{
    public uint argsz;
    public uint flags;
    public int iommufd;
    public uint out_devid;
    /// <summary>A pointer to a 16-byte UUID, read only with VFIO_DEVICE_BIND_FLAG_TOKEN.</summary>
    [UapiSince("6.17", "VFIO_DEVICE_BIND_FLAG_TOKEN")]
    public ulong token_uuid_ptr;
}

/// <summary>The layout of 6.15 and later (pasid); 6.6 ended at pt_id (12 bytes). The kernel takes either size.</summary>
[UapiSince("6.6", "VFIO_DEVICE_ATTACH_IOMMUFD_PT")]
[StructLayout(LayoutKind.Sequential)]
internal struct vfio_device_attach_iommufd_pt
{
    public uint argsz;
    public uint flags;
    /// <summary>In: an IOAS or HWPT id. Out: the HWPT the device is attached to.</summary>
    public uint pt_id;
    [UapiSince("6.15", "VFIO_DEVICE_ATTACH_PASID")]
    public uint pasid;
}

/// <summary>The layout of 6.15 and later (pasid); 6.6 ended at flags (8 bytes). The kernel takes either size.</summary>
[UapiSince("6.6", "VFIO_DEVICE_DETACH_IOMMUFD_PT")]
[StructLayout(LayoutKind.Sequential)]
internal struct vfio_device_detach_iommufd_pt
{
    public uint argsz;
    public uint flags;
    [UapiSince("6.15", "VFIO_DEVICE_DETACH_PASID")]
    public uint pasid;
}
