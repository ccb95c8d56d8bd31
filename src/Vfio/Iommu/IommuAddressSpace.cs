using System.Globalization;
using Vfio.Interop;

namespace Vfio;

/// <summary>
/// An IOMMU address space that maps DMA for a registry's devices: a legacy container's type1 IOMMU, or
/// the IO address space (IOAS) of the iommufd backend (<see cref="IommufdAddressSpace"/>). An open
/// device's <see cref="VfioDevice.AddressSpace"/> is the one its DMA buffers are mapped into.
/// </summary>
/// <remarks>
/// It keeps the books of every <see cref="DmaBuffer"/> mapped into it (IOVA allocation inside the
/// IOMMU's valid ranges and below a device's mask, the lock-free host-to-IOVA translation, the
/// kernel's mapping budget) around the map and unmap calls of one IOMMU interface: the legacy one
/// (an internal type1 address space, which <see cref="VfioContainer"/> shows) or the iommufd one.
/// DMA buffers talk to this class only.
/// </remarks>
public abstract class IommuAddressSpace
{
    // Guards _buffers, _iova, _iommuInfo and _entryLimit, and orders map and unmap calls. Taken after
    // the backends' attach locks (a group leaving unmaps everything, a device attaching to an IOAS
    // changes its ranges) and before nothing: no other lock is taken while it is held. The map and
    // unmap ioctls are made under it, so that the books and the kernel's mappings never disagree.
    private readonly Lock _dmaLock = new();
    private readonly HashSet<DmaBuffer> _buffers = [];
    // IOVA ranges reserved for buffers whose memory is being allocated (ReserveIova to Map or
    // ReleaseIova), by IOVA: a refresh of the ranges keeps them taken, as it keeps the mapped ones.
    private readonly Dictionary<ulong, ulong> _reserved = [];
    private readonly IovaTranslation _translation = new();
    private IommuInfo? _iommuInfo;
    private IovaAllocator? _iova;
    private int? _entryLimit;

    private protected IommuAddressSpace(VfioRegistry registry)
    {
        Registry = registry;
    }

    /// <summary>The registry whose devices map into the address space.</summary>
    public VfioRegistry Registry { get; }

    /// <summary>The backend the address space belongs to.</summary>
    public abstract VfioBackend Backend { get; }

    /// <summary>
    /// The IOMMU's page sizes and valid IOVA ranges (and, for a type1 container, its mapping budget) as
    /// the kernel reported them when first asked (an IOAS asks again after every attach and detach).
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

    /// <summary>The IOMMU's info, as <see cref="IommuInfo"/>, asked for a device: a failed query names it.</summary>
    public IommuInfo IommuInfoFor(VfioDevice device)
    {
        lock (_dmaLock)
        {
            return IommuInfoLocked(device.ErrorTarget);
        }
    }

    /// <summary>How many DMA mappings the address space holds.</summary>
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
    /// How many more DMA mappings the kernel allows: for a type1 container see
    /// <see cref="VfioContainer.DmaMappingsAvailable"/>; iommufd counts no mappings (its limits are
    /// memory: RLIMIT_MEMLOCK and the memory cgroup), so for an IOAS it is <see cref="int.MaxValue"/>
    /// less the mappings held.
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
    /// The IOVA of a host address inside any DMA buffer mapped here; null when it is in none. O(log n)
    /// in the number of buffers and lock-free: it never waits for a map or an unmap.
    /// </summary>
    /// <param name="hostAddress">A host virtual address.</param>
    public ulong? TranslateToIova(nint hostAddress) => _translation.TryTranslate(hostAddress, out ulong iova) ? iova : null;

    /// <summary>The IOVA of a host address inside any DMA buffer mapped here; false when it is in none. Lock-free, O(log n).</summary>
    /// <param name="hostAddress">A host virtual address.</param>
    /// <param name="iova">The device's address for it.</param>
    public bool TryTranslateToIova(nint hostAddress, out ulong iova) => _translation.TryTranslate(hostAddress, out iova);

