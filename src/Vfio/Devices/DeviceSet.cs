namespace Vfio;

/// <summary>
/// Devices that share a reset domain share one set: one lock and one open count. First-open and
/// last-close hooks run under the set's lock, so a set-wide decision such as a hot reset sees a stable
/// picture. PCI functions form sets as vfio-pci does (<c>vfio_pci_core_register_device</c>): a function
/// on a root bus, or a virtual function, is alone; one whose slot can be reset (a hotplug slot whose
/// driver resets it, such as pciehp) shares the slot's set; any other shares its bus's set. Platform
/// and mediated devices are each alone.
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

    /// <summary>
    /// The set's key: <c>pci-slot:0000:01:00</c> for the functions of a slot that can be reset,
    /// <c>pci-bus:0000:01</c> for those of a bus, <c>device:</c> and the device's name for a device alone.
    /// </summary>
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
