namespace Vfio;

/// <summary>
/// Devices that share a reset domain (the functions of one PCI slot, or a device alone) share one
/// set: one lock and one open count. First-open and last-close hooks run under the set's lock, so a
/// set-wide decision such as a hot reset sees a stable picture.
/// </summary>
/// <remarks>The kernel's <c>vfio_device_set</c>, keyed by its <c>set_id</c>.</remarks>
public sealed class DeviceSet
{
    // Set.Lock guards _openCount, and the first-open and last-close hooks of every member; it comes
    // first in the lock order (see VfioRegistry). _members changes atomically, under the set table's lock.
    private int _members;
    private int _openCount;

    internal DeviceSet(string id)
    {
        Id = id;
    }

    /// <summary>The set's key: <c>pci-slot:0000:00:03</c> for PCI functions, the device's own name otherwise.</summary>
    public string Id { get; }

    /// <summary>How many devices of the set are open, counting each device once per open.</summary>
    public int OpenCount
    {
        get => Volatile.Read(ref _openCount);
        internal set
        {
            LockAssert.Held(Lock);
            _openCount = value;
        }
    }

    /// <summary>How many devices (constructed and not yet disposed) belong to the set.</summary>
    public int MemberCount => Volatile.Read(ref _members);

    /// <summary>
    /// The set's lock: guards <see cref="OpenCount"/>, each member's open count, device file and IOMMU
    /// attachment, and runs first-open and last-close hooks. First in the lock order (see VfioRegistry);
    /// several sets are taken in the order of their ids.
    /// </summary>
    internal Lock Lock { get; } = new();

    internal int Join() => Interlocked.Increment(ref _members);

    internal int Leave() => Interlocked.Decrement(ref _members);

    /// <inheritdoc/>
    public override string ToString() => Id;
}