    /// <summary>Asks the kernel for the IOMMU's info now: the valid ranges and the mapping budget as they stand.</summary>
    /// <exception cref="VfioException">The kernel refused.</exception>
    public IommuInfo QueryIommuInfo() => QueryIommuInfo(default);

    /// <summary>Asks the kernel for the IOMMU's info now; errors name <paramref name="target"/>.</summary>
    internal abstract IommuInfo QueryIommuInfo(ErrorTarget target);

    /// <summary>Maps <paramref name="length"/> bytes at <paramref name="hostAddress"/> at <paramref name="iova"/>; 0 or a negative errno.</summary>
    private protected abstract int MapCore(nint hostAddress, ulong iova, ulong length, DmaAccess access);

    /// <summary>Unmaps the range; 0 or a negative errno, with the bytes the kernel unmapped.</summary>
    private protected abstract int UnmapCore(ulong iova, ulong length, out ulong unmapped);

    /// <summary>
    /// Unmaps the range and has the kernel set the bits of its dirty pages in <paramref name="dirty"/>,
    /// one per <paramref name="pageSize"/> bytes; 0 or a negative errno. Only type1 has it
    /// (<c>VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP</c>); elsewhere ENOTTY.
    /// </summary>
    private protected virtual int UnmapDirtyCore(ulong iova, ulong length, Span<ulong> dirty, ulong pageSize, out ulong unmapped)
    {
        unmapped = 0;
        return -Errno.ENOTTY;
    }

    /// <summary>The name of the unmap call, for errors ("VFIO_IOMMU_UNMAP_DMA").</summary>
    private protected abstract string UnmapOperation { get; }

    /// <summary>The mapping limit when the kernel reports no budget of its own.</summary>
    private protected abstract int ReadEntryLimit();

    /// <summary>The error for a refused map: which limit or rule the kernel's errno stands for, and what to do.</summary>
    private protected abstract VfioException MapError(int errno, ulong iova, ulong length, VfioDevice device);

    /// <summary>The error for a map refused before the kernel is asked, because the mapping budget is spent.</summary>
    private protected abstract VfioResourceLimitException BudgetSpent(VfioDevice device, int mappings);

    /// <summary>
    /// The error for a map the locked-memory limit refused (ENOMEM while pinning): the same advice for
    /// both backends, with where the kernel charged the pages (<paramref name="charged"/>).
    /// </summary>
    private protected static VfioResourceLimitException MemoryLockError(int errno, string operation, ErrorTarget target, string charged) => new(
        VfioErrors.Create(errno, operation, target,
            $"Pinning the buffer would exceed the locked-memory limit (RLIMIT_MEMLOCK), which {charged}: raise it with ulimit -l " +
            "(or LimitMEMLOCK= for a systemd service, memlock in /etc/security/limits.conf) to cover all DMA buffers, or run with CAP_IPC_LOCK").Message,
        VfioResourceLimitException.MemoryLock, operation, errno, target);

    /// <summary>
    /// The address space's ranges changed (an IOAS after a device attached or detached): the next use
    /// asks the kernel again, and the allocator is rebuilt around the buffers still mapped.
    /// </summary>
    internal void RefreshRanges()
    {
        lock (_dmaLock)
        {
            _iommuInfo = null;
            if (_iova is null)
            {
                return;
            }
            var info = IommuInfoLocked();
            var allocator = new IovaAllocator(info.IovaRanges, info.MinPageSize);
            foreach (var buffer in _buffers)
            {
                // The kernel refuses an attach whose reserved ranges meet a mapping (EADDRINUSE), so
                // every live buffer still fits.
                allocator.Reserve(buffer.Iova, buffer.Length);
            }
            foreach (var (iova, length) in _reserved)
            {
                // A range not yet mapped may now meet a reserved region; its map then fails with the
                // kernel's error, which names the range.
                allocator.Reserve(iova, length);
            }
            _iova = allocator;
        }
    }

