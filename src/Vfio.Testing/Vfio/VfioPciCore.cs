using Vfio.Interop;

namespace Vfio.Testing;

/// <summary>
/// What vfio-pci does with a PCI function it is bound to (drivers/vfio/pci/vfio_pci_core.c and
/// vfio_pci_rdwr.c, Linux 6.1; 7.x does the same for everything here): the device file's info,
/// region and interrupt descriptions, enabling the function at the first open and disabling it at
/// the last close (with the resets vfio-pci does then), region reads and writes (config space
/// through <see cref="VfioPciConfig"/>, BARs only while their decoding is on and the function is in
/// D0, the MSI-X table never), and the power state user space sets through config space. The
/// device itself is a <see cref="PciDeviceModel"/>, which hands these calls here.
/// </summary>
/// <remarks>
/// Reset rules (vfio_pci_core_enable, vfio_pci_core_disable, vfio_pci_dev_set_try_reset): at the
/// first open the kernel tries a function reset (pci_try_reset_function, which saves config space,
/// resets and restores it); whether it worked is reset_works, which VFIO_DEVICE_FLAGS_RESET and
/// VFIO_DEVICE_RESET follow until the device is closed. At the last close config space goes back
/// to what it was after that open, and the function is reset again when reset_works; when it was
/// not, the function needs a reset, and once no device of its set (its bus, behind a bridge) is open
/// and every function on the bus is bound to vfio-pci, the bus is reset. A function with no reset
/// method at all keeps its state across close and reopen.
/// </remarks>
internal sealed class VfioPciCore(PciDeviceModel device, VfioPciConfig config)
{
    // Guarded by the device's Gate: pci_saved_state (taken at enable) and pm_save (taken entering D3hot).
    private byte[]? _savedState;
    private byte[]? _pmSave;
    private volatile bool _resetWorks;

    /// <summary>The config space view (vconfig and the virtual bits).</summary>
    public VfioPciConfig Config { get; } = config;

    public static uint InfoFlags => VfioUapi.VFIO_DEVICE_FLAGS_PCI;

    public static int RegionCount => (int)VfioUapi.VFIO_PCI_NUM_REGIONS;

    public static int IrqIndexCount => (int)VfioUapi.VFIO_PCI_NUM_IRQS;

    /// <summary>vdev->reset_works: whether the function reset at the last first open worked.</summary>
    public bool ResetWorks => _resetWorks;

    /// <summary>vfio-pci answers EINVAL for the VGA region of a function that does not decode VGA, as none here does.</summary>
    public static bool HasRegion(int index) => index >= 0 && index < RegionCount && index != (int)VfioUapi.VFIO_PCI_VGA_REGION_INDEX;

    /// <summary>vfio_config_do_rw refuses an access to config space that runs past its end with EFAULT.</summary>
    public static int RefusePastEnd(int index) => index == (int)VfioUapi.VFIO_PCI_CONFIG_REGION_INDEX ? -Errno.EFAULT : 0;

    /// <summary>The PCI function the model emulates; null for a model behind an mdev, which no vfio-pci resets.</summary>
    private SimulatedPciDevice? Function => device.Device as SimulatedPciDevice;

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
    /// __vfio_pci_memory_enabled: memory decoding on in vfio-pci's copy of the command register and the
    /// function above D3hot. Otherwise a memory BAR's pread or pwrite is EIO, and a touch of its mapping
    /// SIGBUS (vfio_pci_mmap_fault). The device's Gate is held.
    /// </summary>
    public bool MemoryEnabledLocked() => Config.MemoryEnabledLocked && device.PowerStateLocked < PciPowerState.D3Hot;

