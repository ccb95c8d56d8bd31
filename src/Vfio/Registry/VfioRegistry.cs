using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Vfio;

/// <summary>
/// The process's view of VFIO: the registered devices, how they reach the kernel (the legacy groups
/// and containers, or the iommufd and its IO address space: see <see cref="Backend"/>), the device
/// sets, and the drivers that create devices. Its rules are the kernel's: a device is usable only
/// between <see cref="Register"/> and <see cref="UnregisterAsync"/>, a group file is opened once and
/// shared, device files close before their group is released or their IOAS destroyed.
/// </summary>
public sealed partial class VfioRegistry : IAsyncDisposable
{
    // Where each concern lives, kept apart as the kernel keeps them: registration, probe and lookup
    // here (vfio_main.c); the choice of backend per device in VfioRegistry.Backends.cs; groups and
    // containers in ContainerBackend (group.c, container.c) and the iommufd, its IOAS and the device
    // cdevs in IommufdBackend (device_cdev.c, iommufd.c), both behind IommuBackend; DMA mappings in
    // IommuAddressSpace; sysfs discovery in SysfsDiscovery; device sets in DeviceSetTable; the mdevs
    // this registry created in CreatedMdevTable.
    //
    // Lock order. A thread that holds one of these takes only those further down:
    //   1. DeviceSet.Lock: its devices' open counts, first open and last close, device files and
    //      IOMMU attachments. Several sets are taken in the order of their ids (a hot reset).
    //   2. A group's gate (ContainerBackend): that group's open, attach, detach and close.
    //   3. The container attach lock (ContainerBackend): containers' groups and IOMMU types; or the
    //      iommufd attach lock (IommufdBackend): the iommufd, its IOAS, binding and attaching devices.
    //      No thread holds both.
    //   4. An address space's DMA lock (IommuAddressSpace): its mappings.
    // Leaves, held for bookkeeping only, with no syscall and no other lock taken under them: _lock
    // below, the backend's group table lock, the device set and created-mdev tables' locks, the notifier poller's lock, a device's
    // state and resource locks, an interrupt set's and a migration's locks. CreatedMdev's removal
    // gate (async) comes before all of them. Every method that requires a lock asserts it in Debug
    // builds (LockAssert), which the tests run.

    // Guards _devices, _drivers and _probed. A leaf (see the lock order above).
    private readonly Lock _lock = new();
    private readonly Dictionary<string, VfioDevice> _devices = new(StringComparer.Ordinal);
    private readonly List<VfioDriver> _drivers = [];
    private readonly Dictionary<VfioDevice, VfioDriver> _probed = [];
    // Disposal: _disposed refuses new work from the first DisposeAsync on; _disposeGate lets one call at
    // a time do the work; _disposeDone is set once everything was released.
    private readonly SemaphoreSlim _disposeGate = new(1, 1);
    private volatile bool _disposed;
    private bool _disposeDone;

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
        Discovery = new SysfsDiscovery(this);
        LegacyBackend = new ContainerBackend(this);
        IommufdBackend = new IommufdBackend(this);
        Notifiers = new NotifierPoller(Kernel, Logger);
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

    /// <summary>The open groups (of devices opened through the legacy backend).</summary>
    public IReadOnlyList<IommuGroup> Groups => LegacyBackend.Groups;

    /// <summary>The open containers (of the legacy backend).</summary>
    public IReadOnlyList<VfioContainer> Containers => LegacyBackend.Containers;

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

    /// <summary>The mdevs this registry created and has not removed yet.</summary>
    public IReadOnlyList<CreatedMdev> CreatedMdevs => CreatedMdevTable.All;

    internal ILogger Logger { get; }

    /// <summary>The one thread that polls every open device's REQ and ERR notifiers; stopped when the registry is disposed.</summary>
    internal NotifierPoller Notifiers { get; }

    internal SysfsReader Sysfs { get; }

    /// <summary>What sysfs says about devices; the public Discover and Find methods are in VfioRegistry.Discovery.cs.</summary>
    internal SysfsDiscovery Discovery { get; }

    /// <summary>The legacy backend: groups and containers (and the group files a hot reset passes).</summary>
    internal ContainerBackend LegacyBackend { get; }

    internal DeviceSetTable DeviceSets { get; } = new();

    internal CreatedMdevTable CreatedMdevTable { get; } = new();

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
    /// failure is reported in the result. So is a new device whose sysfs cannot be read or does not read
    /// as the kernel writes it (its <see cref="ProbeFailure.Driver"/> is null): the other devices are
    /// probed all the same, and a registered device is not taken for gone because its sysfs broke.
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
        var unreadable = new List<DiscoveryFailure>();
        foreach (var context in Discovery.Discover(drivers, unreadable))
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

        foreach (var failure in unreadable)
        {
            present.Add(failure.Device);
            lock (_lock)
            {
                if (_devices.ContainsKey(failure.Device))
                {
                    continue;
                }
            }
            failures.Add(new ProbeFailure(failure.Device, null, failure.Error));
        }

