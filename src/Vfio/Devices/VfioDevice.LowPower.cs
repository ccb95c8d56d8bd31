using System.Runtime.InteropServices;
using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio;

public abstract partial class VfioDevice
{
    /// <summary>
    /// Allows the kernel to put the device into runtime low power (<c>VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY</c>,
    /// vfio-pci since Linux 6.1). Access to mmap'd regions is cut until <see cref="ExitLowPower"/>: they
    /// read all-ones and drop writes meanwhile (see <see cref="MmioRegion.IsSuspended"/>); other access
    /// wakes the device as needed.
    /// </summary>
    /// <exception cref="VfioNotSupportedException">The kernel or driver does not know the feature.</exception>
    /// <exception cref="VfioException">EINVAL: low power is already allowed.</exception>
    public void EnterLowPower() => SuspendForLowPower(() => CheckFeature(VfioFeature.LowPowerEntry, VfioFeatureAccess.Set, []));

    /// <summary>
    /// As <see cref="EnterLowPower"/>, once: when the device wakes from low power the returned
    /// wake-up is signalled and the device stays awake (<c>LOW_POWER_ENTRY_WITH_WAKEUP</c>, Linux 6.1).
    /// Dispose the wake-up after <see cref="ExitLowPower"/> or after it was signalled.
    /// </summary>
    /// <returns>The wake-up notification.</returns>
    public LowPowerWakeup EnterLowPowerWithWakeup()
    {
        VfioErrors.Check(Kernel.EventFd(0, Flags.EFD_NONBLOCK, out var fd), "eventfd", ErrorTarget);
        try
        {
            SuspendForLowPower(() => SetFeature(VfioFeature.LowPowerEntryWithWakeup, new vfio_device_low_power_entry_with_wakeup { wakeup_eventfd = fd.Value }));
            return new LowPowerWakeup(Kernel, fd);
        }
        catch
        {
            fd.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Disallows low power again (<c>VFIO_DEVICE_FEATURE_LOW_POWER_EXIT</c>); harmless when it was not
    /// allowed. Mapped regions are mapped back (when memory space is on).
    /// </summary>
    public void ExitLowPower() => ResumeAfterLowPower(() => CheckFeature(VfioFeature.LowPowerExit, VfioFeatureAccess.Set, []));
}
