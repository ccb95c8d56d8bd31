namespace Vfio;

/// <summary>
/// A counted reference on a registered <see cref="VfioDevice"/>: while it is held, the device stays
/// registered and (for a reference from <see cref="VfioDevice.Open"/>) open. Dispose it exactly once;
/// unregistering waits until every reference is disposed.
/// </summary>
/// <remarks>
/// The kernel pairs every <c>vfio_device_try_get</c> with one <c>vfio_device_put</c>; a reference
/// that must be disposed makes the put impossible to forget in a <c>using</c> block. Copies of this
/// struct share the one reference: dispose only one of them.
/// </remarks>
public struct DeviceReference : IDisposable, IEquatable<DeviceReference>
{
    private VfioDevice? _device;
    private readonly bool _open;

    internal DeviceReference(VfioDevice device, bool open)
    {
        _device = device;
        _open = open;
    }

    /// <summary>True until the reference is disposed (false for a default value).</summary>
    public readonly bool IsHeld => _device is not null;

    /// <summary>True when this reference also holds the device open.</summary>
    public readonly bool HoldsOpen => _device is not null && _open;

    /// <summary>Releases the reference (and the open, for a reference from <see cref="VfioDevice.Open"/>).</summary>
    public void Dispose()
    {
        var device = _device;
        _device = null;
        if (device is null)
        {
            return;
        }
        if (_open)
        {
            device.CloseOne();
        }
        device.Put();
    }

    /// <inheritdoc/>
    public readonly bool Equals(DeviceReference other) => ReferenceEquals(_device, other._device) && _open == other._open;

    /// <inheritdoc/>
    public override readonly bool Equals(object? obj) => obj is DeviceReference other && Equals(other);

    /// <inheritdoc/>
    public override readonly int GetHashCode() => HashCode.Combine(_device, _open);

    /// <summary>Compares two references.</summary>
    public static bool operator ==(DeviceReference left, DeviceReference right) => left.Equals(right);

    /// <summary>Compares two references.</summary>
    public static bool operator !=(DeviceReference left, DeviceReference right) => !left.Equals(right);
}
