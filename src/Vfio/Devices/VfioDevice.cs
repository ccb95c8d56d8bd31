using Microsoft.Extensions.Logging;
using Vfio.Interop;

namespace Vfio;

/// <summary>The lifetime states of a <see cref="VfioDevice"/>.</summary>
public enum VfioDeviceState
{
    /// <summary>Constructed (the kernel's init): no kernel I/O done, nothing published.</summary>
    Initialized,

    /// <summary>Registered: findable, openable, its hooks may run.</summary>
    Registered,

    /// <summary>Unregistering: new references are refused; waiting for the last one to go.</summary>
    Unregistering,

    /// <summary>Unregistered: no reference left; only disposal remains.</summary>
    Unregistered,

    /// <summary>Disposed (the kernel's uninit).</summary>
    Disposed,
}

/// <summary>
/// A device handed to user space through VFIO. The typed devices <see cref="PciVfioDevice"/>,
/// <see cref="PlatformVfioDevice"/> and <see cref="MdevVfioDevice"/> derive from it, and drivers
/// derive from those.
/// </summary>
/// <remarks>
/// <para>The lifetime is the kernel VFIO core's: construct (init: no kernel I/O, nothing published)
/// → driver preparation → <see cref="VfioRegistry.Register"/> (the last step; from then on the
/// device can be found and opened, and its hooks called; the reference count starts at 1) → users
/// take references (<see cref="TryGet"/>, <see cref="Open"/>) and dispose them →
/// <see cref="VfioRegistry.UnregisterAsync"/> drops the registration reference and waits on a
/// completion until the last reference is gone, calling <see cref="OnReleaseRequested"/> meanwhile →
/// <see cref="Dispose()"/> (uninit) undoes what construction did, also when registration never
/// happened or failed.</para>
/// <para>Hooks are protected virtual methods on the typed object; a driver never casts.</para>
/// </remarks>
public abstract partial class VfioDevice : IDisposable
{
    // Reference count in the low bits; the Dying bit is set when unregistering starts, after which
    // try-get fails even though holders may still be counted (refcount_inc_not_zero plus the
    // kernel's removal from the group's device list, in one word).
    private const long Dying = 1L << 62;
    private const long CountMask = Dying - 1;

    private long _refs;

    // Guarded by Set.Lock: the open count, and the attachment (device file, group, address space)
    // the first open makes and the last close undoes; read lock-free, through Volatile, by whoever
    // holds an open reference.
    private int _openCount;
    private DeviceAttachment? _attachment;

    // Guards _state and the _released completion. A leaf (see the lock order in VfioRegistry).
    private readonly Lock _stateLock = new();
    private TaskCompletionSource _released = NewCompletion();
    private VfioDeviceState _state;

    private protected VfioDevice(VfioDeviceContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        Registry = context.Registry;
        Name = context.Name;
        GroupId = context.GroupId;
        GroupKind = context.GroupKind;
        Set = Registry.DeviceSets.Join(context.SetId);
        context.Constructed = this;
        Logger = Registry.LoggerFactory.CreateLogger(GetType());
        _state = VfioDeviceState.Initialized;
    }

    /// <summary>The registry the device belongs to.</summary>
    public VfioRegistry Registry { get; }

    /// <summary>The device's name as the kernel knows it (a PCI address, a platform device name, an mdev UUID).</summary>
    public string Name { get; }

    /// <summary>The IOMMU group the device is in.</summary>
    public int GroupId { get; }

    /// <summary>The kind of that group.</summary>
    public IommuGroupKind GroupKind { get; }

    /// <summary>The device set the device shares a lock and open count with.</summary>
    public DeviceSet Set { get; }

    /// <summary>Where the device's state is in its lifetime.</summary>
    public VfioDeviceState State
    {
        get
        {
            lock (_stateLock)
            {
                return _state;
            }
        }
    }

    /// <summary>True while at least one <see cref="Open"/> reference is held.</summary>
    public bool IsOpen => Volatile.Read(ref _openCount) > 0;

    /// <summary>How many references are held, the registration's included.</summary>
    public int ReferenceCount => (int)(Volatile.Read(ref _refs) & CountMask);

    /// <summary>The group the device's kernel file came through, while the device is open.</summary>
    public IommuGroup? Group => Volatile.Read(ref _attachment)?.Group;

    /// <summary>What the kernel reported for the device when it was opened.</summary>
    public VfioDeviceInfo? Info { get; private set; }

    /// <summary>A logger in the device's own category.</summary>
    protected ILogger Logger { get; }

    internal VfioKernel Kernel => Registry.Kernel;

    /// <summary>The device's kernel file while open; throws when it is not.</summary>
    internal SafeFd DeviceFd => Volatile.Read(ref _attachment)?.DeviceFd ?? throw new InvalidOperationException($"Device {Name} is not open.");

    internal ErrorTarget ErrorTarget => new(GroupId: GroupId, Device: Name);

    /// <summary>Where the device's DMA buffers are mapped, while the device is open.</summary>
    internal IommuAddressSpace? AddressSpace => Volatile.Read(ref _attachment)?.AddressSpace;

