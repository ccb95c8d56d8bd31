using System.Diagnostics.CodeAnalysis;
using Vfio.Interop;

namespace Vfio;

/// <summary>
/// The legacy IOMMU backend (the kernel's group.c and container.c): the process's one open of each
/// IOMMU group file, shared and counted by the group's open devices, each group attached to a
/// container whose type1 IOMMU maps DMA. The last device out of a group detaches and closes it; the
/// last group out of a container closes the container.
/// </summary>
/// <remarks>
/// A group is opened and closed under its own gate, not under a lock of the whole backend: two threads
/// opening devices of one group open its file once (the kernel allows one open; a second gets EBUSY),
/// the second waiting at the gate and then sharing the group; a group never closes while another
/// thread opens it again. Locks, in the order they are taken (see VfioRegistry for the whole order):
/// a device set's lock (the caller's), then a group's gate, then <see cref="_attachLock"/>, then an
/// address space's DMA lock. <see cref="_lock"/> is a leaf.
/// </remarks>
internal sealed class ContainerBackend(VfioRegistry registry) : IommuBackend
{
    // Guards _slots (and each slot's Users count and published Group) and _containers. A leaf: held for
    // table work only, never across a syscall or while taking another lock.
    private readonly Lock _lock = new();
    private readonly Dictionary<int, GroupSlot> _slots = [];
    private readonly List<VfioContainer> _containers = [];

    // Serialises groups joining and leaving containers: guards the choice of a container, each
    // container's group list and IOMMU type, and opening and closing containers. Held across those
    // ioctls; taken under a group's gate, before any DMA lock.
    private readonly Lock _attachLock = new();

    /// <summary>The open groups.</summary>
    public IReadOnlyList<IommuGroup> Groups
    {
        get
        {
            lock (_lock)
            {
                return [.. _slots.Values.Select(s => s.Group).OfType<IommuGroup>()];
            }
        }
    }

    /// <summary>The open containers.</summary>
    public IReadOnlyList<VfioContainer> Containers
    {
        get
        {
            lock (_lock)
            {
                return [.. _containers];
            }
        }
    }

    public override VfioBackend Kind => VfioBackend.Legacy;

    public override DeviceAttachment Attach(VfioDevice device, string? cdevPath)
    {
        var group = AcquireGroup(device.GroupId, device.GroupKind);
        try
        {
            return new DeviceAttachment(this, device, group.GetDeviceFd(device.Name), group.Container!.AddressSpace, group);
        }
        catch
        {
            ReleaseGroup(group, pinned: false);
            throw;
        }
    }

    public override void Detach(DeviceAttachment attachment)
    {
        attachment.DeviceFd.Dispose();
        ReleaseGroup(attachment.Group!, pinned: false);
    }

    /// <summary>
    /// Holds an open group open for an operation that passes its file to the kernel (a hot reset):
    /// counted as a pin, not as an open device, released with <see cref="ReleaseGroup"/>. False when
    /// this registry has the group not open.
    /// </summary>
    public bool TryPinGroup(int groupId, [NotNullWhen(true)] out IommuGroup? group)
    {
        group = null;
        var slot = EnterSlot(groupId, create: false);
        if (slot is null)
        {
            return false;
        }
        try
        {
            lock (slot.Gate)
            {
                if (slot.Group is { } open)
                {
                    open.PinCount++;
                    group = open;
                }
            }
        }
        finally
        {
            LeaveSlot(slot);
        }
        return group is not null;
    }

    /// <summary>Releases an open device's hold (or a pin) on its group; the last one out detaches and closes it.</summary>
    public void ReleaseGroup(IommuGroup group, bool pinned)
    {
        var slot = EnterSlot(group.Id, create: false)
            ?? throw new InvalidOperationException($"Group {group.Id} is not open in this registry.");
        try
        {
            lock (slot.Gate)
            {
                if (pinned)
                {
                    group.PinCount--;
                }
                else
                {
                    group.OpenDeviceCount--;
                }
                if (group.OpenDeviceCount + group.PinCount > 0)
                {
                    return;
                }
                Publish(slot, null);
                CloseGroupLocked(slot, group);
            }
        }
        finally
        {
            LeaveSlot(slot);
        }
    }

    /// <summary>
    /// The group for a device that is opening: the open one, counted once more, or a new one opened,
    /// checked for viability and attached to a container. Nothing is left open when it throws.
    /// </summary>
    private IommuGroup AcquireGroup(int groupId, IommuGroupKind kind)
    {
        var slot = EnterSlot(groupId, create: true)!;
        try
        {
            lock (slot.Gate)
            {
                if (slot.Group is { } open)
                {
                    open.OpenDeviceCount++;
                    return open;
                }
                LockAssert.NotHeld(_lock);
                var group = IommuGroup.Open(registry, groupId, kind);
                try
                {
                    AttachToContainerLocked(slot, group);
                }
                catch
                {
                    group.Fd.Dispose();
                    throw;
                }
                group.OpenDeviceCount = 1;
                Publish(slot, group);
                Log.GroupOpened(registry.Logger, groupId, kind);
                return group;
            }
        }
        finally
        {
            LeaveSlot(slot);
        }
    }

