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
