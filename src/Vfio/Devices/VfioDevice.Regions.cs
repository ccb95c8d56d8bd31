using Vfio.Interop;

namespace Vfio;

/// <summary>Something that lives on an open device file and must go before the file closes.</summary>
internal interface IDeviceResource
{
    /// <summary>Releases the resource; true the first time.</summary>
    bool Revoke();
}

public abstract partial class VfioDevice
{
    private readonly List<IDeviceResource> _resources = [];

    /// <summary>Describes a region (<c>VFIO_DEVICE_GET_REGION_INFO</c>), its capability chain parsed.</summary>
    /// <param name="index">The region index.</param>
    /// <exception cref="InvalidOperationException">The device is not open.</exception>
    public RegionInfo GetRegionInfo(int index) => RegionInfo.Query(Kernel, DeviceFd, index, ErrorTarget);

    /// <summary>Reads from a region at an offset through the device file (pread).</summary>
    /// <param name="index">The region index.</param>
    /// <param name="offset">The offset in the region.</param>
    /// <param name="destination">Where the bytes go; its length is how many are read.</param>
    public void ReadRegion(int index, ulong offset, Span<byte> destination)
    {
        var info = GetRegionInfoForAccess(index, offset, destination.Length);
        long n = VfioErrors.Check(Kernel.PRead(DeviceFd, destination, (long)(info.Offset + offset)), "pread", ErrorTarget with { RegionIndex = index });
        if (n != destination.Length)
        {
            throw new VfioException($"Reading {destination.Length} bytes at 0x{offset:x} of region {index} of {Name} returned {n}.");
        }
    }

    /// <summary>Writes to a region at an offset through the device file (pwrite).</summary>
    /// <param name="index">The region index.</param>
    /// <param name="offset">The offset in the region.</param>
    /// <param name="source">The bytes to write.</param>
    public void WriteRegion(int index, ulong offset, ReadOnlySpan<byte> source)
    {
        var info = GetRegionInfoForAccess(index, offset, source.Length);
        bool gated = GateRegionWrite(index, offset, source);
        try
        {
            long n = VfioErrors.Check(Kernel.PWrite(DeviceFd, source, (long)(info.Offset + offset)), "pwrite", ErrorTarget with { RegionIndex = index });
            if (n != source.Length)
            {
                throw new VfioException($"Writing {source.Length} bytes at 0x{offset:x} of region {index} of {Name} wrote {n}.");
            }
        }
        finally
        {
            if (gated)
            {
                ResumeMappedRegions();
            }
        }
    }

    /// <summary>
    /// Opens a region for register access: mapped into memory when the kernel allows it, through
    /// the device file otherwise. The region holds a reference on the device until disposed.
    /// </summary>
    /// <param name="index">The region index (a BAR number for PCI).</param>
    /// <exception cref="InvalidOperationException">The device is not open.</exception>
    public MmioRegion OpenRegion(int index) => MmioRegion.Open(this, index);

    /// <summary>
    /// Resets the device (<c>VFIO_DEVICE_RESET</c>). The kernel saves config space before and restores
    /// it after; device state is lost; DMA mappings and interrupt eventfds stay. Mapped regions read
    /// all-ones while it runs and are mapped again after (see <see cref="MmioRegion"/>).
    /// </summary>
    /// <exception cref="VfioNotSupportedException">The device reports no reset support (no <c>VFIO_DEVICE_FLAGS_RESET</c>); the kernel is not called.</exception>
    public void Reset()
    {
        if (Info is { CanReset: false })
        {
            throw new VfioNotSupportedException($"Device {Name} does not support VFIO_DEVICE_RESET (its info flags lack RESET): it has no reset of its own. A PCI device may still be reset with its slot or bus (PciVfioDevice.HotReset).");
        }
        var fd = DeviceFd;
        SuspendMappedRegions();
        try
        {
            VfioErrors.Check(Kernel.Ioctl(fd, VfioUapi.VFIO_DEVICE_RESET, 0), "VFIO_DEVICE_RESET", ErrorTarget);
        }
        finally
        {
            ResumeMappedRegions();
        }
    }

    internal void TrackResource(IDeviceResource resource)
    {
        lock (_resources)
        {
            _resources.Add(resource);
        }
    }

    internal void ForgetResource(IDeviceResource resource)
    {
        lock (_resources)
        {
            _resources.Remove(resource);
        }
    }

