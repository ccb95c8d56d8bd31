namespace Vfio;

/// <summary>
/// A user-space driver: declares which devices it handles and creates its typed device for each.
/// The registry probes devices bound to vfio, asks each driver whether it matches, creates the
/// device through the matching driver and registers it.
/// </summary>
public abstract class VfioDriver
{
    private protected VfioDriver(string name)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        Name = name;
    }

    /// <summary>The driver's name, for logs and errors.</summary>
    public string Name { get; }

    /// <summary>The bus whose devices the driver is offered.</summary>
    internal abstract DriverBus Bus { get; }

    /// <summary>True when the driver handles the discovered device (always false for another bus's device).</summary>
    internal abstract bool Handles(VfioDeviceContext context);

    /// <summary>
    /// How well the driver matches the device: -1 for not at all, otherwise a rank where lower is more
    /// specific (for platform drivers, the position of the compatible entry matched).
    /// </summary>
    internal virtual int MatchRank(VfioDeviceContext context) => Handles(context) ? 0 : -1;

    /// <summary>
    /// The driver for a device: the best ranked match, and among equals the first added. The kernel's
    /// of_match_device ranks a driver's table by the position of the device's compatible entry it
    /// matches; here the same ranking decides between drivers, so a driver for the device's most
    /// specific entry wins over a generic one whatever order they were added in.
    /// </summary>
    internal static VfioDriver? Select(IReadOnlyList<VfioDriver> drivers, VfioDeviceContext context)
    {
        VfioDriver? best = null;
        int bestRank = int.MaxValue;
        foreach (var driver in drivers)
        {
            int rank = driver.MatchRank(context);
            if (rank >= 0 && rank < bestRank)
            {
                best = driver;
                bestRank = rank;
            }
        }
        return best;
    }

    /// <summary>True when the driver handles mediated devices of <paramref name="typeId"/>.</summary>
    internal virtual bool HandlesMdevType(string typeId) => false;

    /// <summary>Creates the typed device for a device <see cref="Handles"/> accepted.</summary>
    internal abstract VfioDevice Create(VfioDeviceContext context);

    /// <inheritdoc/>
    public override string ToString() => Name;
}

/// <summary>Which PCI functions a driver handles: by ids, by class, or both (null matches anything).</summary>
/// <param name="VendorId">The vendor id, or null for any.</param>
/// <param name="DeviceId">The device id, or null for any.</param>
/// <param name="ClassCode">The 24-bit class code, or null for any.</param>
/// <param name="ClassMask">Which bits of the class code must match (0xffff00: base class and subclass).</param>
public readonly record struct PciMatch(ushort? VendorId = null, ushort? DeviceId = null, uint? ClassCode = null, uint ClassMask = 0xffffff)
{
    /// <summary>Matches one vendor and device id.</summary>
    public static PciMatch Id(ushort vendorId, ushort deviceId) => new(vendorId, deviceId);

    /// <summary>Matches a class (<c>0x010802</c>: NVMe), under a mask.</summary>
    public static PciMatch Class(uint classCode, uint mask = 0xffffff) => new(ClassCode: classCode, ClassMask: mask);

    /// <summary>True when the function matches.</summary>
    public bool Matches(PciDeviceContext device)
    {
        ArgumentNullException.ThrowIfNull(device);
        return (VendorId is null || VendorId == device.VendorId)
            && (DeviceId is null || DeviceId == device.DeviceId)
            && (ClassCode is null || (device.ClassCode & ClassMask) == (ClassCode.Value & ClassMask));
    }
}

/// <summary>A driver for PCI functions.</summary>
/// <typeparam name="TDevice">The device type it creates.</typeparam>
public abstract class PciDriver<TDevice> : VfioDriver
    where TDevice : PciVfioDevice
{
    /// <summary>Creates the driver.</summary>
    /// <param name="name">The driver's name.</param>
    /// <param name="matches">The functions it handles.</param>
    protected PciDriver(string name, params PciMatch[] matches)
        : base(name)
    {
        ArgumentNullException.ThrowIfNull(matches);
        if (matches.Length == 0)
        {
            throw new ArgumentException("A driver must match at least one device.", nameof(matches));
        }
        Matches = matches;
    }

    /// <summary>The functions the driver handles.</summary>
    public IReadOnlyList<PciMatch> Matches { get; }

    /// <summary>
    /// Creates the typed device (init and driver preparation): no kernel I/O, nothing published.
    /// If it throws, the registry disposes whatever was constructed and keeps nothing.
    /// </summary>
    /// <param name="context">The discovered function.</param>
    protected internal abstract TDevice CreateDevice(PciDeviceContext context);

    internal override DriverBus Bus => DriverBus.Pci;

    internal override bool Handles(VfioDeviceContext context) => context is PciDeviceContext c && Matches.Any(m => m.Matches(c));

    internal override VfioDevice Create(VfioDeviceContext context) => CreateDevice((PciDeviceContext)context);
}

