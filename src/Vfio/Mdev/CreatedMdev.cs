namespace Vfio;

/// <summary>
/// A mediated device this process created: the typed device, registered and open. Disposing it undoes
/// the creation in the kernel's order: the open reference is released (the device file closes, then
/// the group), the device is unregistered (waiting for other references) and disposed, and the mdev
/// is removed. Only mdevs created through <see cref="MdevType.CreateAsync{TDevice}"/> are ever removed.
/// </summary>
public abstract class CreatedMdev : IAsyncDisposable
{
    // Serialises removal (an async gate: unregistering awaits): guards _open and _removed. Taken
    // before any lock of the registry or the device.
    private readonly SemaphoreSlim _gate = new(1, 1);
    private DeviceReference _open;
    private bool _removed;

    private protected CreatedMdev(MdevType type, MdevVfioDevice device, DeviceReference open)
    {
        Type = type;
        DeviceCore = device;
        _open = open;
    }

    /// <summary>The type it was created from.</summary>
    public MdevType Type { get; }

    /// <summary>The mdev's UUID.</summary>
    public Guid Uuid => DeviceCore.Uuid;

    /// <summary>Whether it was removed (by <see cref="RemoveAsync"/> or <see cref="DisposeAsync"/>).</summary>
    public bool IsRemoved => Volatile.Read(ref _removed);

    internal MdevVfioDevice DeviceCore { get; }

    /// <summary>
    /// Closes, unregisters and disposes the device and removes the mdev. Unregistering waits for
    /// references others hold (asking them to let go); the removal itself waits in the kernel
    /// while any file of the device is still open.
    /// </summary>
    /// <param name="cancellationToken">Stops waiting for other references; the device then stays registered, and closed.</param>
    /// <exception cref="VfioException">The kernel refused the removal; the device is unregistered and disposed, the mdev remains.</exception>
    public async Task RemoveAsync(CancellationToken cancellationToken = default)
    {
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_removed)
            {
                return;
            }
            _open.Dispose();
            _open = default;
            var registry = Type.Parent.Registry;
            if (DeviceCore.State is VfioDeviceState.Registered)
            {
                await registry.UnregisterAsync(DeviceCore, cancellationToken).ConfigureAwait(false);
            }
            DeviceCore.Dispose();
            MdevLifecycle.Remove(registry, Type, Uuid);
            Volatile.Write(ref _removed, true);
            registry.CreatedMdevTable.Remove(this);
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>Removes the mdev as <see cref="RemoveAsync"/> does; a second call does nothing.</summary>
    public async ValueTask DisposeAsync()
    {
        // The gate stays undisposed: it never allocated a wait handle, and a late call must still find it.
        await RemoveAsync().ConfigureAwait(false);
        GC.SuppressFinalize(this);
    }

    /// <inheritdoc/>
    public override string ToString() => $"mdev {Uuid} ({Type.Id} on {Type.Parent.Name}){(IsRemoved ? ", removed" : string.Empty)}";
}

/// <summary>A mediated device this process created, with its typed device.</summary>
/// <typeparam name="TDevice">The device type its driver created.</typeparam>
public sealed class CreatedMdev<TDevice> : CreatedMdev
    where TDevice : MdevVfioDevice
{
    internal CreatedMdev(MdevType type, TDevice device, DeviceReference open)
        : base(type, device, open)
    {
        Device = device;
    }

    /// <summary>The typed device: registered and open until the handle is disposed.</summary>
    public TDevice Device { get; }
}
