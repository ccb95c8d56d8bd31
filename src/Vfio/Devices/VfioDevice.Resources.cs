using Vfio.Interop;

namespace Vfio;

/// <summary>Something that lives on an open device file and must go before the file closes.</summary>
internal interface IDeviceResource
{
    /// <summary>Releases the resource; true the first time.</summary>
    bool Revoke();
}

public abstract partial class VfioDevice
{
    // What lives on the open device file; the list is its own lock, a leaf (resources are revoked
    // after it is released).
    private readonly List<IDeviceResource> _resources = [];

    internal void TrackResource(IDeviceResource resource)
    {
        lock (_resources)
        {
            _resources.Add(resource);
        }
    }

    internal void ForgetResource(IDeviceResource resource)
    {
        lock (_resources)
        {
            // From the end: resources mostly go in the reverse order they came (a buffer freed soon
            // after it was allocated, newest first at close), so a device with many of them does not
            // scan the whole list per release.
            int at = _resources.LastIndexOf(resource);
            if (at >= 0)
            {
                _resources.RemoveAt(at);
            }
        }
    }

    /// <summary>
    /// Who holds the device, as far as the books know: the references held on it (the opens among them;
    /// the registration's own not counted) and what
    /// lives on its open file (regions, interrupt sets, DMA buffers, a migration), the library's own
    /// REQ and ERR notifiers left out. For a registry that gives up waiting for a device to be released.
    /// </summary>
    internal string DescribeHolds()
    {
        IDeviceResource[] live;
        lock (_resources)
        {
            live = [.. _resources];
        }
        var held = live.Where(r => r is not InterruptSet set || !IsLibraryIrq(set.Index)).Select(r => r.ToString()).ToList();
        // The registration's own reference is nobody's hold.
        int references = ReferenceCount - (State == VfioDeviceState.Registered ? 1 : 0);
        int opens = Volatile.Read(ref _openCount);
        return $"{Name} (group {GroupId}): {references} reference{(references == 1 ? "" : "s")}, {opens} of them open"
            + (held.Count > 0 ? "; holding " + string.Join(", ", held) : string.Empty);
    }

    private void RevokeResources()
    {
        IDeviceResource[] live;
        lock (_resources)
        {
            live = [.. _resources];
        }
        // Newest first: interrupts set up after a mapping go before it. Each stays in the books until
        // it is revoked: a config write on another thread that turns the device's memory off meanwhile
        // must still find the mapped regions not yet revoked and suspend them (a touch of one would be
        // SIGBUS).
        for (int i = live.Length - 1; i >= 0; i--)
        {
            live[i].Revoke();
            ForgetResource(live[i]);
        }
    }
}
