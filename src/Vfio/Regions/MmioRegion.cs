using System.Buffers.Binary;
using System.Diagnostics.CodeAnalysis;
using System.Numerics;
using System.Runtime.CompilerServices;
using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio;

/// <summary>
/// A device region (typically a BAR) for register access: mapped into memory when the region
/// allows it, otherwise reached through the device file. Accesses are volatile, naturally aligned
/// and bounds-checked; no raw pointer is handed out.
/// </summary>
/// <remarks>
/// <para>
/// When the kernel allows only parts of the region to be mapped (a sparse mmap capability), each of
/// those areas is mapped, and an access outside them (or straddling an area's edge) goes through
/// the device file with pread or pwrite, which vfio accepts at every offset of the region. Both
/// paths reach the same registers; the mapped one costs no system call.
/// </para>
/// <para>
/// The region holds a reference on its device, so unregistering waits for it to be disposed (and
/// asks for that through the device's release-request hook). When the device closes, regions still
/// alive are revoked: their memory is unmapped and further accesses throw
/// <see cref="ObjectDisposedException"/>. Do not access a region concurrently with closing its device.
/// </para>
/// </remarks>
public sealed unsafe class MmioRegion : IDisposable, IDeviceResource
{
    private readonly VfioDevice? _device;
    private readonly string _deviceName;
    private readonly SafeMapping? _mapping;
    private readonly MappedArea[] _areas;
    private readonly SafeFd? _fd;
    private readonly ulong _fileOffset;
    private byte* _base;

    // The fast path's bounds: the number of naturally aligned registers of each width the whole
    // mapping holds, 0 when the region is not mapped whole (or is revoked). An offset rotated right
    // by log2(width) is below it only when it is aligned and inside, so one compare does both checks.
    private ulong _end8;
    private ulong _end16;
    private ulong _end32;
    private ulong _end64;
    private DeviceReference _reference;
    private int _state; // 0 live, 1 revoked or disposed

    private MmioRegion(VfioDevice? device, string deviceName, RegionInfo info, SafeMapping? mapping, MappedArea[] areas, SafeFd? fd, DeviceReference reference)
    {
        _device = device;
        _deviceName = deviceName;
        Info = info;
        Size = info.Size;
        _mapping = mapping;
        _areas = areas;
        _fd = fd;
        _fileOffset = info.Offset;
        _reference = reference;
        if (mapping is not null && !mapping.IsTrapped)
        {
            _base = (byte*)mapping.Address;
            _end8 = info.Size;
            _end16 = info.Size / 2;
            _end32 = info.Size / 4;
            _end64 = info.Size / 8;
        }
        MappedAreas = mapping is not null ? [new SparseMmapArea(0, info.Size)] : [.. areas.Select(a => a.Area)];
    }

    /// <summary>The region's description.</summary>
    public RegionInfo Info { get; }

    /// <summary>The region's size in bytes.</summary>
    public ulong Size { get; }

    /// <summary>True when the region, or some of its sparse areas, is mapped into memory.</summary>
    public bool IsMapped => MappedAreas.Count > 0;

    /// <summary>
    /// The parts of the region that are mapped: the whole region, its sparse mmap areas, or none
    /// (accesses then all go through the device file).
    /// </summary>
    public IReadOnlyList<SparseMmapArea> MappedAreas { get; }

    /// <summary>True until disposed or revoked by the device's close.</summary>
    public bool IsLive => Volatile.Read(ref _state) == 0;

    /// <summary>Reads an 8-bit register.</summary>
    /// <param name="offset">The register's offset in the region.</param>
    /// <exception cref="ArgumentOutOfRangeException">The access is outside the region.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public byte Read8(ulong offset) =>
        offset < _end8 ? Volatile.Read(ref *(_base + offset)) : (byte)ReadSlow(offset, 1);

