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