    /// <summary>
    /// vfio_pci_rw: config space through vfio-pci's view. A memory BAR through the device, refused
    /// with EIO unless <see cref="MemoryEnabledLocked"/>; in the MSI-X BAR the table reads as all ones
    /// and takes no writes (the PBA is the device's). An I/O BAR is not checked: with I/O decoding off
    /// the device does not answer, and the port reads as all ones.
    /// </summary>
    public long AccessRegion(int index, ulong offset, Span<byte> data, bool write)
    {
        lock (device.Gate)
        {
            if (index == (int)VfioUapi.VFIO_PCI_CONFIG_REGION_INDEX)
            {
                return Config.Access((int)offset, data, write);
            }
            if (index >= 6 || device.BarAt(index) is not { } bar)
            {
                return DeviceModel.NoSuchRegion;
            }
            if (bar.Kind == PciBarKind.Io)
            {
                if (!device.IoSpaceEnabledLocked)
                {
                    if (!write)
                    {
                        data.Fill(0xff);
                    }
                    return data.Length;
                }
                return device.AccessRegistersLocked(index, offset, data, write);
            }
            if (!MemoryEnabledLocked())
            {
                return -Errno.EIO;
            }
            if (device.MsixVectors == 0 || index != device.MsixBar)
            {
                return device.AccessRegistersLocked(index, offset, data, write);
            }
            return AccessAroundMsixTable(index, offset, data, write);
        }
    }

    /// <summary>do_io_rw with the MSI-X table as the excluded range: reads of it fill 0xff, writes to it are dropped.</summary>
    private long AccessAroundMsixTable(int index, ulong offset, Span<byte> data, bool write)
    {
        ulong tableStart = device.MsixTableOffset;
        ulong tableEnd = tableStart + ((ulong)device.MsixVectors * 16);
        int done = 0;
        while (done < data.Length)
        {
            ulong at = offset + (ulong)done;
            int length;
            if (at < tableStart || at >= tableEnd)
            {
                length = (int)Math.Min((ulong)(data.Length - done), at < tableStart ? tableStart - at : ulong.MaxValue);
                device.AccessRegistersLocked(index, at, data.Slice(done, length), write);
            }
            else
            {
                length = (int)Math.Min((ulong)(data.Length - done), tableEnd - at);
                if (!write)
                {
                    data.Slice(done, length).Fill(0xff);
                }
            }
            done += length;
        }
        return done;
    }

    /// <summary>
    /// vfio_pci_core_enable at the first open: bus mastering off, pci_enable_device turns on decoding
    /// for the BARs present, pci_try_reset_function decides reset_works, the state is saved for the
    /// last close, INTx is unmasked at the device and vfio_config_init builds the config view.
    /// </summary>
    public void Enable()
    {
        var function = Function;
        lock (device.Gate)
        {
            ushort decode = 0;
            for (int i = 0; i < 6; i++)
            {
                if (device.BarAt(i) is { } bar)
                {
                    decode |= bar.Kind == PciBarKind.Io ? PciDeviceModel.CommandIo : PciDeviceModel.CommandMemory;
                }
            }
            UpdateCommandLocked(decode, PciDeviceModel.CommandMaster);
            _resetWorks = function is not null && function.Kernel.TryResetFunction(function) == 0;
            _savedState = device.SaveConfigLocked();
            UpdateCommandLocked(0, PciDeviceModel.CommandIntxDisable);
            Config.Open();
        }
    }

    /// <summary>
    /// vfio_pci_core_disable at the last close: back to D0, bus mastering and MSI/MSI-X off, config
    /// space back to what was saved at the open, the function reset when reset_works (needs_reset
    /// stays set otherwise), and then vfio_pci_dev_set_try_reset: a bus reset when the whole set is
    /// closed and a function of it needs one.
    /// </summary>
    public void Disable()
    {
        var function = Function;
        Config.SetMessageInterrupts(1, false);
        Config.SetMessageInterrupts(2, false);
        bool reset;
        lock (device.Gate)
        {
            SetPowerStateLocked(PciPowerState.D0);
            UpdateCommandLocked(0, PciDeviceModel.CommandMaster);
            if (_savedState is { } saved)
            {
                device.RestoreConfigLocked(saved);
            }
            device.WriteConfigRaw(PciDeviceModel.CommandOffset, 2, PciDeviceModel.CommandIntxDisable);
            reset = _resetWorks && function!.Kernel.ResetFunctionMethods(function) == 0;
            if (_savedState is { } again)
            {
                device.RestoreConfigLocked(again);
            }
            UpdateCommandLocked(0, PciDeviceModel.CommandMaster);
            _savedState = null;
            _pmSave = null;
            _resetWorks = false;
        }
        function?.Kernel.DeviceSetClosed(function, needsReset: !reset);
    }

