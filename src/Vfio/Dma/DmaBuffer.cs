using System.Globalization;
using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio;

/// <summary>Which way a device may use a DMA buffer.</summary>
[Flags]
public enum DmaAccess
{
    /// <summary>The device reads the buffer (host to device).</summary>
    DeviceReads = 1,

    /// <summary>The device writes the buffer (device to host).</summary>
    DeviceWrites = 2,

    /// <summary>Both.</summary>
    ReadWrite = DeviceReads | DeviceWrites,
}

/// <summary>Which pages back a DMA buffer.</summary>
public enum DmaPages
{
    /// <summary>Normal pages (4 KiB on x86-64); the length is rounded up to the IOMMU page size.</summary>
    Normal,

    /// <summary>
    /// 2 MiB hugepages (<c>MAP_HUGETLB</c>): fewer IOTLB entries, physically contiguous 2 MiB blocks.
    /// The length is rounded up to 2 MiB, and the IOVA is 2 MiB-aligned. Throws a
    /// <see cref="VfioResourceLimitException"/> when the system has too few free hugepages (reserve them
    /// with <c>echo N &gt; /proc/sys/vm/nr_hugepages</c> as root).
    /// </summary>
    Huge,

    /// <summary>2 MiB hugepages when the system has enough free, otherwise normal pages (logged).</summary>
    HugeIfAvailable,
}

/// <summary>
/// Page-aligned host memory mapped into the device's IOMMU at <see cref="Iova"/>: the address the
/// device uses for it. Disposing it unmaps it from the IOMMU and frees the memory.
/// </summary>
/// <remarks>
/// The buffer holds a reference on its device, so unregistering waits for it. When the device
/// closes, buffers still alive are unmapped from the IOMMU (the device can no longer reach them);
/// their memory stays valid until they are disposed.
/// </remarks>
public sealed unsafe class DmaBuffer : IDisposable, IDeviceResource
{
    private readonly VfioDevice _device;
    private readonly SafeMapping _memory;
    private IommuAddressSpace? _space;
    private DeviceReference _reference;
    private int _state; // 0 mapped, 1 unmapped (revoked), 2 disposed
    private int _memoryLeft; // the errno of a refused munmap of the memory (still mapped), retried by the next Dispose; 0 when none

    /// <summary>The size of a hugepage DMA buffers use: 2 MiB.</summary>
    public const ulong HugePageSize = 2UL << 20;

    internal DmaBuffer(VfioDevice device, IommuAddressSpace space, SafeMapping memory, ulong iova, ulong length, DmaAccess access, DeviceReference reference)
    {
        _device = device;
        _space = space;
        _memory = memory;
        Iova = iova;
        Length = length;
        Access = access;
        _reference = reference;
    }

    /// <summary>The address the device uses for the buffer.</summary>
    public ulong Iova { get; }

    /// <summary>The buffer's length in bytes (a multiple of the IOMMU page size).</summary>
    public ulong Length { get; }

    /// <summary>Which way the device may use it.</summary>
    public DmaAccess Access { get; }

    /// <summary>True when 2 MiB hugepages back the buffer.</summary>
    public bool IsHugePages { get; internal set; }

    /// <summary>True while the device can reach the buffer through the IOMMU.</summary>
    public bool IsMapped => Volatile.Read(ref _state) == 0;

    /// <summary>The buffer's memory.</summary>
    /// <exception cref="ObjectDisposedException">The buffer was disposed.</exception>
    public Span<byte> Span
    {
        get
        {
            ObjectDisposedException.ThrowIf(Volatile.Read(ref _state) == 2, this);
            return new Span<byte>((void*)_memory.Address, checked((int)Length));
        }
    }

    /// <summary>The address space the buffer is mapped in; null once unmapped.</summary>
    internal IommuAddressSpace? Space => Volatile.Read(ref _space);

    /// <summary>The buffer's host virtual address (what <see cref="VfioContainer.TranslateToIova"/> takes).</summary>
    public nint HostAddress => _memory.Address;

