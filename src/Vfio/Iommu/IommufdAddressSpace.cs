using System.Globalization;
using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio;

/// <summary>Where iommufd charges the pages it pins for DMA (<c>IOMMU_OPTION_RLIMIT_MODE</c>).</summary>
public enum LockedMemoryAccounting
{
    /// <summary>
    /// Mode 0, iommufd's default: the user's locked memory (<c>user->locked_vm</c>), which all of the
    /// user's processes share, as io_uring and RDMA charge it. RLIMIT_MEMLOCK of the mapping process
    /// caps the user's total.
    /// </summary>
    User,

    /// <summary>
    /// Mode 1: the process's locked memory (<c>mm->locked_vm</c>), as VFIO type1 charges it. Setting
    /// it needs CAP_SYS_RESOURCE and an iommufd with no objects yet; the library only reads it.
    /// </summary>
    Process,
}

/// <summary>
/// The IO address space (IOAS) of the iommufd backend: one per registry, shared by every device the
/// registry opened through its VFIO cdev, allocated when the first of them opens and destroyed after
/// the last closes. The iommufd counterpart of a <see cref="VfioContainer"/>.
/// </summary>
/// <remarks>
/// Its valid IOVA ranges are the holes between what every attached device reserves (its IOMMU's
/// aperture, the MSI window), asked again (<c>IOMMU_IOAS_IOVA_RANGES</c>) after each device attaches
/// and detaches; the page size is the IOAS's IOVA alignment. Buffers are mapped with
/// <c>IOMMU_IOAS_MAP</c> at the IOVA the library chose (<c>IOMMU_IOAS_MAP_FIXED_IOVA</c>), unmapped
/// with <c>IOMMU_IOAS_UNMAP</c>. iommufd counts no mappings: its limits are the locked-memory limit
/// and the memory cgroup.
/// </remarks>
public sealed unsafe class IommufdAddressSpace : IommuAddressSpace
{
    // Ranges a kernel reports: the holes between reserved regions, a handful on x86.
    private const int MaxRanges = 4096;

    private VfioDevice[] _devices = [];

    internal IommufdAddressSpace(VfioRegistry registry, SafeFd iommufd, uint ioasId, LockedMemoryAccounting accounting)
        : base(registry)
    {
        Iommufd = iommufd;
        IoasId = ioasId;
        LockedMemoryAccounting = accounting;
    }

    /// <inheritdoc/>
    public override VfioBackend Backend => VfioBackend.Iommufd;

    /// <summary>The IOAS's id in the registry's iommufd.</summary>
    public uint IoasId { get; }

    /// <summary>Where the kernel charges pinned DMA memory (read with <c>IOMMU_OPTION_RLIMIT_MODE</c> when the iommufd was opened).</summary>
    public LockedMemoryAccounting LockedMemoryAccounting { get; }

    /// <summary>The open devices attached to the IOAS.</summary>
    public IReadOnlyList<VfioDevice> Devices => Volatile.Read(ref _devices);

    /// <summary>The registry's iommufd (<c>/dev/iommu</c>).</summary>
    internal SafeFd Iommufd { get; }

    /// <summary>
    /// Asks the kernel for the IOAS's valid IOVA ranges now (<c>IOMMU_IOAS_IOVA_RANGES</c>, asked for
    /// the count first and then with an array that holds them, as the kernel's EMSGSIZE protocol
    /// wants). The page size is the IOAS's IOVA alignment, at least 4 KiB; there is no mapping budget.
    /// </summary>
    /// <exception cref="VfioException">The kernel refused.</exception>
    internal override IommuInfo QueryIommuInfo(ErrorTarget target)
    {
        uint capacity = 0;
        while (true)
        {
            var ranges = new iommu_iova_range[capacity];
            var cmd = new iommu_ioas_iova_ranges { size = (uint)sizeof(iommu_ioas_iova_ranges), ioas_id = IoasId, num_iovas = capacity };
            int rc;
            fixed (iommu_iova_range* p = ranges)
            {
                cmd.allowed_iovas = (ulong)p;
                rc = Registry.Kernel.Ioctl(Iommufd, IommufdUapi.IOMMU_IOAS_IOVA_RANGES, &cmd);
            }
            // Too small: the kernel filled what fitted and says how many there are.
            if (rc == -Errno.EMSGSIZE && cmd.num_iovas > capacity && cmd.num_iovas <= MaxRanges)
            {
                capacity = cmd.num_iovas;
                continue;
            }
            VfioErrors.Check(rc, string.Create(CultureInfo.InvariantCulture, $"IOMMU_IOAS_IOVA_RANGES (IOAS {IoasId})"), target);
            if (cmd.num_iovas > capacity)
            {
                throw new VfioException($"IOMMU_IOAS_IOVA_RANGES (IOAS {IoasId}) reported {cmd.num_iovas} ranges for an array of {capacity}.");
            }
            var valid = new List<IovaRange>((int)cmd.num_iovas);
            foreach (var range in ranges.AsSpan(0, (int)cmd.num_iovas))
            {
                if (range.last < range.start)
                {
                    throw new VfioException($"IOMMU_IOAS_IOVA_RANGES (IOAS {IoasId}) reported a range that ends (0x{range.last:x}) before it starts (0x{range.start:x}).");
                }
                valid.Add(new IovaRange(range.start, range.last));
            }
            // A fresh IOAS has alignment 1; the host's pages are 4 KiB whatever the IOMMU takes.
            ulong pageSize = Math.Max(cmd.out_iova_alignment, 4096);
            return new IommuInfo(pageSize, valid, DmaMappingsAvailable: null);
        }
    }

