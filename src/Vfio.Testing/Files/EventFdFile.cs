using System.Buffers.Binary;
using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio.Testing;

/// <summary>
/// An eventfd: a 64-bit counter that writes add to and reads take (all of it, or 1 in semaphore
/// mode). A read of an empty counter blocks, or fails with EAGAIN when the descriptor is
/// non-blocking. Waiting threads are woken by writes, never by polling.
/// </summary>
internal sealed class EventFdFile(SimulatedKernel kernel, ulong initialValue, int flags) : KernelFile(kernel, "anon_inode:[eventfd]")
{
    private const int EfdSemaphore = 1;
    private const ulong Max = ulong.MaxValue - 1;

    // Guards _count, _consumer and _waiters; readers block on it (Monitor.Wait). Taken under the kernel
    // lock (an interrupt signalled by the kernel), never the other way round; the consumer runs outside it.
    private readonly object _gate = new();
    private readonly List<PollWaiter> _waiters = [];
    private readonly bool _nonBlocking = (flags & Flags.EFD_NONBLOCK) != 0;
    private readonly bool _semaphore = (flags & EfdSemaphore) != 0;
    private ulong _count = initialValue;
    private Action? _consumer;

    public override SimulatedFileKind Kind => SimulatedFileKind.EventFd;

    /// <summary>The counter, for tests and the kernel's own checks.</summary>
    public ulong Count
    {
        get
        {
            lock (_gate)
            {
                return _count;
            }
        }
    }

    /// <summary>
    /// Makes the kernel the reader of this eventfd (an irqfd, as vfio's virqfd): each write runs
    /// <paramref name="consumer"/> and clears the counter. Null detaches it.
    /// </summary>
    public void SetConsumer(Action? consumer)
    {
        lock (_gate)
        {
            _consumer = consumer;
        }
    }

    /// <summary>The kernel's <c>eventfd_signal</c>: adds <paramref name="n"/>, saturating, never blocking.</summary>
    public void Signal(ulong n = 1)
    {
        Action? consumer;
        lock (_gate)
        {
            consumer = _consumer;
            if (consumer is null)
            {
                _count = Max - _count < n ? Max : _count + n;
                WakeLocked();
            }
        }
        consumer?.Invoke();
    }

    public override long Read(Span<byte> buffer)
    {
        if (buffer.Length < sizeof(ulong))
        {
            return -Errno.EINVAL;
        }
        ulong value;
        lock (_gate)
        {
            while (_count == 0)
            {
                if (_nonBlocking)
                {
                    return -Errno.EAGAIN;
                }
                Monitor.Wait(_gate);
            }
            value = _semaphore ? 1 : _count;
            _count -= value;
            WakeLocked();
        }
        BinaryPrimitives.WriteUInt64LittleEndian(buffer, value);
        return sizeof(ulong);
    }

    public override long Write(ReadOnlySpan<byte> buffer)
    {
        if (buffer.Length < sizeof(ulong))
        {
            return -Errno.EINVAL;
        }
        ulong value = BinaryPrimitives.ReadUInt64LittleEndian(buffer);
        if (value == ulong.MaxValue)
        {
            return -Errno.EINVAL;
        }
        Action? consumer;
        lock (_gate)
        {
            consumer = _consumer;
            if (consumer is null)
            {
                while (Max - _count < value)
                {
                    if (_nonBlocking)
                    {
                        return -Errno.EAGAIN;
                    }
                    Monitor.Wait(_gate);
                }
                _count += value;
                WakeLocked();
            }
        }
        if (value != 0)
        {
            consumer?.Invoke();
        }
        return sizeof(ulong);
    }

    public override long PRead(Span<byte> buffer, long offset) => -Errno.ESPIPE;

    public override long PWrite(ReadOnlySpan<byte> buffer, long offset) => -Errno.ESPIPE;

    public override short PollEvents(short events)
    {
        lock (_gate)
        {
            short ready = 0;
            if (_count > 0)
            {
                ready |= Flags.POLLIN;
            }
            if (_count < Max)
            {
                ready |= Flags.POLLOUT;
            }
            return (short)(ready & events);
        }
    }

    public override void AddPollWaiter(PollWaiter waiter)
    {
        lock (_gate)
        {
            _waiters.Add(waiter);
        }
    }

    public override void RemovePollWaiter(PollWaiter waiter)
    {
        lock (_gate)
        {
            _waiters.Remove(waiter);
        }
    }

    private void WakeLocked()
    {
        LockAssert.Held(_gate);
        Monitor.PulseAll(_gate);
        foreach (var waiter in _waiters)
        {
            waiter.Wake();
        }
    }
}
