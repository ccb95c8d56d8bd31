using System.Buffers;
using System.Globalization;
using System.IO.Pipelines;
using System.Runtime.InteropServices;
using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio;

/// <summary>
/// A device's migration v2 interface: its capabilities, its state machine, and the data session the
/// kernel opens for saving (STOP_COPY, PRE_COPY) and resuming (RESUMING). Obtained from
/// <see cref="VfioDevice.GetMigration"/> while the device is open; closing the device ends it.
/// </summary>
/// <remarks>
/// <para><see cref="SetState"/> accepts any state the device supports and walks the shortest path over
/// the arcs the device implements, one arc per <c>VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE</c> SET, as the
/// kernel's own <c>vfio_mig_get_next_state</c> would. A failed arc is reported with the state the
/// device was left in (<see cref="VfioMigrationException.CurrentState"/>).</para>
/// <para>The data session's file descriptor is owned here: it stays open while the device is in the
/// session's states (the saving group, or RESUMING) and is closed when the device leaves them, when
/// this object is disposed, or when the device is closed. A cancelled transfer leaves it open for a
/// retry and leaks nothing.</para>
/// </remarks>
public sealed class VfioMigration : IDisposable, IDeviceResource
{
    private const int ChunkSize = 64 * 1024;

    private readonly VfioDevice _device;
    // Guards _session, _sessionState and _disposed. A leaf: the session file is closed and the kernel
    // called only after it is released (see the lock order in VfioRegistry).
    private readonly Lock _lock = new();
    private SafeFd? _session;
    private VfioMigrationState _sessionState;
    private bool _disposed;

    internal VfioMigration(VfioDevice device, VfioMigrationCapabilities capabilities)
    {
        _device = device;
        Capabilities = capabilities;
    }

    /// <summary>What the device supports: always <see cref="VfioMigrationCapabilities.StopCopy"/>, optionally P2P and PRE_COPY.</summary>
    public VfioMigrationCapabilities Capabilities { get; }

    /// <summary>Whether a data session is open (after entering STOP_COPY, PRE_COPY or RESUMING).</summary>
    public bool HasDataSession
    {
        get
        {
            lock (_lock)
            {
                return _session is not null;
            }
        }
    }

    /// <summary>Reads the device's migration state (<c>VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE</c> GET).</summary>
    public VfioMigrationState GetState()
    {
        ThrowIfDisposed();
        var mig = _device.GetFeature(VfioFeature.MigrationDeviceState, new vfio_device_feature_mig_state { data_fd = -1 });
        return (VfioMigrationState)mig.device_state;
    }

    /// <summary>
    /// The arcs the state machine would take from the current state to <paramref name="target"/>
    /// (the states after the current one; empty when already there).
    /// </summary>
    /// <param name="target">The state wanted.</param>
    /// <exception cref="VfioNotSupportedException">The device does not support <paramref name="target"/>, or the uAPI forbids the transition.</exception>
    public IReadOnlyList<VfioMigrationState> PlanPath(VfioMigrationState target) => Plan(GetState(), target);

    /// <summary>
    /// Moves the device to <paramref name="target"/>, arc by arc along the shortest path the device
    /// supports. Entering STOP_COPY, PRE_COPY or RESUMING opens the data session that
    /// <see cref="SaveAsync"/> and <see cref="ResumeAsync"/> use; leaving them closes it.
    /// </summary>
    /// <param name="target">Any state but ERROR.</param>
    /// <exception cref="VfioNotSupportedException">The device lacks <paramref name="target"/> (e.g. RUNNING_P2P without VFIO_MIGRATION_P2P) or the transition is forbidden.</exception>
    /// <exception cref="VfioMigrationException">An arc failed; the exception says where the device is now and whether it needs a reset.</exception>
    public void SetState(VfioMigrationState target)
    {
        ThrowIfDisposed();
        var start = GetState();
        var path = Plan(start, target);
        var current = start;
        foreach (var next in path)
        {
            var mig = new vfio_device_feature_mig_state { device_state = (uint)next, data_fd = -1 };
            try
            {
                mig = _device.SetFeature(VfioFeature.MigrationDeviceState, mig);
            }
            catch (VfioException e)
            {
                throw ArcFailed(e, current, next, start, target);
            }
            Log.MigrationArc(_device.Registry.Logger, _device.Name, MigrationPlanner.Name(current), MigrationPlanner.Name(next));
            var fd = mig.data_fd >= 0 ? new SafeFd(_device.Kernel, mig.data_fd) : null;
            UpdateSession(next, fd);
            current = next;
        }
    }

