using System.Globalization;

namespace Vfio.Testing;

/// <summary>
/// A device of the simulated machine: its name on its bus, its model, its IOMMU group and the driver
/// it is bound to. Obtained from <see cref="SimulatedKernel.AddPciDevice(string, PciDeviceModel, int, string?)"/>
/// and its siblings.
/// </summary>
public abstract class SimulatedDevice
{
    private protected SimulatedDevice(SimulatedKernel kernel, string name, DeviceModel model, IommuGroupState group, string sysfsPath)
    {
        Kernel = kernel;
        Name = name;
        Model = model;
        Group = group;
        SysfsRelative = sysfsPath;
        model.Device = this;
    }

    /// <summary>The device's name: the name VFIO_GROUP_GET_DEVICE_FD takes (a PCI address, a platform name, an mdev UUID).</summary>
    public string Name { get; }

    /// <summary>The model that emulates the device.</summary>
    public DeviceModel Model { get; }

    /// <summary>The IOMMU group number.</summary>
    public int IommuGroup => Group.Id;

    /// <summary>The IOMMU group's kind.</summary>
    public SimulatedGroupKind GroupKind => Group.Kind;

    /// <summary>The driver the device is bound to, or null.</summary>
    public string? Driver
    {
        get
        {
            using (Kernel.Enter())
            {
                return DriverName;
            }
        }
    }

    /// <summary>Whether a device file is open (or still mapped) for this device.</summary>
    public bool IsOpen
    {
        get
        {
            using (Kernel.Enter())
            {
                return OpenCount > 0;
            }
        }
    }

    /// <summary>The device's folder in sysfs (under <see cref="VfioKernel.SysfsRoot"/>/devices).</summary>
    public string SysfsPath => Kernel.SysfsRoot + "/" + SysfsRelative;

    internal SimulatedKernel Kernel { get; }

    internal IommuGroupState Group { get; }

    internal string SysfsRelative { get; }

    internal string? DriverName { get; set; }

    internal int OpenCount { get; set; }

    /// <summary>The interrupt lines while the device is open, by IRQ index and vector.</summary>
    internal IrqLine[][] Irqs { get; set; } = [];

    /// <summary>For PCI: the index of the enabled INTx/MSI/MSI-X mode (vdev->irq_type), or -1.</summary>
    internal int ActiveIrqIndex { get; set; } = -1;

    /// <summary>For PCI MSI/MSI-X: the vectors enabled (vdev->num_ctx).</summary>
    internal int EnabledVectors { get; set; }

    /// <summary>For PCI: INTx disabled through the command register user space wrote (vdev->virq_disabled): INTx stays masked meanwhile.</summary>
    internal bool VirqDisabled { get; set; }

    /// <summary>The bus's vfio driver name ("vfio-pci", "vfio-platform").</summary>
    internal abstract bool IsVfioBound { get; }

    internal void FirstOpenLocked()
    {
        Kernel.AssertLocked();
        Irqs = Enumerable.Range(0, Model.IrqIndexCount)
            .Select(i => Enumerable.Range(0, Model.IrqCount(i)).Select(_ => new IrqLine()).ToArray())
            .ToArray();
        ActiveIrqIndex = -1;
        EnabledVectors = 0;
        VirqDisabled = false;
        Kernel.Defer(Model.Enable);
    }

    /// <summary>The bus driver's open_device checks at the first open; 0 or a negative errno. The lock is held.</summary>
    internal virtual int OpenDeviceLocked()
    {
        Kernel.AssertLocked();
        return 0;
    }

    internal void LastCloseLocked()
    {
        Kernel.AssertLocked();
        Kernel.DisableIrqsLocked(this);
        Kernel.Defer(Model.Disable);
    }

    /// <inheritdoc/>
    public override string ToString() => Name;

    /// <summary>Throws for a negative errno from a sysfs-like operation.</summary>
    private protected static void Check(int result, string operation)
    {
        if (result < 0)
        {
            throw new InvalidOperationException(operation + " failed: " + Errno.Name(-result) + " (" + Errno.Describe(-result) + ")");
        }
    }
}

/// <summary>
/// A device of a bus whose drivers bind by match or by driver_override (PCI, platform), and which
/// tests can bind and unbind as writing to the driver's sysfs files would.
/// </summary>
public abstract class SimulatedBusDevice : SimulatedDevice
{
    private protected SimulatedBusDevice(SimulatedKernel kernel, string name, DeviceModel model, IommuGroupState group, string sysfsPath, string? nativeDriver)
        : base(kernel, name, model, group, sysfsPath)
    {
        NativeDriver = nativeDriver;
    }

    /// <summary>The driver a probe binds when no override is set (the host driver matching its ids), or null.</summary>
    public string? NativeDriver { get; }

    /// <summary>The driver_override attribute, or null when unset.</summary>
    public string? DriverOverride
    {
        get
        {
            using (Kernel.Enter())
            {
                return Override;
            }
        }
    }