    /// <summary>Reads a 16-bit register (little-endian, as PCI is).</summary>
    /// <param name="offset">The register's offset in the region, 2-byte aligned.</param>
    /// <exception cref="ArgumentOutOfRangeException">The access is outside the region or misaligned.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ushort Read16(ulong offset) =>
        BitOperations.RotateRight(offset, 1) < _end16 ? Volatile.Read(ref *(ushort*)(_base + offset)) : (ushort)ReadSlow(offset, 2);

    /// <summary>Reads a 32-bit register.</summary>
    /// <param name="offset">The register's offset in the region, 4-byte aligned.</param>
    /// <exception cref="ArgumentOutOfRangeException">The access is outside the region or misaligned.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public uint Read32(ulong offset) =>
        BitOperations.RotateRight(offset, 2) < _end32 ? Volatile.Read(ref *(uint*)(_base + offset)) : (uint)ReadSlow(offset, 4);

    /// <summary>Reads a 64-bit register.</summary>
    /// <param name="offset">The register's offset in the region, 8-byte aligned.</param>
    /// <exception cref="ArgumentOutOfRangeException">The access is outside the region or misaligned.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong Read64(ulong offset) =>
        BitOperations.RotateRight(offset, 3) < _end64 ? Volatile.Read(ref *(ulong*)(_base + offset)) : ReadSlow(offset, 8);

    /// <summary>Writes an 8-bit register.</summary>
    /// <param name="offset">The register's offset in the region.</param>
    /// <param name="value">The value.</param>
    /// <exception cref="ArgumentOutOfRangeException">The access is outside the region.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Write8(ulong offset, byte value)
    {
        if (offset < _end8)
        {
            Volatile.Write(ref *(_base + offset), value);
        }
        else
        {
            WriteSlow(offset, 1, value);
        }
    }

    /// <summary>Writes a 16-bit register.</summary>
    /// <param name="offset">The register's offset in the region, 2-byte aligned.</param>
    /// <param name="value">The value.</param>
    /// <exception cref="ArgumentOutOfRangeException">The access is outside the region or misaligned.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Write16(ulong offset, ushort value)
    {
        if (BitOperations.RotateRight(offset, 1) < _end16)
        {
            Volatile.Write(ref *(ushort*)(_base + offset), value);
        }
        else
        {
            WriteSlow(offset, 2, value);
        }
    }

    /// <summary>Writes a 32-bit register.</summary>
    /// <param name="offset">The register's offset in the region, 4-byte aligned.</param>
    /// <param name="value">The value.</param>
    /// <exception cref="ArgumentOutOfRangeException">The access is outside the region or misaligned.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Write32(ulong offset, uint value)
    {
        if (BitOperations.RotateRight(offset, 2) < _end32)
        {
            Volatile.Write(ref *(uint*)(_base + offset), value);
        }
        else
        {
            WriteSlow(offset, 4, value);
        }
    }

    /// <summary>Writes a 64-bit register.</summary>
    /// <param name="offset">The register's offset in the region, 8-byte aligned.</param>
    /// <param name="value">The value.</param>
    /// <exception cref="ArgumentOutOfRangeException">The access is outside the region or misaligned.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Write64(ulong offset, ulong value)
    {
        if (BitOperations.RotateRight(offset, 3) < _end64)
        {
            Volatile.Write(ref *(ulong*)(_base + offset), value);
        }
        else
        {
            WriteSlow(offset, 8, value);
        }
    }

    /// <summary>Unmaps the region and releases its reference on the device.</summary>
    public void Dispose()
    {
        if (Revoke())
        {
            _device?.ForgetResource(this);
        }
    }

    /// <inheritdoc/>
    public override string ToString() =>
        $"region {Info.Index} of {_deviceName} ({Size} bytes, {(_mapping is not null ? "mapped" : _areas.Length > 0 ? "sparse" : "file")})";

