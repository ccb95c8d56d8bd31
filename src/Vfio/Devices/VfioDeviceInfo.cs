using Vfio.Interop;

namespace Vfio;

/// <summary>What <c>VFIO_DEVICE_GET_INFO</c> reports for a device.</summary>
/// <param name="Flags">The raw <c>VFIO_DEVICE_FLAGS_*</c> bits.</param>
/// <param name="RegionCount">How many regions the device has (9 for PCI: six BARs, ROM, config, VGA).</param>
/// <param name="IrqCount">How many interrupt indexes it has (5 for PCI: INTx, MSI, MSI-X, ERR, REQ).</param>
public sealed record VfioDeviceInfo(uint Flags, uint RegionCount, uint IrqCount)
{
    /// <summary>The device is a PCI device.</summary>
    public bool IsPci => (Flags & VfioUapi.VFIO_DEVICE_FLAGS_PCI) != 0;

    /// <summary>The device is a platform device.</summary>
    public bool IsPlatform => (Flags & VfioUapi.VFIO_DEVICE_FLAGS_PLATFORM) != 0;

    /// <summary>The device supports <c>VFIO_DEVICE_RESET</c>.</summary>
    public bool CanReset => (Flags & VfioUapi.VFIO_DEVICE_FLAGS_RESET) != 0;

    internal static unsafe VfioDeviceInfo Query(VfioKernel kernel, SafeFd fd, ErrorTarget target)
    {
        var info = new vfio_device_info { argsz = (uint)sizeof(vfio_device_info) };
        VfioErrors.Check(kernel.Ioctl(fd, VfioUapi.VFIO_DEVICE_GET_INFO, &info), "VFIO_DEVICE_GET_INFO", target);
        return new VfioDeviceInfo(info.flags, info.num_regions, info.num_irqs);
    }
}
