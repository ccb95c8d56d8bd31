using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio.Testing;

/// <summary>
/// Real, page-aligned, zeroed native memory behind an anonymous mapping. The mapping and every DMA
/// mapping that pins it hold a reference, so memory the device may still reach is never freed, as
/// pinned pages outlive munmap in the kernel.
/// </summary>
internal sealed unsafe class AnonymousMemory
{
    private int _references = 1;

    public AnonymousMemory(nuint length, nuint pageSize = SimulatedKernel.PageSize)
    {
        Length = (length + pageSize - 1) & ~(pageSize - 1);
        void* p = NativeMemory.AlignedAlloc(Length, pageSize);
        NativeMemory.Clear(p, Length);
        Address = (nint)p;
    }

    public nint Address { get; }

    public nuint Length { get; }

    public void Get() => _references++;

    public void Put()
    {
        if (--_references == 0)
        {
            NativeMemory.AlignedFree((void*)Address);
        }
    }
}

/// <summary>What a file mapping maps: a region of a device file, or a private copy of a memory file's bytes.</summary>
/// <param name="File">The file the mapping holds open (a device file), or null.</param>
/// <param name="Region">The device region.</param>
/// <param name="RegionOffset">Where in the region the mapping starts.</param>
/// <param name="Contents">The private copy of a memory file's bytes, from the mapping's offset on.</param>
internal sealed record MappingSource(KernelFile? File, int Region, ulong RegionOffset, byte[]? Contents);

/// <summary>
/// One mapping of the process's address space (a VMA): anonymous memory (real memory at its address),
/// a device region (at an address no CPU access reaches: every access traps into the device model,
/// as an access to a real BAR traps into a hypervisor's device model), or a private copy of a memory
/// file (real memory when it replaced real memory in place, otherwise bytes reached the trapped way).
/// </summary>
internal sealed class VirtualMemoryArea(nint address, nuint length, string description, AnonymousMemory? memory, KernelFile? file, int hugePages = 0)
{
    /// <summary>The 2 MiB hugepages a MAP_HUGETLB mapping took from the pool.</summary>
    public int HugePages { get; } = hugePages;

    public nint Address { get; } = address;

    public nuint Length { get; } = length;

    public string Description { get; } = description;

    /// <summary>The real memory at <see cref="Address"/> (an anonymous mapping, or a private file copy written into it).</summary>
    public AnonymousMemory? Memory { get; } = memory;

    /// <summary>The file the mapping keeps open (a device file).</summary>
    public KernelFile? File { get; } = file;

    /// <summary>For a device mapping: the region, and where in it <see cref="Address"/> falls.</summary>
    public int Region { get; init; }

    /// <summary>For a device mapping: the region offset of <see cref="Address"/>.</summary>
    public ulong RegionOffset { get; init; }

    /// <summary>For a private file copy at a trapped address: its bytes; <see cref="ContentsOffset"/> is where <see cref="Address"/> falls.</summary>
    public byte[]? Contents { get; init; }

    /// <summary>The index in <see cref="Contents"/> of the byte at <see cref="Address"/>.</summary>
    public ulong ContentsOffset { get; init; }

    public nint End => Address + (nint)Length;

    public bool Contains(ulong start, ulong length) =>
        start >= (ulong)Address && length <= (ulong)Length && start - (ulong)Address <= (ulong)Length - length;

    /// <summary>The part [start, start + length) of this mapping, holding its own references; the kernel lock is held.</summary>
    public VirtualMemoryArea Slice(nint start, nuint length)
    {
        ulong delta = (ulong)(start - Address);
        Memory?.Get();
        File?.Get();
        return new VirtualMemoryArea(start, length, Description, Memory, File)
        {
            Region = Region,
            RegionOffset = RegionOffset + delta,
            Contents = Contents,
            ContentsOffset = ContentsOffset + delta,
        };
    }
}

