namespace Vfio.Testing;

// What the kernel's PCI core reads of the function to decide how it can be reset (pcie_reset_flr,
// pci_af_flr, pci_pm_reset), from config space as it is: built-in and declared capabilities alike.
public partial class PciDeviceModel
{
    private const byte AdvancedFeaturesId = 0x13;
    private const byte AfCapTransactionsPending = 0x01;
    private const byte AfCapFlr = 0x02;

    /// <summary>
    /// Whether the kernel found a way to reset this function when it was added to the kernel: its
    /// reset methods (<see cref="SimulatedPciDevice.ResetMethods"/>, sysfs <c>reset_method</c>) are not
    /// empty. Whether the device file then reports VFIO_DEVICE_FLAGS_RESET is decided at each first
    /// open, by trying a reset (see docs/device-models.md). False before the model is in a kernel.
    /// </summary>
    public sealed override bool SupportsReset => Device is SimulatedPciDevice { ResetMethods.Count: > 0 };

    /// <summary>The reset methods config space offers, in the kernel's order ("flr", "af_flr", "pm"); the model is not shared yet.</summary>
    internal List<string> ProbeConfigResetMethods()
    {
        var methods = new List<string>();
        if (HasFunctionLevelResetLocked)
        {
            methods.Add("flr");
        }
        if (HasAdvancedFeaturesFlrLocked)
        {
            methods.Add("af_flr");
        }
        int pm = FindCapabilityRaw(PowerManagementId);
        if (pm != 0 && (Config[pm + 4] & PmNoSoftReset) == 0)
        {
            methods.Add("pm");
        }
        return methods;
    }

    /// <summary>pcie_reset_flr's check: a PCI Express capability whose device capabilities advertise FLR.</summary>
    internal bool HasFunctionLevelResetLocked
    {
        get
        {
            int express = FindCapabilityRaw(PciExpressId);
            return express != 0 && (ReadStore(Config, (ulong)express + 4, 4) & ExpressDevCapFlr) != 0;
        }
    }

    /// <summary>pci_af_flr's check: an Advanced Features capability with transactions pending and FLR.</summary>
    internal bool HasAdvancedFeaturesFlrLocked
    {
        get
        {
            int af = FindCapabilityRaw(AdvancedFeaturesId);
            return af != 0 && (Config[af + 3] & (AfCapTransactionsPending | AfCapFlr)) == (AfCapTransactionsPending | AfCapFlr);
        }
    }

    /// <summary>pci_pm_reset: -ENOTTY without the capability or with No_Soft_Reset set, -EINVAL outside D0, 0 when D3hot and back resets the function. The Gate is held.</summary>
    internal int PowerManagementResetLocked()
    {
        LockAssert.Held(Gate);
        int pm = FindCapabilityRaw(PowerManagementId);
        if (pm == 0 || (Config[pm + 4] & PmNoSoftReset) != 0)
        {
            return -Errno.ENOTTY;
        }
        return PowerStateLocked == PciPowerState.D0 ? 0 : -Errno.EINVAL;
    }

    /// <summary>Whether I/O decoding is on in the function's command register. The Gate is held.</summary>
    internal bool IoSpaceEnabledLocked => (ReadConfigRaw(CommandOffset, 2) & CommandIo) != 0;

    /// <summary>sysfs <c>config</c> as root reads it: the whole config space, a config cycle per byte through the model's hooks.</summary>
    internal byte[] ReadConfigSpaceAsHost()
    {
        lock (Gate)
        {
            var bytes = new byte[ConfigSpaceSize];
            for (int i = 0; i < bytes.Length; i += 4)
            {
                uint value = ReadConfig(i, 4);
                bytes[i] = (byte)value;
                bytes[i + 1] = (byte)(value >> 8);
                bytes[i + 2] = (byte)(value >> 16);
                bytes[i + 3] = (byte)(value >> 24);
            }
            return bytes;
        }
    }
}
