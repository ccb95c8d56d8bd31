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

    protected override bool ReleaseHandle() => Kernel.Munmap(handle, Length) == 0;
}