    /// <summary>VFIO_DEVICE_RESET (vfio_pci_ioctl_reset): EINVAL unless reset_works; back to D0, then pci_try_reset_function's result.</summary>
    public int ResetFromIoctl()
    {
        var function = Function;
        lock (device.Gate)
        {
            if (!_resetWorks)
            {
                return -Errno.EINVAL;
            }
            SetPowerStateLocked(PciPowerState.D0);
            return function!.Kernel.TryResetFunction(function);
        }
    }

    /// <summary>
    /// A reset the kernel wraps in a save and restore of config space (a hot reset or a bus reset:
    /// pci_dev_save_and_disable, reset, pci_dev_restore): the device's own state is reset, config
    /// space reads as before.
    /// </summary>
    public void ResetKeepingConfig()
    {
        lock (device.Gate)
        {
            ResetKeepingConfigLocked();
        }
    }

    /// <inheritdoc cref="ResetKeepingConfig"/>
    public void ResetKeepingConfigLocked()
    {
        LockAssert.Held(device.Gate);
        byte[] saved = device.SaveConfigLocked();
        device.ResetLocked();
        device.RestoreConfigLocked(saved);
    }

    /// <summary>
    /// vfio_pci_set_power_state (user space writing the PM control register's state, and vfio-pci's
    /// own moves to D0): entering D3hot saves config space when the function loses it (No_Soft_Reset
    /// clear), and returning to D0 from D3hot then resets the function, as the PCI PM spec's internal
    /// reset does, and restores the saved state. D1 and D2 are taken only when the capability says the
    /// function supports them. The Gate is held.
    /// </summary>
    public void SetPowerStateLocked(PciPowerState state)
    {
        LockAssert.Held(device.Gate);
        int pm = device.FindCapabilityRaw(0x01);
        if (pm == 0)
        {
            return;
        }
        ushort pmc = (ushort)device.ReadConfigRaw(pm + 2, 2);
        if ((state == PciPowerState.D1 && (pmc & 0x0200) == 0) || (state == PciPowerState.D2 && (pmc & 0x0400) == 0))
        {
            return;
        }
        ushort control = (ushort)device.ReadConfigRaw(pm + 4, 2);
        var current = (PciPowerState)(control & PciDeviceModel.PmStateMask);
        bool softReset = (control & PciDeviceModel.PmNoSoftReset) == 0;
        if (current == state)
        {
            return;
        }
        if (state >= PciPowerState.D3Hot && softReset)
        {
            _pmSave = device.SaveConfigLocked();
        }
        device.WriteConfigRaw(pm + 4, 2, (ushort)((control & ~PciDeviceModel.PmStateMask) | (int)state));
        if (current >= PciPowerState.D3Hot && state == PciPowerState.D0 && softReset)
        {
            device.ResetLocked();
            if (_pmSave is { } saved)
            {
                device.RestoreConfigLocked(saved);
                _pmSave = null;
            }
        }
    }

    /// <summary>
    /// The host's MSI-X set-up for vector <paramref name="vector"/>: an eventfd attached (request_irq:
    /// the message programmed, the vector unmasked) or detached (free_irq: masked).
    /// </summary>
    public void ProgramMsixVector(int vector, bool inUse)
    {
        lock (device.Gate)
        {
            device.ProgramMsixVectorLocked(vector, inUse);
        }
    }

    /// <summary>Sets or clears bits of the command register as the kernel's PCI core does. The Gate is held.</summary>
    private void UpdateCommandLocked(ushort set, ushort clear)
    {
        LockAssert.Held(device.Gate);
        ushort command = (ushort)device.ReadConfigRaw(PciDeviceModel.CommandOffset, 2);
        device.WriteConfigRaw(PciDeviceModel.CommandOffset, 2, (ushort)((command | set) & ~clear));
    }
}
