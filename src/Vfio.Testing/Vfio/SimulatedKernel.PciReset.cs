namespace Vfio.Testing;

/// <summary>
/// The PCI core's function reset (drivers/pci/pci.c, Linux 6.1 and 7.x alike for what is modelled):
/// the reset methods a function has, found once when it is enumerated (pci_init_reset_methods, shown
/// in sysfs as <c>reset_method</c>), and a reset that tries them in order, each checking again that
/// it still applies (__pci_reset_function_locked). Methods, in the kernel's order: "flr" (PCI Express
/// function level reset, device capabilities bit 28), "af_flr" (the Advanced Features capability
/// with transactions-pending and FLR), "pm" (D3hot and back to D0, when the power management
/// capability's No_Soft_Reset is clear and the function is in D0) and "bus" (a secondary bus reset of
/// the bridge above, when the function is alone on that bus). The "device_specific" and "acpi"
/// methods are quirks of particular hardware and firmware; no simulated function has them.
/// </summary>
public sealed partial class SimulatedKernel
{
    private long _pciSequence;

    /// <summary>pci_init_reset_methods as the function is added: config space says what it has; "bus" when it is the first function on a bus behind a bridge. The lock is held.</summary>
    private List<string> ProbeResetMethodsLocked(SimulatedPciDevice device)
    {
        AssertLocked();
        device.Sequence = ++_pciSequence;
        var methods = device.Model.ProbeConfigResetMethods();
        // The function is probed before it joins its bus's device list: the bus method sees only the functions enumerated before it.
        if (ParentBusResetPossibleLocked(device, enumerating: true))
        {
            methods.Add("bus");
        }
        return methods;
    }

    /// <summary>pci_parent_bus_reset's checks: a bridge above the bus, and no other function on it (only earlier ones count while enumerating). The lock is held.</summary>
    private bool ParentBusResetPossibleLocked(SimulatedPciDevice device, bool enumerating)
    {
        AssertLocked();
        var (domain, bus, _) = PciLocation(device.Name);
        if (!_bridges.ContainsKey((domain, bus)))
        {
            return false;
        }
        return !_devices.Values.OfType<SimulatedPciDevice>().Any(d => !ReferenceEquals(d, device)
            && PciLocation(d.Name) is var (dd, db, _) && dd == domain && db == bus
            && (!enumerating || d.Sequence < device.Sequence));
    }

    /// <summary>
    /// pci_try_reset_function: -ENOTTY when the function has no reset method; otherwise its config
    /// space is saved, the methods are tried (<see cref="ResetFunctionMethods"/>) and config
    /// space is restored. The function's Gate is held; the kernel lock is taken for the topology.
    /// </summary>
    internal int TryResetFunction(SimulatedPciDevice device)
    {
        var model = device.Model;
        LockAssert.Held(model.Gate);
        if (device.ResetMethods.Count == 0)
        {
            return -Errno.ENOTTY;
        }
        byte[] saved = model.SaveConfigLocked();
        int result = ResetFunctionMethods(device);
        model.RestoreConfigLocked(saved);
        return result;
    }

    /// <summary>
    /// __pci_reset_function_locked: the first method that applies resets the function (0); -ENOTTY
    /// when none does; another errno stops the search. No save or restore of its own. The function's
    /// Gate is held; the kernel lock is taken for the topology.
    /// </summary>
    internal int ResetFunctionMethods(SimulatedPciDevice device)
    {
        var model = device.Model;
        LockAssert.Held(model.Gate);
        foreach (string method in device.ResetMethods)
        {
            int result = method switch
            {
                "flr" => model.HasFunctionLevelResetLocked ? 0 : -Errno.ENOTTY,
                "af_flr" => model.HasAdvancedFeaturesFlrLocked ? 0 : -Errno.ENOTTY,
                "pm" => model.PowerManagementResetLocked(),
                "bus" => BusResetAloneLocked(device),
                _ => -Errno.ENOTTY,
            };
            if (result == 0)
            {
                model.ResetLocked();
                return 0;
            }
            if (result != -Errno.ENOTTY)
            {
                return result;
            }
        }
        return -Errno.ENOTTY;
    }

    private int BusResetAloneLocked(SimulatedPciDevice device)
    {
        using (Enter())
        {
            return ParentBusResetPossibleLocked(device, enumerating: false) ? 0 : -Errno.ENOTTY;
        }
    }

    /// <summary>
    /// vfio_pci_dev_set_try_reset after a function of a set closed: records whether it still needs a
    /// reset, and when no device of its set (the functions on its bus, behind a bridge) is open, one
    /// of them needs a reset and every function on the bus is bound to vfio-pci, resets the bus: each
    /// function's config space saved, the function reset, config space restored (pci_reset_bus).
    /// Neither the kernel lock nor a device's Gate is held.
    /// </summary>
    internal void DeviceSetClosed(SimulatedPciDevice device, bool needsReset)
    {
        List<SimulatedPciDevice>? reset;
        using (Enter())
        {
            device.NeedsReset = needsReset;
            reset = ResetScopeLocked(device);
            if (reset is null || reset.Any(d => d.DriverName != "vfio-pci" || d.OpenCount > 0) || !reset.Any(d => d.NeedsReset))
            {
                return;
            }
            foreach (var member in reset)
            {
                member.NeedsReset = false;
            }
        }
        foreach (var member in reset)
        {
            member.Model.ResetKeepingConfig();
        }
    }
}
