using System.Globalization;
using System.Text;
using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio;

/// <summary>The three kinds of VFIO group.</summary>
public enum IommuGroupKind
{
    /// <summary>A real IOMMU group (<c>/dev/vfio/N</c>): DMA is translated and isolated by the IOMMU.</summary>
    Iommu,

    /// <summary>An emulated group of a mediated device (<c>/dev/vfio/N</c>): its parent driver mediates DMA.</summary>
    Emulated,

    /// <summary>
    /// A no-IOMMU group (<c>/dev/vfio/noiommu-N</c>): no translation and no isolation; the device sees
    /// physical addresses. Needs CAP_SYS_RAWIO and taints the kernel.
    /// </summary>
    NoIommu,
}

/// <summary>
/// An open VFIO group: the process's one open of <c>/dev/vfio/N</c> (the kernel allows a single
/// open), shared by the group's devices and counted by them. The last device to close unsets the
/// container and closes the group.
/// </summary>
// Opening, attaching and closing are the legacy backend's (ContainerBackend), under the group's gate;
// OpenDeviceCount and PinCount are guarded by that gate.
public sealed class IommuGroup
{
    private readonly VfioRegistry _registry;

    internal IommuGroup(VfioRegistry registry, int id, IommuGroupKind kind, SafeFd fd)
    {
        _registry = registry;
        Id = id;
        Kind = kind;
        Fd = fd;
    }

    /// <summary>The group number.</summary>
    public int Id { get; }

    /// <summary>The kind of group.</summary>
    public IommuGroupKind Kind { get; }

    /// <summary>The container the group is attached to.</summary>
    public VfioContainer? Container { get; internal set; }

    /// <summary>The path of the group's device node.</summary>
    public string NodePath => NodePathFor(_registry.Kernel, Id, Kind);

    /// <summary>The registered devices of this group.</summary>
    public IReadOnlyList<VfioDevice> Devices => _registry.DevicesInGroup(Id);

    /// <summary>How many open devices hold the group.</summary>
    public int OpenDeviceCount { get; internal set; }

    /// <summary>How many operations that pass the group's file to the kernel (hot resets) hold it open besides its devices.</summary>
    internal int PinCount { get; set; }

    internal SafeFd Fd { get; }

    internal ErrorTarget ErrorTarget => ErrorTarget.Group(Id);

    internal static string NodePathFor(VfioKernel kernel, int id, IommuGroupKind kind) =>
        kernel.Dev(kind == IommuGroupKind.NoIommu
            ? "vfio/noiommu-" + id.ToString(CultureInfo.InvariantCulture)
            : "vfio/" + id.ToString(CultureInfo.InvariantCulture));

    /// <summary>Opens the group's node and checks that it is viable; the caller owns the result.</summary>
    internal static unsafe IommuGroup Open(VfioRegistry registry, int id, IommuGroupKind kind)
    {
        var kernel = registry.Kernel;
        string path = NodePathFor(kernel, id, kind);
        var target = ErrorTarget.Group(id);
        int rc = kernel.Open(path, Flags.O_RDWR, out var fd);
        if (rc < 0)
        {
            string? hint = -rc switch
            {
                Errno.EBUSY => $"Group {id} is already open: the kernel allows one open of a group file, and another process or another VfioRegistry in this process holds it, "
                    + "or has a device of the group bound to an iommufd through its cdev (/dev/vfio/devices/vfioN), which excludes the group file",
                Errno.ENOENT => $"No {path}: no device of group {id} is bound to a vfio driver, or the vfio modules are not loaded",
                _ => null,
            };
            VfioErrors.Throw(-rc, "open " + path, target, hint);
        }
        try
        {
            var status = new vfio_group_status { argsz = (uint)sizeof(vfio_group_status) };
            VfioErrors.Check(kernel.Ioctl(fd, VfioUapi.VFIO_GROUP_GET_STATUS, &status), "VFIO_GROUP_GET_STATUS", target);
            if ((status.flags & VfioUapi.VFIO_GROUP_FLAGS_VIABLE) == 0)
            {
                throw NotViable(registry, id);
            }
            return new IommuGroup(registry, id, kind, fd);
        }
        catch
        {
            fd.Dispose();
            throw;
        }
    }

    /// <summary>Obtains a file for one of the group's devices; the container and IOMMU must be set.</summary>
    internal unsafe SafeFd GetDeviceFd(string deviceName)
    {
        var kernel = _registry.Kernel;
        int length = Encoding.UTF8.GetByteCount(deviceName);
        Span<byte> name = stackalloc byte[length + 1];
        Encoding.UTF8.GetBytes(deviceName, name);
        name[length] = 0;
        int rc;
        fixed (byte* p = name)
        {
            rc = kernel.Ioctl(Fd, VfioUapi.VFIO_GROUP_GET_DEVICE_FD, p);
        }
        var target = new ErrorTarget(GroupId: Id, Device: deviceName);
        string? hint = -rc == Errno.EINVAL && Container is null
            ? $"Group {Id} has no container with an IOMMU set yet"
            : null;
        if (rc < 0)
        {
            VfioErrors.Throw(-rc, "VFIO_GROUP_GET_DEVICE_FD", target, hint);
        }
        return new SafeFd(kernel, rc);
    }

    /// <summary>
    /// Takes a counted reference on a registered member device, for group-level operations that need
    /// one; the caller disposes the reference on every path. False when no member can be taken.
    /// </summary>
    internal bool TryGetMember(out VfioDevice? device, out DeviceReference reference)
    {
        foreach (var candidate in Devices)
        {
            if (candidate.TryGet(out reference))
            {
                device = candidate;
                return true;
            }
        }
        device = null;
        reference = default;
        return false;
    }

    /// <summary>The group's devices bound to a kernel driver that uses the DMA API (not vfio, pci-stub or pcieport), each with its driver.</summary>
    internal static List<string> BlockingDevices(VfioRegistry registry, int id) =>
        [.. IommuGroupInfo.Read(registry.Sysfs, id).BlockingMembers.Select(m => $"{m.Name} is bound to {m.Driver}")];

    internal static VfioGroupNotViableException NotViable(VfioRegistry registry, int id) => NotViable(id, BlockingDevices(registry, id));

    internal static VfioGroupNotViableException NotViable(int id, List<string> blocking)
    {
        string why = blocking.Count == 0
            ? "a device of the group is in use by a kernel driver"
            : string.Join(", ", blocking);
        return new VfioGroupNotViableException(
            $"Group {id} is not viable: {why}. Bind every device of the group to vfio-pci (or unbind it) before opening the group.",
            id, blocking);
    }

    /// <inheritdoc/>
    public override string ToString() => $"group {Id} ({Kind})";
}
