using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio;

/// <summary>
/// A VFIO container (<c>/dev/vfio/vfio</c>): the IOMMU context its groups share. The IOMMU type is
/// chosen when the first group joins (type1v2 preferred, type1 as fallback, no-IOMMU for no-IOMMU
/// groups); the container closes when its last group leaves.
/// </summary>
public sealed class VfioContainer
{
    private readonly List<IommuGroup> _groups = [];
    private readonly Lock _dmaLock = new();
    private readonly List<DmaBuffer> _buffers = [];
    private IommuInfo? _iommuInfo;
    private IovaAllocator? _iova;

    private VfioContainer(VfioRegistry registry, SafeFd fd)
    {
        Registry = registry;
        Fd = fd;
    }

    /// <summary>The registry that owns the container.</summary>
    public VfioRegistry Registry { get; }

    /// <summary>The IOMMU model set on the container (<c>VFIO_TYPE1v2_IOMMU</c> = 3, ...), 0 before the first group.</summary>
    public int IommuType { get; private set; }

    /// <summary>The IOMMU model's name: "type1v2", "type1", "noiommu", or "none".</summary>
    public string IommuTypeName => IommuType switch
    {
        VfioUapi.VFIO_TYPE1v2_IOMMU => "type1v2",
        VfioUapi.VFIO_TYPE1_IOMMU => "type1",
        VfioUapi.VFIO_NOIOMMU_IOMMU => "noiommu",
        _ => "none",
    };

    /// <summary>True when the container holds no-IOMMU groups.</summary>
    public bool IsNoIommu => IommuType == VfioUapi.VFIO_NOIOMMU_IOMMU;

    /// <summary>The groups attached to the container.</summary>
    public IReadOnlyList<IommuGroup> Groups => _groups.ToArray();

    internal SafeFd Fd { get; }

    internal int GroupCount => _groups.Count;

    /// <summary>Opens a new container and checks the API version.</summary>
    internal static VfioContainer Open(VfioRegistry registry)
    {
        var kernel = registry.Kernel;
        string path = kernel.Dev("vfio/vfio");
        VfioErrors.Check(kernel.Open(path, Flags.O_RDWR, out var fd), "open " + path);
        try
        {
            int version = VfioErrors.Check(kernel.Ioctl(fd, VfioUapi.VFIO_GET_API_VERSION, 0), "VFIO_GET_API_VERSION");
            if (version != VfioUapi.VFIO_API_VERSION)
            {
                throw new VfioException($"The kernel speaks VFIO API version {version}; this library speaks {VfioUapi.VFIO_API_VERSION}.");
            }
            return new VfioContainer(registry, fd);
        }
        catch
        {
            fd.Dispose();
            throw;
        }
    }

    /// <summary>True when the container has the extension (an IOMMU type, VFIO_UNMAP_ALL, ...).</summary>
    internal bool CheckExtension(int extension) =>
        VfioErrors.Check(Registry.Kernel.Ioctl(Fd, VfioUapi.VFIO_CHECK_EXTENSION, extension), "VFIO_CHECK_EXTENSION") > 0;

    /// <summary>
    /// Attaches a group: VFIO_GROUP_SET_CONTAINER, then, for the first group, VFIO_SET_IOMMU (the
    /// kernel accepts it only once a group is in). Returns the kernel's errno (negated) when it
    /// refuses the group, so the caller can try another container; throws for other failures.
    /// </summary>
    internal unsafe int TryAttach(IommuGroup group)
    {
        var kernel = Registry.Kernel;
        int containerFd = Fd.Value;
        int rc = kernel.Ioctl(group.Fd, VfioUapi.VFIO_GROUP_SET_CONTAINER, &containerFd);
        if (rc < 0)
        {
            return rc;
        }
        if (_groups.Count == 0)
        {
            try
            {
                SetIommu(group);
            }
            catch
            {
                _ = kernel.Ioctl(group.Fd, VfioUapi.VFIO_GROUP_UNSET_CONTAINER, 0);
                throw;
            }
        }
        _groups.Add(group);
        group.Container = this;
        return 0;
    }

