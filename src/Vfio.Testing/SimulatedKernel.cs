using System.Diagnostics;
using System.Globalization;
using System.Runtime.CompilerServices;
using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio.Testing;

/// <summary>
/// A simulated Linux kernel with VFIO (legacy container, group and device files, as in Linux 6.1),
/// the IOMMU type1 driver, vfio-pci and vfio-platform, eventfds, and a sysfs tree of PCI, platform and
/// mdev devices. Drivers and the library run against it unchanged, without hardware.
/// </summary>
/// <remarks>
/// <para>
/// It decodes the same byte-level uAPI structs as the real kernel (argsz, flags, capability chains)
/// and returns the kernel's errno for each violation. Devices are emulated by
/// <see cref="DeviceModel"/>s: register reads and writes, interrupts delivered through the eventfds the
/// driver registered, and DMA through the container's IOMMU mappings into the memory the driver mapped.
/// </para>
/// <para>
/// Tests can make any call fail (<see cref="FailCall"/>, <see cref="FailNext"/>), read what is open
/// (<see cref="OpenFiles"/>) and assert that nothing leaked (<see cref="AssertNoLeaks"/>).
/// All members are thread-safe.
/// </para>
/// </remarks>
public sealed partial class SimulatedKernel : VfioKernel
{
    internal const int PageSize = 4096;

    // The kernel lock: guards every piece of kernel state (files, sysfs, groups, containers, IOMMUs,
    // devices' interrupt lines, memory accounting). Lock order: a device model's Gate, then this lock,
    // then an eventfd's gate; device model hooks never run under it (they are deferred until the
    // outermost holder leaves, see Enter). Every *Locked member asserts it is held (AssertLocked).
    private readonly object _sync = new();
    private readonly FailureInjection _injection = new();
    private readonly Dictionary<string, int> _devAccessErrors = new(StringComparer.Ordinal);
    private List<Action>? _deferred;
    private int _lockDepth;

    /// <summary>Creates a kernel with sysfs at <c>/simulated/sys</c> and device nodes under <c>/simulated/dev</c>.</summary>
    /// <remarks>
    /// The roots differ from <c>/sys</c> and <c>/dev</c> on purpose: code that builds a path without
    /// the kernel's roots fails here instead of reaching the machine's real files.
    /// </remarks>
    public SimulatedKernel()
        : this("/simulated/sys", "/simulated/dev")
    {
    }

    /// <summary>Creates a kernel with sysfs and device nodes at the given roots.</summary>
    /// <param name="sysfsRoot">The path that stands for <c>/sys</c>.</param>
    /// <param name="devRoot">The path that stands for <c>/dev</c>.</param>
    public SimulatedKernel(string sysfsRoot, string devRoot)
        : base(CheckRoot(sysfsRoot), CheckRoot(devRoot))
    {
        Files = new FileTable(this);
        using (Enter())
        {
            InitializeSysfs();
            InitializeDma();
            InitializeHost();
        }
    }

    internal FileTable Files { get; }

    internal SysfsTree Sysfs { get; } = new();

    private static string CheckRoot(string root)
    {
        ArgumentException.ThrowIfNullOrEmpty(root);
        return root.TrimEnd('/');
    }

    // ---- The kernel lock -------------------------------------------------------------------------

    /// <summary>
    /// Takes the kernel lock. Actions deferred while it is held (device model hooks, which may call
    /// back into the kernel) run after the outermost holder leaves.
    /// </summary>
    internal KernelLock Enter()
    {
        Monitor.Enter(_sync);
        _lockDepth++;
        return new KernelLock(this);
    }

    internal void Leave()
    {
        List<Action>? run = null;
        if (--_lockDepth == 0)
        {
            run = _deferred;
            _deferred = null;
        }
        Monitor.Exit(_sync);
        if (run is not null)
        {
            foreach (var action in run)
            {
                action();
            }
        }
    }

    /// <summary>Asserts (Debug builds) that the calling thread holds the kernel lock: the first statement of every <c>*Locked</c> member.</summary>
    [Conditional("DEBUG")]
    internal void AssertLocked([CallerMemberName] string caller = "") => LockAssert.Held(_sync, "the simulated kernel's lock", caller);

    /// <summary>Runs <paramref name="action"/> once the kernel lock is released; the lock is held.</summary>
    internal void Defer(Action action)
    {
        AssertLocked();
        (_deferred ??= []).Add(action);
    }

