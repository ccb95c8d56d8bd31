using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio;

/// <summary>
/// A VFIO container (<c>/dev/vfio/vfio</c>): the IOMMU context its groups share. The IOMMU type is
/// chosen when the first group joins (type1v2 preferred, type1 as fallback, no-IOMMU for no-IOMMU
/// groups); the container closes when its last group leaves.
/// </summary>
// The container's DMA mappings are kept by its address space (Type1AddressSpace, an
// IommuAddressSpace); the public DMA members here read it.
public sealed class VfioContainer
{
    // The backend's attach lock: guards _groups and IommuType while groups join and leave (see
    // ContainerBackend). Held here only to assert it.
    private readonly Lock _attachLock;
    private IommuGroup[] _groups = [];
    private DirtyPageTracking? _dirtyTracking;

    private VfioContainer(VfioRegistry registry, SafeFd fd, Lock attachLock, bool servedByIommufd)
    {
        Registry = registry;
        Fd = fd;
        _attachLock = attachLock;
        IsIommufdCompat = servedByIommufd;
        AddressSpace = new Type1AddressSpace(registry, fd);
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

    /// <summary>
    /// True when <c>/dev/vfio/vfio</c> is iommufd's compatibility container (a kernel built with
    /// CONFIG_IOMMUFD_VFIO_CONTAINER instead of vfio's own container), as the kernel said when the
    /// container was opened. It emulates the type1v2 IOMMU over an iommufd IOAS, with these
    /// differences: no dirty page tracking (<see cref="StartDirtyPageTracking"/> throws), no count of
    /// mappings (its DMA_AVAIL is always u32's maximum, so <see cref="DmaMappingsAvailable"/> is
    /// <see cref="int.MaxValue"/>; the memory cgroup limits instead). Pinned memory is charged to this
    /// process's locked-memory limit, as type1 charges it.
    /// </summary>
    public bool IsIommufdCompat { get; }

    /// <summary>The groups attached to the container.</summary>
    public IReadOnlyList<IommuGroup> Groups => Volatile.Read(ref _groups);

    /// <summary>
    /// The IOMMU's page sizes, valid IOVA ranges and mapping budget, as the kernel reported them when
    /// first asked after the IOMMU was set (the budget shrinks as buffers are mapped: see
    /// <see cref="QueryIommuInfo"/> and <see cref="DmaMappingsAvailable"/>).
    /// </summary>
    /// <exception cref="VfioNotSupportedException">The container is a no-IOMMU container: it has no IOMMU to describe.</exception>
    public IommuInfo IommuInfo => IsNoIommu ? throw NoIommu("VFIO_IOMMU_GET_INFO") : AddressSpace.IommuInfo;

    /// <summary>How many DMA mappings the container holds.</summary>
    public int DmaMappingCount => AddressSpace.DmaMappingCount;

    /// <summary>
    /// How many more DMA mappings the kernel allows in this container: its DMA_AVAIL report less the
    /// mappings made since, or, on kernels that do not report it, the type1 driver's
    /// <c>dma_entry_limit</c> (read from sysfs, 65535 by default) less the mappings held.
    /// </summary>
    public int DmaMappingsAvailable => AddressSpace.DmaMappingsAvailable;

    internal SafeFd Fd { get; }

    /// <summary>The container's DMA address space: its type1 IOMMU, or physical memory in no-IOMMU mode.</summary>
    internal IommuAddressSpace AddressSpace { get; private set; }

    internal int GroupCount => Volatile.Read(ref _groups).Length;

    /// <summary>Asks the kernel for the IOMMU's info now (VFIO_IOMMU_GET_INFO): the mapping budget as it stands.</summary>
    /// <exception cref="VfioException">The kernel refused (no IOMMU set yet: no group in the container); the error names the container's first group.</exception>
    /// <exception cref="VfioNotSupportedException">The container is a no-IOMMU container: it has no IOMMU to describe.</exception>
    public IommuInfo QueryIommuInfo() => IsNoIommu
        ? throw NoIommu("VFIO_IOMMU_GET_INFO")
        : AddressSpace.QueryIommuInfo(Groups is [var first, ..] ? first.ErrorTarget : default);

    // The no-IOMMU driver answers every IOMMU ioctl with ENOTTY.
    private static VfioNotSupportedException NoIommu(string operation) => new(
        $"A no-IOMMU container has no IOMMU: the kernel answers {operation} with ENOTTY. Its devices reach memory by physical address; DMA buffers carry it in DmaBuffer.Iova.",
        operation, Errno.ENOTTY, default);

    /// <summary>
    /// The IOVA of a host address inside any DMA buffer of this container; null when the address is in
    /// none. O(log n) in the number of buffers and lock-free: it never waits for a map or an unmap.
    /// </summary>
    /// <param name="hostAddress">A host virtual address.</param>
    public ulong? TranslateToIova(nint hostAddress) =>
        AddressSpace.TryTranslateToIova(hostAddress, out ulong iova) ? iova : null;

    /// <summary>The IOVA of a host address inside any DMA buffer of this container; false when it is in none. Lock-free, O(log n).</summary>
    /// <param name="hostAddress">A host virtual address.</param>
    /// <param name="iova">The device's address for it.</param>
    public bool TryTranslateToIova(nint hostAddress, out ulong iova) => AddressSpace.TryTranslateToIova(hostAddress, out iova);

    /// <summary>
    /// Starts the IOMMU's dirty page tracking for every DMA mapping of the container
    /// (<c>VFIO_IOMMU_DIRTY_PAGES</c>, type1v2); dispose the result to stop it. One at a time per container.
    /// See <see cref="DirtyPageTracking"/> for what type1 can and cannot tell.
    /// </summary>
    /// <exception cref="InvalidOperationException">Tracking is active already.</exception>
    /// <exception cref="VfioNotSupportedException">The container has no IOMMU (no-IOMMU mode) or its IOMMU driver has no dirty tracking (iommufd's compatibility container: <see cref="IsIommufdCompat"/>).</exception>
    public DirtyPageTracking StartDirtyPageTracking()
    {
        if (Volatile.Read(ref _dirtyTracking) is { IsActive: true } active)
        {
            throw new InvalidOperationException($"Dirty page tracking of {this} is active already ({active}): dispose it before starting another, since stopping either would stop both.");
        }
        var tracking = DirtyPageTracking.Start(this);
        Volatile.Write(ref _dirtyTracking, tracking);
        return tracking;
    }

    internal void DirtyTrackingStopped(DirtyPageTracking tracking) => Interlocked.CompareExchange(ref _dirtyTracking, null, tracking);

    /// <summary>Opens a new container for a group (named in the errors) and checks the API version.</summary>
    internal static VfioContainer Open(VfioRegistry registry, Lock attachLock, ErrorTarget target)
    {
        var kernel = registry.Kernel;
        string path = kernel.Dev("vfio/vfio");
        int rc = kernel.Open(path, Flags.O_RDWR, out var fd);
        if (rc < 0)
        {
            VfioErrors.Throw(-rc, "open " + path, target, -rc == Errno.ENOENT ? "The vfio module is not loaded, or was built without CONFIG_VFIO_CONTAINER (vfio doctor checks)" : null);
        }
        try
        {
            int version = VfioErrors.Check(kernel.Ioctl(fd, VfioUapi.VFIO_GET_API_VERSION, 0), "VFIO_GET_API_VERSION", target);
            if (version != VfioUapi.VFIO_API_VERSION)
            {
                throw new VfioException($"The kernel speaks VFIO API version {version}; this library speaks {VfioUapi.VFIO_API_VERSION}.");
            }
            bool servedByIommufd = IsServedByIommufd(kernel, fd, target);
            Log.ContainerOpened(registry.Logger, servedByIommufd ? "iommufd's compatibility container" : "vfio's own container");
            return new VfioContainer(registry, fd, attachLock, servedByIommufd);
        }
        catch
        {
            fd.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Whether an open <c>/dev/vfio/vfio</c> is iommufd's compatibility container rather than vfio's
    /// own, asked of the kernel: both register the same misc node (so sysfs cannot tell them apart)
    /// and answer the same VFIO ioctls, but iommufd's is an iommufd file (drivers/iommu/iommufd/main.c
    /// registers its fops for the node), which answers iommufd's own ioctls too. So it reads
    /// IOMMU_OPTION_RLIMIT_MODE, which every iommufd answers (the compatibility container with 1:
    /// charged to the process, as type1 does) and changes nothing. vfio's container passes a number it
    /// does not know to its IOMMU driver: EINVAL before VFIO_SET_IOMMU, ENOTTY from type1 after it.
    /// The one test the doctor, the container and the tools share.
    /// </summary>
    /// <exception cref="VfioException">The kernel answered with another error, which says nothing of the container.</exception>
    internal static unsafe bool IsServedByIommufd(VfioKernel kernel, SafeFd containerFd, ErrorTarget target = default)
    {
        var option = new iommu_option
        {
            size = (uint)sizeof(iommu_option),
            option_id = IommufdUapi.IOMMU_OPTION_RLIMIT_MODE,
            op = IommufdUapi.IOMMU_OPTION_OP_GET,
        };
        int rc = kernel.Ioctl(containerFd, IommufdUapi.IOMMU_OPTION, &option);
        if (rc is -Errno.EINVAL or -Errno.ENOTTY)
        {
            return false;
        }
        VfioErrors.Check(rc, "IOMMU_OPTION (IOMMU_OPTION_RLIMIT_MODE, get) on the container, asking whether iommufd serves it", target);
        return true;
    }

    /// <summary>True when the container has the extension (an IOMMU type, VFIO_UNMAP_ALL, ...).</summary>
    internal bool CheckExtension(int extension, ErrorTarget target = default) =>
        VfioErrors.Check(Registry.Kernel.Ioctl(Fd, VfioUapi.VFIO_CHECK_EXTENSION, extension), "VFIO_CHECK_EXTENSION", target) > 0;

    /// <summary>
    /// Attaches a group: VFIO_GROUP_SET_CONTAINER, then, for the first group, VFIO_SET_IOMMU (the
    /// kernel accepts it only once a group is in). Returns the kernel's errno (negated) when it
    /// refuses the group, so the caller can decide whether another container may take it; throws for
    /// other failures.
    /// </summary>
    internal unsafe int TryAttachLocked(IommuGroup group)
    {
        LockAssert.Held(_attachLock);
        var kernel = Registry.Kernel;
        int containerFd = Fd.Value;
        int rc = kernel.Ioctl(group.Fd, VfioUapi.VFIO_GROUP_SET_CONTAINER, &containerFd);
        if (rc < 0)
        {
            return rc;
        }
        if (_groups.Length == 0)
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
        Volatile.Write(ref _groups, [.. _groups, group]);
        group.Container = this;
        return 0;
    }

    /// <summary>Detaches a group (VFIO_GROUP_UNSET_CONTAINER); every device file of it must be closed.</summary>
    internal void DetachLocked(IommuGroup group)
    {
        LockAssert.Held(_attachLock);
        if (_groups.Length == 1 && _groups[0] == group)
        {
            AddressSpace.UnmapAll();
        }
        Volatile.Write(ref _groups, [.. _groups.Where(g => g != group)]);
        group.Container = null;
        VfioErrors.Check(Registry.Kernel.Ioctl(group.Fd, VfioUapi.VFIO_GROUP_UNSET_CONTAINER, 0), "VFIO_GROUP_UNSET_CONTAINER", group.ErrorTarget);
        if (_groups.Length == 0)
        {
            IommuType = 0;
        }
    }

    internal void Close() => Fd.Dispose();

    private void SetIommu(IommuGroup group)
    {
        int type;
        if (group.Kind == IommuGroupKind.NoIommu)
        {
            type = VfioUapi.VFIO_NOIOMMU_IOMMU;
        }
        else if (CheckExtension(VfioUapi.VFIO_TYPE1v2_IOMMU, group.ErrorTarget))
        {
            type = VfioUapi.VFIO_TYPE1v2_IOMMU;
        }
        else if (CheckExtension(VfioUapi.VFIO_TYPE1_IOMMU, group.ErrorTarget))
        {
            type = VfioUapi.VFIO_TYPE1_IOMMU;
        }
        else
        {
            throw new VfioNotSupportedException("The kernel offers neither the type1v2 nor the type1 IOMMU model: load vfio_iommu_type1.");
        }
        VfioErrors.Check(Registry.Kernel.Ioctl(Fd, VfioUapi.VFIO_SET_IOMMU, type), "VFIO_SET_IOMMU", group.ErrorTarget);
        IommuType = type;
        if (type == VfioUapi.VFIO_NOIOMMU_IOMMU)
        {
            AddressSpace = new NoIommuAddressSpace(Registry);
            Log.NoIommuContainer(Registry.Logger, group.Id);
        }
    }

    /// <inheritdoc/>
    public override string ToString() => $"{(IsIommufdCompat ? "iommufd compatibility container" : "container")} ({IommuTypeName}, {GroupCount} groups)";
}
