using System.Globalization;
using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio;

/// <summary>
/// The DMA address space of a legacy container: its type1 IOMMU (<c>VFIO_IOMMU_GET_INFO</c>,
/// <c>VFIO_IOMMU_MAP_DMA</c>, <c>VFIO_IOMMU_UNMAP_DMA</c> on the container file), with the type1
/// driver's <c>dma_entry_limit</c> as the mapping budget where the kernel reports none.
/// </summary>
internal sealed unsafe class Type1AddressSpace(VfioRegistry registry, SafeFd container) : IommuAddressSpace(registry)
{
    /// <summary>The type1 IOMMU driver's default <c>dma_entry_limit</c>: DMA mappings per container.</summary>
    internal const int DefaultDmaEntryLimit = ushort.MaxValue;

    public override VfioBackend Backend => VfioBackend.Legacy;

    internal override IommuInfo QueryIommuInfo(ErrorTarget target) => IommuInfo.Query(Registry.Kernel, container, target);

    private protected override string UnmapOperation => "VFIO_IOMMU_UNMAP_DMA";

    private protected override int MapCore(nint hostAddress, ulong iova, ulong length, DmaAccess access)
    {
        var map = new vfio_iommu_type1_dma_map
        {
            argsz = (uint)sizeof(vfio_iommu_type1_dma_map),
            flags = ((access & DmaAccess.DeviceReads) != 0 ? VfioUapi.VFIO_DMA_MAP_FLAG_READ : 0)
                | ((access & DmaAccess.DeviceWrites) != 0 ? VfioUapi.VFIO_DMA_MAP_FLAG_WRITE : 0),
            vaddr = (ulong)hostAddress,
            iova = iova,
            size = length,
        };
        return Registry.Kernel.Ioctl(container, VfioUapi.VFIO_IOMMU_MAP_DMA, &map);
    }

    private protected override int UnmapCore(ulong iova, ulong length, out ulong unmapped)
    {
        var unmap = new vfio_iommu_type1_dma_unmap
        {
            argsz = (uint)sizeof(vfio_iommu_type1_dma_unmap),
            iova = iova,
            size = length,
        };
        int rc = Registry.Kernel.Ioctl(container, VfioUapi.VFIO_IOMMU_UNMAP_DMA, &unmap);
        unmapped = unmap.size;
        return rc;
    }

    private protected override int UnmapDirtyCore(ulong iova, ulong length, Span<ulong> dirty, ulong pageSize, out ulong unmapped)
    {
        // The unmap request with a vfio_bitmap right after it (data[]).
        byte* request = stackalloc byte[sizeof(vfio_iommu_type1_dma_unmap) + sizeof(vfio_bitmap)];
        var unmap = (vfio_iommu_type1_dma_unmap*)request;
        *unmap = new vfio_iommu_type1_dma_unmap
        {
            argsz = (uint)(sizeof(vfio_iommu_type1_dma_unmap) + sizeof(vfio_bitmap)),
            flags = VfioUapi.VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP,
            iova = iova,
            size = length,
        };
        fixed (ulong* bits = dirty)
        {
            *(vfio_bitmap*)(request + sizeof(vfio_iommu_type1_dma_unmap)) = new vfio_bitmap { pgsize = pageSize, size = (ulong)dirty.Length * sizeof(ulong), data = bits };
            int rc = Registry.Kernel.Ioctl(container, VfioUapi.VFIO_IOMMU_UNMAP_DMA, request);
            unmapped = unmap->size;
            return rc;
        }
    }

    // Kernels before 5.10 do not report DMA_AVAIL: the module parameter says the limit.
    private protected override int ReadEntryLimit()
    {
        string? text = Registry.Sysfs.ReadText("module/vfio_iommu_type1/parameters/dma_entry_limit");
        return int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int limit) ? limit : DefaultDmaEntryLimit;
    }

    private protected override VfioResourceLimitException BudgetSpent(VfioDevice device, int mappings) => new(
        $"Cannot map a DMA buffer for {device.Name}: the container holds {mappings} DMA mappings, all the kernel allows " +
        "(the vfio_iommu_type1 module parameter dma_entry_limit). Use fewer, larger buffers, or raise the limit: " +
        "echo N > /sys/module/vfio_iommu_type1/parameters/dma_entry_limit (as root, before the container is opened).",
        VfioResourceLimitException.DmaEntryLimit);

    // The kernel's refusals of VFIO_IOMMU_MAP_DMA, each turned into what to do about it.
    private protected override VfioException MapError(int errno, ulong iova, ulong length, VfioDevice device)
    {
        string operation = string.Create(CultureInfo.InvariantCulture, $"VFIO_IOMMU_MAP_DMA 0x{iova:x}+0x{length:x}");
        var target = device.ErrorTarget;
        switch (errno)
        {
            case Errno.ENOMEM:
                return MemoryLockError(errno, operation, target, "VFIO type1 charges to this process");
            case Errno.ENOSPC:
                return new VfioResourceLimitException(
                    VfioErrors.Create(errno, operation, target,
                        "The container reached the kernel's DMA mapping limit (the vfio_iommu_type1 module parameter dma_entry_limit): " +
                        "use fewer, larger buffers, or raise it in /sys/module/vfio_iommu_type1/parameters/dma_entry_limit").Message,
                    VfioResourceLimitException.DmaEntryLimit, operation, errno, target);
            case Errno.EEXIST:
                return VfioErrors.Create(errno, operation, target,
                    "The kernel already maps part of this IOVA range in the container: a mapping made outside this library overlaps it");
            case Errno.EINVAL:
                return VfioErrors.Create(errno, operation, target,
                    "The kernel refused the range: it must be page-aligned and inside the IOMMU's valid IOVA ranges");
            default:
                return VfioErrors.Create(errno, operation, target);
        }
    }
}