    /// <summary>Detaches a group (VFIO_GROUP_UNSET_CONTAINER); every device file of it must be closed.</summary>
    internal void Detach(IommuGroup group)
    {
        if (_groups.Count == 1 && _groups[0] == group)
        {
            UnmapAll();
        }
        _groups.Remove(group);
        group.Container = null;
        VfioErrors.Check(Registry.Kernel.Ioctl(group.Fd, VfioUapi.VFIO_GROUP_UNSET_CONTAINER, 0), "VFIO_GROUP_UNSET_CONTAINER", group.ErrorTarget);
        if (_groups.Count == 0)
        {
            IommuType = 0;
        }
    }

    internal void Close() => Fd.Dispose();

    /// <summary>The IOMMU's page sizes, valid IOVA ranges and mapping budget (asked once, after the IOMMU is set).</summary>
    public IommuInfo IommuInfo
    {
        get
        {
            lock (_dmaLock)
            {
                return _iommuInfo ??= IommuInfo.Query(Registry.Kernel, Fd);
            }
        }
    }

    /// <summary>How many DMA mappings the container holds.</summary>
    public int DmaMappingCount
    {
        get
        {
            lock (_dmaLock)
            {
                return _buffers.Count;
            }
        }
    }

    /// <summary>
    /// The IOVA of a host address inside any DMA buffer of this container, found by binary search
    /// over the buffers sorted by host address; null when the address is in none.
    /// </summary>
    /// <param name="hostAddress">A host virtual address.</param>
    public ulong? TranslateToIova(nint hostAddress)
    {
        lock (_dmaLock)
        {
            int lo = 0, hi = _buffers.Count - 1;
            while (lo <= hi)
            {
                int mid = (lo + hi) >>> 1;
                var b = _buffers[mid];
                if (hostAddress < b.HostAddress)
                {
                    hi = mid - 1;
                }
                else if ((ulong)(hostAddress - b.HostAddress) >= b.Length)
                {
                    lo = mid + 1;
                }
                else
                {
                    return b.Iova + (ulong)(hostAddress - b.HostAddress);
                }
            }
            return null;
        }
    }