    /// <summary>
    /// The pages DMA memory of <paramref name="length"/> bytes needs here: what the caller asked for,
    /// unless the address space needs more (physically contiguous memory, without an IOMMU).
    /// </summary>
    internal virtual DmaPages PagesFor(VfioDevice device, ulong length, DmaPages pages) => pages;

    /// <summary>mmap flags DMA memory needs here besides private and populated (MAP_LOCKED, without an IOMMU).</summary>
    internal virtual int MemoryFlags => 0;

    /// <summary>Why a buffer needs hugepages here when the caller did not ask for them, for the error when there are none; null when it did ask.</summary>
    internal virtual string? HugePagesReason(DmaPages requested) => null;

    /// <summary>
    /// True when the device reaches DMA memory at an address the memory has whatever the IOMMU would do
    /// (without an IOMMU: its physical address), so no IOVA is chosen; throws, before any memory is
    /// allocated, for a buffer at <paramref name="fixedIova"/> such an address space cannot give.
    /// </summary>
    private protected virtual bool AddressFromMemory(VfioDevice device, ulong? fixedIova) => false;

    /// <summary>The device address of <paramref name="memory"/> where <see cref="AddressFromMemory"/> holds, checked for the device.</summary>
    private protected virtual ulong DeviceAddressOf(VfioDevice device, SafeMapping memory, ulong length) =>
        throw new InvalidOperationException("This address space chooses IOVAs.");