    private void RevokeResources()
    {
        IDeviceResource[] live;
        lock (_resources)
        {
            live = [.. _resources];
            _resources.Clear();
        }
        // Newest first: interrupts set up after a mapping go before it.
        for (int i = live.Length - 1; i >= 0; i--)
        {
            live[i].Revoke();
        }
    }

    private RegionInfo GetRegionInfoForAccess(int index, ulong offset, int length)
    {
        var info = GetRegionInfo(index);
        if (offset > info.Size || (ulong)length > info.Size - offset)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), offset,
                $"{length} bytes at 0x{offset:x} do not fit in region {index} of {Name} (0x{info.Size:x} bytes).");
        }
        return info;
    }
}

public abstract partial class VfioDevice
{
    /// <summary>Describes an interrupt index (<c>VFIO_DEVICE_GET_IRQ_INFO</c>).</summary>
    /// <param name="index">The index (for PCI, see <see cref="PciIrq"/>).</param>
    public IrqInfo GetIrqInfo(int index) => IrqInfo.Query(Kernel, DeviceFd, index, ErrorTarget);

    /// <summary>
    /// Wires vectors of an interrupt index to eventfds and starts waiting on them. For PCI MSI this
    /// also enables MSI in the device; dispose the set to disable the vectors again.
    /// </summary>
    /// <param name="index">The index (for PCI, see <see cref="PciIrq"/>).</param>
    /// <param name="count">How many vectors, from <paramref name="start"/>.</param>
    /// <param name="start">The first vector.</param>
    /// <exception cref="InvalidOperationException">The library wires this index itself (PCI's REQ: see <see cref="OnReleaseRequested"/>; ERR: see <see cref="PciVfioDevice.ErrorDetected"/>).</exception>
    /// <exception cref="VfioNotSupportedException">The index has no vectors.</exception>
    /// <exception cref="VfioException">The kernel refused, e.g. EINVAL for MSI while MSI-X is enabled, or for vectors beyond those enabled first (Linux 6.1 sizes MSI and MSI-X once: dispose the set and enable again to resize).</exception>
    public InterruptSet EnableInterrupts(int index, int count = 1, int start = 0)
    {
        if (IsLibraryIrq(index))
        {
            throw new InvalidOperationException(
                $"Interrupt index {index} of {Name} is wired by the library: override OnReleaseRequested for REQ, subscribe to ErrorDetected for ERR.");
        }
        return InterruptSet.Enable(this, index, start, count);
    }

    /// <summary>
    /// Describes every interrupt index the device file has (<see cref="VfioDeviceInfo.IrqCount"/> of them).
    /// An index the kernel refuses to describe (EINVAL: vfio-pci's ERR on a function that is not PCI
    /// Express) is reported with count 0 and no flags.
    /// </summary>
    public IReadOnlyList<IrqInfo> GetIrqInfos()
    {
        uint n = (Info ?? throw new InvalidOperationException($"Device {Name} is not open.")).IrqCount;
        var infos = new IrqInfo[n];
        for (int i = 0; i < infos.Length; i++)
        {
            infos[i] = IrqInfo.QueryOrNone(Kernel, DeviceFd, i, ErrorTarget);
        }
        return infos;
    }
}

public abstract partial class VfioDevice
{
    /// <summary>
    /// The highest IOVA the device can put on the bus (all ones for 64-bit DMA, the default). A
    /// driver whose device has fewer address bits sets it in its constructor: QEMU's edu device has 28.
    /// </summary>
    public ulong DmaMask { get; protected set; } = ulong.MaxValue;

    /// <summary>
    /// Allocates page-aligned memory and maps it into the device's IOMMU at an IOVA below
    /// <see cref="DmaMask"/> inside the IOMMU's valid ranges (or at <paramref name="iova"/>).
    /// The device must be open.
    /// </summary>
    /// <param name="length">The length in bytes, rounded up to the IOMMU page size.</param>
    /// <param name="access">Which way the device may use it.</param>
    /// <param name="iova">A fixed IOVA, or null to let the library choose.</param>
    /// <param name="pages">Normal pages (the default) or 2 MiB hugepages; see <see cref="DmaPages"/>.</param>
    /// <exception cref="VfioResourceLimitException">The container's DMA mapping limit, the locked-memory limit or the hugepage pool is exhausted.</exception>
    /// <exception cref="VfioException">No room, an overlap, outside the valid ranges or the mask, or the kernel refused.</exception>
    public DmaBuffer AllocateDmaBuffer(ulong length, DmaAccess access = DmaAccess.ReadWrite, ulong? iova = null, DmaPages pages = DmaPages.Normal) =>
        DmaBuffer.Allocate(this, length, access, iova, pages);
}