    internal string? Override { get; set; }

    /// <summary>Binds the device to <paramref name="driver"/> as writing its name to the driver's <c>bind</c> would, skipping the id match.</summary>
    /// <param name="driver">The driver name, e.g. "vfio-pci".</param>
    public void Bind(string driver)
    {
        ArgumentException.ThrowIfNullOrEmpty(driver);
        using (Kernel.Enter())
        {
            Check(Kernel.BindLocked(this, driver, checkMatch: false), "bind to " + driver);
        }
    }

    /// <summary>Unbinds the device from its driver; blocks while a vfio device file is open, asking for its release.</summary>
    public void Unbind()
    {
        using (Kernel.Enter())
        {
            Check(DriverName is null ? -Errno.ENODEV : Kernel.UnbindLocked(this), "unbind");
        }
    }
}

/// <summary>A simulated PCI function, listed under <c>bus/pci/devices</c>.</summary>
public sealed class SimulatedPciDevice : SimulatedBusDevice
{
    internal SimulatedPciDevice(SimulatedKernel kernel, string address, PciDeviceModel model, IommuGroupState group, string? nativeDriver, string sysfsPath)
        : base(kernel, address, model, group, sysfsPath, nativeDriver)
    {
    }

    /// <summary>The PCI address (domain:bus:device.function), e.g. "0000:00:03.0".</summary>
    public string Address => Name;

    /// <summary>The model that emulates the function.</summary>
    public new PciDeviceModel Model => (PciDeviceModel)base.Model;

    /// <summary>
    /// How the kernel can reset the function, as sysfs <c>reset_method</c> lists them, found when the
    /// function was added (pci_init_reset_methods): "flr", "af_flr", "pm", "bus"; empty when it has none.
    /// </summary>
    public IReadOnlyList<string> ResetMethods { get; internal set; } = [];

    internal override bool IsVfioBound => DriverName == "vfio-pci";

    /// <summary>The order the function was enumerated in (added to the kernel).</summary>
    internal long Sequence { get; set; }

    /// <summary>vdev->needs_reset: closed without a function reset, so a bus reset is due when its set is closed. The kernel lock guards it.</summary>
    internal bool NeedsReset { get; set; }
}

/// <summary>A simulated platform device, listed under <c>bus/platform/devices</c>.</summary>
public sealed class SimulatedPlatformDevice : SimulatedBusDevice
{
    internal SimulatedPlatformDevice(SimulatedKernel kernel, string name, PlatformDeviceModel model, IommuGroupState group, string? nativeDriver)
        : base(kernel, name, model, group, "devices/platform/" + name, nativeDriver)
    {
    }

    /// <summary>The model that emulates the device.</summary>
    public new PlatformDeviceModel Model => (PlatformDeviceModel)base.Model;

    internal override bool IsVfioBound => DriverName == "vfio-platform";

    /// <summary>vfio-platform's reset_required as it was when the device was bound (vdev->reset_required).</summary>
    internal bool ResetRequired { get; set; }

    /// <summary>vfio_platform_open_device: the device is reset; a failed reset fails the open while reset is required.</summary>
    internal override int OpenDeviceLocked()
    {
        Kernel.AssertLocked();
        var model = Model;
        int failure = !model.HasResetHandler ? Errno.EINVAL : model.ResetErrno;
        return failure != 0 && ResetRequired ? -failure : 0;
    }
}

/// <summary>A mediated device created from an mdev type, listed under <c>bus/mdev/devices</c>.</summary>
public sealed class SimulatedMdevDevice : SimulatedDevice
{
    internal SimulatedMdevDevice(SimulatedKernel kernel, Guid uuid, SimulatedMdevParent parent, SimulatedMdevType type, DeviceModel model, IommuGroupState group)
        : base(kernel, uuid.ToString("D", CultureInfo.InvariantCulture), model, group, parent.SysfsRelative + "/" + uuid.ToString("D", CultureInfo.InvariantCulture))
    {
        Uuid = uuid;
        Parent = parent;
        Type = type;
        DriverName = parent.Driver;
    }

    /// <summary>The device's UUID.</summary>
    public Guid Uuid { get; }

    /// <summary>The parent device it was created on.</summary>
    public SimulatedMdevParent Parent { get; }

    /// <summary>The type it was created from.</summary>
    public SimulatedMdevType Type { get; }

    /// <summary>Whether a remove began (the device's <c>remove</c> attribute was written, or its parent went).</summary>
    internal bool Removed { get; set; }

    internal override bool IsVfioBound => DriverName is not null;
}

/// <summary>A line of one interrupt vector: its trigger eventfd, mask state and pending state.</summary>
internal sealed class IrqLine
{
    public EventFdFile? Trigger { get; set; }

    public EventFdFile? Unmask { get; set; }

    public EventFdFile? Mask { get; set; }

    public bool Masked { get; set; }

    public bool Pending { get; set; }
}
