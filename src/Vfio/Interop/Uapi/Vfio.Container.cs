using System.Runtime.InteropServices;

namespace Vfio.Interop;

// <linux/vfio.h>: API version, extensions, the ioctl base, the capability header, and the ioctls of
// the container (/dev/vfio/vfio) and group (/dev/vfio/$GROUP) file descriptors.

/// <summary>
/// Constants and ioctl request numbers of <c>&lt;linux/vfio.h&gt;</c>, named exactly as the C macros.
/// </summary>
/// <remarks>
/// VFIO encodes no size in its request numbers: every one is <c>_IO(VFIO_TYPE, VFIO_BASE + n)</c>,
/// because each struct carries its own length in <c>argsz</c> and grows by adding flag bits, so a
/// larger struct does not change the request. The numbers are <c>static readonly</c>, computed once by
/// <see cref="Ioc"/>; the JIT folds initialized static readonly primitives into constants, so the
/// ioctl hot path pays nothing for the computation.
/// </remarks>
internal static partial class VfioUapi
{
    public const int VFIO_API_VERSION = 0;

    // ---- Extensions (VFIO_CHECK_EXTENSION arguments; the IOMMU ones are also VFIO_SET_IOMMU arguments) ----
    public const int VFIO_TYPE1_IOMMU = 1;
    public const int VFIO_SPAPR_TCE_IOMMU = 2;
    public const int VFIO_TYPE1v2_IOMMU = 3;
    /// <summary>The IOMMU enforces DMA cache coherence; may change as groups are added or removed.</summary>
    public const int VFIO_DMA_CC_IOMMU = 4;
    public const int VFIO_EEH = 5;
    /// <summary>Two-stage IOMMU; implies v2. Never implemented by type1; 6.13 reserved the number (nesting is iommufd's).</summary>
    [UapiRemoved("6.13", "__VFIO_RESERVED_TYPE1_NESTING_IOMMU")]
    public const int VFIO_TYPE1_NESTING_IOMMU = 6;
    public const int VFIO_SPAPR_TCE_v2_IOMMU = 7;
    /// <summary>
    /// No translation, no isolation; only VFIO_CHECK_EXTENSION works on such a container, and using
    /// it taints the kernel.
    /// </summary>
    public const int VFIO_NOIOMMU_IOMMU = 8;
    /// <summary>VFIO_DMA_UNMAP_FLAG_ALL is supported.</summary>
    public const int VFIO_UNMAP_ALL = 9;
    /// <summary>VFIO_DMA_MAP_FLAG_VADDR / VFIO_DMA_UNMAP_FLAG_VADDR are supported (not with mdevs).</summary>
    public const int VFIO_UPDATE_VADDR = 10;

    public const uint VFIO_TYPE = ';';
    public const uint VFIO_BASE = 100;

    // ---- Container ioctls ----
    public static readonly nuint VFIO_GET_API_VERSION = Ioc._IO(VFIO_TYPE, VFIO_BASE + 0);
    /// <summary>Argument: the extension number; returns 0 if unsupported, a positive value if supported.</summary>
    public static readonly nuint VFIO_CHECK_EXTENSION = Ioc._IO(VFIO_TYPE, VFIO_BASE + 1);
    /// <summary>Argument: the IOMMU type. Only available once a group is attached to the container.</summary>
    public static readonly nuint VFIO_SET_IOMMU = Ioc._IO(VFIO_TYPE, VFIO_BASE + 2);

    // ---- Group ioctls ----
    public static readonly nuint VFIO_GROUP_GET_STATUS = Ioc._IO(VFIO_TYPE, VFIO_BASE + 3);
    /// <summary>
    /// Viable: every device in the group is bound to a VFIO driver (or none at all). The group is
    /// usable only when viable.
    /// </summary>
    public const uint VFIO_GROUP_FLAGS_VIABLE = 1u << 0;
    public const uint VFIO_GROUP_FLAGS_CONTAINER_SET = 1u << 1;

    /// <summary>Argument: pointer to the container fd (<c>__s32</c>).</summary>
    public static readonly nuint VFIO_GROUP_SET_CONTAINER = Ioc._IO(VFIO_TYPE, VFIO_BASE + 4);
    /// <summary>All device fds must be closed first; the last group out disables the container's IOMMU.</summary>
    public static readonly nuint VFIO_GROUP_UNSET_CONTAINER = Ioc._IO(VFIO_TYPE, VFIO_BASE + 5);
    /// <summary>Argument: a NUL-terminated device name as listed under the group's sysfs devices folder.</summary>
    public static readonly nuint VFIO_GROUP_GET_DEVICE_FD = Ioc._IO(VFIO_TYPE, VFIO_BASE + 6);
}

/// <summary>
/// The header of every capability in an INFO ioctl's capability chain. <c>next</c> (and the INFO
/// struct's <c>cap_offset</c>) are offsets from the start of the INFO buffer, not from the
/// capability; 0 ends the chain. <c>version</c> is specific to the capability id, and ids are a
/// separate space per INFO ioctl.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal struct vfio_info_cap_header
{
    public ushort id;
    public ushort version;
    public uint next;
}

[StructLayout(LayoutKind.Sequential)]
internal struct vfio_group_status
{
    public uint argsz;
    public uint flags;
}
