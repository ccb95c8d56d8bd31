using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio.Testing;

/// <summary>What an open file descriptor of the simulated kernel refers to.</summary>
public enum SimulatedFileKind
{
    /// <summary>A container, opened from <c>/dev/vfio/vfio</c>.</summary>
    Container,

    /// <summary>A group, opened from <c>/dev/vfio/N</c> or <c>/dev/vfio/noiommu-N</c>.</summary>
    Group,

    /// <summary>A device, returned by <c>VFIO_GROUP_GET_DEVICE_FD</c> or opened from <c>/dev/vfio/devices/vfioN</c>.</summary>
    Device,

    /// <summary>An eventfd.</summary>
    EventFd,

    /// <summary>A sysfs attribute or folder.</summary>
    Sysfs,

    /// <summary>A migration data session, returned by a MIG_DEVICE_STATE SET into STOP_COPY, PRE_COPY or RESUMING.</summary>
    MigrationData,

    /// <summary>An anonymous memory file, from <c>memfd_create</c>.</summary>
    MemFd,

    /// <summary>An iommufd context, opened from <c>/dev/iommu</c>.</summary>
    Iommufd,

    /// <summary>A file of the process's <c>/proc/self</c> (its page map).</summary>
    Proc,
}

/// <summary>
/// An open file of the simulated kernel (the kernel's <c>struct file</c>). Descriptors and mappings
/// hold references; the file is released when the last one goes, as the kernel's <c>fput</c> does.
/// Operations are called without the kernel lock held and take it themselves where they need it.
/// </summary>
internal abstract class KernelFile(SimulatedKernel kernel, string path)
{
    private int _references = 1;

    public SimulatedKernel Kernel { get; } = kernel;

    public string Path { get; } = path;

    public abstract SimulatedFileKind Kind { get; }

    /// <summary>Takes a reference; the kernel lock is held.</summary>
    public void Get()
    {
        Kernel.AssertLocked();
        _references++;
    }

    /// <summary>Drops a reference and releases the file after the last; the kernel lock is held.</summary>
    public void Put()
    {
        Kernel.AssertLocked();
        if (--_references == 0)
        {
            Release();
        }
    }

    /// <summary>The kernel's <c>release</c> file operation; the kernel lock is held.</summary>
    protected virtual void Release()
    {
    }

    public virtual int Ioctl(nuint request, nint argument) => -Errno.ENOTTY;

    public virtual long PRead(Span<byte> buffer, long offset) => -Errno.EINVAL;

    public virtual long PWrite(ReadOnlySpan<byte> buffer, long offset) => -Errno.EINVAL;

    public virtual long Read(Span<byte> buffer) => -Errno.EINVAL;

    public virtual long Write(ReadOnlySpan<byte> buffer) => -Errno.EINVAL;

    /// <summary>Checks an mmap of the file and says what it maps; -ENODEV for a file that cannot be mapped.</summary>
    public virtual int Map(nuint length, int prot, int flags, long offset, out MappingSource source)
    {
        source = null!;
        return -Errno.ENODEV;
    }

    /// <summary>The ready events among <paramref name="events"/>; files that never block are always ready.</summary>
    public virtual short PollEvents(short events) => (short)(events & (Flags.POLLIN | Flags.POLLOUT));

    /// <summary>Registers a waiter woken when this file may have become ready; null when it never changes.</summary>
    public virtual void AddPollWaiter(PollWaiter waiter)
    {
    }

    public virtual void RemovePollWaiter(PollWaiter waiter)
    {
    }
}

/// <summary>One thread blocked in <c>poll</c>, woken by any of the files it waits on.</summary>
internal sealed class PollWaiter : IDisposable
{
    private readonly SemaphoreSlim _signal = new(0);

    public void Wake()
    {
        if (_signal.CurrentCount == 0)
        {
            _signal.Release();
        }
    }

    public bool Wait(int milliseconds) => _signal.Wait(milliseconds);

    public void Dispose() => _signal.Dispose();
}
