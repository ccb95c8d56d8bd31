using System.Runtime.InteropServices;
using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio.Testing;

public sealed partial class SimulatedKernel
{
    private const long TrappedBase = 0x7e00_0000_0000;

    private readonly SortedList<nint, VirtualMemoryArea> _areas = [];
    private long _nextTrappedAddress = TrappedBase;

    internal override int Mmap(SafeFd? fd, nuint length, int prot, int flags, long offset, out SafeMapping mapping)
    {
        mapping = null!;
        int injected = _injection.Enter(SimulatedCall.Mmap);
        if (injected < 0)
        {
            return injected;
        }
        int sharing = flags & (Flags.MAP_SHARED | Flags.MAP_PRIVATE);
        if (length == 0 || sharing == 0 || sharing == (Flags.MAP_SHARED | Flags.MAP_PRIVATE) || (offset & (PageSize - 1)) != 0)
        {
            return -Errno.EINVAL;
        }
        if (fd is null)
        {
            using (Enter())
            {
                int hugePages = 0;
                if ((flags & Flags.MAP_HUGETLB) != 0 && !TryTakeHugePagesLocked(length, out hugePages))
                {
                    return -Errno.ENOMEM; // the pool cannot cover the mapping
                }
                var memory = new AnonymousMemory(length, hugePages > 0 ? (nuint)HugePageSize : PageSize);
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
        int r = Acquire(fd, out var file);
        if (r < 0)
        {
            return r;
        }
        try
        {
            return file.Mmap(length, prot, flags, offset, out mapping);
        }
        finally
        {
            Release(file);
        }
    }

    /// <summary>Records a trapped mapping of a device file, which keeps the file open until munmap; the lock is held.</summary>
    internal TrappedMapping MapTrappedLocked(DeviceFile file, nuint length, int region, ulong regionOffset)
    {
        AssertLocked();
        nuint span = (length + PageSize - 1) & ~(nuint)(PageSize - 1);
        nint address = (nint)_nextTrappedAddress;
        _nextTrappedAddress += (long)span + PageSize;
        file.Get();
        _areas.Add(address, new VirtualMemoryArea(address, length, file.Path + " region " + Decimal(region), null, file));
        return new TrappedMapping(this, address, length, file, region, regionOffset);
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
        using (Enter())
        {
            // munmap of a range with nothing mapped succeeds, as in the kernel.
            if (_areas.Remove(address, out var area))
            {
                ReleasePhysicalLocked(area);
                area.Memory?.Put();
                area.File?.Put();
                PutHugePagesLocked(area.HugePages);
            }
            return 0;
        }
    }

    /// <summary>The anonymous mapping that holds all of [start, start + length); the lock is held.</summary>
    internal VirtualMemoryArea? FindAnonymousLocked(ulong start, ulong length)
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
        return area.Memory is not null && area.Contains(start, length) ? area : null;
    }
}
