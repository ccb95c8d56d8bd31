using System.Globalization;
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
    /// <summary>The type1 IOMMU driver's default <c>dma_entry_limit</c>: DMA mappings per container.</summary>
    internal const int DefaultDmaEntryLimit = ushort.MaxValue;

    private readonly List<IommuGroup> _groups = [];
    private readonly Lock _dmaLock = new();
    private readonly HashSet<DmaBuffer> _buffers = [];
    private readonly IovaTranslation _translation = new();
    private IommuInfo? _iommuInfo;
    private IovaAllocator? _iova;
    private int? _entryLimit;

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

    /// <summary>
    /// The IOMMU's page sizes, valid IOVA ranges and mapping budget, as the kernel reported them when
    /// first asked after the IOMMU was set (the budget shrinks as buffers are mapped: see
    /// <see cref="QueryIommuInfo"/> and <see cref="DmaMappingsAvailable"/>).
    /// </summary>
    public IommuInfo IommuInfo
    {
        get
        {
            lock (_dmaLock)
            {
                return IommuInfoLocked();
            }
        }
    }

    /// <summary>Asks the kernel for the IOMMU's info now (VFIO_IOMMU_GET_INFO): the mapping budget as it stands.</summary>
    /// <exception cref="VfioException">The kernel refused (no IOMMU set yet: no group in the container).</exception>
    public IommuInfo QueryIommuInfo() => IommuInfo.Query(Registry.Kernel, Fd);

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
    /// How many more DMA mappings the kernel allows in this container: its DMA_AVAIL report less the
    /// mappings made since, or, on kernels that do not report it, the type1 driver's
    /// <c>dma_entry_limit</c> (read from sysfs, 65535 by default) less the mappings held.
    /// </summary>
    public int DmaMappingsAvailable
    {
        get
        {
            lock (_dmaLock)
            {
                return MappingsAvailableLocked();
            }
        }
    }

    /// <summary>
    /// The IOVA of a host address inside any DMA buffer of this container; null when the address is in
    /// none. O(log n) in the number of buffers and lock-free: it never waits for a map or an unmap.
    /// </summary>
    /// <param name="hostAddress">A host virtual address.</param>
    public ulong? TranslateToIova(nint hostAddress) =>
        _translation.TryTranslate(hostAddress, out ulong iova) ? iova : null;

    /// <summary>The IOVA of a host address inside any DMA buffer of this container; false when it is in none. Lock-free, O(log n).</summary>
    /// <param name="hostAddress">A host virtual address.</param>
    /// <param name="iova">The device's address for it.</param>
    public bool TryTranslateToIova(nint hostAddress, out ulong iova) => _translation.TryTranslate(hostAddress, out iova);

    private IommuInfo IommuInfoLocked() => _iommuInfo ??= IommuInfo.Query(Registry.Kernel, Fd);

    private int MappingsAvailableLocked()
    {
        var info = IommuInfoLocked();
        if (info.DmaMappingsAvailable is uint reported)
        {
            // Asked while the container held no mapping (first use, or after the last group left).
            return (int)Math.Max(0, reported - (long)_buffers.Count);
        }
        _entryLimit ??= ReadEntryLimit();
        return Math.Max(0, _entryLimit.Value - _buffers.Count);
    }

    // Kernels before 5.10 do not report DMA_AVAIL: the module parameter says the limit.
    private int ReadEntryLimit()
    {
        string? text = Registry.Sysfs.ReadText("module/vfio_iommu_type1/parameters/dma_entry_limit");
        return int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int limit) ? limit : DefaultDmaEntryLimit;
    }

    /// <summary>
    /// Reserves the IOVA range for a buffer of <paramref name="length"/> bytes before its memory is
    /// allocated, so that a buffer the container cannot map costs no memory: the container's mapping
    /// limit, the IOMMU's valid ranges, the device's DMA mask and the free space are checked here.
    /// Give the range to <see cref="Map"/>, or back with <see cref="ReleaseIova"/>.
    /// </summary>
    internal ulong ReserveIova(VfioDevice device, ulong length, ulong? fixedIova, ulong alignment = 0)
    {
        lock (_dmaLock)
        {
            var info = IommuInfoLocked();
            _iova ??= new IovaAllocator(info.IovaRanges, info.MinPageSize);
            if (MappingsAvailableLocked() == 0)
            {
                throw new VfioResourceLimitException(
                    $"Cannot map a DMA buffer for {device.Name}: the container holds {_buffers.Count} DMA mappings, all the kernel allows " +
                    "(the vfio_iommu_type1 module parameter dma_entry_limit). Use fewer, larger buffers, or raise the limit: " +
                    "echo N > /sys/module/vfio_iommu_type1/parameters/dma_entry_limit (as root, before the container is opened).",
                    VfioResourceLimitException.DmaEntryLimit);
            }
            if (fixedIova is not ulong wanted)
            {
                return _iova.Allocate(length, device.DmaMask, alignment)
                    ?? throw new VfioException($"Cannot map a DMA buffer for {device.Name}: no free IOVA range of 0x{length:x} bytes below its DMA mask 0x{device.DmaMask:x} inside the IOMMU's valid ranges ({FormatRanges(info)}).");
            }
            if (!info.IovaRanges.Any(r => r.Contains(wanted, length)))
            {
                throw new VfioException($"Cannot map a DMA buffer for {device.Name}: IOVA range 0x{wanted:x}+0x{length:x} lies outside the IOMMU's valid ranges ({FormatRanges(info)}).");
            }
            if (wanted + length - 1 > device.DmaMask)
            {
                throw new VfioException($"Cannot map a DMA buffer for {device.Name}: IOVA range 0x{wanted:x}+0x{length:x} exceeds its DMA mask 0x{device.DmaMask:x}.");
            }
            if (!_iova.Reserve(wanted, length))
            {
                throw new VfioException($"Cannot map a DMA buffer for {device.Name}: IOVA range 0x{wanted:x}+0x{length:x} overlaps a DMA mapping of this container; choose another IOVA or let the library choose.");
            }
            return wanted;
        }
    }

    /// <summary>Gives back a range from <see cref="ReserveIova"/> that was not mapped.</summary>
    internal void ReleaseIova(ulong iova)
    {
        lock (_dmaLock)
        {
            _iova?.Free(iova);
        }
    }

    /// <summary>Maps <paramref name="memory"/> at an IOVA range from <see cref="ReserveIova"/>; on failure the range is given back.</summary>
    internal unsafe DmaBuffer Map(VfioDevice device, SafeMapping memory, ulong iova, ulong length, DmaAccess access, DeviceReference reference)
    {
        lock (_dmaLock)
        {
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
                _iova?.Free(iova);
                throw MapError(-rc, iova, length, device);
            }
            var buffer = new DmaBuffer(device, this, memory, iova, length, access, reference);
            _buffers.Add(buffer);
            _translation.Add(memory.Address, length, iova);
            Log.DmaMapped(Registry.Logger, device.Name, iova, length);
            return buffer;
        }
    }

    private static string FormatRanges(IommuInfo info) =>
        string.Join(", ", info.IovaRanges.Select(r => string.Create(CultureInfo.InvariantCulture, $"0x{r.Start:x}-0x{r.End:x}")));

    // The kernel's refusals of VFIO_IOMMU_MAP_DMA, each turned into what to do about it.
    private static VfioException MapError(int errno, ulong iova, ulong length, VfioDevice device)
    {
        string operation = string.Create(CultureInfo.InvariantCulture, $"VFIO_IOMMU_MAP_DMA 0x{iova:x}+0x{length:x}");
        var target = device.ErrorTarget;
        switch (errno)
        {
            case Errno.ENOMEM:
                return new VfioResourceLimitException(
                    VfioErrors.Create(errno, operation, target,
                        "Pinning the buffer would exceed the locked-memory limit (RLIMIT_MEMLOCK): raise it with ulimit -l " +
                        "(or LimitMEMLOCK= for a systemd service, memlock in /etc/security/limits.conf) to cover all DMA buffers, or run with CAP_IPC_LOCK").Message,
                    VfioResourceLimitException.MemoryLock, operation, errno, target);
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

    /// <summary>
    /// Unmaps a buffer. When the kernel refuses, the container keeps it in its books (the device may
    /// still reach it) and tries again when its last group leaves.
    /// </summary>
    internal unsafe void Unmap(DmaBuffer buffer)
    {
        lock (_dmaLock)
        {
            if (!_buffers.Contains(buffer))
            {
                return;
            }
            var unmap = new vfio_iommu_type1_dma_unmap
            {
                argsz = (uint)sizeof(vfio_iommu_type1_dma_unmap),
                iova = buffer.Iova,
                size = buffer.Length,
            };
            string operation = string.Create(CultureInfo.InvariantCulture, $"VFIO_IOMMU_UNMAP_DMA 0x{buffer.Iova:x}+0x{buffer.Length:x}");
            VfioErrors.Check(Registry.Kernel.Ioctl(Fd, VfioUapi.VFIO_IOMMU_UNMAP_DMA, &unmap), operation);
            _buffers.Remove(buffer);
            _translation.Remove(buffer.HostAddress);
            _iova?.Free(buffer.Iova);
            Log.DmaUnmapped(Registry.Logger, buffer.Iova, buffer.Length);
            if (unmap.size != buffer.Length)
            {
                throw new VfioException($"{operation} unmapped 0x{unmap.size:x} bytes: the container's mappings and the library's disagree.");
            }
        }
    }

    // The last group is leaving: unmap everything explicitly, then forget it (the kernel drops a
    // container's mappings with its IOMMU anyway, so a failed unmap leaks nothing; it is logged).
    private void UnmapAll()
    {
        DmaBuffer[] live;
        lock (_dmaLock)
        {
            live = [.. _buffers];
        }
        if (live.Length > 0)
        {
            Log.DmaUnmappingAll(Registry.Logger, live.Length);
        }
        foreach (var buffer in live)
        {
            try
            {
                Unmap(buffer);
            }
            catch (VfioException e)
            {
                Log.DmaUnmapFailed(Registry.Logger, buffer.Iova, buffer.Length, e);
            }
            buffer.Orphan();
        }
        lock (_dmaLock)
        {
            _buffers.Clear();
            _translation.Clear();
            _iova = null;
            _iommuInfo = null;
            _entryLimit = null;
        }
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
