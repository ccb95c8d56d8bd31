using Vfio.Interop;

namespace Vfio;

public abstract partial class VfioDevice
{
    /// <summary>
    /// Resets the device (<c>VFIO_DEVICE_RESET</c>). The kernel saves config space before and restores
    /// it after; device state is lost; DMA mappings and interrupt eventfds stay. Mapped regions read
    /// all-ones while it runs and are mapped again after (see <see cref="MmioRegion"/>).
    /// </summary>
    /// <exception cref="VfioNotSupportedException">The device reports no reset support (no <c>VFIO_DEVICE_FLAGS_RESET</c>); the kernel is not called.</exception>
    public void Reset()
    {
        if (Info is { CanReset: false })
        {
            throw new VfioNotSupportedException($"Device {Name} does not support VFIO_DEVICE_RESET (its info flags lack RESET): it has no reset of its own. A PCI device may still be reset with its slot or bus (PciVfioDevice.HotReset).");
        }
        var fd = DeviceFd;
        SuspendMappedRegions();
        try
        {
            VfioErrors.Check(Kernel.Ioctl(fd, VfioUapi.VFIO_DEVICE_RESET, 0), "VFIO_DEVICE_RESET", ErrorTarget);
        }
        finally
        {
            ResumeMappedRegions();
        }
    }
}