    /// <summary>Waits for a <see cref="Wake"/> or the timeout, releasing the kernel lock meanwhile; the lock is held once.</summary>
    internal void WaitLocked(TimeSpan timeout)
    {
        AssertLocked();
        int depth = _lockDepth;
        _lockDepth = 0;
        Monitor.Wait(_sync, timeout);
        _lockDepth = depth;
    }

    /// <summary>Wakes the threads in <see cref="WaitLocked"/>; the lock is held.</summary>
    internal void Wake()
    {
        AssertLocked();
        Monitor.PulseAll(_sync);
    }

    internal readonly struct KernelLock(SimulatedKernel kernel) : IDisposable
    {
        public void Dispose() => kernel.Leave();
    }

    // ---- Failure injection -----------------------------------------------------------------------

    /// <summary>
    /// The number of calls made to this kernel so far, of every kind, failed ones included, except
    /// those of the library's interrupt poller threads (see <see cref="FailCall"/>).
    /// </summary>
    public long CallCount => _injection.Calls;

    /// <summary>
    /// Makes the <paramref name="callsFromNow"/>-th call from now (1 is the next one), of any kind,
    /// fail with <paramref name="errno"/> and do nothing else.
    /// </summary>
    /// <remarks>
    /// Calls are numbered across every thread except the library's interrupt poller threads (one per
    /// <see cref="InterruptSet"/>, and one per registry for the REQ and ERR notifiers of its open PCI
    /// devices): their
    /// poll and read calls happen whenever an interrupt arrives, so counting them would make the
    /// numbering depend on thread timing. They are neither counted here nor failed by
    /// <see cref="FailNext"/>, so failing "every call of a path" one by one stays deterministic;
    /// <see cref="FailNextPollerCall"/> fails them, one set's poller at a time.
    /// </remarks>
    /// <param name="callsFromNow">Which call: 1 for the next call, 2 for the one after, and so on.</param>
    /// <param name="errno">The positive errno the call returns (negated, as the kernel returns it).</param>
    public void FailCall(long callsFromNow, int errno)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(callsFromNow, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(errno, 1);
        _injection.FailCall(callsFromNow, errno);
    }

    /// <summary>
    /// Makes the next call of <paramref name="kind"/> (and, for ioctls, optionally of one request
    /// number) fail with <paramref name="errno"/> and do nothing else.
    /// </summary>
    /// <param name="kind">The kind of call.</param>
    /// <param name="errno">The positive errno the call returns.</param>
    /// <param name="ioctlRequest">For <see cref="SimulatedCall.Ioctl"/>, the request number to fail; null for any.</param>
    public void FailNext(SimulatedCall kind, int errno, nuint? ioctlRequest = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(errno, 1);
        _injection.FailNext(kind, errno, ioctlRequest);
    }

    /// <summary>
    /// Makes the next call of <paramref name="kind"/> (<see cref="SimulatedCall.Poll"/> or
    /// <see cref="SimulatedCall.Read"/>) that the interrupt poller thread of <paramref name="set"/> makes
    /// fail with <paramref name="errno"/>. Poller calls are left out of <see cref="CallCount"/> and of
    /// <see cref="FailCall"/> and <see cref="FailNext"/>, because they happen whenever an interrupt
    /// arrives; naming the set keeps a failure on its poller deterministic. For a notifier (REQ, ERR),
    /// whose eventfd the registry's one notifier thread polls, that thread's read of the notifier's
    /// eventfd, and its poll while the notifier is the first it polls.
    /// </summary>
    /// <param name="set">The interrupt set whose poller fails.</param>
    /// <param name="kind">The kind of call.</param>
    /// <param name="errno">The positive errno the call returns.</param>
    public void FailNextPollerCall(InterruptSet set, SimulatedCall kind, int errno)
    {
        ArgumentNullException.ThrowIfNull(set);
        ArgumentOutOfRangeException.ThrowIfLessThan(errno, 1);
        _injection.FailNextPollerCall(set, kind, errno);
    }

    /// <summary>Disarms every failure armed by <see cref="FailCall"/> and <see cref="FailNext"/>.</summary>
    public void ClearFailures() => _injection.Clear();

    // ---- Permissions -----------------------------------------------------------------------------