    /// <summary>
    /// Streams the device's saved state from the data session into <paramref name="destination"/>
    /// through System.IO.Pipelines. In STOP_COPY it reads to the end of the stream (the whole state);
    /// in PRE_COPY states it reads what the device has now and returns (the kernel's ENOMSG), so it
    /// can be called again before moving to STOP_COPY.
    /// </summary>
    /// <param name="destination">Where the bytes go, in order; the caller keeps it opaque.</param>
    /// <param name="progress">Receives the bytes moved and the device's size estimate where it gives one.</param>
    /// <param name="cancellationToken">Stops the transfer; the session stays open for the caller to retry or leave the state.</param>
    /// <returns>The number of bytes written to <paramref name="destination"/>.</returns>
    /// <exception cref="InvalidOperationException">No saving session: move the device to STOP_COPY (or PRE_COPY) first.</exception>
    public async Task<long> SaveAsync(Stream destination, IProgress<MigrationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(destination);
        var (fd, state) = Session("save", saving: true);
        bool stopCopy = state == VfioMigrationState.StopCopy;
        long? estimate = stopCopy && progress is not null ? StopCopyEstimate() : null;
        var pipe = new Pipe(new PipeOptions(pauseWriterThreshold: 16 * ChunkSize, resumeWriterThreshold: 8 * ChunkSize, useSynchronizationContext: false));
        using var cancel = CancelSignal.Create(_device, cancellationToken);

        // The kernel side reads on a thread of its own: a STOP_COPY read may block until the device
        // has data. The destination side is asynchronous. The pipe carries the bytes between them.
        var producer = Task.Factory.StartNew(() => ReadSession(fd, stopCopy, pipe.Writer, cancel, cancellationToken),
            CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        long total;
        try
        {
            total = await CopyAsync(
                pipe.Reader,
                async segment =>
                {
                    await destination.WriteAsync(segment, cancellationToken).ConfigureAwait(false);
                    return segment.Length;
                },
                progress,
                transferred => stopCopy ? estimate : PreCopyEstimate(fd, transferred),
                CancellationToken.None).ConfigureAwait(false);
        }
        finally
        {
            // The producer ends once the reader completed (its flush reports it) or the token fired.
            cancel.Signal();
            await producer.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }
        await producer.ConfigureAwait(false);
        Log.MigrationSaved(_device.Registry.Logger, _device.Name, total, MigrationPlanner.Name(state));
        return total;
    }

    private void ReadSession(SafeFd fd, bool stopCopy, PipeWriter writer, CancelSignal cancel, CancellationToken cancellationToken)
    {
        bool added = false;
        try
        {
            fd.DangerousAddRef(ref added); // a state change meanwhile closes the session only after this transfer
            while (true)
            {
                cancellationToken.ThrowIfCancellationRequested();
                // In STOP_COPY a read may wait for the device: poll first, with the cancellation eventfd
                // beside the data fd. In PRE_COPY reads never wait (ENOMSG when nothing is there now).
                if (stopCopy && !cancel.WaitReadable(fd))
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    break; // the reader went away
                }
                var memory = writer.GetMemory(ChunkSize);
                long n = _device.Kernel.Read(fd, memory.Span);
                if (n == -Errno.ENOMSG && !stopCopy)
                {
                    break;
                }
                if (n == -Errno.EAGAIN || n == -Errno.EINTR)
                {
                    continue;
                }
                VfioErrors.Check(n, "read of the migration data session", _device.ErrorTarget);
                if (n == 0)
                {
                    break;
                }
                writer.Advance((int)n);
                if (writer.FlushAsync(CancellationToken.None).AsTask().GetAwaiter().GetResult().IsCompleted)
                {
                    break;
                }
            }
            writer.Complete();
        }
        catch (Exception e)
        {
            writer.Complete(e);
            throw;
        }
        finally
        {
            if (added)
            {
                fd.DangerousRelease();
            }
        }
    }