/// <summary>
/// A mapping whose accesses trap into the simulated kernel, which finds the mapping at the address
/// now (the device region, or what replaced it in place) and answers as the CPU would: the device
/// model's registers, a private copy's bytes, or a fault where Linux would kill the process.
/// </summary>
internal sealed class TrappedMapping(SimulatedKernel kernel, nint address, nuint length) : SafeMapping(kernel, address, length)
{
    public override bool IsTrapped => true;

    public override ulong ReadTrapped(nuint offset, int size)
    {
        Check(offset, size);
        return kernel.ReadTrappedAt(Address + (nint)offset, size);
    }

    public override void WriteTrapped(nuint offset, int size, ulong value)
    {
        Check(offset, size);
        kernel.WriteTrappedAt(Address + (nint)offset, size, value);
    }

    private void Check(nuint offset, int size)
    {
        if (size is not (1 or 2 or 4 or 8))
        {
            throw new ArgumentOutOfRangeException(nameof(size), size, "A register access is 1, 2, 4 or 8 bytes wide.");
        }
        if (offset > Length || Length - offset < (nuint)size)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), offset, "The access is outside the mapping.");
        }
    }
}

/// <summary>
/// An access that would have killed the process on Linux: SIGBUS (a mapped BAR of a device whose
/// memory is not reachable: memory space off, D3, runtime low power; or a file mapping past its end)
/// or SIGSEGV (nothing mapped there). The simulated kernel throws it where Linux would deliver the
/// signal, so a test sees the fault the real kernel would give instead of a value.
/// </summary>
public sealed class SimulatedFaultException : Exception
{
    /// <summary>Creates the exception.</summary>
    public SimulatedFaultException()
        : this("SIGSEGV", 0, "an access the kernel refused")
    {
    }

    /// <summary>Creates the exception with a message.</summary>
    /// <param name="message">What happened.</param>
    public SimulatedFaultException(string message)
        : base(message)
    {
        Signal = "SIGSEGV";
    }

    /// <summary>Creates the exception with a message and a cause.</summary>
    /// <param name="message">What happened.</param>
    /// <param name="innerException">The cause.</param>
    public SimulatedFaultException(string message, Exception innerException)
        : base(message, innerException)
    {
        Signal = "SIGSEGV";
    }

    internal SimulatedFaultException(string signal, nint address, string reason)
        : base($"{signal} at 0x{address:x}: {reason}. On Linux this access kills the process.")
    {
        Signal = signal;
        Address = address;
    }

    /// <summary>The signal Linux would deliver: <c>SIGBUS</c> or <c>SIGSEGV</c>.</summary>
    public string Signal { get; }

    /// <summary>The address of the access.</summary>
    public nint Address { get; }
}

public sealed partial class SimulatedKernel
{
    private const long TrappedBase = 0x7e00_0000_0000;

    private readonly SortedList<nint, VirtualMemoryArea> _areas = [];

    // The kernel's mmap_lock: a CPU access through a mapping (a page fault) reads the address space
    // while mmap, MAP_FIXED and munmap change it, so an access completes against the mapping it
    // found, and a change in place is atomic to accesses on other threads, as on Linux.
    private readonly AddressSpaceLock _mmapLock = new();
    private long _nextTrappedAddress = TrappedBase;

    /// <summary>
    /// The machine's memory as the simulation sees it: the runtime's view of the host by default. An
    /// anonymous mapping longer than this is refused with ENOMEM, as Linux's default overcommit
    /// heuristic refuses a single mapping larger than RAM plus swap.
    /// </summary>
    public ulong MemoryBytes { get; set; } = (ulong)GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;

    internal override int Mmap(SafeFd? fd, nuint length, int prot, int flags, long offset, out SafeMapping mapping)
    {
        mapping = null!;
        int injected = _injection.Enter(SimulatedCall.Mmap);
        if (injected < 0)
        {
            return injected;
        }
        _mmapLock.EnterWrite();
        try
        {
            return MmapCore(fd, length, prot, flags, offset, out mapping);
        }
        finally
        {
            _mmapLock.ExitWrite();
        }
    }