/// <summary>
/// A driver for platform devices, matched by device tree compatible string or ACPI hardware id.
/// </summary>
/// <remarks>
/// A device tree device lists compatible entries from most to least specific. Among the drivers
/// that match one of them, the one matching the earliest entry wins; two drivers for the same entry:
/// the first added wins. An ACPI device matches a driver that lists its hardware id in <see cref="AcpiIds"/>.
/// </remarks>
/// <typeparam name="TDevice">The device type it creates.</typeparam>
public abstract class PlatformDriver<TDevice> : VfioDriver
    where TDevice : PlatformVfioDevice
{
    /// <summary>Creates the driver.</summary>
    /// <param name="name">The driver's name.</param>
    /// <param name="compatible">The compatible strings it handles ("vendor,device"); may be empty when <see cref="AcpiIds"/> is set.</param>
    protected PlatformDriver(string name, params string[] compatible)
        : base(name)
    {
        ArgumentNullException.ThrowIfNull(compatible);
        foreach (string entry in compatible)
        {
            ArgumentException.ThrowIfNullOrEmpty(entry, nameof(compatible));
        }
        Compatible = compatible;
    }

    /// <summary>The compatible strings the driver handles.</summary>
    public IReadOnlyList<string> Compatible { get; }

    /// <summary>The ACPI hardware ids the driver handles ("AMDI8001"); none by default.</summary>
    public IReadOnlyList<string> AcpiIds { get; init; } = [];

    /// <summary>Creates the typed device; see <see cref="PciDriver{TDevice}.CreateDevice"/>.</summary>
    /// <param name="context">The discovered device.</param>
    protected internal abstract TDevice CreateDevice(PlatformDeviceContext context);

    internal override DriverBus Bus => DriverBus.Platform;

    internal override bool Handles(VfioDeviceContext context) => MatchRank(context) >= 0;

    internal override int MatchRank(VfioDeviceContext context)
    {
        if (context is not PlatformDeviceContext device)
        {
            return -1;
        }
        for (int i = 0; i < device.Compatible.Count; i++)
        {
            if (Compatible.Contains(device.Compatible[i], StringComparer.Ordinal))
            {
                return i;
            }
        }
        return device.AcpiHid is { } hid && AcpiIds.Contains(hid, StringComparer.OrdinalIgnoreCase) ? device.Compatible.Count : -1;
    }

    internal override VfioDevice Create(VfioDeviceContext context) => CreateDevice((PlatformDeviceContext)context);
}

/// <summary>A driver for mediated devices, matched by mdev type.</summary>
/// <typeparam name="TDevice">The device type it creates.</typeparam>
public abstract class MdevDriver<TDevice> : VfioDriver
    where TDevice : MdevVfioDevice
{
    /// <summary>Creates the driver.</summary>
    /// <param name="name">The driver's name.</param>
    /// <param name="typeIds">The mdev types it handles (<c>mtty-2</c>).</param>
    protected MdevDriver(string name, params string[] typeIds)
        : base(name)
    {
        ArgumentNullException.ThrowIfNull(typeIds);
        if (typeIds.Length == 0)
        {
            throw new ArgumentException("A driver must match at least one mdev type.", nameof(typeIds));
        }
        TypeIds = typeIds;
    }

    /// <summary>The mdev types the driver handles.</summary>
    public IReadOnlyList<string> TypeIds { get; }

    /// <summary>Creates the typed device; see <see cref="PciDriver{TDevice}.CreateDevice"/>.</summary>
    /// <param name="context">The discovered device.</param>
    protected internal abstract TDevice CreateDevice(MdevDeviceContext context);

    internal override DriverBus Bus => DriverBus.Mdev;

    internal override bool Handles(VfioDeviceContext context) => context is MdevDeviceContext c && HandlesMdevType(c.TypeId);

    internal override bool HandlesMdevType(string typeId) => TypeIds.Contains(typeId, StringComparer.Ordinal);

    internal override VfioDevice Create(VfioDeviceContext context) => CreateDevice((MdevDeviceContext)context);
}

/// <summary>The buses the registry discovers devices on.</summary>
internal enum DriverBus
{
    Pci,
    Platform,
    Mdev,
}