    /// <summary>
    /// Takes a reference, unless unregistering has begun or the device is not registered
    /// (the kernel's <c>vfio_device_try_get</c>).
    /// </summary>
    /// <param name="reference">The reference to dispose exactly once.</param>
    /// <returns>True when the reference was taken.</returns>
    public bool TryGet(out DeviceReference reference)
    {
        if (TryGetCore())
        {
            reference = new DeviceReference(this, open: false);
            return true;
        }
        reference = default;
        return false;
    }

    /// <summary>
    /// Opens the device and returns a reference that keeps it open. The first open (of this device)
    /// opens its group and container as needed, obtains the device file and runs
    /// <see cref="OnFirstOpen"/> under the device set's lock; disposing the last open reference runs
    /// <see cref="OnLastClose"/>, closes the device file and releases the group.
    /// </summary>
    /// <returns>A reference that holds the device open until disposed.</returns>
    /// <exception cref="InvalidOperationException">The device is not registered, or is being unregistered.</exception>
    /// <exception cref="VfioException">The kernel refused a step; nothing opened on the way is left open.</exception>
    public DeviceReference Open()
    {
        if (!TryGetCore())
        {
            throw new InvalidOperationException($"Device {Name} cannot be opened: it is {State.ToString().ToLowerInvariant()}, not registered.");
        }
        try
        {
            lock (Set.Lock)
            {
                if (_openCount == 0)
                {
                    try
                    {
                        OpenKernelDeviceLocked();
                    }
                    catch (VfioException e) when (DescribeOpenFailure(e) is { } described)
                    {
                        throw described;
                    }
                    try
                    {
                        OnDeviceFileOpened();
                        OnFirstOpen();
                    }
                    catch
                    {
                        CloseKernelDeviceLocked();
                        throw;
                    }
                }
                _openCount++;
                Set.OpenCount++;
            }
        }
        catch
        {
            Put();
            throw;
        }
        return new DeviceReference(this, open: true);
    }

    /// <summary>Disposes the device (uninit): undoes what construction did.</summary>
    /// <exception cref="InvalidOperationException">The device is still registered: unregister it first.</exception>
    public void Dispose()
    {
        lock (_stateLock)
        {
            if (_state == VfioDeviceState.Disposed)
            {
                return;
            }
            if (_state is VfioDeviceState.Registered or VfioDeviceState.Unregistering)
            {
                throw new InvalidOperationException($"Device {Name} is still registered: unregister it before disposing it.");
            }
            _state = VfioDeviceState.Disposed;
        }
        Dispose(disposing: true);
        Registry.DeviceSets.Leave(Set);
        GC.SuppressFinalize(this);
    }

    /// <summary>Releases what the driver set up in its constructor. Called once, by <see cref="Dispose()"/>.</summary>
    /// <param name="disposing">True when called from <see cref="Dispose()"/>.</param>
    protected virtual void Dispose(bool disposing)
    {
    }

    /// <summary>
    /// Runs when the device is opened for the first time (the kernel's <c>open_device</c>), under the
    /// device set's lock, with the device file open: map BARs, enable the device, allocate rings.
    /// If it throws, the open fails and the device file is closed again.
    /// </summary>
    protected virtual void OnFirstOpen()
    {
    }

    /// <summary>
    /// Runs when the last open reference is disposed (the kernel's <c>close_device</c>), under the
    /// device set's lock, before the device file is closed: quiesce the device, release mappings.
    /// </summary>
    protected virtual void OnLastClose()
    {
    }

    /// <summary>
    /// Asks whoever holds references to let go (the kernel's <c>request</c>): called when
    /// unregistering starts and then at the registry's interval while references remain, with a
    /// count that grows from 0; runs on the unregistering thread. For a PCI device it is also called
    /// when the kernel asks for the device back (vfio-pci signals REQ while someone unbinds the
    /// device from it), on a thread-pool thread, with a count that grows from 0 per open.
    /// Keep it short; disposing the references it asks for is allowed from inside it.
    /// </summary>
    /// <param name="count">How many times it was asked before, for this unregistration.</param>
    protected virtual void OnReleaseRequested(int count)
    {
    }

    /// <inheritdoc/>
    public override string ToString() => $"{GetType().Name} {Name} (group {GroupId})";

    /// <summary>A clearer error for a kernel refusal to open the device that the bus driver explains, or null to keep the original.</summary>
    /// <param name="error">What opening the device file threw.</param>
    private protected virtual VfioException? DescribeOpenFailure(VfioException error) => null;

    internal bool TryGetCore()
    {
        long current = Volatile.Read(ref _refs);
        while (true)
        {
            if ((current & Dying) != 0 || current == 0)
            {
                return false;
            }
            long seen = Interlocked.CompareExchange(ref _refs, current + 1, current);
            if (seen == current)
            {
                return true;
            }
            current = seen;
        }
    }

    internal void Put()
    {
        long now = Interlocked.Decrement(ref _refs);
        if ((now & CountMask) == 0)
        {
            _released.TrySetResult();
        }
    }

