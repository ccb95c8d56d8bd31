using Vfio.Interop;

namespace Vfio.Testing;

/// <summary>
/// What vfio-pci does with a PCI function it is bound to (drivers/vfio/pci/vfio_pci_core.c and
/// vfio_pci_rdwr.c, Linux 6.1): the device file's info, region and interrupt descriptions, enabling
/// the function at the first open and disabling it at the last close, and region reads and writes
/// (config space through <see cref="VfioPciConfig"/>, BARs only while their decoding is on). The
/// device itself is a <see cref="PciDeviceModel"/>, which hands these calls here.
/// </summary>
internal sealed class VfioPciCore(PciDeviceModel device, VfioPciConfig config)
{
    /// <summary>The config space view (vconfig and the MSI control's virtual byte).</summary>
    public VfioPciConfig Config { get; } = config;

    public static uint InfoFlags => VfioUapi.VFIO_DEVICE_FLAGS_PCI;

    public static int RegionCount => (int)VfioUapi.VFIO_PCI_NUM_REGIONS;

    public static int IrqIndexCount => (int)VfioUapi.VFIO_PCI_NUM_IRQS;

    /// <summary>vfio-pci answers EINVAL for the VGA region of a function that does not decode VGA, as none here does.</summary>
    public static bool HasRegion(int index) => index >= 0 && index < RegionCount && index != (int)VfioUapi.VFIO_PCI_VGA_REGION_INDEX;

    /// <summary>vfio_config_do_rw refuses an access to config space that runs past its end with EFAULT.</summary>
    public static int RefusePastEnd(int index) => index == (int)VfioUapi.VFIO_PCI_CONFIG_REGION_INDEX ? -Errno.EFAULT : 0;

    /// <summary>VFIO_DEVICE_GET_REGION_INFO: the BARs as defined, config space, no expansion ROM, no VGA.</summary>
    public RegionDescriptor DescribeRegion(int index)
    {
        const uint ReadWrite = VfioUapi.VFIO_REGION_INFO_FLAG_READ | VfioUapi.VFIO_REGION_INFO_FLAG_WRITE;
        if (index < 6)
        {
            if (device.BarAt(index) is not { } bar)
            {
                return RegionDescriptor.None;
            }
            uint flags = ReadWrite | (bar.Mappable ? VfioUapi.VFIO_REGION_INFO_FLAG_MMAP : 0);
            return new RegionDescriptor(bar.Size, flags, bar.Sparse, device.MsixVectors > 0 && index == device.MsixBar);
        }
        return index == (int)VfioUapi.VFIO_PCI_CONFIG_REGION_INDEX
            ? new RegionDescriptor((ulong)device.ConfigSpaceSize, ReadWrite)
            : RegionDescriptor.None;
    }

    /// <summary>VFIO_DEVICE_GET_IRQ_INFO: INTx (when the function has a pin), MSI, MSI-X, ERR (PCI Express only) and REQ.</summary>
    public bool DescribeIrq(int index, out uint flags, out int count)
    {
        flags = VfioUapi.VFIO_IRQ_INFO_EVENTFD;
        count = 0;
        switch (index)
        {
            case 0:
                flags |= VfioUapi.VFIO_IRQ_INFO_MASKABLE | VfioUapi.VFIO_IRQ_INFO_AUTOMASKED;
                count = device.InterruptPin != 0 ? 1 : 0;
                return true;
            case 1:
                flags |= VfioUapi.VFIO_IRQ_INFO_NORESIZE;
                count = device.MsiVectors;
                return true;
            case 2:
                flags |= VfioUapi.VFIO_IRQ_INFO_NORESIZE;
                count = device.MsixVectors;
                return true;
            case 3 when device.IsExpress:
            case 4:
                flags |= VfioUapi.VFIO_IRQ_INFO_NORESIZE;
                count = 1;
                return true;
            default:
                return false;
        }
    }

