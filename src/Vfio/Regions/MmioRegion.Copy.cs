using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Vfio.Interop;

namespace Vfio;

/// <content>Bulk copies into and out of the region: buffers, queues and shared memory behind a BAR.</content>
public sealed unsafe partial class MmioRegion
{
    /// <summary>
    /// Copies <paramref name="destination"/>'s length in bytes from the region, starting at
    /// <paramref name="offset"/>: byte <c>i</c> of the destination is the region's byte
    /// <paramref name="offset"/> + <c>i</c>.
    /// </summary>
    /// <remarks>
    /// Through a mapping, the copy is a sequence of volatile, naturally aligned accesses, each as wide
    /// as the alignment and the bytes left allow (8 bytes in the middle of a long copy, narrower at
    /// unaligned ends): each register is read once, in ascending order, none is merged with another
    /// or split beyond that. Through the device file (a region or the part of a sparse region that
    /// cannot be mapped) it is one pread, and the kernel chooses the widths (vfio-pci in Linux 6.1 reads
    /// at most 4 bytes at a time). A device whose registers accept only some widths (a 32-bit register bank)
    /// is better read with <see cref="Read32"/>; this copy suits memory behind a BAR (a buffer, a
    /// controller memory buffer, shared memory). While the region is suspended the destination is
    /// filled with all-ones; a copy that meets a suspension or a close on another thread reads all-ones
    /// from there on, as single accesses do. Nothing is allocated.
    /// </remarks>
    /// <param name="offset">The offset of the first byte in the region; any alignment.</param>
    /// <param name="destination">Where the bytes go; its length is the number of bytes copied.</param>
    /// <exception cref="ArgumentOutOfRangeException">The range is outside the region.</exception>
    /// <exception cref="ObjectDisposedException">The region was disposed, or its device closed.</exception>
    /// <exception cref="VfioException">A pread through the device file failed (errno in <see cref="VfioException.Errno"/>).</exception>
    public void Read(ulong offset, Span<byte> destination)
    {
        // Both checks in one: a length of 0, or a closed fast path (bound 0), takes the slow path.
        ulong end = _end8;
        ulong length = (ulong)destination.Length;
        if (length - 1 < end && offset <= end - length)
        {
            CopyFrom(new MemoryRegisters(_base), offset, destination);
        }
        else
        {
            ReadRangeSlow(offset, destination);
        }
        GC.KeepAlive(this); // the mapping lives as long as the region, so the region lives until the copy is done
    }

    /// <summary>
    /// Copies <paramref name="source"/> into the region, starting at <paramref name="offset"/>: the
    /// region's byte <paramref name="offset"/> + <c>i</c> becomes byte <c>i</c> of the source.
    /// </summary>
    /// <remarks>
    /// Through a mapping, the copy is a sequence of volatile, naturally aligned stores, each as wide as
    /// the alignment and the bytes left allow (8 bytes in the middle of a long copy, narrower at
    /// unaligned ends), in ascending order; no store is merged with another or split beyond that
    /// (vfio-pci maps BARs uncached). Through the device file it is one pwrite, and the kernel chooses
    /// the widths (vfio-pci in Linux 6.1 writes at most 4 bytes at a time). A
    /// device whose registers accept only some widths is better written with <see cref="Write32"/>.
    /// While the region is suspended the bytes are dropped; a copy that meets a suspension or a close
    /// on another thread writes the rest into memory the device never sees, as single accesses do.
    /// Nothing is allocated.
    /// </remarks>
    /// <param name="offset">The offset of the first byte in the region; any alignment.</param>
    /// <param name="source">The bytes to write.</param>
    /// <exception cref="ArgumentOutOfRangeException">The range is outside the region.</exception>
    /// <exception cref="ObjectDisposedException">The region was disposed, or its device closed.</exception>
    /// <exception cref="VfioException">A pwrite through the device file failed (errno in <see cref="VfioException.Errno"/>).</exception>
    public void Write(ulong offset, ReadOnlySpan<byte> source)
    {
        ulong end = _end8;
        ulong length = (ulong)source.Length;
        if (length - 1 < end && offset <= end - length)
        {
            CopyInto(new MemoryRegisters(_base), offset, source);
        }
        else
        {
            WriteRangeSlow(offset, source);
        }
        GC.KeepAlive(this);
    }