    internal void CloseOne()
    {
        lock (Set.Lock)
        {
            if (_openCount <= 0)
            {
                throw new InvalidOperationException($"Device {Name} is not open.");
            }
            _openCount--;
            Set.OpenCount--;
            if (_openCount == 0)
            {
                try
                {
                    OnLastClose();
                }
                catch (Exception e)
                {
                    Log.LastCloseFailed(Registry.Logger, Name, GroupId, e);
                }
                finally
                {
                    CloseKernelDeviceLocked();
                }
            }
        }
    }

    internal void MarkRegistered()
    {
        lock (_stateLock)
        {
            if (_state != VfioDeviceState.Initialized)
            {
                throw new InvalidOperationException($"Device {Name} cannot be registered: it is {_state.ToString().ToLowerInvariant()}.");
            }
            _released = NewCompletion();
            Volatile.Write(ref _refs, 1);
            _state = VfioDeviceState.Registered;
        }
    }

    /// <summary>Undoes <see cref="MarkRegistered"/> when the registry could not publish the device.</summary>
    internal void UndoRegistered()
    {
        lock (_stateLock)
        {
            Volatile.Write(ref _refs, 0);
            _state = VfioDeviceState.Initialized;
        }
    }

    /// <summary>
    /// Drops the registration reference and waits for the last one, asking holders to let go.
    /// Returns false when cancelled before the last reference went; the device then stays registered.
    /// </summary>
    internal async Task<bool> UnregisterCoreAsync(TimeSpan interval, CancellationToken cancellationToken)
    {
        lock (_stateLock)
        {
            if (_state != VfioDeviceState.Registered)
            {
                throw new InvalidOperationException($"Device {Name} cannot be unregistered: it is {_state.ToString().ToLowerInvariant()}.");
            }
            _state = VfioDeviceState.Unregistering;
        }
        Interlocked.Or(ref _refs, Dying);
        Put();

        var released = _released.Task;
        int count = 0;
        while (!released.IsCompleted)
        {
            RequestRelease(count++);
            try
            {
                await released.WaitAsync(interval, cancellationToken).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                if (TryAbortUnregister())
                {
                    return false;
                }
                break;
            }
        }

        lock (_stateLock)
        {
            _state = VfioDeviceState.Unregistered;
        }
        return true;
    }

    /// <summary>
    /// Asks holders to let go through <see cref="OnReleaseRequested"/>, logging a hook that throws: the
    /// one path for the registry's unregistration and the kernel's own request (vfio-pci's REQ).
    /// </summary>
    internal void RequestRelease(int count)
    {
        Log.ReleaseRequested(Registry.Logger, Name, GroupId, count, ReferenceCount);
        try
        {
            OnReleaseRequested(count);
        }
        catch (Exception e)
        {
            Log.ReleaseRequestFailed(Registry.Logger, Name, GroupId, e);
        }
    }

    /// <summary>
    /// Wires what the kernel tells user space about the open device file (for PCI: the REQ and ERR
    /// notifiers), before <see cref="OnFirstOpen"/>, under the device set's lock. What it sets up is
    /// tracked as a resource and revoked when the file closes.
    /// </summary>
    private protected virtual void OnDeviceFileOpened()
    {
    }

    /// <summary>True for an interrupt index the library wires itself (PCI's REQ and ERR), which <see cref="EnableInterrupts"/> refuses.</summary>
    private protected virtual bool IsLibraryIrq(int index) => false;

    // Takes the registration reference back and clears Dying, unless the count already reached 0
    // (then the completion has fired and unregistering must finish).
    private bool TryAbortUnregister()
    {
        long current = Volatile.Read(ref _refs);
        while ((current & CountMask) != 0)
        {
            long restored = (current & CountMask) + 1;
            long seen = Interlocked.CompareExchange(ref _refs, restored, current);
            if (seen == current)
            {
                lock (_stateLock)
                {
                    _state = VfioDeviceState.Registered;
                }
                return true;
            }
            current = seen;
        }
        return false;
    }

    // The first open: attach the device to an IOMMU address space (for the legacy backend: its
    // group, opened and attached to a container as needed) and obtain its device file.
    private void OpenKernelDeviceLocked()
    {
        LockAssert.Held(Set.Lock);
        var attachment = Registry.Iommu.Attach(this);
        try
        {
            Info = VfioDeviceInfo.Query(Kernel, attachment.DeviceFd, ErrorTarget);
        }
        catch
        {
            Registry.Iommu.Detach(attachment);
            throw;
        }
        ResetMemoryGate();
        Volatile.Write(ref _attachment, attachment);
    }

    // What lives on the device file goes first, then the file, then the group (the backend's Detach
    // closes them in that order: the group's container cannot be unset while a device file is open).
    private void CloseKernelDeviceLocked()
    {
        LockAssert.Held(Set.Lock);
        RevokeResources();
        var attachment = Interlocked.Exchange(ref _attachment, null);
        if (attachment is not null)
        {
            Registry.Iommu.Detach(attachment);
        }
    }

    private static TaskCompletionSource NewCompletion() => new(TaskCreationOptions.RunContinuationsAsynchronously);
}
