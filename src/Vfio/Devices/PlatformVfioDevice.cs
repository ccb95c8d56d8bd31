using Vfio.Interop;

namespace Vfio;

/// <summary>What the registry read from sysfs about a platform device bound to vfio-platform.</summary>
public sealed class PlatformDeviceContext : VfioDeviceContext
{
    internal PlatformDeviceContext(VfioRegistry registry, string name, int groupId, IommuGroupKind groupKind, string? kernelDriver,
        IReadOnlyList<string> compatible, string? acpiHid)
        : base(registry, name, groupId, groupKind, "device:" + name, kernelDriver)
    {
        Compatible = compatible;
        AcpiHid = acpiHid;
    }

    /// <summary>The device tree compatible entries, most specific first (empty for an ACPI device).</summary>
    public IReadOnlyList<string> Compatible { get; }

    /// <summary>The ACPI hardware id (from the <c>acpi:</c> modalias) when ACPI enumerated the device; null for device tree.</summary>
    public string? AcpiHid { get; }

    /// <summary>
    /// Why vfio-platform holds the device without having bound it (assigned through driver_override,
    /// probe refused), or null. Set only for devices <see cref="VfioRegistry.ProbeAsync"/> reports as failures.
    /// </summary>
    internal VfioException? Refusal { get; init; }
}

/// <summary>
/// A platform (device tree or ACPI) device handed to user space by vfio-platform: memory regions
/// and interrupts, no config space. Each platform device is a device set of its own. Platform
/// drivers derive from it.
/// </summary>
/// <remarks>
/// vfio-platform gives regions no names: region <c>i</c> is the device's <c>i</c>-th memory resource
/// (<c>reg</c> entry), interrupt index <c>i</c> its <c>i</c>-th interrupt, each with one vector. A
/// level-triggered interrupt is masked by the kernel when it fires and must be unmasked after the
/// device's interrupt cause is cleared; an edge-triggered one cannot be masked at all.
/// </remarks>
public abstract class PlatformVfioDevice : VfioDevice
{
    /// <summary>Initializes the device from what the registry discovered; does no kernel I/O.</summary>
    /// <param name="context">The discovered device.</param>
    protected PlatformVfioDevice(PlatformDeviceContext context)
        : base(context)
    {
        Compatible = context.Compatible;
        AcpiHid = context.AcpiHid;
    }

    /// <summary>The device tree compatible entries, most specific first (empty for an ACPI device).</summary>
    public IReadOnlyList<string> Compatible { get; }

    /// <summary>The ACPI hardware id, for a device ACPI enumerated; null for device tree.</summary>
    public string? AcpiHid { get; }

    /// <summary>How many memory regions the device has; the device must be open.</summary>
    public int RegionCount => (int)OpenInfo.RegionCount;

    /// <summary>How many interrupts (IRQ indexes, one vector each) the device has; the device must be open.</summary>
    public int IrqCount => (int)OpenInfo.IrqCount;

    /// <summary>
    /// Whether <see cref="VfioDevice.Reset"/> works: vfio-platform found a reset handler (a reset module
    /// for the first compatible entry, or an ACPI <c>_RST</c> method). The device must be open.
    /// </summary>
    public bool CanReset => OpenInfo.CanReset;

    /// <summary>Describes every memory region (<c>VFIO_DEVICE_GET_REGION_INFO</c>); the device must be open.</summary>
    public IReadOnlyList<RegionInfo> GetRegions() => [.. Enumerable.Range(0, RegionCount).Select(GetRegionInfo)];

    /// <summary>Describes every interrupt (<c>VFIO_DEVICE_GET_IRQ_INFO</c>); the device must be open.</summary>
    public IReadOnlyList<PlatformIrqInfo> GetIrqs() => [.. Enumerable.Range(0, IrqCount).Select(i => new PlatformIrqInfo(GetIrqInfo(i)))];

