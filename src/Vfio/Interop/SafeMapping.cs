using System.Runtime.InteropServices;

namespace Vfio.Interop;

/// <summary>A memory mapping owned by the library, unmapped through the kernel that mapped it.</summary>
internal class SafeMapping : SafeHandle
{
    public SafeMapping(VfioKernel kernel, nint address, nuint length)
        : base(-1, ownsHandle: true)
    {
        Kernel = kernel;
        Length = length;
        SetHandle(address);
    }

    /// <summary>The kernel this mapping belongs to.</summary>
    public VfioKernel Kernel { get; }

    /// <summary>The mapping's length in bytes.</summary>
    public nuint Length { get; }

    /// <summary>The first mapped byte.</summary>
    public nint Address => handle;

    public override bool IsInvalid => handle == -1;

    /// <summary>
    /// True when the registers behind this mapping are emulated (a simulated kernel's device model),
    /// so accesses must go through <see cref="ReadTrapped"/> and <see cref="WriteTrapped"/> instead of
    /// memory, as a CPU access to a real BAR would trap into a hypervisor's device model. A real
    /// mapping is plain memory and never traps.
    /// </summary>
    public virtual bool IsTrapped => false;

    /// <summary>Reads <paramref name="size"/> bytes (1, 2, 4 or 8) at <paramref name="offset"/> of a trapped mapping.</summary>
    public virtual ulong ReadTrapped(nuint offset, int size) =>
        throw new InvalidOperationException("This mapping is memory, not emulated registers.");

    /// <summary>Writes <paramref name="size"/> bytes (1, 2, 4 or 8) at <paramref name="offset"/> of a trapped mapping.</summary>
    public virtual void WriteTrapped(nuint offset, int size, ulong value) =>
        throw new InvalidOperationException("This mapping is memory, not emulated registers.");

    /// <summary>
    /// Called with the positive errno when the munmap of this handle's release is refused (the range
    /// stays mapped), on the thread that released it; its owner reports it and keeps it in its books.
    /// </summary>
    public Action<SafeMapping, int>? UnmapFailed { get; set; }

    protected override bool ReleaseHandle()
    {
        int r = Kernel.Munmap(handle, Length);
        if (r < 0)
        {
            UnmapFailed?.Invoke(this, -r);
        }
        return r == 0;
    }
}
