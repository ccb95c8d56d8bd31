using Vfio.Interop;

namespace Vfio;

public sealed partial class VfioRegistry
{
    // Whether /dev/iommu exists: 0 not looked yet, 1 it does, 2 it does not. Looked at once (and
    // logged) when first needed; a failed look is not remembered.
    private int _iommufd;

    /// <summary>
    /// The backend this registry uses for devices that have a VFIO device cdev: the one
    /// <see cref="VfioRegistryOptions.Backend"/> forces, otherwise <see cref="VfioBackend.Iommufd"/>
    /// when <c>/dev/iommu</c> exists and <see cref="VfioBackend.Legacy"/> when it does not (looked at
    /// once, and logged). Under the automatic choice a device without a cdev (a kernel before 6.6 or
    /// built without it, a no-IOMMU device) still uses the legacy backend; an open device's
    /// <see cref="VfioDevice.Backend"/> says which it uses.
    /// </summary>
    /// <exception cref="VfioException">The kernel refused to list its device folder.</exception>
    public VfioBackend Backend => Options.Backend ?? (IommufdPresent(default) ? VfioBackend.Iommufd : VfioBackend.Legacy);

    /// <summary>The IO address space the registry's devices opened through the iommufd backend share, while any is open; null otherwise.</summary>
    public IommufdAddressSpace? IommufdAddressSpace => IommufdBackend.AddressSpace;

    /// <summary>The iommufd backend: the registry's iommufd and IOAS.</summary>
    internal IommufdBackend IommufdBackend { get; }

    // Whether /dev/iommu exists; a failed look names target (the device opening, if any).
    private bool IommufdPresent(ErrorTarget target)
    {
        int state = Volatile.Read(ref _iommufd);
        if (state == 0)
        {
            int rc = Kernel.ListDirectory(Kernel.DevRoot, out var names);
            VfioErrors.Check(rc, "list " + Kernel.DevRoot, target);
            state = names.Contains("iommu") ? 1 : 2;
            if (Interlocked.CompareExchange(ref _iommufd, state, 0) == 0)
            {
                Log.IommufdPresence(Logger, Kernel.Dev("iommu"), state == 1, Options.Backend);
            }
        }
        return state == 1;
    }

    /// <summary>
    /// The backend for a device that is opening, with its cdev for the iommufd backend. Devices of one
    /// IOMMU group always get the same one: whether a device has a cdev depends on the kernel and on
    /// the group's kind, never on the device alone. Throws, naming the device and the reason, when the
    /// options force the iommufd backend on a device that cannot use it.
    /// </summary>
    internal (IommuBackend Backend, string? CdevPath) SelectBackend(VfioDevice device)
    {
        if ((Options.Backend ?? (IommufdPresent(device.ErrorTarget) ? VfioBackend.Iommufd : VfioBackend.Legacy)) == VfioBackend.Legacy)
        {
            Log.BackendChosen(Logger, device.Name, VfioBackend.Legacy, Options.Backend is null ? "there is no " + Kernel.Dev("iommu") : "forced by the registry's options");
            return (LegacyBackend, null);
        }
        var (cdev, why) = IommufdPresent(device.ErrorTarget)
            ? DeviceCdev.Find(this, device)
            : (null, "there is no " + Kernel.Dev("iommu") + ": the kernel was built without CONFIG_IOMMUFD (Linux 6.2 and later; no Debian kernel enables it), or the iommufd module is not loaded");
        if (cdev is null)
        {
            if (Options.Backend == VfioBackend.Iommufd)
            {
                throw DeviceCdev.Missing(device, why);
            }
            Log.BackendChosen(Logger, device.Name, VfioBackend.Legacy, why);
            return (LegacyBackend, null);
        }
        Log.BackendChosen(Logger, device.Name, VfioBackend.Iommufd, cdev);
        return (IommufdBackend, cdev);
    }
}
