using System.Buffers.Binary;
using System.Diagnostics.CodeAnalysis;
using System.Numerics;
using System.Runtime.CompilerServices;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
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
/// No register access faults the process; each ends in a value, all-ones, or an exception. While
/// the device's memory does not answer (memory space off, a reset or hot reset in progress, D3, or
/// runtime low power, each done through the library) the region is suspended (<see cref="IsSuspended"/>):
/// reads return all-ones, as a PCI read of a device that does not decode, and writes are dropped.
/// vfio-pci revokes mapped BARs then, and a touch of the old mapping would be SIGBUS; so before the
/// library turns the memory off it maps all-ones memory over the region's mappings in place
/// (<c>MAP_FIXED</c>), and it maps the device back when the memory answers again. The region's
/// addresses stay valid all along, which keeps the mapped fast path a bounds check and one load or
/// store, with no lock and no reference count.
/// </para>
/// <para>
/// The region holds a reference on its device, so unregistering waits for it to be disposed (and
/// asks for that through the device's release-request hook). When the device closes, regions still
/// alive are revoked, on whatever thread closes it: all-ones memory is put in place and further
/// accesses throw <see cref="ObjectDisposedException"/>, while an access already past its bounds
/// check on another thread reads all-ones (or what another racing access wrote there) and writes into
/// memory the device never sees. A mapping that accesses reach without a check stays mapped, as
/// all-ones, until the region is garbage-collected (it holds no device resource by then); the others
/// are unmapped at once. A munmap the kernel refuses is logged, and <see cref="Dispose"/> reports it
/// and retries it the next time.
/// </para>
/// </remarks>
public sealed unsafe partial class MmioRegion : IDisposable, IDeviceResource
{
    private const int Live = 0;
    private const int Suspended = 1;
    private const int Revoked = 2;

    private readonly VfioDevice? _device;
    private readonly VfioKernel _kernel;
    private readonly string _deviceName;
    private readonly SafeMapping? _mapping;
    private readonly MappedArea[] _areas;
    private readonly SafeFd? _fd;
    private readonly ulong _fileOffset;
    private readonly int _prot;
    private readonly Lock _transition = new(); // orders suspend, resume and revoke; never taken by an access

    // Never changes: the fast path's pointer stays valid for the region's whole life.
    private readonly byte* _base;

    // The fast path's bounds: the number of naturally aligned registers of each width the whole
    // mapping holds, 0 when the region is not mapped whole as memory, or is suspended or revoked. An
    // offset rotated right by log2(width) is below it only when it is aligned and inside, so one
    // compare does both checks.
    private ulong _end8;
    private ulong _end16;
    private ulong _end32;
    private ulong _end64;
    private DeviceReference _reference;
    private int _state; // Live, Suspended or Revoked
    private List<UnmapFailure>? _unmapFailures; // munmaps the kernel refused, retried by the next Dispose

