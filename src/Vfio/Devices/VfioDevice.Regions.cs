using Vfio.Interop;

namespace Vfio;

public abstract partial class VfioDevice
{
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