    private int MmapCore(SafeFd? fd, nuint length, int prot, int flags, long offset, out SafeMapping mapping)
    {
        mapping = null!;
        int sharing = flags & (Flags.MAP_SHARED | Flags.MAP_PRIVATE);
        if (length == 0 || sharing == 0 || sharing == (Flags.MAP_SHARED | Flags.MAP_PRIVATE) || (offset & (PageSize - 1)) != 0)
        {
            return -Errno.EINVAL;
        }
        if (fd is null)
        {
            if ((ulong)length > MemoryBytes)
            {
                return -Errno.ENOMEM; // more than the machine has: __vm_enough_memory refuses it
            }
            using (Enter())
            {
                int hugePages = 0;
                if ((flags & Flags.MAP_HUGETLB) != 0 && !TryTakeHugePagesLocked(length, out hugePages))
                {
                    return -Errno.ENOMEM; // the pool cannot cover the mapping
                }
                AnonymousMemory memory;
                try
                {
                    memory = new AnonymousMemory(length, hugePages > 0 ? (nuint)HugePageSize : PageSize);
                }
                catch (OutOfMemoryException)
                {
                    PutHugePagesLocked(hugePages);
                    return -Errno.ENOMEM; // the process that hosts the simulation could not get it
                }
                _areas.Add(memory.Address, new VirtualMemoryArea(memory.Address, length, hugePages > 0 ? "anonymous hugepage memory" : "anonymous memory", memory, null, hugePages));
                mapping = new SafeMapping(this, memory.Address, length);
                return 0;
            }
        }
        SafeMapping? mapped = null;
        int result = MapFile(fd, length, prot, flags, offset, (file, source) =>
        {
            nuint span = (length + PageSize - 1) & ~(nuint)(PageSize - 1);
            nint address = (nint)_nextTrappedAddress;
            _nextTrappedAddress += (long)span + PageSize;
            AddFileAreaLocked(address, length, file, source);
            mapped = new TrappedMapping(this, address, length);
            return 0;
        });
        mapping = mapped!;
        return result;
    }

    /// <summary>
    /// The common part of mapping a file: its reference for the call, its own checks (what it maps),
    /// then <paramref name="place"/> under the kernel lock to put the mapping in the address space.
    /// </summary>
    private int MapFile(SafeFd fd, nuint length, int prot, int flags, long offset, Func<KernelFile, MappingSource, int> place)
    {
        int r = Acquire(fd, out var file);
        if (r < 0)
        {
            return r;
        }
        try
        {
            r = file.Map(length, prot, flags, offset, out var source);
            if (r < 0)
            {
                return r;
            }
            using (Enter())
            {
                return place(file, source);
            }
        }
        finally
        {
            Release(file);
        }
    }

    internal override int MmapFixed(nint address, nuint length, int prot, int flags, SafeFd fd, long offset)
    {
        int injected = _injection.Enter(SimulatedCall.Mmap);
        if (injected < 0)
        {
            return injected;
        }
        _mmapLock.EnterWrite();
        try
        {
            return MmapFixedCore(address, length, prot, flags, fd, offset);
        }
        finally
        {
            _mmapLock.ExitWrite();
        }
    }

    private int MmapFixedCore(nint address, nuint length, int prot, int flags, SafeFd fd, long offset)
    {
        int sharing = flags & (Flags.MAP_SHARED | Flags.MAP_PRIVATE);
        if (length == 0 || sharing == 0 || sharing == (Flags.MAP_SHARED | Flags.MAP_PRIVATE) || ((offset | address) & (PageSize - 1)) != 0)
        {
            return -Errno.EINVAL;
        }
        return MapFile(fd, length, prot, flags, offset, (file, source) => PlaceFixedLocked(address, length, file, source));
    }

