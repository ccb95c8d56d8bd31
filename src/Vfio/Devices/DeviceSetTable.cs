using System.Diagnostics.CodeAnalysis;

namespace Vfio;

/// <summary>
/// A registry's device sets by id (the kernel's <c>vfio_device_set</c> xarray): a device joins its
/// set when it is constructed and leaves it when it is disposed; the set goes with its last member.
/// </summary>
internal sealed class DeviceSetTable
{
    // Guards _sets, and the membership change that creates or removes a set. A leaf: no other lock is
    // taken and no syscall is made while it is held (see the lock order in VfioRegistry).
    private readonly Lock _lock = new();
    private readonly Dictionary<string, DeviceSet> _sets = new(StringComparer.Ordinal);

    /// <summary>Adds a member to the set with this id, creating the set for its first one.</summary>
    public DeviceSet Join(string id)
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

    /// <summary>Removes a member; the last one out removes the set.</summary>
    public void Leave(DeviceSet set)
    {
        lock (_lock)
        {
            if (set.Leave() == 0)
            {
                _sets.Remove(set.Id);
            }
        }
    }

    /// <summary>The set with this id; false when no device of it exists.</summary>
    public bool TryFind(string id, [NotNullWhen(true)] out DeviceSet? set)
    {
        lock (_lock)
        {
            return _sets.TryGetValue(id, out set);
        }
    }
}
