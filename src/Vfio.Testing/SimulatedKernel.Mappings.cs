using System.Buffers.Binary;
using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio.Testing;

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
                // MAP_LOCKED locks the pages (mlock), charged to RLIMIT_MEMLOCK: EAGAIN beyond it.
                if ((flags & Flags.MAP_LOCKED) != 0 && !LockAreaLocked(memory.Address, memory.Length))
                {
                    PutHugePagesLocked(hugePages);
                    memory.Put();
                    return -Errno.EAGAIN;
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
        AssertLocked();
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
        AssertLocked();
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
        AssertLocked();
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
            ReleasePhysicalLocked(area, start, end);
            area.Memory?.Put();
            area.File?.Put();
            PutHugePagesLocked(area.HugePages);
        }
    }

    /// <summary>The one block of simulated anonymous memory that holds all of [start, start + length), if any; the lock is held.</summary>
    private AnonymousMemory? RealMemoryUnderLocked(nint start, nuint length)
    {
        AssertLocked();
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
        AssertLocked();
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