    /// <summary>
    /// Puts a file mapping at [address, + length) in place of what is there. Where it lands decides
    /// what it is: over the simulation's real memory, a private file copy is written into that memory;
    /// in the trapped range, it is reached the trapped way. The simulation cannot place a mapping
    /// anywhere else. The lock is held.
    /// </summary>
    private unsafe int PlaceFixedLocked(nint address, nuint length, KernelFile file, MappingSource source)
    {
        var memory = RealMemoryUnderLocked(address, length);
        bool trapped = (long)address >= TrappedBase;
        if (memory is null && !trapped)
        {
            return -Errno.EINVAL;
        }
        if (memory is not null && source.Contents is null)
        {
            return -Errno.EINVAL; // a device region cannot live in real memory here
        }
        RemoveRangeLocked(address, length);
        if (memory is null)
        {
            AddFileAreaLocked(address, length, file, source);
            return 0;
        }
        // Word by word, so that an access on another thread meets the old bytes or the new, as with the kernel's page swap.
        var contents = source.Contents!;
        for (nuint i = 0; i + 8 <= length; i += 8)
        {
            ulong word = i + 8 <= (nuint)contents.Length ? BinaryPrimitives.ReadUInt64LittleEndian(contents.AsSpan((int)i)) : 0;
            Volatile.Write(ref *(ulong*)(address + (nint)i), word);
        }
        memory.Get();
        _areas.Add(address, new VirtualMemoryArea(address, length, "private copy of " + file.Path, memory, null));
        return 0;
    }

    /// <summary>Records a mapping of <paramref name="file"/> as <paramref name="source"/> describes it; the lock is held.</summary>
    private void AddFileAreaLocked(nint address, nuint length, KernelFile file, MappingSource source)
    {
        source.File?.Get();
        string description = source.Contents is not null ? "private copy of " + file.Path : file.Path + " region " + Decimal(source.Region);
        _areas.Add(address, new VirtualMemoryArea(address, length, description, null, source.File)
        {
            Region = source.Region,
            RegionOffset = source.RegionOffset,
            Contents = source.Contents,
        });
    }

    internal override int Munmap(nint address, nuint length)
    {
        int injected = _injection.Enter(SimulatedCall.Munmap);
        if (injected < 0)
        {
            return injected;
        }
        if ((address & (PageSize - 1)) != 0 || length == 0)
        {
            return -Errno.EINVAL;
        }
        _mmapLock.EnterWrite();
        try
        {
            using (Enter())
            {
                // munmap of a range with nothing mapped succeeds, as in the kernel; part of a mapping splits it.
                RemoveRangeLocked(address, (length + PageSize - 1) & ~(nuint)(PageSize - 1));
                return 0;
            }
        }
        finally
        {
            _mmapLock.ExitWrite();
        }
    }

    internal override int MemFd(string name, out SafeFd fd)
    {
        fd = null!;
        int injected = _injection.Enter(SimulatedCall.MemFd);
        if (injected < 0)
        {
            return injected;
        }
        using (Enter())
        {
            fd = new SafeFd(this, Files.Install(new MemFdFile(this, name)));
            return 0;
        }
    }

    /// <summary>Removes [start, start + length) from every mapping it overlaps, keeping their other parts; the lock is held.</summary>
    private void RemoveRangeLocked(nint start, nuint length)
    {
        nint end = start + (nint)length;
        var overlapping = _areas.Values.Where(a => a.Address < end && a.End > start).ToList();
        foreach (var area in overlapping)
        {
            _areas.Remove(area.Address);
            if (area.Address < start)
            {
                _areas.Add(area.Address, area.Slice(area.Address, (nuint)(start - area.Address)));
            }
            if (area.End > end)
            {
                _areas.Add(end, area.Slice(end, (nuint)(area.End - end)));
            }
            area.Memory?.Put();
            area.File?.Put();
            PutHugePagesLocked(area.HugePages);
        }
    }