    /// <summary>
    /// Reserves the IOVA range for a buffer of <paramref name="length"/> bytes before its memory is
    /// allocated, so that a buffer the address space cannot map costs no memory: the mapping budget,
    /// the IOMMU's valid ranges, the device's DMA mask and the free space are checked here. Give the
    /// range to <see cref="Map"/>, or back with <see cref="ReleaseIova"/>. Null when the device
    /// address comes from the memory itself (<see cref="AddressFromMemory"/>): give <see cref="Map"/> null.
    /// </summary>
    internal ulong? ReserveIova(VfioDevice device, ulong length, ulong? fixedIova, ulong alignment = 0)
    {
        lock (_dmaLock)
        {
            if (AddressFromMemory(device, fixedIova))
            {
                return null;
            }
            var info = IommuInfoLocked(device.ErrorTarget);
            _iova ??= new IovaAllocator(info.IovaRanges, info.MinPageSize);
            if (MappingsAvailableLocked() == 0)
            {
                throw BudgetSpent(device, _buffers.Count);
            }
            if (fixedIova is not ulong wanted)
            {
                ulong chosen = _iova.Allocate(length, device.DmaMask, alignment)
                    ?? throw new VfioException($"Cannot map a DMA buffer for {device.Name}: no free IOVA range of 0x{length:x} bytes below its DMA mask 0x{device.DmaMask:x} inside the IOMMU's valid ranges ({FormatRanges(info)}).");
                _reserved[chosen] = length;
                return chosen;
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
            _reserved[wanted] = length;
            return wanted;
        }
    }

    /// <summary>Gives back a range from <see cref="ReserveIova"/> that was not mapped.</summary>
    internal void ReleaseIova(ulong iova)
    {
        lock (_dmaLock)
        {
            _reserved.Remove(iova);
            _iova?.Free(iova);
        }
    }

    /// <summary>
    /// Maps <paramref name="memory"/> at an IOVA range from <see cref="ReserveIova"/> (on failure the
    /// range is given back), or, for null, at the device address the memory has.
    /// </summary>
    internal DmaBuffer Map(VfioDevice device, SafeMapping memory, ulong? reserved, ulong length, DmaAccess access, DeviceReference reference)
    {
        lock (_dmaLock)
        {
            if (reserved is ulong taken)
            {
                _reserved.Remove(taken);
            }
            ulong iova;
            try
            {
                iova = reserved ?? DeviceAddressOf(device, memory, length);
            }
            catch when (reserved is ulong range)
            {
                _iova?.Free(range);
                throw;
            }
            int rc = MapCore(memory.Address, iova, length, access);
            if (rc < 0)
            {
                if (reserved.HasValue)
                {
                    _iova?.Free(iova);
                }
                throw MapError(-rc, iova, length, device);
            }
            var buffer = new DmaBuffer(device, this, memory, iova, length, access, reference);
            _buffers.Add(buffer);
            _translation.Add(memory.Address, length, iova);
            Log.DmaMapped(Registry.Logger, device.Name, iova, length);
            return buffer;
        }
    }

    /// <summary>
    /// Unmaps a buffer. When the kernel refuses, the address space keeps it in its books (the device
    /// may still reach it) and tries again when its last device leaves.
    /// </summary>
    internal void Unmap(DmaBuffer buffer) => Unmap(buffer, default, 0);

    /// <summary>
    /// Unmaps a buffer and, when <paramref name="dirty"/> is not empty, has the kernel fill it with the
    /// buffer's dirty pages in the same call (see <see cref="UnmapDirtyCore"/>).
    /// </summary>
    internal void Unmap(DmaBuffer buffer, Span<ulong> dirty, ulong pageSize)
    {
        lock (_dmaLock)
        {
            if (!_buffers.Contains(buffer))
            {
                return;
            }
            int rc = dirty.IsEmpty ? UnmapCore(buffer.Iova, buffer.Length, out ulong unmapped) : UnmapDirtyCore(buffer.Iova, buffer.Length, dirty, pageSize, out unmapped);
            if (rc < 0)
            {
                VfioErrors.Check(rc, UnmapOperationOf(buffer));
            }
            _buffers.Remove(buffer);
            _translation.Remove(buffer.HostAddress);
            _iova?.Free(buffer.Iova);
            Log.DmaUnmapped(Registry.Logger, buffer.Iova, buffer.Length);
            if (unmapped != buffer.Length)
            {
                throw new VfioException($"{UnmapOperationOf(buffer)} unmapped 0x{unmapped:x} bytes: the container's mappings and the library's disagree.");
            }
        }
    }

    // Named only when something went wrong: an unmap that succeeds formats nothing.
    private string UnmapOperationOf(DmaBuffer buffer) =>
        string.Create(CultureInfo.InvariantCulture, $"{UnmapOperation} 0x{buffer.Iova:x}+0x{buffer.Length:x}");

    /// <summary>The buffers mapped in the IOVA range, or reaching into it, in IOVA order.</summary>
    internal List<DmaBuffer> BuffersOverlapping(ulong iova, ulong length)
    {
        lock (_dmaLock)
        {
            return [.. _buffers.Where(b => b.Iova < iova + length && iova < b.Iova + b.Length).OrderBy(b => b.Iova)];
        }
    }

    // The last device is leaving: unmap everything explicitly, then forget it (the kernel drops the
    // mappings with the IOMMU anyway, so a failed unmap leaks nothing; it is logged).
    internal void UnmapAll()
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

    // The info as first asked; a query's errors name the object asking (a device allocating DMA).
    private IommuInfo IommuInfoLocked(ErrorTarget target = default)
    {
        LockAssert.Held(_dmaLock);
        return _iommuInfo ??= QueryIommuInfo(target);
    }

    private int MappingsAvailableLocked()
    {
        LockAssert.Held(_dmaLock);
        var info = IommuInfoLocked();
        if (info.DmaMappingsAvailable is uint reported)
        {
            // Asked while the address space held no mapping (first use, or after the last device left).
            // iommufd's compatibility container reports u32's maximum (it counts nothing): int's is the most.
            return (int)Math.Clamp(reported - (long)_buffers.Count, 0, int.MaxValue);
        }
        _entryLimit ??= ReadEntryLimit();
        return Math.Max(0, _entryLimit.Value - _buffers.Count);
    }

    private static string FormatRanges(IommuInfo info) =>
        string.Join(", ", info.IovaRanges.Select(r => string.Create(CultureInfo.InvariantCulture, $"0x{r.Start:x}-0x{r.End:x}")));
}
