using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Vfio.Interop;

namespace Vfio;

/// <summary>Settings of a <see cref="VfioRegistry"/>.</summary>
public sealed record VfioRegistryOptions
{
    /// <summary>
    /// How often unregistering asks holders of remaining references to let go (the kernel asks
    /// every 10 s; user space can afford to ask sooner). Default: 1 s.
    /// </summary>
    public TimeSpan ReleaseRequestInterval { get; init; } = TimeSpan.FromSeconds(1);
}

/// <summary>What a probe did.</summary>
/// <param name="Registered">The devices it created and registered.</param>
/// <param name="Removed">The devices it unregistered because they left vfio.</param>
/// <param name="Failures">The devices a driver failed to set up, each with its error; nothing of them was kept.</param>
public sealed record ProbeResult(IReadOnlyList<VfioDevice> Registered, IReadOnlyList<string> Removed, IReadOnlyList<ProbeFailure> Failures);

/// <summary>A device a driver failed to set up.</summary>
/// <param name="Device">The device name.</param>
/// <param name="Driver">The driver that failed.</param>
/// <param name="Error">Why.</param>
public sealed record ProbeFailure(string Device, string Driver, Exception Error);

/// <summary>
/// The process's view of VFIO: the registered devices, the open groups (one per IOMMU group) and
/// containers, the device sets, and the drivers that create devices. Its rules are the kernel's:
/// a device is usable only between <see cref="Register"/> and <see cref="UnregisterAsync"/>, a
/// group file is opened once and shared, device files close before their group is released.
/// </summary>
public sealed class VfioRegistry : IAsyncDisposable
{
    private readonly Lock _lock = new();
    private readonly Dictionary<string, VfioDevice> _devices = new(StringComparer.Ordinal);
    private readonly Dictionary<int, IommuGroup> _groups = [];
    private readonly List<VfioContainer> _containers = [];
    private readonly Dictionary<string, DeviceSet> _sets = new(StringComparer.Ordinal);
    private readonly List<VfioDriver> _drivers = [];
    private readonly Dictionary<VfioDevice, VfioDriver> _probed = [];
    private readonly List<CreatedMdev> _created = [];
    private bool _disposed;

    /// <summary>Creates a registry.</summary>
    /// <param name="kernel">The kernel to use; <see cref="VfioKernel.Linux"/> when null.</param>
    /// <param name="loggerFactory">Where logs go; nowhere when null.</param>
    /// <param name="options">Settings; defaults when null.</param>
    public VfioRegistry(VfioKernel? kernel = null, ILoggerFactory? loggerFactory = null, VfioRegistryOptions? options = null)
    {
        Kernel = kernel ?? VfioKernel.Linux;
        LoggerFactory = loggerFactory ?? NullLoggerFactory.Instance;
        Options = options ?? new VfioRegistryOptions();
        Logger = LoggerFactory.CreateLogger<VfioRegistry>();
        Sysfs = new SysfsReader(Kernel);
    }

    /// <summary>The kernel the registry talks to.</summary>
    public VfioKernel Kernel { get; }

    /// <summary>The registry's settings.</summary>
    public VfioRegistryOptions Options { get; }

    /// <summary>The logger factory devices and the registry log through.</summary>
    public ILoggerFactory LoggerFactory { get; }

    /// <summary>The registered devices (not those being unregistered).</summary>
    public IReadOnlyList<VfioDevice> Devices
    {
        get
        {
            lock (_lock)
            {
                return [.. _devices.Values];
            }
        }
    }

    /// <summary>The open groups.</summary>
    public IReadOnlyList<IommuGroup> Groups
    {
        get
        {
            lock (_lock)
            {
                return [.. _groups.Values];
            }
        }
    }

    /// <summary>The open containers.</summary>
    public IReadOnlyList<VfioContainer> Containers
    {
        get
        {
            lock (_lock)
            {
                return [.. _containers];
            }
        }
    }

    /// <summary>The drivers added so far.</summary>
    public IReadOnlyList<VfioDriver> Drivers
    {
        get
        {
            lock (_lock)
            {
                return [.. _drivers];
            }
        }
    }

    internal ILogger Logger { get; }

    internal SysfsReader Sysfs { get; }

