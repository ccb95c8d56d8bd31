using System.Reflection;
using Vfio.Interop;

namespace Vfio.VmTests;

/// <summary>
/// A kernel that passes every call on to another and, while <see cref="Recording"/> is set, writes
/// down the calls that reach the kernel (open, close, ioctl by its uAPI name, mmap, munmap, eventfd,
/// pread/pwrite and read/write): the DMA benchmark prints what the library asks of the kernel for
/// one open and one map, the sequence its C side repeats. File-system lookups (sysfs reads, stat,
/// readlink) are passed on without being written down. The descriptors and anonymous mappings it
/// hands out are its own, so that their closes and munmaps come back through it.
/// </summary>
internal sealed unsafe class TracingKernel(VfioKernel inner) : VfioKernel(inner.SysfsRoot, inner.DevRoot)
{
    // VFIO numbers its ioctls per kind of file (VFIO_IOMMU_MAP_DMA on a container is
    // VFIO_DEVICE_PCI_HOT_RESET on a device): a name is chosen by the kind of file the call goes to.
    private static readonly Dictionary<nuint, string[]> IoctlNames = ReadIoctlNames();
    private readonly List<string> _calls = [];
    private readonly Dictionary<int, string> _kinds = [];

    /// <summary>Whether calls are being written down.</summary>
    public bool Recording { get; set; }

    /// <summary>Takes the calls written down since the last take.</summary>
    public IReadOnlyList<string> Take()
    {
        lock (_calls)
        {
            var taken = _calls.ToArray();
            _calls.Clear();
            return taken;
        }
    }

    internal override int Open(string path, int flags, out SafeFd fd)
    {
        int rc = Own(inner.Open(path, flags, out fd), ref fd);
        if (rc == 0)
        {
            lock (_kinds)
            {
                _kinds[fd.Value] = path == Dev("vfio/vfio") ? "container" : path == Dev("iommu") ? "iommufd" : path.StartsWith(Dev("vfio/devices/"), StringComparison.Ordinal) ? "device" : "group";
            }
        }
        return Note($"open {path}", rc);
    }

    internal override int Close(int fd)
    {
        lock (_kinds)
        {
            _kinds.Remove(fd);
        }
        return Note("close", inner.Close(fd));
    }

    internal override int Ioctl(SafeFd fd, nuint request, void* arg) => Note(IoctlName(fd, request), inner.Ioctl(fd, request, arg));

    internal override int Ioctl(SafeFd fd, nuint request, nint value) => Note(IoctlName(fd, request), inner.Ioctl(fd, request, value));

    internal override long PRead(SafeFd fd, Span<byte> buffer, long offset) => Note("pread", inner.PRead(fd, buffer, offset));

    internal override long PWrite(SafeFd fd, ReadOnlySpan<byte> buffer, long offset) => Note("pwrite", inner.PWrite(fd, buffer, offset));

    internal override long Read(SafeFd fd, Span<byte> buffer) => Note("read", inner.Read(fd, buffer));

    internal override long Write(SafeFd fd, ReadOnlySpan<byte> buffer) => Note("write", inner.Write(fd, buffer));

    internal override int Mmap(SafeFd? fd, nuint length, int prot, int flags, long offset, out SafeMapping mapping)
    {
        int rc = inner.Mmap(fd, length, prot, flags, offset, out mapping);
        if (rc == 0 && mapping.GetType() == typeof(SafeMapping))
        {
            var own = new SafeMapping(this, mapping.Address, mapping.Length);
            mapping.SetHandleAsInvalid();
            mapping = own;
        }
        return Note(fd is null ? $"mmap anonymous {length}" : $"mmap {length}", rc);
    }

    internal override int MmapFixed(nint address, nuint length, int prot, int flags, SafeFd fd, long offset) =>
        Note($"mmap fixed {length}", inner.MmapFixed(address, length, prot, flags, fd, offset));

    internal override int Munmap(nint address, nuint length) => Note($"munmap {length}", inner.Munmap(address, length));

    internal override int MemFd(string name, out SafeFd fd) => Note("memfd_create", Own(inner.MemFd(name, out fd), ref fd));

    internal override int EventFd(uint initialValue, int flags, out SafeFd fd) => Note("eventfd", Own(inner.EventFd(initialValue, flags, out fd), ref fd));

    // The interrupt poller's waits run on their own thread whenever it pleases; not part of a sequence.
    internal override int Poll(Span<PollFd> fds, int timeoutMilliseconds) => inner.Poll(fds, timeoutMilliseconds);

    internal override int ReadLink(string path, out string target) => inner.ReadLink(path, out target);

    internal override int ListDirectory(string path, out string[] names) => inner.ListDirectory(path, out names);

    internal override int Stat(string path, out FileStatus status) => inner.Stat(path, out status);

    internal override int Access(string path, int mode) => inner.Access(path, mode);

    internal override int Chown(string path, int userId, int groupId) => inner.Chown(path, userId, groupId);

    internal override int GetResourceLimit(int resource, out ulong soft, out ulong hard) => inner.GetResourceLimit(resource, out soft, out hard);

    internal override int GetCapabilities(out ulong effective) => inner.GetCapabilities(out effective);

    internal override int GetKernelRelease(out string release) => inner.GetKernelRelease(out release);

    private T Note<T>(string call, T result)
    {
        if (Recording)
        {
            lock (_calls)
            {
                _calls.Add(call);
            }
        }
        return result;
    }

    /// <summary>Takes a descriptor the inner kernel made: the caller gets one that closes through this kernel.</summary>
    private int Own(int rc, ref SafeFd fd)
    {
        if (rc == 0)
        {
            var own = new SafeFd(this, fd.Value);
            fd.SetHandleAsInvalid();
            fd = own;
        }
        return rc;
    }

    private string IoctlName(SafeFd fd, nuint request)
    {
        if (!IoctlNames.TryGetValue(request, out string[]? names))
        {
            return $"ioctl 0x{request:x}";
        }
        string kind;
        lock (_kinds)
        {
            kind = _kinds.GetValueOrDefault(fd.Value, "device"); // device files also come from VFIO_GROUP_GET_DEVICE_FD
        }
        string[] prefixes = kind switch
        {
            "container" => ["VFIO_IOMMU_", "VFIO_GET_API_VERSION", "VFIO_CHECK_EXTENSION", "VFIO_SET_IOMMU"],
            "group" => ["VFIO_GROUP_"],
            "iommufd" => ["IOMMU_"],
            _ => ["VFIO_DEVICE_"],
        };
        return names.FirstOrDefault(name => prefixes.Any(prefix => name.StartsWith(prefix, StringComparison.Ordinal))) ?? string.Join("|", names);
    }

    private static Dictionary<nuint, string[]> ReadIoctlNames()
    {
        var names = new Dictionary<nuint, List<string>>();
        const BindingFlags Constants = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static;
        foreach (var field in typeof(VfioUapi).GetFields(Constants).Concat(typeof(IommufdUapi).GetFields(Constants)))
        {
            if (field.FieldType == typeof(nuint) && field.GetValue(null) is nuint value)
            {
                (names.TryGetValue(value, out var list) ? list : names[value] = []).Add(field.Name);
            }
        }
        return names.ToDictionary(pair => pair.Key, pair => pair.Value.ToArray());
    }
}
