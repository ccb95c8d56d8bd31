using System.Buffers.Binary;
using System.Globalization;
using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio;

/// <summary>
/// The DMA "address space" of a no-IOMMU container (<c>VFIO_NOIOMMU_IOMMU</c>): there is no IOMMU,
/// so nothing is mapped and the device reaches host memory by its physical address. A DMA buffer's
/// device address (<see cref="DmaBuffer.Iova"/>) is therefore the physical address of its memory,
/// read from <c>/proc/self/pagemap</c>, and its memory must not move: it is locked (MAP_LOCKED) and
/// populated, and a buffer of more than one page must be physically contiguous, which only hugepages
/// give, so such a buffer is made of 2 MiB hugepages whatever the caller asked for.
/// </summary>
/// <remarks>
/// What the kernel refuses here, the library refuses with an error that says why: the container has
/// no IOMMU ioctls (VFIO_IOMMU_GET_INFO, MAP_DMA, UNMAP_DMA, DIRTY_PAGES answer ENOTTY), so a buffer
/// at a chosen IOVA cannot be made, nor can the IOMMU be described or track dirty pages. Reading
/// physical addresses needs CAP_SYS_ADMIN (the kernel shows a frame number of 0 to others), as
/// opening a no-IOMMU group needs CAP_SYS_RAWIO: in practice, root.
/// </remarks>
internal sealed class NoIommuAddressSpace(VfioRegistry registry) : IommuAddressSpace(registry)
{
    private const string Pagemap = "/proc/self/pagemap";
    private const ulong PagemapPresent = 1UL << 63;
    private const ulong PagemapFrameMask = (1UL << 55) - 1;

    /// <summary>The CPU's page size, which every pagemap entry stands for.</summary>
    private static readonly ulong SmallPage = (ulong)Environment.SystemPageSize;

    /// <summary>The legacy backend: a no-IOMMU group joins a container, as every group does.</summary>
    public override VfioBackend Backend => VfioBackend.Legacy;

    /// <summary>
    /// What DMA memory here is made of: pages of the CPU's size and 2 MiB hugepages, anywhere in
    /// physical memory, with no limit on their number. No kernel call answers it: without an IOMMU
    /// there is nothing to ask.
    /// </summary>
    internal override IommuInfo QueryIommuInfo(ErrorTarget target) => new(SmallPage | DmaBuffer.HugePageSize, [new IovaRange(0, ulong.MaxValue)], null);

    internal override DmaPages PagesFor(VfioDevice device, ulong length, DmaPages pages) =>
        length > SmallPage ? DmaPages.Huge : pages;

    internal override int MemoryFlags => Flags.MAP_LOCKED;

    internal override string? HugePagesReason(DmaPages requested) => requested == DmaPages.Huge
        ? null
        : "Without an IOMMU (no-IOMMU mode) the device reaches a buffer by its physical address, so a buffer larger than one page must be physically contiguous, which only hugepages guarantee; or allocate buffers of at most one page.";

    private protected override bool AddressFromMemory(VfioDevice device, ulong? fixedIova)
    {
        if (fixedIova is ulong wanted)
        {
            throw new VfioNotSupportedException(string.Create(CultureInfo.InvariantCulture,
                $"Cannot map a DMA buffer for {device.Name} at IOVA 0x{wanted:x}: its group is a no-IOMMU group, whose container has no IOMMU to map with (VFIO_IOMMU_MAP_DMA answers ENOTTY). ") +
                "The device reaches a buffer at its physical address, which the library reads and cannot choose: allocate without an IOVA and give the device DmaBuffer.Iova.",
                "VFIO_IOMMU_MAP_DMA", Errno.ENOTTY, device.ErrorTarget);
        }
        return true;
    }

    private protected override ulong DeviceAddressOf(VfioDevice device, SafeMapping memory, ulong length)
    {
        ulong physical = PhysicalAddress(device, memory.Address, length);
        if (physical + length - 1 > device.DmaMask)
        {
            throw new VfioException(string.Create(CultureInfo.InvariantCulture,
                $"Cannot give {device.Name} a DMA buffer at physical address 0x{physical:x}+0x{length:x}: it lies above the device's DMA mask 0x{device.DmaMask:x}, ") +
                "and without an IOMMU there is no IOVA to put below it. On a machine whose memory reaches above the mask, a device with a narrow mask needs an IOMMU.");
        }
        return physical;
    }

