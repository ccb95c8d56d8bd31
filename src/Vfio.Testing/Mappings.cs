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

/// <summary>One mapping of the process's address space (a VMA).</summary>
internal sealed class VirtualMemoryArea(nint address, nuint length, string description, AnonymousMemory? memory, KernelFile? file, int hugePages = 0)
{
    /// <summary>The 2 MiB hugepages a MAP_HUGETLB mapping took from the pool.</summary>
    public int HugePages { get; } = hugePages;

    public nint Address { get; } = address;

    public nuint Length { get; } = length;

    public string Description { get; } = description;

    /// <summary>The memory of an anonymous mapping.</summary>
    public AnonymousMemory? Memory { get; } = memory;

    /// <summary>The file a file mapping keeps open.</summary>
    public KernelFile? File { get; } = file;

    public bool Contains(ulong start, ulong length) =>
        start >= (ulong)Address && length <= (ulong)Length && start - (ulong)Address <= (ulong)Length - length;
}

/// <summary>
/// A mapping of a device region whose registers are emulated by a device model: every access traps
/// into the model, as a CPU access to a real BAR would trap into a hypervisor's device model.
/// </summary>
internal sealed class TrappedMapping : SafeMapping
{
    private readonly DeviceFile _file;
    private readonly int _region;
    private readonly ulong _regionOffset;

    public TrappedMapping(SimulatedKernel kernel, nint address, nuint length, DeviceFile file, int region, ulong regionOffset)
        : base(kernel, address, length)
    {
        _file = file;
        _region = region;
        _regionOffset = regionOffset;
    }

    public override bool IsTrapped => true;

    public override ulong ReadTrapped(nuint offset, int size)
    {
        Check(offset, size);
        return _file.Device.Model.ReadMapped(_region, _regionOffset + offset, size);
    }

    public override void WriteTrapped(nuint offset, int size, ulong value)
    {
        Check(offset, size);
        _file.Device.Model.WriteMapped(_region, _regionOffset + offset, size, value);
    }

    private void Check(nuint offset, int size)
    {
        ObjectDisposedException.ThrowIf(IsClosed, this);
        if (size is not (1 or 2 or 4 or 8))
        {
            throw new ArgumentOutOfRangeException(nameof(size), size, "A register access is 1, 2, 4 or 8 bytes wide.");
        }
        if (offset > Length || Length - offset < (nuint)size)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), offset, "The access is outside the mapping (the CPU would fault).");
        }
    }
}

public sealed partial class SimulatedKernel
{
    private const long TrappedBase = 0x7e00_0000_0000;

    private readonly SortedList<nint, VirtualMemoryArea> _areas = [];

    /// <summary>
    /// The machine's memory as the simulation sees it: the runtime's view of the host by default. An
    /// anonymous mapping longer than this is refused with ENOMEM, as Linux's default overcommit
    /// heuristic refuses a single mapping larger than RAM plus swap.
    /// </summary>
    public ulong MemoryBytes { get; set; } = (ulong)GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
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