    /// <summary>
    /// Streams a saved state from <paramref name="source"/> into the RESUMING data session through
    /// System.IO.Pipelines, until the source ends. The device checks and loads it when it leaves
    /// RESUMING (e.g. <c>SetState(Running)</c>); an invalid stream fails that arc.
    /// </summary>
    /// <param name="source">The bytes <see cref="SaveAsync"/> produced on a compatible device.</param>
    /// <param name="progress">Receives the bytes moved.</param>
    /// <param name="cancellationToken">Stops the transfer; the device stays in RESUMING (only a reset aborts it).</param>
    /// <returns>The number of bytes written to the device.</returns>
    /// <exception cref="InvalidOperationException">The device is not in RESUMING: move it there first.</exception>
    public async Task<long> ResumeAsync(Stream source, IProgress<MigrationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(source);
        var (fd, _) = Session("resume", saving: false);
        var reader = PipeReader.Create(source, new StreamPipeReaderOptions(bufferSize: ChunkSize, leaveOpen: true));
        long total = await CopyAsync(
            reader,
            segment => new ValueTask<long>(WriteAll(fd, segment.Span)),
            progress,
            static _ => null,
            cancellationToken).ConfigureAwait(false);
        Log.MigrationResumed(_device.Registry.Logger, _device.Name, total);
        return total;
    }