    /// <summary>
    /// Wires interrupt <paramref name="index"/> to an eventfd and starts waiting on it. Dispose the
    /// result to disable it; closing the device disables it too.
    /// </summary>
    /// <param name="index">The interrupt index, from 0 to <see cref="IrqCount"/> - 1.</param>
    /// <exception cref="ArgumentOutOfRangeException">The device has no such interrupt.</exception>
    public PlatformInterrupt EnableInterrupt(int index)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        if (index >= IrqCount)
        {
            throw new ArgumentOutOfRangeException(nameof(index), index, $"Platform device {Name} has {IrqCount} interrupts; there is no interrupt {index}.");
        }
        var info = new PlatformIrqInfo(GetIrqInfo(index));
        return new PlatformInterrupt(this, info, EnableInterrupts(index));
    }

    // The group is set from the moment the device file is open, so this works in OnFirstOpen too.
    private VfioDeviceInfo OpenInfo => Backend is not null && Info is { } info ? info : throw new InvalidOperationException($"Platform device {Name} is not open.");

    private protected override VfioException? DescribeOpenFailure(VfioException error)
    {
        // vfio_platform_open_device resets the device; while reset_required is set a failed reset fails the
        // open, which is VFIO_GROUP_GET_DEVICE_FD through the group and VFIO_DEVICE_BIND_IOMMUFD through the cdev.
        if (error.Operation is not ("VFIO_GROUP_GET_DEVICE_FD" or "VFIO_DEVICE_BIND_IOMMUFD") || error.Errno is 0 or Errno.ENODEV or Errno.EBUSY || PlatformReset.IsRequired(Registry) == false)
        {
            return null;
        }
        string hint = $"vfio-platform resets platform device {Name} ({Identity}) when it is opened, and refuses the open when that reset fails "
            + "while its module parameter reset_required is Y. Look in the kernel log for \"reset driver is required and reset call failed in open\"; "
            + "if the device can safely be used without a reset, reload vfio-platform with reset_required=0";
        return VfioErrors.Create(error.Errno, error.Operation, ErrorTarget, hint);
    }

    internal override string SysfsDirectory => "bus/platform/devices/" + Name;

    private string Identity => PlatformReset.Identity(Compatible, AcpiHid);
}

/// <summary>How a platform interrupt is triggered.</summary>
public enum IrqTrigger
{
    /// <summary>Edge-triggered: each interrupt is an event; it cannot be masked through VFIO.</summary>
    Edge,

    /// <summary>Level-triggered: the kernel masks it when it fires; unmask it after clearing the device's interrupt cause.</summary>
    Level,
}

/// <summary>What vfio-platform reports for one platform interrupt.</summary>
/// <param name="Info">The raw interrupt info.</param>
public sealed record PlatformIrqInfo(IrqInfo Info)
{
    /// <summary>The interrupt index.</summary>
    public int Index => Info.Index;

    /// <summary>
    /// Level or edge: vfio-platform reports a level-triggered line as maskable and automasked
    /// (<c>VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED</c>), an edge-triggered one as neither.
    /// </summary>
    public IrqTrigger Trigger => Info.AutoMasked ? IrqTrigger.Level : IrqTrigger.Edge;

    /// <summary>Whether the interrupt can be masked and unmasked.</summary>
    public bool Maskable => Info.Maskable;
}

/// <summary>
/// One platform interrupt wired to an eventfd: wait for it, and for a level-triggered one unmask it
/// once the device's interrupt cause is cleared. Holds a reference on the device until disposed.
/// </summary>
public sealed class PlatformInterrupt : IDisposable
{
    private readonly PlatformVfioDevice _device;
    private readonly InterruptSet _set;

    internal PlatformInterrupt(PlatformVfioDevice device, PlatformIrqInfo info, InterruptSet set)
    {
        _device = device;
        Info = info;
        _set = set;
    }

    /// <summary>What the kernel reports for the interrupt.</summary>
    public PlatformIrqInfo Info { get; }

    /// <summary>The interrupt index.</summary>
    public int Index => Info.Index;

    /// <summary>Level or edge.</summary>
    public IrqTrigger Trigger => Info.Trigger;

