using System.Globalization;
using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio;

/// <summary>
/// The type1 IOMMU's dirty page tracking of one container (<c>VFIO_IOMMU_DIRTY_PAGES</c>), started by
/// <see cref="VfioContainer.StartDirtyPageTracking"/>: read which pages of the container's DMA
/// mappings are dirty, or unmap a buffer and read its dirty pages in the same call. Disposing it stops
/// the tracking; the container's closing (its last device closed) ends it too.
/// </summary>
/// <remarks>
/// <para>A VMM migrating a guest uses this to know which guest memory a passed-through device may have
/// written. type1 itself cannot see device writes: it reports a page dirty because it is pinned and
/// mapped. Whenever a device of the container sits behind an IOMMU (every vfio-pci device; not a
/// mediated device, which reports only the pages its parent pinned), <b>every mapped page reads dirty
/// at every read</b>, Linux 6.1 and 7.x alike. Device-side logging
/// (<see cref="VfioDevice.StartDmaLogging"/>) or iommufd's hardware dirty tracking are the precise ways.</para>
/// <para>The kernel's rules, which this class follows so that its requests are never refused for
/// their shape: only the container's smallest IOMMU page size; ranges aligned to it; a range must
/// cover whole mappings (never cut a buffer); a bitmap of at most <see cref="MaxBitmapBytes"/>;
/// only type1v2 (EACCES for type1).</para>
/// </remarks>
public sealed unsafe class DirtyPageTracking : IDisposable
{
    private readonly VfioKernel _kernel;
    private readonly SafeFd _fd;
    private int _stopped;

    private DirtyPageTracking(VfioContainer container, ulong pageSize, ulong maxBitmapBytes)
    {
        Container = container;
        _kernel = container.Registry.Kernel;
        _fd = container.Fd;
        PageSize = pageSize;
        MaxBitmapBytes = maxBitmapBytes;
    }

    /// <summary>The container whose mappings are tracked.</summary>
    public VfioContainer Container { get; }

    /// <summary>The bytes one bit stands for: the container's smallest IOMMU page size, the only one type1 reports in.</summary>
    public ulong PageSize { get; }

    /// <summary>The largest bitmap one read may ask for (the migration capability's <c>max_dirty_bitmap_size</c>, 256 MiB).</summary>
    public ulong MaxBitmapBytes { get; }

    /// <summary>False once stopped, or once the container closed.</summary>
    public bool IsActive => Volatile.Read(ref _stopped) == 0 && !_fd.IsClosed;

    /// <summary>Reads the dirty pages of one DMA buffer of the container.</summary>
    /// <param name="buffer">A mapped buffer of a device in <see cref="Container"/>.</param>
    /// <exception cref="ArgumentException">The buffer is not mapped in this container.</exception>
    public DirtyPageBitmap Read(DmaBuffer buffer)
    {
        ArgumentNullException.ThrowIfNull(buffer);
        CheckOwned(buffer);
        return Read(buffer.Iova, buffer.Length);
    }