    /// <summary>The IOVA of byte <paramref name="offset"/> of the buffer.</summary>
    /// <param name="offset">An offset inside the buffer.</param>
    public ulong IovaAt(ulong offset)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(offset, Length);
        return Iova + offset;
    }

    /// <summary>Unmaps the buffer from the IOMMU and frees its memory; a munmap of the memory the kernel refused, now or at an earlier dispose, is tried again.</summary>
    /// <exception cref="VfioException">The kernel refused the munmap of the buffer's memory (errno in <see cref="VfioException.Errno"/>):
    /// the memory is still mapped in the process, no longer reachable by the device; dispose again to retry.</exception>
    public void Dispose()
    {
        if (Unmap())
        {
            _device.ForgetResource(this);
        }
        if (Interlocked.Exchange(ref _state, 2) != 2)
        {
            _memory.UnmapFailed = (_, errno) => RecordMemoryLeft(errno);
            _memory.Dispose();
        }
        else if (Interlocked.Exchange(ref _memoryLeft, 0) != 0)
        {
            int r = _device.Kernel.Munmap(_memory.Address, _memory.Length);
            if (r < 0)
            {
                RecordMemoryLeft(-r);
            }
        }
        if (Volatile.Read(ref _memoryLeft) is not 0 and int errno)
        {
            throw VfioErrors.Create(errno, "munmap", _device.ErrorTarget, string.Create(System.Globalization.CultureInfo.InvariantCulture,
                $"{this}: its {_memory.Length}-byte memory at 0x{_memory.Address:x} is still mapped in this process (the device no longer reaches it); dispose the buffer again to retry"));
        }
    }

    /// <summary>The kernel refused the munmap of the buffer's memory: logged, and kept for the next Dispose.</summary>
    private void RecordMemoryLeft(int errno)
    {
        Log.DmaMemoryUnmapFailed(_device.Registry.Logger, Iova, Length, _device.Name, Errno.Name(errno));
        Volatile.Write(ref _memoryLeft, errno);
    }

    /// <inheritdoc/>
    public override string ToString() => $"DMA buffer 0x{Iova:x}+0x{Length:x} of {_device.Name}";

    bool IDeviceResource.Revoke() => Unmap();

    /// <summary>
    /// Unmaps the buffer and reads its dirty pages in the same kernel call (type1's
    /// <c>VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP</c>, see <see cref="DirtyPageTracking.Unmap"/>); when the
    /// kernel refuses, it throws and the buffer stays mapped.
    /// </summary>
    internal void UnmapReadingDirty(Span<ulong> dirty, ulong pageSize)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _state) == 2, this);
        var space = Volatile.Read(ref _space);
        if (space is null || Interlocked.CompareExchange(ref _state, 1, 0) != 0)
        {
            throw new InvalidOperationException($"{this} is not mapped any more: its device closed, or it was unmapped already.");
        }
        try
        {
            space.Unmap(this, dirty, pageSize);
        }
        catch
        {
            Interlocked.CompareExchange(ref _state, 0, 1);
            throw;
        }
        Volatile.Write(ref _space, null);
        _reference.Dispose();
        _device.ForgetResource(this);
    }

    /// <summary>The address space dropped every mapping (its last device left): nothing to unmap any more.</summary>
    internal void Orphan() => Volatile.Write(ref _space, null);

    private bool Unmap()
    {
        if (Interlocked.CompareExchange(ref _state, 1, 0) != 0)
        {
            return false;
        }
        var space = Interlocked.Exchange(ref _space, null);
        try
        {
            space?.Unmap(this);
        }
        catch (VfioException e)
        {
            // Dispose and device close must not throw; the address space keeps the mapping and unmaps
            // it again when its last device leaves (the kernel drops it with the IOMMU in any case).
            Log.DmaUnmapFailed(space!.Registry.Logger, Iova, Length, e);
        }
        finally
        {
            _reference.Dispose();
        }
        return true;
    }

    internal static DmaBuffer Allocate(VfioDevice device, ulong length, DmaAccess access, ulong? iova, DmaPages pages)
    {
        ArgumentOutOfRangeException.ThrowIfZero(length);
        if ((access & DmaAccess.ReadWrite) == 0 || (access & ~DmaAccess.ReadWrite) != 0)
        {
            throw new ArgumentException("A DMA buffer must be readable or writable by the device (DmaAccess.DeviceReads, DeviceWrites or both).", nameof(access));
        }
        if (!Enum.IsDefined(pages))
        {
            throw new ArgumentOutOfRangeException(nameof(pages), pages, "Not a DmaPages value.");
        }
        var space = device.AddressSpace
            ?? throw new InvalidOperationException($"Device {device.Name} is not open: open it before allocating DMA memory.");
        ulong page = space.IommuInfoFor(device).MinPageSize;
        var requested = pages;
        pages = space.PagesFor(device, length, pages);
        if (!device.TryGet(out var reference))
        {
            throw new InvalidOperationException($"Device {device.Name} is being unregistered.");
        }
        SafeMapping? memory = null;
        ulong? reserved = null;
        try
        {
            // The IOVA range first: a buffer the container cannot map costs no memory.
            bool huge = pages != DmaPages.Normal;
            ulong size = RoundUp(length, huge ? Math.Max(page, HugePageSize) : page);
            reserved = space.ReserveIova(device, size, iova, huge ? HugePageSize : 0);
            if (huge)
            {
                int rc = device.Kernel.Mmap(null, (nuint)size, Flags.PROT_READ | Flags.PROT_WRITE, Flags.MAP_PRIVATE | Flags.MAP_POPULATE | Flags.MAP_HUGETLB | space.MemoryFlags, 0, out memory);
                if (rc == -Errno.ENOMEM && pages == DmaPages.HugeIfAvailable)
                {
                    Log.HugePagesFallback(device.Registry.Logger, device.Name);
                    huge = false;
                    if (reserved is ulong hugeRange)
                    {
                        space.ReleaseIova(hugeRange);
                    }
                    reserved = null;
                    size = RoundUp(length, page);
                    reserved = space.ReserveIova(device, size, iova);
                }
                else if (rc == -Errno.ENOMEM)
                {
                    throw NoHugePages(device, size, space.HugePagesReason(requested));
                }
                else
                {
                    VfioErrors.Check(rc, "mmap (DMA memory, 2 MiB hugepages)", device.ErrorTarget);
                }
            }
            if (!huge)
            {
                int rc = device.Kernel.Mmap(null, (nuint)size, Flags.PROT_READ | Flags.PROT_WRITE, Flags.MAP_PRIVATE | Flags.MAP_POPULATE | space.MemoryFlags, 0, out memory);
                if (rc == -Errno.ENOMEM)
                {
                    throw NoMemory(device, size);
                }
                VfioErrors.Check(rc, "mmap (DMA memory)", device.ErrorTarget);
            }
            ulong? mappedAt = reserved;
            reserved = null; // Map gives the range back itself when the kernel refuses
            var buffer = space.Map(device, memory!, mappedAt, size, access, reference);
            buffer.IsHugePages = huge;
            device.TrackResource(buffer);
            return buffer;
        }
        catch
        {
            if (reserved is ulong unused)
            {
                space.ReleaseIova(unused);
            }
            memory?.Dispose();
            reference.Dispose();
            throw;
        }
    }

    private static ulong RoundUp(ulong length, ulong unit)
    {
        ulong size = (length + unit - 1) & ~(unit - 1);
        return size >= length ? size : throw new ArgumentOutOfRangeException(nameof(length), length, "The length is too large.");
    }

    // The kernel refuses an anonymous mapping with ENOMEM when it cannot back it: more than RAM and
    // swap (the default overcommit heuristic), beyond the commit limit, or the address space is full.
    private static VfioException NoMemory(VfioDevice device, ulong size) =>
        VfioErrors.Create(Errno.ENOMEM, "mmap (DMA memory)", device.ErrorTarget,
            string.Create(CultureInfo.InvariantCulture, $"The kernel cannot back a {FormatSize(size)} DMA buffer for {device.Name}: ") +
            "the machine has less memory than that free (RAM and swap), or the process's memory limit (a cgroup, ulimit -v) is reached. Allocate less, or in smaller buffers");

    private static string FormatSize(ulong bytes) => bytes switch
    {
        >= 1UL << 30 when bytes % (1UL << 30) == 0 => string.Create(CultureInfo.InvariantCulture, $"{bytes >> 30} GiB"),
        >= 1UL << 20 when bytes % (1UL << 20) == 0 => string.Create(CultureInfo.InvariantCulture, $"{bytes >> 20} MiB"),
        _ => string.Create(CultureInfo.InvariantCulture, $"{bytes >> 10} KiB"),
    };

    // The kernel refuses a MAP_HUGETLB mapping with ENOMEM when the hugepage pool cannot cover it.
    private static VfioResourceLimitException NoHugePages(VfioDevice device, ulong size, string? why)
    {
        const string Pool = "kernel/mm/hugepages/hugepages-2048kB/";
        string free = device.Registry.Sysfs.ReadText(Pool + "free_hugepages")?.Trim() ?? "?";
        string total = device.Registry.Sysfs.ReadText(Pool + "nr_hugepages")?.Trim() ?? "?";
        ulong needed = size / HugePageSize;
        return new VfioResourceLimitException(
            string.Create(CultureInfo.InvariantCulture,
                $"Cannot allocate a {size >> 20} MiB DMA buffer of 2 MiB hugepages for {device.Name}: it needs {needed} free hugepages, and the system has {free} free of {total} reserved. ") +
            (why is null ? "" : why + " ") +
            "Reserve more as root: echo N > /proc/sys/vm/nr_hugepages (or vm.nr_hugepages in /etc/sysctl.conf, or hugepages=N on the kernel command line)" +
            (why is null ? ", or allocate with DmaPages.HugeIfAvailable to fall back to normal pages." : "."),
            VfioResourceLimitException.HugePages, "mmap (DMA memory, 2 MiB hugepages)", Errno.ENOMEM, device.ErrorTarget);
    }
}