    /// <summary>
    /// __vfio_pci_memory_enabled: memory space on and the function above D3hot. Otherwise a memory
    /// BAR's pread or pwrite is EIO, and a touch of its mapping SIGBUS (vfio_pci_mmap_fault). The
    /// device's Gate is held.
    /// </summary>
    public bool MemoryEnabledLocked()
    {
        int pmcsr = device.PmcsrOffset;
        return (device.ReadConfigRaw(PciDeviceModel.CommandOffset, 2) & PciDeviceModel.CommandMemory) != 0
            && (pmcsr == 0 || (device.ReadConfigRaw(pmcsr, 2) & 3) != 3);
    }

    /// <summary>vfio_pci_rw: config space through vfio-pci's view; a BAR through the device, refused with EIO while its decoding is off (or, for memory, in D3).</summary>
    public long AccessRegion(int index, ulong offset, Span<byte> data, bool write)
    {
        lock (device.Gate)
        {
            if (index == (int)VfioUapi.VFIO_PCI_CONFIG_REGION_INDEX)
            {
                return DeviceModel.Chunked(offset, data, write, (o, s) => Config.Read((int)o, s), (o, s, v) => Config.Write((int)o, s, (uint)v));
            }
            if (index >= 6 || device.BarAt(index) is not { } bar)
            {
                return DeviceModel.NoSuchRegion;
            }
            bool decoding = bar.Kind == PciBarKind.Io
                ? (device.ReadConfigRaw(PciDeviceModel.CommandOffset, 2) & PciDeviceModel.CommandIo) != 0
                : MemoryEnabledLocked();
            if (!decoding)
            {
                return -Errno.EIO;
            }
            return device.AccessRegistersLocked(index, offset, data, write);
        }
    }

    /// <summary>
    /// vfio_pci_core_enable: the function is reset, then pci_enable_device turns on decoding for the
    /// BARs present and INTx is unmasked at the device; vfio_config_init takes the MSI control.
    /// </summary>
    public void Enable()
    {
        if (device.SupportsReset)
        {
            device.ResetFromKernel();
        }
        ushort decode = 0;
        for (int i = 0; i < 6; i++)
        {
            if (device.BarAt(i) is { } bar)
            {
                decode |= bar.Kind == PciBarKind.Io ? PciDeviceModel.CommandIo : PciDeviceModel.CommandMemory;
            }
        }
        lock (device.Gate)
        {
            UpdateCommandLocked(decode, PciDeviceModel.CommandIntxDisable);
            Config.Open();
        }
    }

    /// <summary>vfio_pci_core_disable: bus mastering off, MSI and MSI-X freed, the function reset.</summary>
    public void Disable()
    {
        lock (device.Gate)
        {
            UpdateCommandLocked(0, PciDeviceModel.CommandMaster);
        }
        Config.SetMessageInterrupts(1, false);
        Config.SetMessageInterrupts(2, false);
        if (device.SupportsReset)
        {
            device.ResetFromKernel();
        }
    }

    /// <summary>
    /// A reset the kernel wraps in a save and restore of config space (VFIO_DEVICE_RESET and hot
    /// reset: pci_dev_save_and_disable, reset, pci_dev_restore): the device's own state is reset,
    /// config space reads as before.
    /// </summary>
    public void ResetKeepingConfig()
    {
        lock (device.Gate)
        {
            byte[] saved = device.SaveConfigLocked();
            device.ResetLocked();
            device.RestoreConfigLocked(saved);
        }
    }

    /// <summary>Sets or clears bits of the command register as the kernel's PCI core does.</summary>
    private void UpdateCommandLocked(ushort set, ushort clear)
    {
        LockAssert.Held(device.Gate);
        ushort command = (ushort)device.ReadConfigRaw(PciDeviceModel.CommandOffset, 2);
        device.WriteConfigRaw(PciDeviceModel.CommandOffset, 2, (ushort)((command | set) & ~clear));
    }
}