    private MmioRegion(VfioDevice? device, VfioKernel kernel, string deviceName, RegionInfo info, SafeMapping? mapping, MappedArea[] areas, SafeFd? fd, ulong fileOffset, int prot, DeviceReference reference)
    {
        _device = device;
        _kernel = kernel;
        _deviceName = deviceName;
        Info = info;
        Size = info.Size;
        _mapping = mapping;
        _areas = areas;
        _fd = fd;
        _fileOffset = fileOffset;
        _prot = prot;
        _reference = reference;
        if (mapping is not null && !mapping.IsTrapped)
        {
            _base = (byte*)mapping.Address;
            RestoreBounds();
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
    public bool IsLive => Volatile.Read(ref _state) != Revoked;

    /// <summary>
    /// True while the device's memory does not answer (memory space off, a reset in progress, D3 or
    /// runtime low power): reads return all-ones and writes are dropped, until the library sees the
    /// memory answer again and maps the region back.
    /// </summary>
    public bool IsSuspended => Volatile.Read(ref _state) == Suspended;

    /// <summary>Reads an 8-bit register.</summary>
    /// <param name="offset">The register's offset in the region.</param>
    /// <exception cref="ArgumentOutOfRangeException">The access is outside the region.</exception>
    /// <exception cref="ObjectDisposedException">The region was disposed, or its device closed.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public byte Read8(ulong offset)
    {
        byte value = offset < _end8 ? Volatile.Read(ref *(_base + offset)) : (byte)ReadSlow(offset, 1);
        GC.KeepAlive(this); // the mapping lives as long as the region, so the region lives until the access is done
        return value;
    }

    /// <summary>Reads a 16-bit register (little-endian, as PCI is).</summary>
    /// <param name="offset">The register's offset in the region, 2-byte aligned.</param>
    /// <exception cref="ArgumentOutOfRangeException">The access is outside the region or misaligned.</exception>
    /// <exception cref="ObjectDisposedException">The region was disposed, or its device closed.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ushort Read16(ulong offset)
    {
        ushort value = BitOperations.RotateRight(offset, 1) < _end16 ? Volatile.Read(ref *(ushort*)(_base + offset)) : (ushort)ReadSlow(offset, 2);
        GC.KeepAlive(this);
        return value;
    }

    /// <summary>Reads a 32-bit register.</summary>
    /// <param name="offset">The register's offset in the region, 4-byte aligned.</param>
    /// <exception cref="ArgumentOutOfRangeException">The access is outside the region or misaligned.</exception>
    /// <exception cref="ObjectDisposedException">The region was disposed, or its device closed.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public uint Read32(ulong offset)
    {
        uint value = BitOperations.RotateRight(offset, 2) < _end32 ? Volatile.Read(ref *(uint*)(_base + offset)) : (uint)ReadSlow(offset, 4);
        GC.KeepAlive(this);
        return value;
    }

    /// <summary>Reads a 64-bit register.</summary>
    /// <param name="offset">The register's offset in the region, 8-byte aligned.</param>
    /// <exception cref="ArgumentOutOfRangeException">The access is outside the region or misaligned.</exception>
    /// <exception cref="ObjectDisposedException">The region was disposed, or its device closed.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong Read64(ulong offset)
    {
        ulong value = BitOperations.RotateRight(offset, 3) < _end64 ? Volatile.Read(ref *(ulong*)(_base + offset)) : ReadSlow(offset, 8);
        GC.KeepAlive(this);
        return value;
    }

    /// <summary>Writes an 8-bit register.</summary>
    /// <param name="offset">The register's offset in the region.</param>
    /// <param name="value">The value.</param>
    /// <exception cref="ArgumentOutOfRangeException">The access is outside the region.</exception>
    /// <exception cref="ObjectDisposedException">The region was disposed, or its device closed.</exception>
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
        GC.KeepAlive(this);
    }

    /// <summary>Writes a 16-bit register.</summary>
    /// <param name="offset">The register's offset in the region, 2-byte aligned.</param>
    /// <param name="value">The value.</param>
    /// <exception cref="ArgumentOutOfRangeException">The access is outside the region or misaligned.</exception>
    /// <exception cref="ObjectDisposedException">The region was disposed, or its device closed.</exception>
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
        GC.KeepAlive(this);
    }