    // Under the group's gate: joins the first container that takes the group (no-IOMMU groups only
    // share with no-IOMMU groups), or a new one. Only a refusal that says the group does not fit that
    // container (IsIncompatible) moves on to the next; any other error is the group's own, and a new
    // container would meet it too.
    private void AttachToContainerLocked(GroupSlot slot, IommuGroup group)
    {
        LockAssert.Held(slot.Gate);
        bool noIommu = group.Kind == IommuGroupKind.NoIommu;
        lock (_attachLock)
        {
            foreach (var existing in Containers)
            {
                if (existing.IsNoIommu != noIommu)
                {
                    continue;
                }
                int rc = existing.TryAttachLocked(group);
                if (rc == 0)
                {
                    Log.GroupAttached(registry.Logger, group.Id, existing.IommuTypeName);
                    return;
                }
                if (!IsIncompatible(-rc))
                {
                    throw AttachError(group, -rc);
                }
                Log.GroupIncompatible(registry.Logger, group.Id, Errno.Name(-rc));
            }
            var container = VfioContainer.Open(registry, _attachLock, group.ErrorTarget);
            try
            {
                int rc = container.TryAttachLocked(group);
                if (rc < 0)
                {
                    throw AttachError(group, -rc);
                }
            }
            catch
            {
                container.Close();
                Log.ContainerClosed(registry.Logger);
                throw;
            }
            lock (_lock)
            {
                _containers.Add(container);
            }
            Log.GroupAttached(registry.Logger, group.Id, container.IommuTypeName);
        }
    }

    /// <summary>
    /// True for the errnos with which VFIO_GROUP_SET_CONTAINER says that the group does not fit this
    /// container, and a container of its own may take it (Linux 6.1 to 7.x, vfio_container_attach_group
    /// and vfio_iommu_type1_attach_group): EINVAL when the group's IOMMU aperture or reserved regions
    /// conflict with the container's mappings, EBUSY while the container's DMA vaddrs are invalidated.
    /// EPERM there means a real group meeting no-IOMMU ones (kept apart before asking) or a group whose
    /// DMA cannot be claimed, which no container cures; EINTR, ENOMEM, EIO are failures of the call.
    /// </summary>
    internal static bool IsIncompatible(int errno) => errno is Errno.EINVAL or Errno.EBUSY;

    // The kernel refused the group in every container it fits.
    private VfioException AttachError(IommuGroup group, int errno)
    {
        // Since Linux 6.0 a group whose device a kernel driver claimed after our status check fails
        // here with EPERM (claiming DMA ownership), not at VFIO_GROUP_GET_STATUS: name the device that
        // blocks it rather than blame permissions.
        if (errno == Errno.EPERM && group.Kind == IommuGroupKind.Iommu && IommuGroup.BlockingDevices(registry, group.Id) is { Count: > 0 } blocking)
        {
            return IommuGroup.NotViable(group.Id, blocking);
        }
        string? hint = errno == Errno.EPERM && group.Kind == IommuGroupKind.NoIommu ? "No-IOMMU groups need CAP_SYS_RAWIO" : null;
        return VfioErrors.Create(errno, "VFIO_GROUP_SET_CONTAINER", group.ErrorTarget, hint);
    }

    // Under the group's gate, with nothing holding the group any more: detach it from its container,
    // close its file, and close the container when it was the last group in it.
    private void CloseGroupLocked(GroupSlot slot, IommuGroup group)
    {
        LockAssert.Held(slot.Gate);
        LockAssert.NotHeld(_lock);
        lock (_attachLock)
        {
            var container = group.Container;
            try
            {
                container?.DetachLocked(group);
                Log.GroupDetached(registry.Logger, group.Id);
            }
            catch (VfioException e)
            {
                Log.GroupTeardownFailed(registry.Logger, group.Id, e);
            }
            finally
            {
                group.Fd.Dispose();
                Log.GroupClosed(registry.Logger, group.Id);
                if (container is not null && container.GroupCount == 0)
                {
                    lock (_lock)
                    {
                        _containers.Remove(container);
                    }
                    container.Close();
                    Log.ContainerClosed(registry.Logger);
                }
            }
        }
    }

    // Looks a group's slot up (creating it when asked) and counts the caller as its user, so that the
    // slot stays in the table until the caller has left it.
    private GroupSlot? EnterSlot(int groupId, bool create)
    {
        lock (_lock)
        {
            if (!_slots.TryGetValue(groupId, out var slot))
            {
                if (!create)
                {
                    return null;
                }
                slot = new GroupSlot(groupId);
                _slots.Add(groupId, slot);
            }
            slot.Users++;
            return slot;
        }
    }

    private void LeaveSlot(GroupSlot slot)
    {
        lock (_lock)
        {
            if (--slot.Users == 0 && slot.Group is null)
            {
                _slots.Remove(slot.Id);
            }
        }
    }

    // Under the group's gate: shows (or hides) the group in Groups.
    private void Publish(GroupSlot slot, IommuGroup? group)
    {
        LockAssert.Held(slot.Gate);
        lock (_lock)
        {
            slot.Group = group;
        }
    }

    /// <summary>A group's place in the table: its gate, and the group while it is open.</summary>
    private sealed class GroupSlot(int id)
    {
        public int Id { get; } = id;

        // Guards the group's open, attach, detach and close, and its OpenDeviceCount and PinCount.
        // Held across those syscalls; taken under a device set's lock, before the attach lock.
        public Lock Gate { get; } = new();

        // The threads between EnterSlot and LeaveSlot. Guarded by the backend's _lock.
        public int Users { get; set; }

        // The open group, or null. Written under both the gate and the backend's _lock; read under either.
        public IommuGroup? Group { get; set; }
    }
}
