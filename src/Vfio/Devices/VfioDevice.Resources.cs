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
            _resources.Remove(resource);
        }
    }

    private void RevokeResources()
    {
        IDeviceResource[] live;
        lock (_resources)
        {
            live = [.. _resources];
            _resources.Clear();
        }
        // Newest first: interrupts set up after a mapping go before it.
        for (int i = live.Length - 1; i >= 0; i--)
        {
            live[i].Revoke();
        }
    }
}