    /// <summary>
    /// Reads the dirty pages of an IOVA range (<c>VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP</c>); the kernel
    /// then clears what it reported, except pages still pinned. The range may hold several buffers and
    /// gaps (whose pages read clean), but must not cut a buffer.
    /// </summary>
    /// <remarks>
    /// The kernel is asked once per buffer in the range, each time for that buffer's range alone, and
    /// the answers are put together. type1 can read several mappings in one call, but gets it wrong
    /// (Linux 6.1 to 7.3, update_user_bitmap in drivers/vfio/vfio_iommu_type1.c): a mapping whose first
    /// page lies a number of pages from the range's start that is not a multiple of 64 has its own
    /// bitmap shifted left in place by that remainder and the caller's word it shares ORed in before
    /// the copy out, and vfio_iova_dirty_bitmap then clears only the mapping's page count of bits; the
    /// shifted-out tail and the neighbours' bits stay in the mapping's bitmap and come back, shifted
    /// again, at the next such read, as dirty pages past the mapping. Read from the mapping's own
    /// start, no shift happens.
    /// </remarks>
    /// <param name="iova">The start, aligned to <see cref="PageSize"/>.</param>
    /// <param name="length">The length in bytes, a multiple of <see cref="PageSize"/>.</param>
    /// <exception cref="ArgumentException">The range is empty, not aligned, or needs a bitmap larger than <see cref="MaxBitmapBytes"/>.</exception>
    /// <exception cref="VfioException">The range cuts a buffer (EINVAL, as the kernel would answer), or the kernel refused.</exception>
    public DirtyPageBitmap Read(ulong iova, ulong length)
    {
        var words = Bitmap(iova, length);
        var buffers = Container.AddressSpace.BuffersOverlapping(iova, length);
        // Every buffer is checked before any is read: a read clears what it reports, so a refusal
        // after some reads would lose their dirty pages. Sorted by IOVA, only the ends can be cut.
        foreach (var buffer in buffers)
        {
            if (buffer.Iova < iova || buffer.Iova + buffer.Length > iova + length)
            {
                string operation = Operation("GET_BITMAP", iova, length);
                throw new VfioException(string.Create(CultureInfo.InvariantCulture,
                    $"{operation} would cut {buffer} (0x{buffer.Iova:x}+0x{buffer.Length:x}): type1 reports whole mappings only (the kernel answers such a range with EINVAL); the range must start and end where DMA buffers of the container start and end, or in gaps between them."),
                    operation, Errno.EINVAL, ErrorTarget.None);
            }
        }
        foreach (var buffer in buffers)
        {
            ulong[] own = ReadMapping(buffer.Iova, buffer.Length);
            Merge(words, (buffer.Iova - iova) / PageSize, own, buffer.Length / PageSize);
        }
        return new DirtyPageBitmap(iova, length, PageSize, words);
    }

    // One GET_BITMAP over one mapping, from its first page: the kernel shifts nothing.
    private ulong[] ReadMapping(ulong iova, ulong length)
    {
        var words = Bitmap(iova, length);
        var range = new vfio_iommu_type1_dirty_bitmap_get { iova = iova, size = length };
        int rc;
        fixed (ulong* bits = words)
        {
            range.bitmap = new vfio_bitmap { pgsize = PageSize, size = (ulong)words.Length * sizeof(ulong), data = bits };
            rc = DirtyPages(VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP, &range);
        }
        if (rc < 0)
        {
            string? hint = -rc == Errno.EINVAL
                ? "type1 reports whole mappings only, at the IOMMU's smallest page size; the container's mappings and the library's disagree"
                : null;
            VfioErrors.Throw(-rc, Operation("GET_BITMAP", iova, length), ErrorTarget.None, hint);
        }
        return words;
    }

    // ORs a mapping's bitmap of pages (bits past them ignored) into the range's, from bit firstBit on.
    private static void Merge(ulong[] into, ulong firstBit, ulong[] from, ulong pages)
    {
        ulong count = (pages + 63) / 64;
        for (ulong w = 0; w < count; w++)
        {
            ulong word = from[w];
            if (w == count - 1 && pages % 64 != 0)
            {
                word &= (1UL << (int)(pages % 64)) - 1;
            }
            ulong bit = firstBit + (w * 64);
            int shift = (int)(bit % 64);
            ulong index = bit / 64;
            into[index] |= word << shift;
            if (shift != 0 && index + 1 < (ulong)into.Length)
            {
                into[index + 1] |= word >> (64 - shift);
            }
        }
    }

    /// <summary>
    /// Unmaps a buffer from the IOMMU and reads its dirty pages in the same call
    /// (<c>VFIO_IOMMU_UNMAP_DMA</c> with <c>VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP</c>), so that no write
    /// between the read and the unmap is lost. The buffer is unmapped as when its device closes
    /// (<see cref="DmaBuffer.IsMapped"/> false); its memory stays readable until it is disposed.
    /// </summary>
    /// <param name="buffer">A mapped buffer of a device in <see cref="Container"/>.</param>
    /// <exception cref="VfioException">The kernel refused; the buffer stays mapped.</exception>
    public DirtyPageBitmap Unmap(DmaBuffer buffer)
    {
        ArgumentNullException.ThrowIfNull(buffer);
        CheckOwned(buffer);
        var words = Bitmap(buffer.Iova, buffer.Length);
        buffer.UnmapReadingDirty(words, PageSize);
        return new DirtyPageBitmap(buffer.Iova, buffer.Length, PageSize, words);
    }

