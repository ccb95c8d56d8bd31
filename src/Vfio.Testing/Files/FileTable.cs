namespace Vfio.Testing;

/// <summary>
/// The process's descriptor table: numbers start at 3 (0-2 are the standard streams) and the lowest
/// free number is reused first, as Linux does. Accessed under the kernel lock, which every member asserts.
/// </summary>
internal sealed class FileTable(SimulatedKernel kernel)
{
    private readonly Dictionary<int, KernelFile> _files = [];
    private readonly SortedSet<int> _free = [];
    private int _next = 3;

    public int Count
    {
        get
        {
            kernel.AssertLocked();
            return _files.Count;
        }
    }

    public int Install(KernelFile file)
    {
        kernel.AssertLocked();
        int fd;
        if (_free.Count > 0)
        {
            fd = _free.Min;
            _free.Remove(fd);
        }
        else
        {
            fd = _next++;
        }
        _files.Add(fd, file);
        return fd;
    }

    public KernelFile? Get(int fd)
    {
        kernel.AssertLocked();
        return _files.GetValueOrDefault(fd);
    }

    public KernelFile? Remove(int fd)
    {
        kernel.AssertLocked();
        if (!_files.Remove(fd, out var file))
        {
            return null;
        }
        _free.Add(fd);
        return file;
    }

    public IEnumerable<(int Fd, KernelFile File)> All
    {
        get
        {
            kernel.AssertLocked();
            return _files.OrderBy(p => p.Key).Select(p => (p.Key, p.Value));
        }
    }
}