    /// <summary>The one block of simulated anonymous memory that holds all of [start, start + length), if any; the lock is held.</summary>
    private AnonymousMemory? RealMemoryUnderLocked(nint start, nuint length)
    {
        nint end = start + (nint)length;
        AnonymousMemory? found = null;
        nint covered = start;
        foreach (var area in _areas.Values.Where(a => a.Address < end && a.End > start))
        {
            if (area.Memory is null || area.HugePages > 0 || area.Address > covered || (found is not null && !ReferenceEquals(found, area.Memory)))
            {
                return null;
            }
            found = area.Memory;
            covered = area.End;
        }
        return covered >= end ? found : null;
    }

    /// <summary>The mapping that holds all of [start, start + length); the lock is held.</summary>
    private VirtualMemoryArea? FindAreaLocked(ulong start, ulong length)
    {
        var keys = _areas.Keys;
        int lo = 0;
        int hi = keys.Count - 1;
        int found = -1;
        while (lo <= hi)
        {
            int mid = (lo + hi) / 2;
            if ((ulong)keys[mid] <= start)
            {
                found = mid;
                lo = mid + 1;
            }
            else
            {
                hi = mid - 1;
            }
        }
        if (found < 0)
        {
            return null;
        }
        var area = _areas.Values[found];
        return area.Contains(start, length) ? area : null;
    }

    /// <summary>The anonymous mapping that holds all of [start, start + length); the lock is held.</summary>
    internal VirtualMemoryArea? FindAnonymousLocked(ulong start, ulong length) =>
        FindAreaLocked(start, length) is { Memory: not null } area ? area : null;

    /// <summary>A CPU read of a trapped address: the device model's register, a private copy's bytes, or a fault.</summary>
    internal ulong ReadTrappedAt(nint address, int size)
    {
        ulong value = 0;
        AccessTrapped(address, size, write: false, ref value);
        return value;
    }

    /// <summary>A CPU write to a trapped address.</summary>
    internal void WriteTrappedAt(nint address, int size, ulong value) => AccessTrapped(address, size, write: true, ref value);

    private void AccessTrapped(nint address, int size, bool write, ref ulong value)
    {
        _mmapLock.EnterRead();
        try
        {
            AccessTrappedCore(address, size, write, ref value);
        }
        finally
        {
            _mmapLock.ExitRead();
        }
    }

    private void AccessTrappedCore(nint address, int size, bool write, ref ulong value)
    {
        VirtualMemoryArea? area;
        using (Enter())
        {
            area = FindAreaLocked((ulong)address, (ulong)size);
            area?.File?.Get();
        }
        if (area is null)
        {
            throw new SimulatedFaultException("SIGSEGV", address, "nothing is mapped there");
        }
        try
        {
            ulong delta = (ulong)(address - area.Address);
            if (area.File is DeviceFile device)
            {
                // vfio_pci_mmap_fault: SIGBUS while the device's memory is not reachable.
                if (!MappedMemoryReachable(device.Device))
                {
                    throw new SimulatedFaultException("SIGBUS", address,
                        $"BAR {area.Region} of {device.Device.Name} is mapped, but its memory is not reachable (memory space off, D3 or runtime low power)");
                }
                if (write)
                {
                    device.Device.Model.WriteMapped(area.Region, area.RegionOffset + delta, size, value);
                }
                else
                {
                    value = device.Device.Model.ReadMapped(area.Region, area.RegionOffset + delta, size);
                }
                return;
            }
            if (area.Contents is { } contents)
            {
                ulong at = area.ContentsOffset + delta;
                if (at + (ulong)size > (ulong)contents.Length)
                {
                    throw new SimulatedFaultException("SIGBUS", address, "past the end of the mapped file");
                }
                var bytes = contents.AsSpan((int)at, size);
                lock (contents)
                {
                    if (write)
                    {
                        Span<byte> le = stackalloc byte[8];
                        BinaryPrimitives.WriteUInt64LittleEndian(le, value);
                        le[..size].CopyTo(bytes);
                    }
                    else
                    {
                        Span<byte> le = stackalloc byte[8];
                        le.Clear();
                        bytes.CopyTo(le);
                        value = BinaryPrimitives.ReadUInt64LittleEndian(le);
                    }
                }
                return;
            }
            throw new SimulatedFaultException("SIGSEGV", address, "the mapping there is plain memory, not a trapped one");
        }
        finally
        {
            if (area.File is not null)
            {
                using (Enter())
                {
                    area.File.Put();
                }
            }
        }
    }