    internal unsafe DmaBuffer Map(VfioDevice device, SafeMapping memory, ulong length, DmaAccess access, ulong? fixedIova, DeviceReference reference)
    {
        lock (_dmaLock)
        {
            var info = IommuInfo;
            _iova ??= new IovaAllocator(info.IovaRanges, info.MinPageSize);
            if (info.DmaMappingsAvailable is uint budget && _buffers.Count >= budget)
            {
                throw new VfioException(
                    $"The container already holds {_buffers.Count} DMA mappings, the kernel's limit for it (vfio_iommu_type1 dma_entry_limit): use fewer, larger buffers.");
            }
            ulong iova;
            if (fixedIova is ulong wanted)
            {
                if (!info.IovaRanges.Any(r => r.Contains(wanted, length)))
                {
                    throw new VfioException($"IOVA range {wanted:#x}+{length:#x} lies outside the IOMMU's valid ranges ({string.Join(", ", info.IovaRanges.Select(r => $"{r.Start:#x}-{r.End:#x}"))}).");
                }
                if (wanted + length - 1 > device.DmaMask)
                {
                    throw new VfioException($"IOVA range {wanted:#x}+{length:#x} exceeds the DMA mask {device.DmaMask:#x} of {device.Name}.");
                }
                if (!_iova.Reserve(wanted, length))
                {
                    throw new VfioException($"IOVA range {wanted:#x}+{length:#x} overlaps a DMA mapping of this container.");
                }
                iova = wanted;
            }
            else
            {
                iova = _iova.Allocate(length, device.DmaMask)
                    ?? throw new VfioException($"No free IOVA range of {length:#x} bytes below the DMA mask {device.DmaMask:#x} of {device.Name}.");
            }
            var map = new vfio_iommu_type1_dma_map
            {
                argsz = (uint)sizeof(vfio_iommu_type1_dma_map),
                flags = ((access & DmaAccess.DeviceReads) != 0 ? VfioUapi.VFIO_DMA_MAP_FLAG_READ : 0)
                    | ((access & DmaAccess.DeviceWrites) != 0 ? VfioUapi.VFIO_DMA_MAP_FLAG_WRITE : 0),
                vaddr = (ulong)memory.Address,
                iova = iova,
                size = length,
            };
            int rc = Registry.Kernel.Ioctl(Fd, VfioUapi.VFIO_IOMMU_MAP_DMA, &map);
            if (rc < 0)
            {
                _iova.Free(iova);
                VfioErrors.Throw(-rc, $"VFIO_IOMMU_MAP_DMA {iova:#x}+{length:#x}", device.ErrorTarget,
                    -rc == Errno.ENOMEM ? "The pinned-memory limit (ulimit -l, RLIMIT_MEMLOCK) is too low for this mapping" : null);
            }
            var buffer = new DmaBuffer(device, this, memory, iova, length, access, reference);
            int at = _buffers.BinarySearch(buffer, HostOrder.Instance);
            _buffers.Insert(at < 0 ? ~at : at, buffer);
            return buffer;
        }
    }

    internal unsafe void Unmap(DmaBuffer buffer)
    {
        lock (_dmaLock)
        {
            if (!_buffers.Remove(buffer))
            {
                return;
            }
            _iova?.Free(buffer.Iova);
            var unmap = new vfio_iommu_type1_dma_unmap
            {
                argsz = (uint)sizeof(vfio_iommu_type1_dma_unmap),
                iova = buffer.Iova,
                size = buffer.Length,
            };
            VfioErrors.Check(Registry.Kernel.Ioctl(Fd, VfioUapi.VFIO_IOMMU_UNMAP_DMA, &unmap), $"VFIO_IOMMU_UNMAP_DMA {buffer.Iova:#x}+{buffer.Length:#x}");
            if (unmap.size != buffer.Length)
            {
                throw new VfioException($"VFIO_IOMMU_UNMAP_DMA {buffer.Iova:#x}+{buffer.Length:#x} unmapped {unmap.size:#x} bytes: the container's mappings and the library's disagree.");
            }
        }
    }

    // The last group is leaving: unmap everything explicitly, then forget it (the kernel drops a
    // container's mappings with its IOMMU anyway).
    private void UnmapAll()
    {
        DmaBuffer[] live;
        lock (_dmaLock)
        {
            live = [.. _buffers];
        }
        foreach (var buffer in live)
        {
            try
            {
                Unmap(buffer);
            }
            catch (VfioException)
            {
            }
            buffer.Orphan();
        }
        lock (_dmaLock)
        {
            _buffers.Clear();
            _iova?.Clear();
            _iova = null;
            _iommuInfo = null;
        }
    }

    private sealed class HostOrder : IComparer<DmaBuffer>
    {
        public static readonly HostOrder Instance = new();

        public int Compare(DmaBuffer? x, DmaBuffer? y) => x!.HostAddress.CompareTo(y!.HostAddress);
    }

    private void SetIommu(IommuGroup group)
    {
        int type;
        if (group.Kind == IommuGroupKind.NoIommu)
        {
            type = VfioUapi.VFIO_NOIOMMU_IOMMU;
        }
        else if (CheckExtension(VfioUapi.VFIO_TYPE1v2_IOMMU))
        {
            type = VfioUapi.VFIO_TYPE1v2_IOMMU;
        }
        else if (CheckExtension(VfioUapi.VFIO_TYPE1_IOMMU))
        {
            type = VfioUapi.VFIO_TYPE1_IOMMU;
        }
        else
        {
            throw new VfioNotSupportedException("The kernel offers neither the type1v2 nor the type1 IOMMU model: load vfio_iommu_type1.");
        }
        VfioErrors.Check(Registry.Kernel.Ioctl(Fd, VfioUapi.VFIO_SET_IOMMU, type), "VFIO_SET_IOMMU", group.ErrorTarget);
        IommuType = type;
    }

    /// <inheritdoc/>
    public override string ToString() => $"container ({IommuTypeName}, {_groups.Count} groups)";
}
