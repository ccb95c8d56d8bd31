using Vfio.Interop;

namespace Vfio;

/// <summary>The interrupt indexes of a PCI device.</summary>
public static class PciIrq
{
    /// <summary>Legacy INTx (one vector, level-triggered, masked by the kernel when it fires).</summary>
    public const int Intx = (int)VfioUapi.VFIO_PCI_INTX_IRQ_INDEX;

    /// <summary>MSI (up to 32 vectors).</summary>
    public const int Msi = (int)VfioUapi.VFIO_PCI_MSI_IRQ_INDEX;

    /// <summary>MSI-X (up to 2048 vectors).</summary>
    public const int Msix = (int)VfioUapi.VFIO_PCI_MSIX_IRQ_INDEX;

    /// <summary>Error reporting (AER): the device met an error.</summary>
    public const int Err = (int)VfioUapi.VFIO_PCI_ERR_IRQ_INDEX;

    /// <summary>Request: the kernel asks user space to release the device.</summary>
    public const int Req = (int)VfioUapi.VFIO_PCI_REQ_IRQ_INDEX;
}

/// <summary>What <c>VFIO_DEVICE_GET_IRQ_INFO</c> reports for one interrupt index.</summary>
/// <param name="Index">The index.</param>
/// <param name="Count">How many vectors it has (0: not supported).</param>
/// <param name="Flags">The raw <c>VFIO_IRQ_INFO_*</c> bits.</param>
public sealed record IrqInfo(int Index, uint Count, uint Flags)
{
    /// <summary>Vectors are signalled through eventfds.</summary>
    public bool EventFd => (Flags & VfioUapi.VFIO_IRQ_INFO_EVENTFD) != 0;

    /// <summary>Vectors can be masked.</summary>
    public bool Maskable => (Flags & VfioUapi.VFIO_IRQ_INFO_MASKABLE) != 0;

    /// <summary>The kernel masks the vector when it fires (INTx): unmask it after handling.</summary>
    public bool AutoMasked => (Flags & VfioUapi.VFIO_IRQ_INFO_AUTOMASKED) != 0;

    /// <summary>The set of vectors cannot grow once enabled: enable them all at once.</summary>
    public bool NoResize => (Flags & VfioUapi.VFIO_IRQ_INFO_NORESIZE) != 0;

    /// <summary>True when the index has vectors.</summary>
    public bool Supported => Count > 0;

    internal static IrqInfo Query(VfioKernel kernel, SafeFd fd, int index, ErrorTarget target)
    {
        VfioErrors.Check(TryQuery(kernel, fd, index, out var info), "VFIO_DEVICE_GET_IRQ_INFO", target);
        return info;
    }

    /// <summary>As <see cref="Query"/>, but an index the kernel refuses with EINVAL is reported with count 0.</summary>
    internal static IrqInfo QueryOrNone(VfioKernel kernel, SafeFd fd, int index, ErrorTarget target)
    {
        int r = TryQuery(kernel, fd, index, out var info);
        if (r == -Errno.EINVAL)
        {
            return new IrqInfo(index, 0, 0);
        }
        VfioErrors.Check(r, "VFIO_DEVICE_GET_IRQ_INFO", target);
        return info;
    }

    private static unsafe int TryQuery(VfioKernel kernel, SafeFd fd, int index, out IrqInfo result)
    {
        var info = new vfio_irq_info { argsz = (uint)sizeof(vfio_irq_info), index = (uint)index };
        int r = kernel.Ioctl(fd, VfioUapi.VFIO_DEVICE_GET_IRQ_INFO, &info);
        result = new IrqInfo(index, info.count, info.flags);
        return r;
    }
}
