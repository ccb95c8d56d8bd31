namespace Vfio;

/// <summary>What <see cref="PciVfioDevice.ErrorDetected"/> reports.</summary>
/// <param name="count">How many error signals arrived since the last report (the eventfd coalesces them).</param>
public sealed class PciErrorEventArgs(ulong count) : EventArgs
{
    /// <summary>How many error signals arrived since the last report (the eventfd coalesces them).</summary>
    public ulong Count { get; } = count;
}

// The kernel's notifications for an open PCI device file: vfio-pci signals REQ when someone asks for
// the device back (an unbind from vfio-pci while user space holds it), and ERR when AER reports an
// error on a PCI Express function. Both are single eventfd vectors the library owns, polled by the
// registry's one notifier thread (NotifierPoller), so an open starts no thread.
public abstract partial class PciVfioDevice
{
    private EventHandler<PciErrorEventArgs>? _errorDetected;
    private InterruptSet? _errorNotifier;
    private int _kernelRequests;

    /// <summary>
    /// Raised when the kernel reports an uncorrectable error on the device (vfio-pci's ERR interrupt,
    /// signalled from AER error handling), on a thread-pool thread, while the device is open.
    /// Only PCI Express functions have it; on others it never fires. Subscribing while the device is
    /// open wires the ERR eventfd at once; otherwise the next open does.
    /// </summary>
    public event EventHandler<PciErrorEventArgs>? ErrorDetected
    {
        add
        {
            lock (Set.Lock)
            {
                _errorDetected += value;
                if (IsOpen && _errorNotifier is null)
                {
                    WireErrorNotifier();
                }
            }
        }
        remove
        {
            lock (Set.Lock)
            {
                _errorDetected -= value;
            }
        }
    }

    private protected override void OnDeviceFileOpened()
    {
        LockAssert.Held(Set.Lock);
        _kernelRequests = 0;
        _errorNotifier = null;
        InterruptSet.Notifier(this, PciIrq.Req, _ =>
        {
            int count = Interlocked.Increment(ref _kernelRequests) - 1;
            Log.KernelRequestedRelease(Registry.Logger, Name, GroupId, count);
            RequestRelease(count);
        });
        if (_errorDetected is not null)
        {
            WireErrorNotifier();
        }
    }

    private protected override bool IsLibraryIrq(int index) => index is PciIrq.Req or PciIrq.Err;

    private void WireErrorNotifier()
    {
        LockAssert.Held(Set.Lock);
        _errorNotifier = InterruptSet.Notifier(this, PciIrq.Err, count =>
        {
            Log.DeviceErrorReported(Registry.Logger, Name, GroupId, count);
            try
            {
                Volatile.Read(ref _errorDetected)?.Invoke(this, new PciErrorEventArgs(count));
            }
            catch (Exception e)
            {
                Log.ErrorHandlerFailed(Registry.Logger, Name, GroupId, e);
            }
        });
    }
}
