using System.Diagnostics;

namespace Vfio;

/// <summary>
/// A counted reference on a registered <see cref="VfioDevice"/>: while it is held, the device stays
/// registered and (for a reference from <see cref="VfioDevice.Open"/>) open. Dispose it once;
/// unregistering waits until every reference is disposed.
/// </summary>
/// <remarks>
/// <para>
/// The kernel pairs every <c>vfio_device_try_get</c> with one <c>vfio_device_put</c>; a reference
/// that must be disposed makes the put impossible to forget in a <c>using</c> block.
/// </para>
/// <para>
/// Copies of this struct share the one reference, and the reference is released exactly once,
/// whichever copy releases it first. Disposing the same variable again does nothing. Disposing a
/// copy of a reference that is already released is a bug in the caller: it releases nothing (it
/// never takes another holder's reference, also when copies are disposed on several threads at
/// once) and is logged as an error with the stack of the second release. It does not throw, because
/// a release usually runs in a <c>finally</c> or <c>Dispose</c>, where an exception would hide the
/// one in flight.
/// </para>
/// </remarks>
public struct DeviceReference : IDisposable, IEquatable<DeviceReference>
{
    private Hold? _hold;

    internal DeviceReference(VfioDevice device, bool open)
    {
        _hold = new Hold(device, open);
    }

    /// <summary>True until the reference is released, through this copy or another (false for a default value).</summary>
    public readonly bool IsHeld => _hold is { IsReleased: false };

    /// <summary>True while this reference is held and also holds the device open.</summary>
    public readonly bool HoldsOpen => _hold is { IsReleased: false, Open: true };

    /// <summary>Releases the reference (and the open, for a reference from <see cref="VfioDevice.Open"/>).</summary>
    public void Dispose()
    {
        var hold = _hold;
        _hold = null;
        hold?.Release();
    }

    /// <summary>True when both are copies of the same reference (or both default).</summary>
    /// <param name="other">The other reference.</param>
    public readonly bool Equals(DeviceReference other) => ReferenceEquals(_hold, other._hold);

    /// <inheritdoc/>
    public override readonly bool Equals(object? obj) => obj is DeviceReference other && Equals(other);

    /// <inheritdoc/>
    public override readonly int GetHashCode() => _hold?.GetHashCode() ?? 0;

    /// <summary>True when both are copies of the same reference.</summary>
    public static bool operator ==(DeviceReference left, DeviceReference right) => left.Equals(right);

    /// <summary>True when they are different references.</summary>
    public static bool operator !=(DeviceReference left, DeviceReference right) => !left.Equals(right);

    /// <summary>
    /// The one reference every copy shares: released by the first copy that disposes it. One small
    /// object per get; its release is one atomic exchange besides the device's count.
    /// </summary>
    private sealed class Hold(VfioDevice device, bool open)
    {
        private int _released;

        public bool Open => open;

        public bool IsReleased => Volatile.Read(ref _released) != 0;

        public void Release()
        {
            if (Interlocked.Exchange(ref _released, 1) != 0)
            {
                Log.DeviceReferenceReleasedTwice(device.Registry.Logger, device.Name, device.GroupId, open ? "open " : "", new StackTrace(2, fNeedFileInfo: false).ToString());
                return;
            }
            if (open)
            {
                device.CloseOne();
            }
            device.Put();
        }
    }
}