    /// <summary>Finds a registered device by name and type.</summary>
    /// <typeparam name="TDevice">The device type expected.</typeparam>
    /// <param name="name">The device's name (PCI address, platform name, mdev UUID).</param>
    /// <param name="device">The device, when found and of that type.</param>
    /// <returns>True when found.</returns>
    public bool TryFind<TDevice>(string name, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out TDevice? device)
        where TDevice : VfioDevice
    {
        lock (_lock)
        {
            device = _devices.TryGetValue(name, out var found) ? found as TDevice : null;
            return device is not null;
        }
    }

    /// <summary>
    /// Registers a constructed device: the last step of setting it up. From here it can be found,
    /// opened and its hooks called; its reference count starts at 1.
    /// </summary>
    /// <param name="device">A device constructed for this registry and not registered before.</param>
    /// <exception cref="InvalidOperationException">The device belongs to another registry, was registered before, or its name is taken.</exception>
    public void Register(VfioDevice device)
    {
        ArgumentNullException.ThrowIfNull(device);
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!ReferenceEquals(device.Registry, this))
        {
            throw new InvalidOperationException($"Device {device.Name} was constructed for another registry.");
        }
        device.MarkRegistered();
        lock (_lock)
        {
            if (!_devices.TryAdd(device.Name, device))
            {
                device.UndoRegistered();
                throw new InvalidOperationException($"A device named {device.Name} is already registered.");
            }
        }
        Log.Registered(Logger, device.Name, device.GroupId, device.Set.Id);
    }

    /// <summary>
    /// Unregisters a device: new references are refused at once, the registration reference is
    /// dropped, and the call completes when the last reference is released. Meanwhile the device's
    /// release-request hook is called at once and then at <see cref="VfioRegistryOptions.ReleaseRequestInterval"/>.
    /// </summary>
    /// <param name="device">A registered device.</param>
    /// <param name="cancellationToken">Stops waiting; the device then stays registered and usable.</param>
    /// <exception cref="OperationCanceledException">Cancelled before the last reference was released.</exception>
    public async Task UnregisterAsync(VfioDevice device, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(device);
        lock (_lock)
        {
            if (!_devices.TryGetValue(device.Name, out var registered) || !ReferenceEquals(registered, device))
            {
                throw new InvalidOperationException($"Device {device.Name} is not registered here.");
            }
            _devices.Remove(device.Name);
        }
        Log.Unregistering(Logger, device.Name, device.GroupId, device.ReferenceCount - 1);
        long started = Stopwatch.GetTimestamp();
        bool done;
        try
        {
            done = await device.UnregisterCoreAsync(Options.ReleaseRequestInterval, cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            Republish(device);
            throw;
        }
        if (!done)
        {
            Republish(device);
            Log.UnregisterCancelled(Logger, device.Name, device.GroupId);
            cancellationToken.ThrowIfCancellationRequested();
        }
        lock (_lock)
        {
            _probed.Remove(device);
        }
        Log.Unregistered(Logger, device.Name, device.GroupId, (long)Stopwatch.GetElapsedTime(started).TotalMilliseconds);
    }

    /// <summary>Adds a driver; the next <see cref="ProbeAsync"/> offers it devices.</summary>
    /// <param name="driver">The driver.</param>
    public void AddDriver(VfioDriver driver)
    {
        ArgumentNullException.ThrowIfNull(driver);
        lock (_lock)
        {
            _drivers.Add(driver);
        }
    }

    /// <summary>
    /// Looks at the devices bound to vfio in sysfs: creates and registers a device through the first
    /// matching driver for each new one, and unregisters (then disposes) the devices this registry
    /// probed that are no longer bound to vfio. A driver whose setup fails leaves nothing behind; the
    /// failure is reported in the result.
    /// </summary>
    /// <param name="cancellationToken">Stops waiting for removed devices' references.</param>
    /// <returns>What was registered, removed and what failed.</returns>
    public async Task<ProbeResult> ProbeAsync(CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var registered = new List<VfioDevice>();
        var failures = new List<ProbeFailure>();
        var present = new HashSet<string>(StringComparer.Ordinal);

        var drivers = Drivers;
        foreach (var context in Discover(drivers))
        {
            present.Add(context.Name);
            lock (_lock)
            {
                if (_devices.ContainsKey(context.Name))
                {
                    continue;
                }
            }
            var driver = VfioDriver.Select(drivers, context);
            if (driver is null)
            {
                continue;
            }
            if (context is PlatformDeviceContext { Refusal: { } refusal })
            {
                failures.Add(new ProbeFailure(context.Name, driver.Name, refusal));
                Log.PlatformRefused(Logger, context.Name, context.GroupId, refusal.Message);
                continue;
            }
            VfioDevice? device = null;
            try
            {
                device = driver.Create(context);
                Register(device);
                lock (_lock)
                {
                    _probed[device] = driver;
                }
                registered.Add(device);
                Log.Probed(Logger, driver.Name, context.Name, context.GroupId);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                // A driver that constructed its device and then failed in its own preparation never
                // returned it: the context knows it, so its init is undone all the same.
                device ??= context.Constructed;
                if (device is not null && device.State == VfioDeviceState.Initialized)
                {
                    device.Dispose();
                }
                failures.Add(new ProbeFailure(context.Name, driver.Name, e));
                Log.ProbeFailed(Logger, driver.Name, context.Name, context.GroupId, e);
            }
        }

        var removed = new List<string>();
        VfioDevice[] gone;
        lock (_lock)
        {
            gone = [.. _probed.Keys.Where(d => !present.Contains(d.Name))];
        }
        foreach (var device in gone)
        {
            Log.Removed(Logger, device.Name, device.GroupId);
            await UnregisterAsync(device, cancellationToken).ConfigureAwait(false);
            device.Dispose();
            removed.Add(device.Name);
        }
        return new ProbeResult(registered, removed, failures);
    }

    /// <summary>The PCI functions bound to a vfio driver, as sysfs describes them.</summary>
    public IReadOnlyList<PciDeviceContext> DiscoverPci()
    {
        var result = new List<PciDeviceContext>();
        foreach (string name in Sysfs.List("bus/pci/devices"))
        {
            string? driver = Sysfs.ReadLinkName("bus/pci/devices/" + name + "/driver");
            if (driver is not null && IsVfioDriver(driver) && PciAddress.TryParse(name, CultureInfo.InvariantCulture, out var address))
            {
                result.Add(DescribePci(address, driver));
            }
        }
        return result;
    }

    /// <summary>Describes one PCI function from sysfs, whatever it is bound to.</summary>
    /// <param name="address">The function's address.</param>
    /// <exception cref="VfioNotFoundException">No such function, or it has no IOMMU group.</exception>
    public PciDeviceContext DiscoverPci(PciAddress address)
    {
        string dir = "bus/pci/devices/" + address;
        string? driver = Sysfs.ReadLinkName(dir + "/driver");
        return DescribePci(address, driver);
    }

    /// <summary>
    /// The platform devices bound to vfio-platform (or vfio-amba), with their device tree compatible
    /// entries (<c>of_node/compatible</c>) or their ACPI hardware id (the <c>acpi:</c> modalias).
    /// </summary>
    public IReadOnlyList<PlatformDeviceContext> DiscoverPlatform() => DiscoverPlatform(includeRefused: false);

    /// <summary>
    /// The platform devices bound to vfio; with <paramref name="includeRefused"/>, also those assigned to
    /// vfio-platform through driver_override that it did not bind (their context carries the reason).
    /// </summary>
    private List<PlatformDeviceContext> DiscoverPlatform(bool includeRefused)
    {
        var result = new List<PlatformDeviceContext>();
        foreach (string name in Sysfs.List("bus/platform/devices"))
        {
            string dir = "bus/platform/devices/" + name;
            string? driver = Sysfs.ReadLinkName(dir + "/driver");
            bool bound = driver is not null && IsVfioDriver(driver);
            bool refused = includeRefused && driver is null && Sysfs.ReadText(dir + "/driver_override") == "vfio-platform";
            if (!bound && !refused)
            {
                continue;
            }
            int groupId = -1;
            var kind = IommuGroupKind.Iommu;
            VfioException? refusal = null;
            try
            {
                (groupId, kind) = ReadGroup(dir, name);
            }
            catch (VfioNotFoundException e) when (refused)
            {
                refusal = e; // vfio-platform refuses a device without an IOMMU group too
            }
            string compatible = Sysfs.ReadText(dir + "/of_node/compatible") ?? string.Empty;
            string[] strings = compatible.Split('\0', StringSplitOptions.RemoveEmptyEntries);
            string? acpiHid = strings.Length == 0 ? AcpiHid(Sysfs.ReadText(dir + "/modalias")) : null;
            result.Add(new PlatformDeviceContext(this, name, groupId, kind, driver, strings, acpiHid)
            {
                Refusal = refused ? refusal ?? PlatformReset.Refusal(this, name, groupId, PlatformReset.Identity(strings, acpiHid), acpiHid is not null) : null,
            });
        }
        return result;
    }

    /// <summary>The hardware id of an ACPI modalias ("acpi:HID:CID1:...:"), or null for another kind.</summary>
    private static string? AcpiHid(string? modalias)
    {
        const string Prefix = "acpi:";
        if (modalias is null || !modalias.StartsWith(Prefix, StringComparison.Ordinal))
        {
            return null;
        }
        string hid = modalias[Prefix.Length..].Split(':')[0];
        return hid.Length > 0 ? hid : null;
    }

    /// <summary>The mediated devices that exist, with their types.</summary>
    public IReadOnlyList<MdevDeviceContext> DiscoverMdev()
    {
        var result = new List<MdevDeviceContext>();
        foreach (string name in Sysfs.List("bus/mdev/devices"))
        {
            if (!Guid.TryParse(name, out var uuid))
            {
                continue;
            }
            string dir = "bus/mdev/devices/" + name;
            string? type = Sysfs.ReadLinkName(dir + "/mdev_type");
            if (type is null)
            {
                continue;
            }
            result.Add(DescribeMdev(name, uuid, type));
        }
        return result;
    }

    /// <summary>The mdev parents (<c>/sys/class/mdev_bus/*</c>) and the types each offers, read now.</summary>
    public IReadOnlyList<MdevParent> DiscoverMdevParents()
    {
        var result = new List<MdevParent>();
        foreach (string name in Sysfs.List("class/mdev_bus").Order(StringComparer.Ordinal))
        {
            if (TryDescribeMdevParent(name) is { } parent)
            {
                result.Add(parent);
            }
        }
        return result;
    }

    /// <summary>Reads one mdev parent and its types from sysfs.</summary>
    /// <param name="name">The parent's name under <c>/sys/class/mdev_bus</c> ("mtty").</param>
    /// <exception cref="VfioNotFoundException">There is no such parent; the message lists those there are.</exception>
    public MdevParent FindMdevParent(string name)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        return TryDescribeMdevParent(name) ?? throw new VfioNotFoundException(
            $"No mdev parent {name} in {Kernel.Sys("class/mdev_bus")} (there are: {string.Join(", ", Sysfs.List("class/mdev_bus").DefaultIfEmpty("none"))}); load its parent driver (e.g. modprobe mtty).");
    }

    private MdevParent? TryDescribeMdevParent(string name)
    {
        string dir = "class/mdev_bus/" + name;
        string[] typeIds = Sysfs.List(dir + "/mdev_supported_types");
        if (typeIds.Length == 0 && !Sysfs.Exists(dir))
        {
            return null;
        }
        var parent = new MdevParent(this, name, dir);
        var types = new List<MdevType>();
        foreach (string id in typeIds.Order(StringComparer.Ordinal))
        {
            string typeDir = dir + "/mdev_supported_types/" + id;
            types.Add(new MdevType(parent, id,
                Sysfs.ReadText(typeDir + "/name") ?? id,
                Sysfs.ReadText(typeDir + "/description"),
                Sysfs.ReadText(typeDir + "/device_api") ?? string.Empty));
        }
        parent.Types = types;
        return parent;
    }

    /// <summary>Describes an mdev that exists, from its sysfs folder.</summary>
    internal MdevDeviceContext DescribeMdev(Guid uuid)
    {
        string name = uuid.ToString("D", CultureInfo.InvariantCulture);
        string type = Sysfs.ReadLinkName("bus/mdev/devices/" + name + "/mdev_type")
            ?? throw new VfioNotFoundException($"The mdev {name} has no mdev_type link in sysfs: it was removed.");
        return DescribeMdev(name, uuid, type);
    }

    private MdevDeviceContext DescribeMdev(string name, Guid uuid, string type)
    {
        string dir = "bus/mdev/devices/" + name;
        var (groupId, _) = ReadGroup(dir, name);
        string? driver = Sysfs.ReadLinkName(dir + "/driver");
        // The device's folder lives in its parent's: .../devices/virtual/mtty/mtty/<uuid>.
        string? parent = Kernel.ReadLink(Kernel.Sys(dir), out string target) == 0 && target.Split('/') is { Length: >= 2 } parts
            ? parts[^2]
            : null;
        return new MdevDeviceContext(this, uuid, groupId, driver, type, parent);
    }

    /// <summary>The mdevs this registry created and has not removed yet.</summary>
    public IReadOnlyList<CreatedMdev> CreatedMdevs
    {
        get
        {
            lock (_lock)
            {
                return [.. _created];
            }
        }
    }

    internal void RememberCreated(CreatedMdev mdev)
    {
        lock (_lock)
        {
            _created.Add(mdev);
        }
    }

    internal void ForgetCreated(CreatedMdev mdev)
    {
        lock (_lock)
        {
            _created.Remove(mdev);
        }
    }

    internal void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    /// <summary>
    /// Unregisters every device (waiting for their references), disposes the ones probed by a
    /// driver, and closes whatever groups and containers remain.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        // Mdevs this registry created are removed (never any other): closed, unregistered, disposed, removed.
        foreach (var mdev in CreatedMdevs)
        {
            try
            {
                await mdev.RemoveAsync().ConfigureAwait(false);
            }
            catch (VfioException e)
            {
                Log.MdevRemoveFailed(Logger, mdev.Uuid.ToString("D", CultureInfo.InvariantCulture), e);
            }
        }
        foreach (var device in Devices)
        {
            bool probed;
            lock (_lock)
            {
                probed = _probed.ContainsKey(device);
            }
            await UnregisterAsync(device).ConfigureAwait(false);
            if (probed)
            {
                device.Dispose();
            }
        }
    }

    private void Republish(VfioDevice device)
    {
        lock (_lock)
        {
            _devices.TryAdd(device.Name, device);
        }
    }

    internal static bool IsVfioDriver(string driver) => driver.StartsWith("vfio", StringComparison.Ordinal);

    internal IReadOnlyList<VfioDevice> DevicesInGroup(int groupId)
    {
        lock (_lock)
        {
            return [.. _devices.Values.Where(d => d.GroupId == groupId)];
        }
    }

    internal DeviceSet JoinDeviceSet(string id)
    {
        lock (_lock)
        {
            if (!_sets.TryGetValue(id, out var set))
            {
                set = new DeviceSet(id);
                _sets.Add(id, set);
            }
            set.Join();
            return set;
        }
    }

    internal void LeaveDeviceSet(DeviceSet set)
    {
        lock (_lock)
        {
            if (set.Leave() == 0)
            {
                _sets.Remove(set.Id);
            }
        }
    }

    internal DeviceSet? FindDeviceSet(string id)
    {
        lock (_lock)
        {
            return _sets.GetValueOrDefault(id);
        }
    }

    /// <summary>
    /// The group for a device that is opening: the open one, counted once more, or a new one opened,
    /// checked for viability and attached to a container. Nothing is left open when it throws.
    /// </summary>
    internal IommuGroup AcquireGroup(int groupId, IommuGroupKind kind, string deviceName)
    {
        lock (_lock)
        {
            if (_groups.TryGetValue(groupId, out var group))
            {
                group.OpenDeviceCount++;
                return group;
            }
            group = IommuGroup.Open(this, groupId, kind);
            try
            {
                AttachToContainer(group);
            }
            catch
            {
                group.Fd.Dispose();
                throw;
            }
            group.OpenDeviceCount = 1;
            _groups.Add(groupId, group);
            Log.GroupOpened(Logger, groupId, kind);
            return group;
        }
    }

    /// <summary>
    /// Holds an open group open for an operation that passes its file to the kernel (a hot reset):
    /// counted like an open device, released with <see cref="ReleaseGroup"/>. False when this
    /// registry has the group not open.
    /// </summary>
    internal bool TryPinGroup(int groupId, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out IommuGroup? group)
    {
        lock (_lock)
        {
            if (_groups.TryGetValue(groupId, out group))
            {
                group.OpenDeviceCount++;
                return true;
            }
            return false;
        }
    }

    /// <summary>Releases a device's hold on its group; the last one out detaches and closes it.</summary>
    internal void ReleaseGroup(IommuGroup group)
    {
        lock (_lock)
        {
            if (--group.OpenDeviceCount > 0)
            {
                return;
            }
            _groups.Remove(group.Id);
            var container = group.Container;
            try
            {
                container?.Detach(group);
                Log.GroupDetached(Logger, group.Id);
            }
            catch (VfioException e)
            {
                Log.GroupTeardownFailed(Logger, group.Id, e);
            }
            finally
            {
                group.Fd.Dispose();
                Log.GroupClosed(Logger, group.Id);
                if (container is not null && container.GroupCount == 0)
                {
                    _containers.Remove(container);
                    container.Close();
                    Log.ContainerClosed(Logger);
                }
            }
        }
    }

    private void AttachToContainer(IommuGroup group)
    {
        bool noIommu = group.Kind == IommuGroupKind.NoIommu;
        foreach (var existing in _containers)
        {
            if (existing.IsNoIommu == noIommu && existing.TryAttach(group) == 0)
            {
                Log.GroupAttached(Logger, group.Id, existing.IommuTypeName);
                return;
            }
        }
        var container = VfioContainer.Open(this);
        Log.ContainerOpened(Logger);
        try
        {
            int rc = container.TryAttach(group);
            if (rc < 0)
            {
                // Since Linux 6.0 a group whose device a kernel driver claimed after our status check
                // fails here with EPERM (claiming DMA ownership), not at VFIO_GROUP_GET_STATUS: name
                // the device that blocks it rather than blame permissions.
                if (-rc == Errno.EPERM && group.Kind == IommuGroupKind.Iommu && IommuGroup.BlockingDevices(this, group.Id) is { Count: > 0 } blocking)
                {
                    throw IommuGroup.NotViable(group.Id, blocking);
                }
                string? hint = -rc == Errno.EPERM && noIommu ? "No-IOMMU groups need CAP_SYS_RAWIO" : null;
                VfioErrors.Throw(-rc, "VFIO_GROUP_SET_CONTAINER", group.ErrorTarget, hint);
            }
        }
        catch
        {
            container.Close();
            Log.ContainerClosed(Logger);
            throw;
        }
        _containers.Add(container);
        Log.GroupAttached(Logger, group.Id, container.IommuTypeName);
    }

    private PciDeviceContext DescribePci(PciAddress address, string? driver)
    {
        string name = address.ToString();
        string dir = "bus/pci/devices/" + name;
        uint vendor = Sysfs.ReadHex(dir + "/vendor")
            ?? throw new VfioNotFoundException($"No PCI function {name} in sysfs ({Kernel.Sys(dir)}).");
        var (groupId, kind) = ReadGroup(dir, name);
        return new PciDeviceContext(this, address, groupId, kind, driver,
            (ushort)vendor,
            (ushort)(Sysfs.ReadHex(dir + "/device") ?? 0),
            Sysfs.ReadHex(dir + "/class") ?? 0,
            (ushort)(Sysfs.ReadHex(dir + "/subsystem_vendor") ?? 0),
            (ushort)(Sysfs.ReadHex(dir + "/subsystem_device") ?? 0));
    }

    private (int Id, IommuGroupKind Kind) ReadGroup(string deviceDir, string name)
    {
        string? group = Sysfs.ReadLinkName(deviceDir + "/iommu_group");
        if (group is null || !int.TryParse(group, NumberStyles.None, CultureInfo.InvariantCulture, out int id))
        {
            throw new VfioNotFoundException(
                $"Device {name} has no IOMMU group: enable the IOMMU (intel_iommu=on or amd_iommu=on) or load vfio with enable_unsafe_noiommu_mode=1.");
        }
        // An mdev's group is emulated; Linux names it "vfio-noiommu" as it names the no-IOMMU groups,
        // so the bus decides first.
        var kind = deviceDir.StartsWith("bus/mdev/", StringComparison.Ordinal) ? IommuGroupKind.Emulated
            : Sysfs.ReadText("kernel/iommu_groups/" + group + "/name") == "vfio-noiommu" ? IommuGroupKind.NoIommu
            : IommuGroupKind.Iommu;
        return (id, kind);
    }

    // Only the buses some driver is for: a registry of PCI drivers reads no platform or mdev sysfs.
    private IEnumerable<VfioDeviceContext> Discover(IReadOnlyList<VfioDriver> drivers) =>
        drivers.Select(d => d.Bus).Distinct().SelectMany(bus => bus switch
        {
            DriverBus.Pci => DiscoverPci(),
            DriverBus.Platform => DiscoverPlatform(includeRefused: true),
            _ => (IEnumerable<VfioDeviceContext>)DiscoverMdev(),
        });
}