        var notOnVfio = new List<ProbeNotOnVfio>();
        if (drivers.Any(d => d.Bus == DriverBus.Pci))
        {
            foreach (var context in Discovery.PciNotOnVfio())
            {
                if (VfioDriver.Select(drivers, context) is { } driver)
                {
                    var skipped = NotOnVfio(context, driver);
                    notOnVfio.Add(skipped);
                    Log.MatchNotOnVfio(Logger, driver.Name, context.Name, context.KernelDriver ?? "no driver", skipped.Hint);
                }
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
        return new ProbeResult(registered, removed, failures) { NotOnVfio = notOnVfio };
    }

    /// <summary>What to tell about a function a driver matches that is not on vfio-pci: who holds it and the sysfs writes that hand it over.</summary>
    private ProbeNotOnVfio NotOnVfio(PciDeviceContext context, VfioDriver driver)
    {
        string name = context.Name;
        string held = context.KernelDriver is { } kernelDriver ? $"the kernel's {kernelDriver} driver holds it" : "no driver holds it";
        string unbind = context.KernelDriver is null ? string.Empty : $"echo {name} > {Kernel.Sys("bus/pci/devices/" + name + "/driver/unbind")}; ";
        string hint = $"{name} matches driver {driver.Name} but is not bound to vfio-pci ({held}). To drive it, as root: `vfio bind {name}` "
            + $"(PciBinding.BindAsync from code), or {unbind}echo vfio-pci > {Kernel.Sys("bus/pci/devices/" + name + "/driver_override")}; echo {name} > {Kernel.Sys("bus/pci/drivers_probe")}; then probe again"
            + (context.GroupId < 0 ? ". It has no IOMMU group: enable the IOMMU (intel_iommu=on or amd_iommu=on) first." : ".");
        return new ProbeNotOnVfio(name, driver.Name, context.KernelDriver, hint);
    }

    internal void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    /// <summary>
    /// Unregisters every device (waiting for their references), disposes the ones probed by a
    /// driver, and closes whatever groups and containers remain, or the IOAS and iommufd; waits at most
    /// <see cref="VfioRegistryOptions.DisposeTimeout"/>. See <see cref="DisposeAsync(CancellationToken)"/>.
    /// </summary>
    /// <exception cref="VfioBusyException">Holders did not let go in time; the message (and the log) says who holds what.</exception>
    public ValueTask DisposeAsync() => new(DisposeAsync(CancellationToken.None));

    /// <summary>
    /// Disposes the registry: removes the mdevs it created, unregisters every device (all at once, asking
    /// each one's holders to let go through <see cref="VfioDevice.OnReleaseRequested"/>), disposes the
    /// ones probed by a driver, and closes whatever groups and containers remain. From the first call on
    /// the registry takes no new device, probe or mdev. The wait is bounded by
    /// <see cref="VfioRegistryOptions.DisposeTimeout"/> and by <paramref name="cancellationToken"/>: when
    /// either ends it, the devices still held stay registered and usable, who holds what (each device's
    /// references and opens, and the regions, interrupt sets, DMA buffers and migration on its open
    /// file) is logged as an error and put in the exception, and a later call takes up where this one
    /// stopped. Once everything is released, further calls do nothing.
    /// </summary>
    /// <param name="cancellationToken">Stops waiting for holders.</param>
    /// <exception cref="OperationCanceledException">The token was cancelled before every device was released.</exception>
    /// <exception cref="VfioBusyException">The timeout passed before every device was released; the message says who holds what.</exception>
    public async Task DisposeAsync(CancellationToken cancellationToken)
    {
        if (Volatile.Read(ref _disposeDone))
        {
            return;
        }
        _disposed = true;
        long started = Stopwatch.GetTimestamp();
        var timeout = Options.DisposeTimeout;
        using var bound = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        if (timeout != Timeout.InfiniteTimeSpan)
        {
            bound.CancelAfter(timeout);
        }
        try
        {
            await _disposeGate.WaitAsync(bound.Token).ConfigureAwait(false);
            try
            {
                // Mdevs this registry created are removed (never any other): closed, unregistered, disposed, removed.
                await CreatedMdevTable.RemoveAllAsync(Logger, bound.Token).ConfigureAwait(false);
                await Task.WhenAll(Devices.Select(device => UnregisterForDisposeAsync(device, bound.Token))).ConfigureAwait(false);
                if (Devices.Count == 0 && CreatedMdevTable.All.Count == 0)
                {
                    Notifiers.Dispose(); // every device is closed: no notifier is left
                    Volatile.Write(ref _disposeDone, true);
                    return;
                }
            }
            finally
            {
                _disposeGate.Release();
            }
        }
        catch (OperationCanceledException) when (bound.IsCancellationRequested)
        {
        }
        string holders = DescribeHolders();
        long elapsed = (long)Stopwatch.GetElapsedTime(started).TotalMilliseconds;
        Log.DisposeGaveUp(Logger, elapsed, holders);
        string message = $"Disposing the registry {(cancellationToken.IsCancellationRequested ? "was cancelled" : "gave up")} after {elapsed} ms; still held: {holders}. "
            + "Dispose those references (their holders were asked to let go through OnReleaseRequested), then dispose the registry again.";
        if (cancellationToken.IsCancellationRequested)
        {
            throw new OperationCanceledException(message, cancellationToken);
        }
        throw new VfioBusyException(message);
    }

    // One device's part of disposal: unregistered (its holders asked to let go) and, when a driver of
    // this registry probed it, disposed. A cancellation leaves it registered.
    private async Task UnregisterForDisposeAsync(VfioDevice device, CancellationToken cancellationToken)
    {
        bool probed;
        lock (_lock)
        {
            probed = _probed.ContainsKey(device);
        }
        try
        {
            await UnregisterAsync(device, cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            return;
        }
        if (probed)
        {
            device.Dispose();
        }
    }

    /// <summary>Who holds what of the devices still registered, one device after another.</summary>
    private string DescribeHolders()
    {
        var devices = Devices;
        return devices.Count == 0 ? "nothing (an mdev could not be removed)" : string.Join("; ", devices.Select(d => d.DescribeHolds()));
    }

    internal IReadOnlyList<VfioDevice> DevicesInGroup(int groupId)
    {
        lock (_lock)
        {
            return [.. _devices.Values.Where(d => d.GroupId == groupId)];
        }
    }

    private void Republish(VfioDevice device)
    {
        lock (_lock)
        {
            _devices.TryAdd(device.Name, device);
        }
    }
}