    /// <summary>A reader-writer lock that prefers writers, so a change to the address space waits only for the accesses already in it.</summary>
    private sealed class AddressSpaceLock
    {
        private readonly object _gate = new();
        private int _readers;
        private int _waitingWriters;
        private bool _writer;

        public void EnterRead()
        {
            lock (_gate)
            {
                while (_writer || _waitingWriters > 0)
                {
                    Monitor.Wait(_gate);
                }
                _readers++;
            }
        }

        public void ExitRead()
        {
            lock (_gate)
            {
                if (--_readers == 0)
                {
                    Monitor.PulseAll(_gate);
                }
            }
        }

        public void EnterWrite()
        {
            lock (_gate)
            {
                _waitingWriters++;
                while (_writer || _readers > 0)
                {
                    Monitor.Wait(_gate);
                }
                _waitingWriters--;
                _writer = true;
            }
        }

        public void ExitWrite()
        {
            lock (_gate)
            {
                _writer = false;
                Monitor.PulseAll(_gate);
            }
        }
    }

    /// <summary>Whether a mapped access to the device reaches its memory, as vfio-pci's fault handler decides.</summary>
    private static bool MappedMemoryReachable(SimulatedDevice device) =>
        device.Model.MappedMemoryReachable && !DeviceFeatures.LowPowerEngaged(device);
}

/// <summary>
/// An anonymous memory file (<c>memfd_create</c>): bytes that reads and writes at offsets reach,
/// growing with writes. Mapping it privately copies its bytes from the offset on; a write to the
/// mapping stays in the copy. Shared mappings of it are not modelled (the library maps none).
/// </summary>
internal sealed class MemFdFile(SimulatedKernel kernel, string name) : KernelFile(kernel, "memfd:" + name)
{
    private readonly object _gate = new();
    private byte[] _bytes = [];

    public override SimulatedFileKind Kind => SimulatedFileKind.MemFd;

    public override long PRead(Span<byte> buffer, long offset)
    {
        lock (_gate)
        {
            if (offset >= _bytes.Length)
            {
                return 0;
            }
            int n = (int)Math.Min(buffer.Length, _bytes.Length - offset);
            _bytes.AsSpan((int)offset, n).CopyTo(buffer);
            return n;
        }
    }

    public override long PWrite(ReadOnlySpan<byte> buffer, long offset)
    {
        lock (_gate)
        {
            long end = offset + buffer.Length;
            if (end > _bytes.Length)
            {
                Array.Resize(ref _bytes, checked((int)end));
            }
            buffer.CopyTo(_bytes.AsSpan((int)offset));
            return buffer.Length;
        }
    }

    public override int Map(nuint length, int prot, int flags, long offset, out MappingSource source)
    {
        source = null!;
        if ((flags & Flags.MAP_PRIVATE) == 0)
        {
            return -Errno.ENODEV; // not modelled
        }
        lock (_gate)
        {
            int available = (int)Math.Clamp(_bytes.Length - offset, 0, (long)length);
            source = new MappingSource(null, 0, 0, _bytes.AsSpan((int)Math.Min(offset, _bytes.Length), available).ToArray());
            return 0;
        }
    }
}