    /// <summary>
    /// Makes every access to <paramref name="path"/> (a sysfs node or a <c>/dev/vfio</c> node) fail
    /// with <paramref name="errno"/>, as a file the process lacks permission for.
    /// </summary>
    /// <param name="path">The full path, under <see cref="VfioKernel.SysfsRoot"/> or <see cref="VfioKernel.DevRoot"/>.</param>
    /// <param name="errno">EACCES (13, the default) or EPERM (1), or any other positive errno.</param>
    public void DenyAccess(string path, int errno = Errno.EACCES)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentOutOfRangeException.ThrowIfLessThan(errno, 1);
        SetAccessError(path, errno);
    }

    /// <summary>Undoes <see cref="DenyAccess"/> for <paramref name="path"/>.</summary>
    /// <param name="path">The path given to <see cref="DenyAccess"/>.</param>
    public void AllowAccess(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        SetAccessError(path, 0);
    }

    private void SetAccessError(string path, int errno)
    {
        using (Enter())
        {
            if (SysfsRelative(path) is { } relative)
            {
                if (Sysfs.Resolve(relative, followLast: false, out var node) != 0)
                {
                    throw new ArgumentException("No sysfs node at " + path, nameof(path));
                }
                node.AccessError = errno;
            }
            else if (path.StartsWith(DevRoot + "/", StringComparison.Ordinal))
            {
                _devAccessErrors[path] = errno;
            }
            else
            {
                throw new ArgumentException("The path is under neither the sysfs root nor the device root: " + path, nameof(path));
            }
        }
    }

    private string? SysfsRelative(string path)
    {
        if (path == SysfsRoot)
        {
            return string.Empty;
        }
        return path.StartsWith(SysfsRoot + "/", StringComparison.Ordinal) ? path[(SysfsRoot.Length + 1)..] : null;
    }

    // ---- The seam: descriptors -------------------------------------------------------------------

    internal override int Open(string path, int flags, out SafeFd fd)
    {
        fd = null!;
        int injected = _injection.Enter(SimulatedCall.Open);
        if (injected < 0)
        {
            return injected;
        }
        using (Enter())
        {
            int r = OpenLocked(path, flags, out var file);
            if (r < 0)
            {
                return r;
            }
            fd = new SafeFd(this, Files.Install(file!));
            return 0;
        }
    }

    private int OpenLocked(string path, int flags, out KernelFile? file)
    {
        AssertLocked();
        file = null;
        if (SysfsRelative(path) is { } relative)
        {
            int r = ResolveSysfsLocked(relative, followLast: true, out var node);
            if (r < 0)
            {
                return r;
            }
            int access = flags & 3;
            if (node is SysfsDirectory)
            {
                if (access != Flags.O_RDONLY)
                {
                    return -Errno.EISDIR;
                }
            }
            else if (node is SysfsAttribute attribute)
            {
                if ((access != Flags.O_WRONLY && !attribute.Readable) || (access != Flags.O_RDONLY && attribute.Store is null))
                {
                    return -Errno.EACCES;
                }
            }
            file = new SysfsFile(this, path, node, flags);
            return 0;
        }
        if (path.StartsWith(DevRoot + "/", StringComparison.Ordinal) && _devAccessErrors.TryGetValue(path, out int denied) && denied != 0)
        {
            return -denied;
        }
        if (path == PagemapPath)
        {
            file = new PagemapFile(this, path, ShowsPageFrames);
            return 0;
        }
        if (OpenIommufdNodeLocked(path, out file) is int opened)
        {
            return opened;
        }
        if (path.StartsWith(DevRoot + "/vfio/", StringComparison.Ordinal))
        {
            string name = path[(DevRoot.Length + "/vfio/".Length)..];
            if (name == "vfio")
            {
                file = new ContainerFile(this, path, _iommufdServesContainer);
                return 0;
            }
            return OpenGroupLocked(name, path, out file);
        }
        return -Errno.ENOENT;
    }

    internal override int Close(int fd)
    {
        // close(2) releases the descriptor even when it reports an error, so an injected failure
        // still closes it; retrying a failed close is a bug the kernel does not forgive either.
        int injected = _injection.Enter(SimulatedCall.Close);
        using (Enter())
        {
            var file = Files.Remove(fd);
            if (file is null)
            {
                return injected < 0 ? injected : -Errno.EBADF;
            }
            file.Put();
            Wake();
        }
        return injected;
    }

    /// <summary>Finds the file behind <paramref name="fd"/> and takes a reference on it (the kernel's fdget).</summary>
    private int Acquire(SafeFd? fd, out KernelFile file)
    {
        file = null!;
        if (fd is null || fd.IsInvalid || fd.IsClosed || !ReferenceEquals(fd.Kernel, this))
        {
            return -Errno.EBADF;
        }
        using (Enter())
        {
            var found = Files.Get(fd.Value);
            if (found is null)
            {
                return -Errno.EBADF;
            }
            found.Get();
            file = found;
            return 0;
        }
    }

    private void Release(KernelFile file)
    {
        using (Enter())
        {
            file.Put();
        }
    }

    /// <summary>
    /// The start of every call on an open file: failure injection first (an injected failure does
    /// nothing else), then the file's reference (fdget), which disposing <paramref name="use"/> puts.
    /// </summary>
    private int Begin(SimulatedCall kind, SafeFd fd, out FileUse use, nuint request = 0)
    {
        use = default;
        int injected = _injection.Enter(kind, request);
        if (injected < 0)
        {
            return injected;
        }
        int r = Acquire(fd, out var file);
        if (r < 0)
        {
            return r;
        }
        use = new FileUse(this, file);
        return 0;
    }

    /// <summary>A file referenced for the length of one call.</summary>
    private readonly struct FileUse(SimulatedKernel kernel, KernelFile file) : IDisposable
    {
        public KernelFile File => file;

        public void Dispose() => kernel.Release(file);
    }

    /// <summary>The file behind a raw descriptor number, for ioctls that take one (set-container, SET_IRQS); the lock is held.</summary>
    internal KernelFile? FileLocked(int fd)
    {
        AssertLocked();
        return fd < 0 ? null : Files.Get(fd);
    }

    internal override unsafe int Ioctl(SafeFd fd, nuint request, void* arg) => IoctlCore(fd, request, (nint)arg);

    internal override int Ioctl(SafeFd fd, nuint request, nint value) => IoctlCore(fd, request, value);

    private int IoctlCore(SafeFd fd, nuint request, nint argument)
    {
        int r = Begin(SimulatedCall.Ioctl, fd, out var use, request);
        if (r < 0)
        {
            return r;
        }
        using (use)
        {
            return use.File.Ioctl(request, argument);
        }
    }

    internal override long PRead(SafeFd fd, Span<byte> buffer, long offset)
    {
        int r = Begin(SimulatedCall.PRead, fd, out var use);
        if (r < 0)
        {
            return r;
        }
        using (use)
        {
            return offset < 0 ? -Errno.EINVAL : use.File.PRead(buffer, offset);
        }
    }

    internal override long PWrite(SafeFd fd, ReadOnlySpan<byte> buffer, long offset)
    {
        int r = Begin(SimulatedCall.PWrite, fd, out var use);
        if (r < 0)
        {
            return r;
        }
        using (use)
        {
            return offset < 0 ? -Errno.EINVAL : use.File.PWrite(buffer, offset);
        }
    }

    internal override long Read(SafeFd fd, Span<byte> buffer)
    {
        int r = Begin(SimulatedCall.Read, fd, out var use);
        if (r < 0)
        {
            return r;
        }
        using (use)
        {
            return use.File.Read(buffer);
        }
    }

    internal override long Write(SafeFd fd, ReadOnlySpan<byte> buffer)
    {
        int r = Begin(SimulatedCall.Write, fd, out var use);
        if (r < 0)
        {
            return r;
        }
        using (use)
        {
            return use.File.Write(buffer);
        }
    }

    // ---- The seam: eventfd and poll --------------------------------------------------------------

    internal override int EventFd(uint initialValue, int flags, out SafeFd fd)
    {
        fd = null!;
        int injected = _injection.Enter(SimulatedCall.EventFd);
        if (injected < 0)
        {
            return injected;
        }
        const int EfdSemaphore = 1;
        if ((flags & ~(Flags.EFD_NONBLOCK | Flags.EFD_CLOEXEC | EfdSemaphore)) != 0)
        {
            return -Errno.EINVAL;
        }
        using (Enter())
        {
            fd = new SafeFd(this, Files.Install(new EventFdFile(this, initialValue, flags)));
            return 0;
        }
    }

    internal override int Poll(Span<PollFd> fds, int timeoutMilliseconds)
    {
        int injected = _injection.Enter(SimulatedCall.Poll);
        if (injected < 0)
        {
            return injected;
        }
        var files = new KernelFile?[fds.Length];
        using (Enter())
        {
            for (int i = 0; i < fds.Length; i++)
            {
                files[i] = fds[i].fd < 0 ? null : Files.Get(fds[i].fd);
                files[i]?.Get();
            }
        }
        using var waiter = new PollWaiter();
        foreach (var file in files)
        {
            file?.AddPollWaiter(waiter);
        }
        try
        {
            long deadline = timeoutMilliseconds < 0 ? long.MaxValue : Environment.TickCount64 + timeoutMilliseconds;
            while (true)
            {
                int ready = 0;
                for (int i = 0; i < fds.Length; i++)
                {
                    short revents = fds[i].fd < 0 ? (short)0
                        : files[i] is { } file ? file.PollEvents(fds[i].events)
                        : Flags.POLLNVAL;
                    fds[i].revents = revents;
                    if (revents != 0)
                    {
                        ready++;
                    }
                }
                if (ready > 0)
                {
                    return ready;
                }
                long remaining = deadline == long.MaxValue ? -1 : deadline - Environment.TickCount64;
                if (timeoutMilliseconds == 0 || (deadline != long.MaxValue && remaining <= 0))
                {
                    return 0;
                }
                waiter.Wait(remaining < 0 ? Timeout.Infinite : (int)Math.Min(remaining, int.MaxValue));
            }
        }
        finally
        {
            foreach (var file in files)
            {
                file?.RemovePollWaiter(waiter);
            }
            using (Enter())
            {
                foreach (var file in files)
                {
                    file?.Put();
                }
            }
        }
    }

    // ---- The seam: paths -------------------------------------------------------------------------

    internal override int ReadLink(string path, out string target)
    {
        target = string.Empty;
        int injected = _injection.Enter(SimulatedCall.ReadLink);
        if (injected < 0)
        {
            return injected;
        }
        using (Enter())
        {
            if (SysfsRelative(path) is { } relative)
            {
                int r = ResolveSysfsLocked(relative, followLast: false, out var node);
                if (r < 0)
                {
                    return r;
                }
                if (node is not SysfsLink link)
                {
                    return -Errno.EINVAL;
                }
                target = link.RelativeTarget;
                return 0;
            }
            return DevNodeExistsLocked(path) ? -Errno.EINVAL : -Errno.ENOENT;
        }
    }

    internal override int ListDirectory(string path, out string[] names)
    {
        names = [];
        int injected = _injection.Enter(SimulatedCall.ListDirectory);
        if (injected < 0)
        {
            return injected;
        }
        using (Enter())
        {
            if (SysfsRelative(path) is { } relative)
            {
                int r = ResolveSysfsLocked(relative, followLast: true, out var node);
                if (r < 0)
                {
                    return r;
                }
                if (node is not SysfsDirectory dir)
                {
                    return -Errno.ENOTDIR;
                }
                names = [.. dir.Names];
                return 0;
            }
            string trimmed = path.TrimEnd('/');
            if (_devAccessErrors.TryGetValue(trimmed, out int denied) && denied != 0)
            {
                return -denied;
            }
            if (trimmed == DevRoot)
            {
                names = HasIommufd ? ["iommu", "vfio"] : ["vfio"];
                return 0;
            }
            if (ListCdevFolderLocked(trimmed) is { } cdevs)
            {
                names = cdevs;
                return 0;
            }
            if (trimmed == DevRoot + "/vfio")
            {
                names = [.. DevVfioNamesLocked().Order(StringComparer.Ordinal)];
                return 0;
            }
            return DevNodeExistsLocked(trimmed) ? -Errno.ENOTDIR : -Errno.ENOENT;
        }
    }

    /// <summary>Resolves a sysfs path, failing with the node's injected access error (DenyAccess) as the kernel fails a permission check.</summary>
    private int ResolveSysfsLocked(string relative, bool followLast, out SysfsNode node)
    {
        AssertLocked();
        int r = Sysfs.Resolve(relative, followLast, out node);
        return r < 0 ? r : -node.AccessError;
    }

    private bool DevNodeExistsLocked(string path)
    {
        AssertLocked();
        return (path == DevRoot + "/iommu" && HasIommufd)
            || CdevNamesLocked().Any(name => path == DevRoot + "/vfio/devices/" + name)
            || (path.StartsWith(DevRoot + "/vfio/", StringComparison.Ordinal)
                && DevVfioNamesLocked().Contains(path[(DevRoot.Length + "/vfio/".Length)..]));
    }

    private IEnumerable<string> DevVfioNamesLocked()
    {
        AssertLocked();
        return GroupsLocked.Where(g => g.HasNode).Select(g => g.NodeName).Prepend("vfio")
            .Concat(CdevNamesLocked().Any() ? ["devices"] : []);
    }

    internal static string Decimal(long value) => value.ToString(CultureInfo.InvariantCulture);
}