    internal static MmioRegion Open(VfioDevice device, int index)
    {
        var fd = device.DeviceFd;
        var info = RegionInfo.Query(device.Kernel, fd, index, device.ErrorTarget);
        var target = device.ErrorTarget with { RegionIndex = index };
        if (info.Size == 0)
        {
            throw new VfioNotFoundException($"Region {index} of {device.Name} is not implemented by the device (size 0).");
        }
        if ((info.Flags & (RegionAccess.Read | RegionAccess.Write)) == 0)
        {
            throw new VfioAccessDeniedException($"Region {index} of {device.Name} can be neither read nor written.");
        }
        if (!device.TryGet(out var reference))
        {
            throw new InvalidOperationException($"Device {device.Name} is being unregistered.");
        }
        SafeMapping? mapping = null;
        var areas = new List<MappedArea>();
        try
        {
            if (info.CanMmap)
            {
                int prot = ((info.Flags & RegionAccess.Read) != 0 ? Flags.PROT_READ : 0) | ((info.Flags & RegionAccess.Write) != 0 ? Flags.PROT_WRITE : 0);
                if (info.SparseMmapAreas is null)
                {
                    VfioErrors.Check(device.Kernel.Mmap(fd, (nuint)info.Size, prot, Flags.MAP_SHARED, (long)info.Offset, out mapping), "mmap", target);
                }
                else
                {
                    foreach (var area in info.SparseMmapAreas)
                    {
                        if (area.Size == 0)
                        {
                            continue;
                        }
                        VfioErrors.Check(device.Kernel.Mmap(fd, (nuint)area.Size, prot, Flags.MAP_SHARED, (long)(info.Offset + area.Offset), out var areaMapping), "mmap", target);
                        areas.Add(new MappedArea(area, areaMapping));
                    }
                }
            }
            var region = new MmioRegion(device, device.Name, info, mapping, [.. areas], fd, reference);
            device.TrackResource(region);
            return region;
        }
        catch
        {
            mapping?.Dispose();
            foreach (var area in areas)
            {
                area.Mapping.Dispose();
            }
            reference.Dispose();
            throw;
        }
    }

    /// <summary>
    /// A region over a mapping that is plain memory and belongs to no device (the MMIO benchmark
    /// compares this path with a raw pointer loop over the same memory). Disposing it unmaps it.
    /// </summary>
    internal static MmioRegion OverMemory(SafeMapping mapping, string name)
    {
        var info = new RegionInfo(0, mapping.Length, 0, RegionAccess.Read | RegionAccess.Write | RegionAccess.Mmap, null, null, false);
        return new MmioRegion(null, name, info, mapping, [], null, default);
    }

    /// <summary>Unmaps and releases; true the first time. The device calls it when it closes.</summary>
    bool IDeviceResource.Revoke() => Revoke();

    private bool Revoke()
    {
        if (Interlocked.Exchange(ref _state, 1) != 0)
        {
            return false;
        }
        _end8 = _end16 = _end32 = _end64 = 0;
        _base = null;
        _mapping?.Dispose();
        foreach (var area in _areas)
        {
            area.Mapping.Dispose();
        }
        _reference.Dispose();
        return true;
    }

    private void Check(ulong offset, int size)
    {
        if ((ulong)size > Size || offset > Size - (ulong)size || (offset & (ulong)(size - 1)) != 0)
        {
            ThrowOutOfRange(offset, size);
        }
    }