    /// <summary>Stops the tracking (<c>VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP</c>); nothing to do once the container closed.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _stopped, 1) != 0)
        {
            return;
        }
        Container.DirtyTrackingStopped(this);
        if (!_fd.IsClosed)
        {
            int rc = DirtyPages(VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP, null);
            if (rc < 0)
            {
                Log.DirtyTrackingStopFailed(Container.Registry.Logger, -rc);
            }
        }
    }

    /// <inheritdoc/>
    public override string ToString() => $"dirty page tracking of {Container} ({(IsActive ? "active" : "stopped")}, {PageSize} bytes per page)";

    /// <summary>Starts tracking for a container (<c>VFIO_IOMMU_DIRTY_PAGES_FLAG_START</c>).</summary>
    internal static DirtyPageTracking Start(VfioContainer container)
    {
        if (container.IsNoIommu)
        {
            throw new VfioNotSupportedException(
                "A no-IOMMU container has no IOMMU to track dirty pages with: the kernel's no-IOMMU driver answers VFIO_IOMMU_DIRTY_PAGES with ENOTTY.",
                "VFIO_IOMMU_DIRTY_PAGES START", Errno.ENOTTY, default);
        }
        if (container.IsIommufdCompat)
        {
            // drivers/iommu/iommufd/vfio_compat.c: VFIO_IOMMU_DIRTY_PAGES is not one of its ioctls
            // (ENOTTY), its VFIO_IOMMU_GET_INFO has no migration capability, and its unmap refuses
            // VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP.
            throw new VfioNotSupportedException(
                $"This {container} is iommufd's compatibility container (/dev/vfio/vfio served by iommufd: the kernel has CONFIG_IOMMUFD_VFIO_CONTAINER, not vfio's own container), "
                + "which emulates type1 without its dirty page tracking: the kernel answers VFIO_IOMMU_DIRTY_PAGES with ENOTTY. "
                + "Track with the device's DMA logging (VfioDevice.StartDmaLogging), or on a kernel with vfio's own container (CONFIG_VFIO_CONTAINER) and vfio_iommu_type1.",
                "VFIO_IOMMU_DIRTY_PAGES START", Errno.ENOTTY, default);
        }
        var (pageSizes, maxBytes) = MigrationCapability(container);
        if (pageSizes == 0)
        {
            throw new VfioNotSupportedException(
                $"The {container.IommuTypeName} IOMMU of this container offers no dirty page tracking (VFIO_IOMMU_GET_INFO has no migration capability): "
                + "track with the device's DMA logging (VfioDevice.StartDmaLogging).",
                "VFIO_IOMMU_DIRTY_PAGES START", Errno.ENOTTY, default);
        }
        var tracking = new DirtyPageTracking(container, pageSizes & (~pageSizes + 1), maxBytes);
        int rc = tracking.DirtyPages(VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_START, null);
        if (rc < 0)
        {
            string? hint = -rc switch
            {
                Errno.EACCES => "type1 tracks dirty pages only in its v2 interface (VFIO_TYPE1v2_IOMMU)",
                Errno.ENOTTY => "this container's IOMMU driver has no dirty page tracking",
                _ => null,
            };
            VfioErrors.Throw(-rc, "VFIO_IOMMU_DIRTY_PAGES START", default, hint);
        }
        Log.DirtyTrackingStarted(container.Registry.Logger, container.IommuTypeName, tracking.PageSize);
        return tracking;
    }

    // The migration capability of VFIO_IOMMU_GET_INFO: the dirty bitmap's page sizes and largest size (0, 0 without it).
    private static (ulong PageSizes, ulong MaxBytes) MigrationCapability(VfioContainer container)
    {
        const string What = "the container's IOMMU info";
        byte[] buffer = InfoQuery.Run(container.Registry.Kernel, container.Fd, VfioUapi.VFIO_IOMMU_GET_INFO, new vfio_iommu_type1_info(), "VFIO_IOMMU_GET_INFO", default);
        var info = System.Runtime.InteropServices.MemoryMarshal.Read<vfio_iommu_type1_info>(buffer);
        if ((info.flags & VfioUapi.VFIO_IOMMU_INFO_CAPS) == 0 || info.cap_offset == 0)
        {
            return (0, 0);
        }
        foreach (var cap in InfoQuery.Chain(buffer, info.cap_offset, sizeof(vfio_iommu_type1_info), What))
        {
            if (cap.Id == VfioUapi.VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION)
            {
                var migration = InfoQuery.Read<vfio_iommu_type1_info_cap_migration>(buffer, cap, What);
                return (migration.pgsize_bitmap, migration.max_dirty_bitmap_size);
            }
        }
        return (0, 0);
    }

    private int DirtyPages(uint flag, vfio_iommu_type1_dirty_bitmap_get* range)
    {
        ObjectDisposedException.ThrowIf(flag != VfioUapi.VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP && Volatile.Read(ref _stopped) != 0, this);
        if (_fd.IsClosed)
        {
            throw new InvalidOperationException("The container closed (its last device closed): its dirty page tracking ended with it.");
        }
        byte* request = stackalloc byte[sizeof(vfio_iommu_type1_dirty_bitmap) + sizeof(vfio_iommu_type1_dirty_bitmap_get)];
        int size = sizeof(vfio_iommu_type1_dirty_bitmap);
        if (range is not null)
        {
            *(vfio_iommu_type1_dirty_bitmap_get*)(request + size) = *range;
            size += sizeof(vfio_iommu_type1_dirty_bitmap_get);
        }
        *(vfio_iommu_type1_dirty_bitmap*)request = new vfio_iommu_type1_dirty_bitmap { argsz = (uint)size, flags = flag };
        return _kernel.Ioctl(_fd, VfioUapi.VFIO_IOMMU_DIRTY_PAGES, request);
    }

    // A zeroed bitmap for the range, after the checks the kernel would make of its shape.
    private ulong[] Bitmap(ulong iova, ulong length)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _stopped) != 0, this);
        ArgumentOutOfRangeException.ThrowIfZero(length);
        if (iova % PageSize != 0 || length % PageSize != 0)
        {
            throw new ArgumentException(string.Create(CultureInfo.InvariantCulture,
                $"The range 0x{iova:x}+0x{length:x} is not aligned to the IOMMU page size 0x{PageSize:x}, the only size type1 reports dirty pages in."), nameof(length));
        }
        if (iova + length - 1 < iova)
        {
            throw new ArgumentOutOfRangeException(nameof(length), length, "The range wraps around the IOVA space.");
        }
        ulong pages = length / PageSize;
        ulong bytes = (pages + 63) / 64 * sizeof(ulong);
        if (bytes > MaxBitmapBytes)
        {
            throw new ArgumentOutOfRangeException(nameof(length), length, string.Create(CultureInfo.InvariantCulture,
                $"A range of {pages} pages needs a bitmap of {bytes} bytes; the kernel takes at most {MaxBitmapBytes}: read it in parts."));
        }
        return new ulong[(int)(bytes / sizeof(ulong))];
    }

    private void CheckOwned(DmaBuffer buffer)
    {
        if (buffer.Space is not { } space || space != Container.AddressSpace)
        {
            throw new ArgumentException($"{buffer} is not mapped in {Container}.", nameof(buffer));
        }
    }

    private static string Operation(string what, ulong iova, ulong length) =>
        string.Create(CultureInfo.InvariantCulture, $"VFIO_IOMMU_DIRTY_PAGES {what} 0x{iova:x}+0x{length:x}");
}