    /// <summary>
    /// Waits for the interrupt; returns how many times it fired since the last wait returned. A
    /// level-triggered interrupt stays masked after it fired until <see cref="Unmask"/>.
    /// </summary>
    /// <param name="cancellationToken">Stops waiting.</param>
    public ValueTask<ulong> WaitAsync(CancellationToken cancellationToken = default) => _set.WaitAsync(0, cancellationToken);

    /// <summary>Masks a level-triggered interrupt: it stays pending in the device until unmasked.</summary>
    /// <exception cref="VfioNotSupportedException">The interrupt is edge-triggered.</exception>
    public void Mask()
    {
        ThrowIfNotMaskable("masked");
        _set.Mask(0);
    }

    /// <summary>
    /// Unmasks a level-triggered interrupt, after each one is handled. If the device still asserts
    /// the line (its cause not cleared), it fires again at once.
    /// </summary>
    /// <exception cref="VfioNotSupportedException">The interrupt is edge-triggered.</exception>
    public void Unmask()
    {
        ThrowIfNotMaskable("unmasked");
        _set.Unmask(0);
    }

    /// <summary>Disables the interrupt and releases its eventfd and device reference.</summary>
    public void Dispose() => _set.Dispose();

    /// <inheritdoc/>
    public override string ToString() => $"{Trigger.ToString().ToLowerInvariant()}-triggered interrupt {Index} of {_device.Name}";

    private void ThrowIfNotMaskable(string what)
    {
        if (!Info.Maskable)
        {
            throw new VfioNotSupportedException(
                $"Interrupt {Index} of platform device {_device.Name} is edge-triggered and cannot be {what}: vfio-platform lets only level-triggered interrupts be masked.");
        }
    }
}

/// <summary>vfio-platform's module parameter <c>reset_required</c>.</summary>
internal static class PlatformReset
{
    private const string Parameter = "module/vfio_platform/parameters/reset_required";

    /// <summary>The identity vfio-platform knows a device by: its ACPI id, or its first compatible entry (the only one it reads).</summary>
    public static string Identity(IReadOnlyList<string> compatible, string? acpiHid) =>
        acpiHid is not null ? "ACPI " + acpiHid : compatible.Count > 0 ? "compatible \"" + compatible[0] + "\"" : "no compatible";

    /// <summary>True or false as the module parameter reads; null when vfio-platform is not loaded.</summary>
    public static bool? IsRequired(VfioRegistry registry) => registry.Sysfs.ReadText(Parameter) switch
    {
        "Y" or "1" => true,
        "N" or "0" => false,
        _ => null,
    };

    /// <summary>Why a device assigned to vfio-platform (driver_override) is not bound to it.</summary>
    public static VfioException Refusal(VfioRegistry registry, string name, int groupId, string identity, bool acpi)
    {
        var target = new ErrorTarget(GroupId: groupId, Device: name);
        const string Operation = "bind to vfio-platform";
        switch (IsRequired(registry))
        {
            case null:
                return new VfioNotFoundException(
                    $"Platform device {name} ({identity}) has driver_override vfio-platform but vfio-platform is not loaded: modprobe vfio-platform, then bind it.",
                    Operation, 0, target);
            case false:
                return new VfioNotFoundException(
                    $"Platform device {name} ({identity}) has driver_override vfio-platform but is not bound to it: write {name} to "
                    + "/sys/bus/platform/drivers/vfio-platform/bind and read the kernel log for why the probe failed.",
                    Operation, 0, target);
            default:
                string hint = $"Platform device {name} ({identity}) has driver_override vfio-platform but vfio-platform refused it: it found no reset handler "
                    + (acpi ? "(the device's ACPI node has no _RST method)" : "(no vfio-platform reset module for its first compatible entry; Linux has them for calxeda,hb-xgmac and amd,xgbe-seattle-v1a)")
                    + " and its module parameter reset_required is Y. Load the reset module if there is one, or reload vfio-platform with reset_required=0 "
                    + "(modprobe vfio-platform reset_required=0) to hand the device over without a reset, then bind it again";
                return VfioErrors.Create(Errno.ENOENT, Operation, target, hint);
        }
    }
}