    /// <summary>Closes the data session, if any. The device's state is left as it is.</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            _disposed = true;
        }
        CloseSession();
        _device.ForgetMigration(this);
    }

    /// <inheritdoc/>
    public override string ToString() => $"migration of {_device.Name}{(HasDataSession ? " (a data session open)" : string.Empty)}";

    bool IDeviceResource.Revoke()
    {
        lock (_lock)
        {
            if (_disposed)
            {
                return false;
            }
            _disposed = true;
        }
        CloseSession();
        _device.ForgetMigration(this);
        return true;
    }

    /// <summary>
    /// Hands every segment <paramref name="reader"/> yields to <paramref name="write"/> until the
    /// reader ends, reports the running total after each read that brought bytes, and completes the
    /// reader (with the error, where one stops the transfer).
    /// </summary>
    /// <param name="reader">The bytes to move.</param>
    /// <param name="write">Moves one segment on; returns how many bytes it moved.</param>
    /// <param name="progress">Receives the running total, if any.</param>
    /// <param name="estimate">The total size to report beside the bytes moved so far, or null.</param>
    /// <param name="readCancellation">Stops a wait for the reader.</param>
    /// <returns>The bytes <paramref name="write"/> moved in all.</returns>
    private static async Task<long> CopyAsync(PipeReader reader, Func<ReadOnlyMemory<byte>, ValueTask<long>> write,
        IProgress<MigrationProgress>? progress, Func<long, long?> estimate, CancellationToken readCancellation)
    {
        long total = 0;
        try
        {
            while (true)
            {
                var result = await reader.ReadAsync(readCancellation).ConfigureAwait(false);
                var buffer = result.Buffer;
                foreach (var segment in buffer)
                {
                    total += await write(segment).ConfigureAwait(false);
                }
                reader.AdvanceTo(buffer.End);
                if (progress is not null && !buffer.IsEmpty)
                {
                    progress.Report(new MigrationProgress(total, estimate(total)));
                }
                if (result.IsCompleted)
                {
                    break;
                }
            }
            await reader.CompleteAsync().ConfigureAwait(false);
        }
        catch (Exception e)
        {
            await reader.CompleteAsync(e).ConfigureAwait(false);
            throw;
        }
        return total;
    }

    private long WriteAll(SafeFd fd, ReadOnlySpan<byte> data)
    {
        long done = 0;
        while (done < data.Length)
        {
            long n = _device.Kernel.Write(fd, data[(int)done..]);
            if (n == -Errno.EINTR || n == -Errno.EAGAIN)
            {
                continue;
            }
            VfioErrors.Check(n, "write of the migration data session", _device.ErrorTarget);
            if (n == 0)
            {
                throw new VfioException($"The RESUMING data session of {_device.Name} accepted no bytes; the device may be out of room for the stream.");
            }
            done += n;
        }
        return done;
    }

    private VfioMigrationState[] Plan(VfioMigrationState from, VfioMigrationState target)
    {
        var path = MigrationPlanner.Plan(from, target, Capabilities, out string? reason);
        if (path is null)
        {
            string hint = from == VfioMigrationState.Error ? " Reset the device (VfioDevice.Reset) to bring it back to RUNNING." : "";
            throw new VfioNotSupportedException($"Device {_device.Name} cannot move from {MigrationPlanner.Name(from)} to {MigrationPlanner.Name(target)}: {reason}.{hint}");
        }
        return path;
    }

    private VfioMigrationException ArcFailed(VfioException cause, VfioMigrationState from, VfioMigrationState to, VfioMigrationState start, VfioMigrationState target)
    {
        VfioMigrationState? now;
        try
        {
            now = GetState();
        }
        catch (VfioException)
        {
            now = null;
        }
        if (now is { } state)
        {
            UpdateSession(state, null);
        }
        else
        {
            CloseSession();
        }
        string where = now is { } s ? "is now in " + MigrationPlanner.Name(s) : "state could not be read back";
        string what = now is null or VfioMigrationState.Error
            ? "Reset the device (VfioDevice.Reset) to bring it back to RUNNING."
            : $"Retry, go back to {MigrationPlanner.Name(start)}, or move it to RUNNING or STOP; a reset also returns it to RUNNING.";
        string via = start == from && to == target ? "" : $" (on the way from {MigrationPlanner.Name(start)} to {MigrationPlanner.Name(target)})";
        string message = string.Create(CultureInfo.InvariantCulture,
            $"Migration arc {MigrationPlanner.Name(from)} -> {MigrationPlanner.Name(to)}{via} of {_device.Name} failed: {Errno.Name(cause.Errno)} ({Errno.Describe(cause.Errno)}). The device {where}. {what}");
        Log.MigrationArcFailed(_device.Registry.Logger, _device.Name, MigrationPlanner.Name(from), MigrationPlanner.Name(to), now is { } n2 ? MigrationPlanner.Name(n2) : "unknown", cause.Errno);
        return new VfioMigrationException(message, cause, from, to, target, now);
    }

    /// <summary>Keeps, replaces or closes the session for the state the device is in now.</summary>
    private void UpdateSession(VfioMigrationState state, SafeFd? opened)
    {
        SafeFd? old = null;
        lock (_lock)
        {
            if (opened is not null)
            {
                old = _session;
                _session = opened;
                _sessionState = state;
            }
            else if (_session is not null && (MigrationPlanner.IsSaving(state) && MigrationPlanner.IsSaving(_sessionState)
                || state == VfioMigrationState.Resuming && _sessionState == VfioMigrationState.Resuming))
            {
                _sessionState = state; // PRE_COPY_P2P -> STOP_COPY continues the same session
            }
            else
            {
                old = _session;
                _session = null;
            }
        }
        if (old is not null)
        {
            old.Dispose();
            Log.MigrationSessionClosed(_device.Registry.Logger, _device.Name, MigrationPlanner.Name(state));
        }
    }

    private void CloseSession()
    {
        SafeFd? old;
        lock (_lock)
        {
            old = _session;
            _session = null;
        }
        old?.Dispose();
    }

    private (SafeFd Fd, VfioMigrationState State) Session(string verb, bool saving)
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_session is null || MigrationPlanner.IsSaving(_sessionState) != saving)
            {
                string need = saving ? "STOP_COPY (or PRE_COPY)" : "RESUMING";
                throw new InvalidOperationException($"Cannot {verb} the migration data of {_device.Name}: no {(saving ? "saving" : "resuming")} data session is open. Move the device to {need} with SetState first.");
            }
            return (_session, _sessionState);
        }
    }

    // MIG_DATA_SIZE is Linux 6.2; 6.1 answers ENOTTY and the estimate stays unknown.
    private long? StopCopyEstimate()
    {
        var data = new vfio_device_feature_mig_data_size();
        var bytes = MemoryMarshal.AsBytes(new Span<vfio_device_feature_mig_data_size>(ref data));
        int rc = _device.FeatureCore(VfioFeature.MigrationDataSize, VfioUapi.VFIO_DEVICE_FEATURE_GET, bytes);
        return rc == 0 ? (long)data.stop_copy_length : null;
    }

    // VFIO_MIG_GET_PRECOPY_INFO is Linux 6.2; without it (ENOTTY) the estimate stays unknown.
    private unsafe long? PreCopyEstimate(SafeFd fd, long transferred)
    {
        var info = new vfio_precopy_info { argsz = (uint)sizeof(vfio_precopy_info) };
        int rc = _device.Kernel.Ioctl(fd, VfioUapi.VFIO_MIG_GET_PRECOPY_INFO, &info);
        return rc == 0 ? transferred + (long)(info.initial_bytes + info.dirty_bytes) : null;
    }

    private void ThrowIfDisposed()
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
        }
    }

    /// <summary>An eventfd written when a token is cancelled, so a poll on a data session wakes.</summary>
    private sealed class CancelSignal : IDisposable
    {
        private readonly VfioKernel _kernel;
        private readonly ErrorTarget _target;
        private readonly SafeFd? _fd;
        private readonly CancellationTokenRegistration _registration;

        private CancelSignal(VfioKernel kernel, ErrorTarget target, SafeFd? fd, CancellationToken token)
        {
            _kernel = kernel;
            _target = target;
            _fd = fd;
            if (fd is not null)
            {
                _registration = token.Register(static state => ((CancelSignal)state!).Signal(), this);
            }
        }

        public static CancelSignal Create(VfioDevice device, CancellationToken token)
        {
            var kernel = device.Kernel;
            VfioErrors.Check(kernel.EventFd(0, Flags.EFD_NONBLOCK, out var fd), "eventfd for the migration data session", device.ErrorTarget);
            return new CancelSignal(kernel, device.ErrorTarget, fd, token);
        }

        /// <summary>Wakes a waiter: the token fired, or the transfer is over.</summary>
        public void Signal()
        {
            if (_fd is not null && !_fd.IsClosed)
            {
                Span<byte> one = stackalloc byte[8];
                one[0] = 1;
                _kernel.Write(_fd, one);
            }
        }

        /// <summary>Waits until <paramref name="data"/> is readable (or at its end); false when woken by <see cref="Signal"/> instead.</summary>
        public bool WaitReadable(SafeFd data)
        {
            Span<PollFd> fds = stackalloc PollFd[2];
            fds[0] = new PollFd { fd = data.Value, events = Flags.POLLIN };
            fds[1] = new PollFd { fd = _fd?.Value ?? -1, events = Flags.POLLIN };
            while (true)
            {
                int n = _kernel.Poll(fds, -1);
                if (n == -Errno.EINTR)
                {
                    continue;
                }
                VfioErrors.Check(n, "poll of the migration data session", _target);
                return fds[1].revents == 0 || fds[0].revents != 0;
            }
        }

        public void Dispose()
        {
            _registration.Dispose();
            _fd?.Dispose();
        }
    }
}