    /// <summary>Every access the fast path does not take: revoked, out of range, trapped, sparse or through the file.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private ulong ReadSlow(ulong offset, int size)
    {
        ThrowIfRevoked();
        Check(offset, size);
        if (_mapping is not null)
        {
            return _mapping.ReadTrapped((nuint)offset, size);
        }
        if (FindArea(offset, size) is { } area)
        {
            return area.Read(offset - area.Area.Offset, size);
        }
        Span<byte> bytes = stackalloc byte[8];
        bytes.Clear();
        long n = VfioErrors.Check(_device!.Kernel.PRead(_fd!, bytes[..size], (long)(_fileOffset + offset)), "pread", _device.ErrorTarget with { RegionIndex = Info.Index });
        if (n != size)
        {
            throw new VfioException($"A {size}-byte read at 0x{offset:x} of region {Info.Index} of {_deviceName} returned {n} bytes.");
        }
        return BinaryPrimitives.ReadUInt64LittleEndian(bytes);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void WriteSlow(ulong offset, int size, ulong value)
    {
        ThrowIfRevoked();
        Check(offset, size);
        if (_mapping is not null)
        {
            _mapping.WriteTrapped((nuint)offset, size, value);
            return;
        }
        if (FindArea(offset, size) is { } area)
        {
            area.Write(offset - area.Area.Offset, size, value);
            return;
        }
        Span<byte> bytes = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, value);
        long n = VfioErrors.Check(_device!.Kernel.PWrite(_fd!, bytes[..size], (long)(_fileOffset + offset)), "pwrite", _device.ErrorTarget with { RegionIndex = Info.Index });
        if (n != size)
        {
            throw new VfioException($"A {size}-byte write at 0x{offset:x} of region {Info.Index} of {_deviceName} wrote {n} bytes.");
        }
    }

    /// <summary>The mapped sparse area that holds all of [offset, offset + size), if any.</summary>
    private MappedArea? FindArea(ulong offset, int size)
    {
        foreach (var area in _areas)
        {
            if (offset >= area.Area.Offset && offset - area.Area.Offset <= area.Area.Size - (ulong)size)
            {
                return area;
            }
        }
        return null;
    }

    private void ThrowIfRevoked()
    {
        if (Volatile.Read(ref _state) != 0)
        {
            throw new ObjectDisposedException(ToString(), "The region was disposed, or its device was closed.");
        }
    }

    [DoesNotReturn]
    private void ThrowOutOfRange(ulong offset, int size)
    {
        ThrowIfRevoked();
        throw new ArgumentOutOfRangeException(nameof(offset), offset,
            $"A {size}-byte access at 0x{offset:x} is outside region {Info.Index} of {_deviceName} (0x{Size:x} bytes) or not {size}-byte aligned.");
    }

    /// <summary>One mapped sparse area of a region.</summary>
    private sealed class MappedArea(SparseMmapArea area, SafeMapping mapping)
    {
        public SparseMmapArea Area { get; } = area;

        public SafeMapping Mapping { get; } = mapping;

        public ulong Read(ulong offset, int size)
        {
            if (Mapping.IsTrapped)
            {
                return Mapping.ReadTrapped((nuint)offset, size);
            }
            bool added = false;
            Mapping.DangerousAddRef(ref added); // throws once the mapping is gone
            try
            {
                byte* p = (byte*)Mapping.Address + offset;
                return size switch
                {
                    1 => Volatile.Read(ref *p),
                    2 => Volatile.Read(ref *(ushort*)p),
                    4 => Volatile.Read(ref *(uint*)p),
                    _ => Volatile.Read(ref *(ulong*)p),
                };
            }
            finally
            {
                Mapping.DangerousRelease();
            }
        }

        public void Write(ulong offset, int size, ulong value)
        {
            if (Mapping.IsTrapped)
            {
                Mapping.WriteTrapped((nuint)offset, size, value);
                return;
            }
            bool added = false;
            Mapping.DangerousAddRef(ref added);
            try
            {
                byte* p = (byte*)Mapping.Address + offset;
                switch (size)
                {
                    case 1:
                        Volatile.Write(ref *p, (byte)value);
                        break;
                    case 2:
                        Volatile.Write(ref *(ushort*)p, (ushort)value);
                        break;
                    case 4:
                        Volatile.Write(ref *(uint*)p, (uint)value);
                        break;
                    default:
                        Volatile.Write(ref *(ulong*)p, value);
                        break;
                }
            }
            finally
            {
                Mapping.DangerousRelease();
            }
        }
    }
}