    /// <summary>Every copy the fast path does not take: empty, suspended, revoked, out of range, trapped, sparse or through the file.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ReadRangeSlow(ulong offset, Span<byte> destination)
    {
        ThrowIfRevoked();
        CheckRange(offset, destination.Length);
        if (destination.IsEmpty)
        {
            return;
        }
        if (Volatile.Read(ref _state) == Suspended)
        {
            destination.Fill(0xff);
            return;
        }
        if (_mapping is not null)
        {
            CopyFromMapping(_mapping, offset, destination);
            return;
        }
        for (int done = 0; done < destination.Length;)
        {
            ulong at = offset + (ulong)done;
            var (area, count) = NextPiece(at, destination.Length - done);
            var piece = destination.Slice(done, count);
            if (area is not null)
            {
                CopyFromMapping(area.Mapping, at - area.Area.Offset, piece);
            }
            else
            {
                ReadFile(at, piece);
            }
            done += count;
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void WriteRangeSlow(ulong offset, ReadOnlySpan<byte> source)
    {
        ThrowIfRevoked();
        CheckRange(offset, source.Length);
        if (source.IsEmpty || Volatile.Read(ref _state) == Suspended)
        {
            return; // dropped while suspended, as writes to a device that does not decode
        }
        if (_mapping is not null)
        {
            CopyIntoMapping(_mapping, offset, source);
            return;
        }
        for (int done = 0; done < source.Length;)
        {
            ulong at = offset + (ulong)done;
            var (area, count) = NextPiece(at, source.Length - done);
            var piece = source.Slice(done, count);
            if (area is not null)
            {
                CopyIntoMapping(area.Mapping, at - area.Area.Offset, piece);
            }
            else
            {
                WriteFile(at, piece);
            }
            done += count;
        }
    }

    /// <summary>
    /// The piece of a copy at <paramref name="at"/> (at most <paramref name="left"/> bytes) that one way
    /// reaches: the rest of the mapped sparse area that holds it, or, when none does, the gap up to the
    /// next area, through the file.
    /// </summary>
    private (MappedArea? Area, int Count) NextPiece(ulong at, int left)
    {
        ulong gapEnd = at + (ulong)left;
        foreach (var area in _areas)
        {
            ulong start = area.Area.Offset;
            ulong end = start + area.Area.Size;
            if (at >= start && at < end)
            {
                return (area, (int)Math.Min((ulong)left, end - at));
            }
            if (start > at && start < gapEnd)
            {
                gapEnd = start;
            }
        }
        return (null, (int)(gapEnd - at));
    }

    private void CheckRange(ulong offset, int length)
    {
        if ((ulong)length > Size || offset > Size - (ulong)length)
        {
            ThrowRangeOutside(offset, length);
        }
    }

    [DoesNotReturn]
    private void ThrowRangeOutside(ulong offset, int length) =>
        throw new ArgumentOutOfRangeException(nameof(offset), offset,
            $"A {length}-byte copy at 0x{offset:x} is outside region {Info.Index} of {_deviceName} (0x{Size:x} bytes).");

    /// <summary>A copy out of a mapping off the fast path, holding a reference on it so that an unmap waits until it is done.</summary>
    private static void CopyFromMapping(SafeMapping mapping, ulong offset, Span<byte> destination)
    {
        bool added = false;
        mapping.DangerousAddRef(ref added); // throws ObjectDisposedException once the mapping is released
        try
        {
            if (mapping.IsTrapped)
            {
                CopyFrom(new TrappedRegisters(mapping), offset, destination);
            }
            else
            {
                CopyFrom(new MemoryRegisters((byte*)mapping.Address), offset, destination);
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

    private static void CopyIntoMapping(SafeMapping mapping, ulong offset, ReadOnlySpan<byte> source)
    {
        bool added = false;
        mapping.DangerousAddRef(ref added);
        try
        {
            if (mapping.IsTrapped)
            {
                CopyInto(new TrappedRegisters(mapping), offset, source);
            }
            else
            {
                CopyInto(new MemoryRegisters((byte*)mapping.Address), offset, source);
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

    /// <summary>
    /// The width of the access at <paramref name="at"/> with <paramref name="left"/> bytes to go: the
    /// widest of 8, 4, 2 and 1 that <paramref name="at"/> is aligned to and that does not pass the end.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int AccessWidth(ulong at, int left)
    {
        int aligned = 1 << System.Numerics.BitOperations.TrailingZeroCount(at | 8);
        int fits = 1 << System.Numerics.BitOperations.Log2((uint)Math.Min(left, 8));
        return Math.Min(aligned, fits);
    }

    /// <summary>Reads [offset, offset + destination.Length) of <paramref name="registers"/> in ascending, naturally aligned accesses.</summary>
    private static void CopyFrom<TRegisters>(TRegisters registers, ulong offset, Span<byte> destination)
        where TRegisters : struct, IRegisters
    {
        ref byte to = ref MemoryMarshal.GetReference(destination);
        int length = destination.Length;
        int done = 0;
        while (done < length)
        {
            ulong at = offset + (ulong)done;
            if ((at & 7) == 0 && length - done >= 8)
            {
                // The body: 8-byte accesses, the widest a single volatile access makes.
                int bodyEnd = done + ((length - done) & ~7);
                for (; done < bodyEnd; done += 8)
                {
                    Unsafe.WriteUnaligned(ref Unsafe.Add(ref to, done), registers.Read64(offset + (ulong)done));
                }
                continue;
            }
            int width = AccessWidth(at, length - done);
            ref byte into = ref Unsafe.Add(ref to, done);
            switch (width)
            {
                case 1:
                    into = registers.Read8(at);
                    break;
                case 2:
                    Unsafe.WriteUnaligned(ref into, registers.Read16(at));
                    break;
                case 4:
                    Unsafe.WriteUnaligned(ref into, registers.Read32(at));
                    break;
                default:
                    Unsafe.WriteUnaligned(ref into, registers.Read64(at));
                    break;
            }
            done += width;
        }
    }

    /// <summary>Writes <paramref name="source"/> at <paramref name="offset"/> of <paramref name="registers"/> in ascending, naturally aligned accesses.</summary>
    private static void CopyInto<TRegisters>(TRegisters registers, ulong offset, ReadOnlySpan<byte> source)
        where TRegisters : struct, IRegisters
    {
        ref byte from = ref MemoryMarshal.GetReference(source);
        int length = source.Length;
        int done = 0;
        while (done < length)
        {
            ulong at = offset + (ulong)done;
            if ((at & 7) == 0 && length - done >= 8)
            {
                int bodyEnd = done + ((length - done) & ~7);
                for (; done < bodyEnd; done += 8)
                {
                    registers.Write64(offset + (ulong)done, Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref from, done)));
                }
                continue;
            }
            int width = AccessWidth(at, length - done);
            ref byte bytes = ref Unsafe.Add(ref from, done);
            switch (width)
            {
                case 1:
                    registers.Write8(at, bytes);
                    break;
                case 2:
                    registers.Write16(at, Unsafe.ReadUnaligned<ushort>(ref bytes));
                    break;
                case 4:
                    registers.Write32(at, Unsafe.ReadUnaligned<uint>(ref bytes));
                    break;
                default:
                    registers.Write64(at, Unsafe.ReadUnaligned<ulong>(ref bytes));
                    break;
            }
            done += width;
        }
    }

    /// <summary>
    /// Registers reached by one access at a time; a struct per kind, so that each copy loop is compiled
    /// for its kind and a memory access is inlined into it.
    /// </summary>
    private interface IRegisters
    {
        byte Read8(ulong offset);

        ushort Read16(ulong offset);

        uint Read32(ulong offset);

        ulong Read64(ulong offset);

        void Write8(ulong offset, byte value);

        void Write16(ulong offset, ushort value);

        void Write32(ulong offset, uint value);

        void Write64(ulong offset, ulong value);
    }

    /// <summary>A mapping that is memory: volatile loads and stores, as the single accessors make.</summary>
    private readonly struct MemoryRegisters(byte* start) : IRegisters
    {
        public byte Read8(ulong offset) => Volatile.Read(ref *(start + offset));

        public ushort Read16(ulong offset) => Volatile.Read(ref *(ushort*)(start + offset));

        public uint Read32(ulong offset) => Volatile.Read(ref *(uint*)(start + offset));

        public ulong Read64(ulong offset) => Volatile.Read(ref *(ulong*)(start + offset));

        public void Write8(ulong offset, byte value) => Volatile.Write(ref *(start + offset), value);

        public void Write16(ulong offset, ushort value) => Volatile.Write(ref *(ushort*)(start + offset), value);

        public void Write32(ulong offset, uint value) => Volatile.Write(ref *(uint*)(start + offset), value);

        public void Write64(ulong offset, ulong value) => Volatile.Write(ref *(ulong*)(start + offset), value);
    }

    /// <summary>A trapped mapping (a simulated device's emulated registers): each access is one trap, as a CPU access to a BAR.</summary>
    private readonly struct TrappedRegisters(SafeMapping mapping) : IRegisters
    {
        public byte Read8(ulong offset) => (byte)mapping.ReadTrapped((nuint)offset, 1);

        public ushort Read16(ulong offset) => (ushort)mapping.ReadTrapped((nuint)offset, 2);

        public uint Read32(ulong offset) => (uint)mapping.ReadTrapped((nuint)offset, 4);

        public ulong Read64(ulong offset) => mapping.ReadTrapped((nuint)offset, 8);

        public void Write8(ulong offset, byte value) => mapping.WriteTrapped((nuint)offset, 1, value);

        public void Write16(ulong offset, ushort value) => mapping.WriteTrapped((nuint)offset, 2, value);

        public void Write32(ulong offset, uint value) => mapping.WriteTrapped((nuint)offset, 4, value);

        public void Write64(ulong offset, ulong value) => mapping.WriteTrapped((nuint)offset, 8, value);
    }
}