    /// <summary>Writes a 32-bit register.</summary>
    /// <param name="offset">The register's offset in the region, 4-byte aligned.</param>
    /// <param name="value">The value.</param>
    /// <exception cref="ArgumentOutOfRangeException">The access is outside the region or misaligned.</exception>
    /// <exception cref="ObjectDisposedException">The region was disposed, or its device closed.</exception>
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
        GC.KeepAlive(this);
    }

    /// <summary>Writes a 64-bit register.</summary>
    /// <param name="offset">The register's offset in the region, 8-byte aligned.</param>
    /// <param name="value">The value.</param>
    /// <exception cref="ArgumentOutOfRangeException">The access is outside the region or misaligned.</exception>
    /// <exception cref="ObjectDisposedException">The region was disposed, or its device closed.</exception>
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
        GC.KeepAlive(this);
    }

    /// <summary>
    /// Revokes the region and releases its reference on the device; an unmap the kernel refused, now
    /// or at an earlier dispose or close, is tried again.
    /// </summary>
    /// <exception cref="VfioException">The kernel refused a munmap (errno in <see cref="VfioException.Errno"/>): the
    /// mapping is still there, all-ones, no longer reaching the device; dispose again to retry.</exception>
    public void Dispose()
    {
        var earlier = TakeUnmapFailures();
        if (Revoke())
        {
            _device?.ForgetResource(this);
        }
        foreach (var failure in earlier)
        {
            int r = _kernel.Munmap(failure.Address, failure.Length);
            if (r < 0)
            {
                RecordUnmapFailure(failure with { Errno = -r });
            }
        }
        if (Volatile.Read(ref _unmapFailures) is { Count: > 0 } failures)
        {
            UnmapFailure first;
            lock (failures)
            {
                first = failures[0];
            }
            throw VfioErrors.Create(first.Errno, "munmap", ErrorTarget,
                string.Create(System.Globalization.CultureInfo.InvariantCulture,
                    $"{ToString()}: its {first.Length}-byte mapping at 0x{first.Address:x} is still there (all-ones, no longer reaching the device); dispose the region again to retry"));
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
        int prot = ((info.Flags & RegionAccess.Read) != 0 ? Flags.PROT_READ : 0) | ((info.Flags & RegionAccess.Write) != 0 ? Flags.PROT_WRITE : 0);
        MmioRegion? region = null;
        try
        {
            if (info.CanMmap)
            {
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
            region = new MmioRegion(device, device.Kernel, device.Name, info, mapping, [.. areas], fd, info.Offset, prot, reference);
            device.AdmitRegion(region); // suspended at once while the device's memory is off
            return region;
        }
        catch
        {
            if (region is not null)
            {
                region.Revoke();
                region.TakeUnmapFailures();
            }
            else
            {
                mapping?.Dispose();
                foreach (var area in areas)
                {
                    area.Mapping.Dispose();
                }
                reference.Dispose();
            }
            throw;
        }
    }

    /// <summary>
    /// A region over a mapping that is plain memory and belongs to no device (the MMIO benchmark
    /// compares this path with a raw pointer loop over the same memory). It can be suspended and
    /// revoked, not mapped back.
    /// </summary>
    internal static MmioRegion OverMemory(SafeMapping mapping, string name)
    {
        var info = new RegionInfo(0, mapping.Length, 0, RegionAccess.Read | RegionAccess.Write | RegionAccess.Mmap, null, null, false);
        return new MmioRegion(null, mapping.Kernel, name, info, mapping, [], null, 0, Flags.PROT_READ | Flags.PROT_WRITE, default);
    }

    /// <summary>
    /// A region over a shared mapping of <paramref name="fd"/> at <paramref name="offset"/>, standing in
    /// for a BAR where there is no device (a memfd, on a machine without VFIO): suspending, resuming and
    /// revoking it do what they do to a BAR.
    /// </summary>
    internal static MmioRegion OverFile(VfioKernel kernel, SafeFd fd, long offset, nuint length, string name)
    {
        const int Prot = Flags.PROT_READ | Flags.PROT_WRITE;
        VfioErrors.Check(kernel.Mmap(fd, length, Prot, Flags.MAP_SHARED, offset, out var mapping), "mmap");
        var info = new RegionInfo(0, length, (ulong)offset, RegionAccess.Read | RegionAccess.Write | RegionAccess.Mmap, null, null, false);
        return new MmioRegion(null, kernel, name, info, mapping, [], fd, (ulong)offset, Prot, default);
    }

    /// <summary>
    /// Makes every access read all-ones and drop writes, before the device's memory stops answering:
    /// the fast path is closed, then all-ones memory is mapped over each mapping in place. Throws when
    /// that cannot be done; the region is then as it was (or, if even that failed, still safe).
    /// </summary>
    internal void Suspend()
    {
        lock (_transition)
        {
            if (_state != Live)
            {
                return;
            }
            ClearBounds();
            Volatile.Write(ref _state, Suspended);
            int r = MapAllOnesOver();
            if (r < 0)
            {
                if (MapBack() == 0)
                {
                    Volatile.Write(ref _state, Live);
                    RestoreBounds();
                }
                throw VfioErrors.Create(-r, "mmap (all-ones in place of " + ToString() + ")", ErrorTarget,
                    "The region could not be made safe for the device's memory to stop answering, so the operation was not done");
            }
        }
    }

    /// <summary>Maps the device back over the region once its memory answers again, and opens the fast path.</summary>
    internal void Resume()
    {
        lock (_transition)
        {
            if (_state != Suspended)
            {
                return;
            }
            int r = MapBack();
            if (r < 0)
            {
                throw VfioErrors.Create(-r, "mmap (" + ToString() + " again)", ErrorTarget,
                    "The region keeps reading all-ones; it is mapped again the next time the device's memory is enabled");
            }
            Volatile.Write(ref _state, Live);
            RestoreBounds();
        }
    }

    /// <summary>Revokes the region; true the first time. The device calls it when it closes, on the closing thread.</summary>
    bool IDeviceResource.Revoke() => Revoke();

    private bool Revoke()
    {
        lock (_transition)
        {
            if (_state == Revoked)
            {
                return false;
            }
            ClearBounds();
            bool allOnes = _state == Suspended;
            Volatile.Write(ref _state, Revoked);
            // An access may still be on its way to the mappings on another thread: all-ones goes in place
            // first, so that it reads all-ones even if another thread turns the device's memory off
            // meanwhile (SIGBUS otherwise). The fast path's mapping keeps it until the region is collected
            // (the mapping's finalizer unmaps it then); every other access holds a reference on its
            // mapping, which defers the unmap until it is done.
            int r = allOnes ? 0 : MapAllOnesOver();
            if (r < 0)
            {
                Log.RegionRevokeFailed(Logger, ToString(), Errno.Name(-r));
            }
            if (_base == null || r < 0)
            {
                // Off the fast path, or nothing could be put in place: unmap, so that the device file is not held open.
                if (_mapping is not null)
                {
                    Unmap(_mapping);
                }
                foreach (var area in _areas)
                {
                    Unmap(area.Mapping);
                }
            }
        }
        _reference.Dispose();
        return true;
    }

    private ILogger Logger => _device?.Registry.Logger ?? NullLogger.Instance;

    private ErrorTarget ErrorTarget => (_device?.ErrorTarget ?? default) with { RegionIndex = Info.Index };

    private void ClearBounds()
    {
        Volatile.Write(ref _end8, 0);
        Volatile.Write(ref _end16, 0);
        Volatile.Write(ref _end32, 0);
        Volatile.Write(ref _end64, 0);
    }

    private void RestoreBounds()
    {
        if (_base == null)
        {
            return;
        }
        Volatile.Write(ref _end64, Size / 8);
        Volatile.Write(ref _end32, Size / 4);
        Volatile.Write(ref _end16, Size / 2);
        Volatile.Write(ref _end8, Size);
    }

    /// <summary>Maps all-ones memory in place of each of the region's mappings; 0, or the first error.</summary>
    private int MapAllOnesOver() => EachMapping(static (region, mapping) => AllOnesMemory.MapOver(region._kernel, mapping.Address, mapping.Length));

    /// <summary>Runs <paramref name="action"/> on the whole mapping or on each area; the first negative errno stops it.</summary>
    private int EachMapping(Func<MmioRegion, SafeMapping, int> action)
    {
        if (_mapping is not null)
        {
            return action(this, _mapping);
        }
        foreach (var area in _areas)
        {
            int r = action(this, area.Mapping);
            if (r < 0)
            {
                return r;
            }
        }
        return 0;
    }

    /// <summary>Maps the file back over every mapping in place (MAP_FIXED), where all-ones was.</summary>
    private int MapBack()
    {
        if (_fd is null)
        {
            return -Errno.ENODEV; // plain memory: there is nothing to map back
        }
        if (_mapping is not null)
        {
            return _kernel.MmapFixed(_mapping.Address, _mapping.Length, _prot, Flags.MAP_SHARED, _fd, (long)_fileOffset);
        }
        foreach (var area in _areas)
        {
            int r = _kernel.MmapFixed(area.Mapping.Address, area.Mapping.Length, _prot, Flags.MAP_SHARED, _fd, (long)(_fileOffset + area.Area.Offset));
            if (r < 0)
            {
                return r;
            }
        }
        return 0;
    }

    /// <summary>Unmaps now, or when the last access holding a reference on it is done; a refusal is logged and kept for the next Dispose.</summary>
    private void Unmap(SafeMapping mapping)
    {
        mapping.UnmapFailed = (failed, errno) =>
        {
            // Whatever is left must not hold the device file open: put all-ones in place of it.
            _ = AllOnesMemory.MapOver(_kernel, failed.Address, failed.Length);
            Log.RegionUnmapFailed(Logger, ToString(), failed.Address, (ulong)failed.Length, Errno.Name(errno));
            RecordUnmapFailure(new UnmapFailure(failed.Address, failed.Length, errno));
        };
        mapping.Dispose();
    }

    private void RecordUnmapFailure(UnmapFailure failure)
    {
        var failures = Volatile.Read(ref _unmapFailures) ?? Interlocked.CompareExchange(ref _unmapFailures, [], null) ?? _unmapFailures!;
        lock (failures)
        {
            failures.Add(failure);
        }
    }

    private UnmapFailure[] TakeUnmapFailures()
    {
        if (Volatile.Read(ref _unmapFailures) is not { } failures)
        {
            return [];
        }
        lock (failures)
        {
            UnmapFailure[] taken = [.. failures];
            failures.Clear();
            return taken;
        }
    }

    private void Check(ulong offset, int size)
    {
        if ((ulong)size > Size || offset > Size - (ulong)size || (offset & (ulong)(size - 1)) != 0)
        {
            ThrowOutOfRange(offset, size);
        }
    }

    /// <summary>Every access the fast path does not take: suspended, revoked, out of range, trapped, sparse or through the file.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private ulong ReadSlow(ulong offset, int size)
    {
        ThrowIfRevoked();
        Check(offset, size);
        if (Volatile.Read(ref _state) == Suspended)
        {
            return size == 8 ? ulong.MaxValue : (1UL << (size * 8)) - 1;
        }
        if (_mapping is not null)
        {
            return ReadMapping(_mapping, offset, size);
        }
        if (FindArea(offset, size) is { } area)
        {
            return ReadMapping(area.Mapping, offset - area.Area.Offset, size);
        }
        Span<byte> bytes = stackalloc byte[8];
        bytes.Clear();
        ReadFile(offset, bytes[..size]);
        return BinaryPrimitives.ReadUInt64LittleEndian(bytes);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void WriteSlow(ulong offset, int size, ulong value)
    {
        ThrowIfRevoked();
        Check(offset, size);
        if (Volatile.Read(ref _state) == Suspended)
        {
            return; // dropped, as a write to a device that does not decode
        }
        if (_mapping is not null)
        {
            WriteMapping(_mapping, offset, size, value);
            return;
        }
        if (FindArea(offset, size) is { } area)
        {
            WriteMapping(area.Mapping, offset - area.Area.Offset, size, value);
            return;
        }
        Span<byte> bytes = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, value);
        WriteFile(offset, bytes[..size]);
    }

    /// <summary>One pread of <paramref name="destination"/>'s length at <paramref name="offset"/> of the region, through the device file.</summary>
    private void ReadFile(ulong offset, Span<byte> destination)
    {
        long n = VfioErrors.Check(_kernel.PRead(_fd!, destination, (long)(_fileOffset + offset)), "pread", ErrorTarget);
        if (n != destination.Length)
        {
            throw new VfioException($"A {destination.Length}-byte read at 0x{offset:x} of region {Info.Index} of {_deviceName} returned {n} bytes.");
        }
    }

    /// <summary>One pwrite of <paramref name="source"/> at <paramref name="offset"/> of the region, through the device file.</summary>
    private void WriteFile(ulong offset, ReadOnlySpan<byte> source)
    {
        // A write through the file may be a config write that turns the device's memory off or on.
        bool gated = _device?.GateRegionWrite(Info.Index, offset, source) ?? false;
        try
        {
            long n = VfioErrors.Check(_kernel.PWrite(_fd!, source, (long)(_fileOffset + offset)), "pwrite", ErrorTarget);
            if (n != source.Length)
            {
                throw new VfioException($"A {source.Length}-byte write at 0x{offset:x} of region {Info.Index} of {_deviceName} wrote {n} bytes.");
            }
        }
        finally
        {
            if (gated)
            {
                _device!.ResumeMappedRegions();
            }
        }
    }

    /// <summary>
    /// A read through a mapping off the fast path (trapped, a sparse area, or the whole mapping while
    /// its bounds are closed), holding a reference on it so that an unmap waits until it is done.
    /// </summary>
    private static ulong ReadMapping(SafeMapping mapping, ulong offset, int size)
    {
        bool added = false;
        mapping.DangerousAddRef(ref added); // throws ObjectDisposedException once the mapping is released
        try
        {
            if (mapping.IsTrapped)
            {
                return mapping.ReadTrapped((nuint)offset, size);
            }
            byte* p = (byte*)mapping.Address + offset;
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
            if (added)
            {
                mapping.DangerousRelease();
            }
        }
    }

    private static void WriteMapping(SafeMapping mapping, ulong offset, int size, ulong value)
    {
        bool added = false;
        mapping.DangerousAddRef(ref added);
        try
        {
            if (mapping.IsTrapped)
            {
                mapping.WriteTrapped((nuint)offset, size, value);
                return;
            }
            byte* p = (byte*)mapping.Address + offset;
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
            if (added)
            {
                mapping.DangerousRelease();
            }
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
        if (Volatile.Read(ref _state) == Revoked)
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
    }

    /// <summary>A munmap the kernel refused: the range is still mapped.</summary>
    private readonly record struct UnmapFailure(nint Address, nuint Length, int Errno);
}