    // Nothing to map or unmap: the device sees all of memory already.
    private protected override int MapCore(nint hostAddress, ulong iova, ulong length, DmaAccess access) => 0;

    private protected override int UnmapCore(ulong iova, ulong length, out ulong unmapped)
    {
        unmapped = length;
        return 0;
    }

    private protected override string UnmapOperation => "release of a no-IOMMU DMA buffer";

    private protected override int ReadEntryLimit() => int.MaxValue;

    private protected override VfioException MapError(int errno, ulong iova, ulong length, VfioDevice device) =>
        VfioErrors.Create(errno, string.Create(CultureInfo.InvariantCulture, $"no-IOMMU DMA buffer 0x{iova:x}+0x{length:x}"), device.ErrorTarget);

    private protected override VfioResourceLimitException BudgetSpent(VfioDevice device, int mappings) =>
        throw new InvalidOperationException("A no-IOMMU address space has no mapping budget.");

    /// <summary>
    /// The physical address of <paramref name="length"/> bytes at <paramref name="address"/>, from the
    /// process's page map; throws unless every page is present and they follow each other physically.
    /// </summary>
    private ulong PhysicalAddress(VfioDevice device, nint address, ulong length)
    {
        var kernel = Registry.Kernel;
        int pages = checked((int)((length + SmallPage - 1) / SmallPage));
        var entries = new byte[pages * sizeof(ulong)];
        int rc = kernel.Open(Pagemap, Flags.O_RDONLY | Flags.O_CLOEXEC, out var fd);
        if (rc < 0)
        {
            VfioErrors.Throw(-rc, "open " + Pagemap, device.ErrorTarget,
                "Without an IOMMU the library needs the physical address of DMA memory, which the kernel gives in /proc/self/pagemap (CONFIG_PROC_PAGE_MONITOR)");
        }
        using (fd)
        {
            long read = kernel.PRead(fd, entries, (long)((ulong)address / SmallPage * sizeof(ulong)));
            VfioErrors.Check(read, "pread " + Pagemap, device.ErrorTarget);
            if (read != entries.Length)
            {
                throw new VfioException($"{Pagemap} gave {read} of {entries.Length} bytes for the DMA buffer of {device.Name}.");
            }
        }
        ulong first = 0;
        for (int i = 0; i < pages; i++)
        {
            ulong entry = BinaryPrimitives.ReadUInt64LittleEndian(entries.AsSpan(i * sizeof(ulong)));
            ulong frame = entry & PagemapFrameMask;
            if ((entry & PagemapPresent) == 0)
            {
                throw new VfioException(string.Create(CultureInfo.InvariantCulture,
                    $"Page {i} of the DMA buffer of {device.Name} is not in memory although it was populated and locked; its physical address is unknown."));
            }
            if (frame == 0)
            {
                throw new VfioAccessDeniedException(
                    $"Cannot read the physical address of the DMA buffer of {device.Name}: the kernel shows page frame numbers in {Pagemap} only to a process with CAP_SYS_ADMIN. " +
                    "A device in a no-IOMMU group needs physical addresses: run as root (opening a no-IOMMU group needs CAP_SYS_RAWIO as well).",
                    "pread " + Pagemap, Errno.EPERM, device.ErrorTarget);
            }
            if (i == 0)
            {
                first = frame;
            }
            else if (frame != first + (ulong)i)
            {
                throw new VfioException(string.Create(CultureInfo.InvariantCulture,
                    $"The DMA buffer of {device.Name} ({length} bytes) is not physically contiguous (page {i} is at frame 0x{frame:x}, not 0x{first + (ulong)i:x}), ") +
                    "and a device without an IOMMU needs it to be: hugepages are contiguous within 2 MiB, so allocate buffers of at most 2 MiB.");
            }
        }
        return first * SmallPage + ((ulong)address % SmallPage);
    }
}
