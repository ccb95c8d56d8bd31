namespace Vfio.Testing;

/// <summary>
/// Failures armed by a test: "the K-th call from now" and "the next call of a kind". A call that
/// fails this way returns the errno and has no other effect, as a kernel call that fails early.
/// Calls from the library's interrupt poller threads are not counted, and only failures armed for
/// their set fail them: they run when interrupts arrive, not in the order of the test's own calls, so
/// counting them would make "the K-th call" depend on thread timing.
/// </summary>
internal sealed class FailureInjection
{
    // _byNumber is the lock for both lists; a leaf, taken at the start of every seam call.
    private readonly List<(long CallNumber, int Errno)> _byNumber = [];
    private readonly List<(SimulatedCall Kind, int Errno, nuint? Request)> _byKind = [];
    private readonly List<(InterruptSet Set, SimulatedCall Kind, int Errno)> _byPoller = [];
    private long _calls;

    /// <summary>The number of seam calls made so far.</summary>
    public long Calls => Interlocked.Read(ref _calls);

    public void FailCall(long callsFromNow, int errno)
    {
        lock (_byNumber)
        {
            _byNumber.Add((Calls + callsFromNow, errno));
        }
    }

    public void FailNext(SimulatedCall kind, int errno, nuint? request)
    {
        lock (_byNumber)
        {
            _byKind.Add((kind, errno, request));
        }
    }

    public void FailNextPollerCall(InterruptSet set, SimulatedCall kind, int errno)
    {
        lock (_byNumber)
        {
            _byPoller.Add((set, kind, errno));
        }
    }

    public void Clear()
    {
        lock (_byNumber)
        {
            _byNumber.Clear();
            _byKind.Clear();
            _byPoller.Clear();
        }
    }

    /// <summary>Counts a call and returns the negative errno it must fail with, or 0.</summary>
    public int Enter(SimulatedCall kind, nuint request = 0)
    {
        if (InterruptSet.InPollerCall)
        {
            return InterruptSet.CurrentPoller is { } poller ? EnterPoller(poller, kind) : 0;
        }
        long number = Interlocked.Increment(ref _calls);
        lock (_byNumber)
        {
            if (_byNumber.Count == 0 && _byKind.Count == 0)
            {
                return 0;
            }
            for (int i = 0; i < _byNumber.Count; i++)
            {
                if (_byNumber[i].CallNumber == number)
                {
                    int errno = _byNumber[i].Errno;
                    _byNumber.RemoveAt(i);
                    return -errno;
                }
            }
            for (int i = 0; i < _byKind.Count; i++)
            {
                var (k, errno, r) = _byKind[i];
                if (k == kind && (r is null || (kind == SimulatedCall.Ioctl && r.Value == request)))
                {
                    _byKind.RemoveAt(i);
                    return -errno;
                }
            }
            return 0;
        }
    }

    /// <summary>A call of a poller thread: never counted, failed only by a failure armed for its set.</summary>
    private int EnterPoller(InterruptSet set, SimulatedCall kind)
    {
        lock (_byNumber)
        {
            for (int i = 0; i < _byPoller.Count; i++)
            {
                if (ReferenceEquals(_byPoller[i].Set, set) && _byPoller[i].Kind == kind)
                {
                    int errno = _byPoller[i].Errno;
                    _byPoller.RemoveAt(i);
                    return -errno;
                }
            }
            return 0;
        }
    }
}