    /// <inheritdoc/>
    public override string ToString() => $"IOAS {IoasId} ({Devices.Count} devices)";

    internal void AddDevice(VfioDevice device) => Volatile.Write(ref _devices, [.. _devices, device]);

    internal void RemoveDevice(VfioDevice device) => Volatile.Write(ref _devices, [.. _devices.Where(d => d != device)]);

    /// <summary>Unmaps everything the kernel holds in the IOAS (iova 0, length U64_MAX); 0 or a negative errno.</summary>
    internal int UnmapEverything()
    {
        var unmap = new iommu_ioas_unmap { size = (uint)sizeof(iommu_ioas_unmap), ioas_id = IoasId, iova = 0, length = ulong.MaxValue };
        return Registry.Kernel.Ioctl(Iommufd, IommufdUapi.IOMMU_IOAS_UNMAP, &unmap);
    }

    private protected override string UnmapOperation => "IOMMU_IOAS_UNMAP";

    private protected override int MapCore(nint hostAddress, ulong iova, ulong length, DmaAccess access)
    {
        var map = new iommu_ioas_map
        {
            size = (uint)sizeof(iommu_ioas_map),
            flags = IommufdUapi.IOMMU_IOAS_MAP_FIXED_IOVA
                | ((access & DmaAccess.DeviceReads) != 0 ? IommufdUapi.IOMMU_IOAS_MAP_READABLE : 0)
                | ((access & DmaAccess.DeviceWrites) != 0 ? IommufdUapi.IOMMU_IOAS_MAP_WRITEABLE : 0),
            ioas_id = IoasId,
            user_va = (ulong)hostAddress,
            length = length,
            iova = iova,
        };
        return Registry.Kernel.Ioctl(Iommufd, IommufdUapi.IOMMU_IOAS_MAP, &map);
    }

    private protected override int UnmapCore(ulong iova, ulong length, out ulong unmapped)
    {
        var unmap = new iommu_ioas_unmap { size = (uint)sizeof(iommu_ioas_unmap), ioas_id = IoasId, iova = iova, length = length };
        int rc = Registry.Kernel.Ioctl(Iommufd, IommufdUapi.IOMMU_IOAS_UNMAP, &unmap);
        unmapped = unmap.length;
        return rc;
    }

    // iommufd has no count of mappings (no dma_entry_limit).
    private protected override int ReadEntryLimit() => int.MaxValue;

    private protected override VfioResourceLimitException BudgetSpent(VfioDevice device, int mappings) => new(
        $"Cannot map a DMA buffer for {device.Name}: the IOAS holds {mappings} DMA mappings, as many as the library can count.",
        VfioResourceLimitException.DmaEntryLimit);

    // The kernel's refusals of IOMMU_IOAS_MAP (iommufd_ioas_map, iopt_map_user_pages), each turned into what to do.
    private protected override VfioException MapError(int errno, ulong iova, ulong length, VfioDevice device)
    {
        string operation = string.Create(CultureInfo.InvariantCulture, $"IOMMU_IOAS_MAP 0x{iova:x}+0x{length:x} (IOAS {IoasId})");
        var target = device.ErrorTarget;
        return errno switch
        {
            Errno.ENOMEM => MemoryLockError(errno, operation, target, ChargedTo(LockedMemoryAccounting)),
            Errno.EFAULT => VfioErrors.Create(errno, operation, target,
                "The kernel could not pin the buffer's memory: it is not mapped, or not memory the IOMMU can use (a device BAR, a file mapping without pages)"),
            Errno.EEXIST => VfioErrors.Create(errno, operation, target,
                "The kernel already maps part of this IOVA range in the IOAS: a mapping made outside this library overlaps it"),
            Errno.EINVAL => VfioErrors.Create(errno, operation, target,
                "The kernel refused the range: it must be aligned to the IOAS's IOVA alignment and outside every attached device's reserved ranges (the MSI window)"),
            _ => VfioErrors.Create(errno, operation, target),
        };
    }

    /// <summary>Where the pages went, for the locked-memory error: what each accounting mode means for the user.</summary>
    internal static string ChargedTo(LockedMemoryAccounting accounting) => accounting == LockedMemoryAccounting.Process
        ? "iommufd charges to this process (IOMMU_OPTION_RLIMIT_MODE 1, as VFIO type1 does)"
        : "iommufd charges to the user's locked memory, shared by all of the user's processes (IOMMU_OPTION_RLIMIT_MODE 0, its default)";
}
