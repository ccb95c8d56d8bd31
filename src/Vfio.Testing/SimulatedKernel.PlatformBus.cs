namespace Vfio.Testing;

/// <summary>vfio-platform's probe rules and its module parameter.</summary>
public sealed partial class SimulatedKernel
{
    private const string VfioPlatform = "vfio-platform";
    private bool _platformResetRequired = true;

    /// <summary>
    /// vfio-platform's module parameter <c>reset_required</c> (default true, shown in
    /// <c>/sys/module/vfio_platform/parameters/reset_required</c> as Y or N). While true, vfio-platform
    /// refuses to bind a device for which it finds no reset handler (the bind fails with ENOENT), and
    /// refuses to open a device whose reset fails. Like the kernel, which copies the parameter when
    /// it probes a device, a change applies to devices bound afterwards.
    /// </summary>
    public bool PlatformResetRequired
    {
        get
        {
            using (Enter())
            {
                return _platformResetRequired;
            }
        }
        set
        {
            using (Enter())
            {
                _platformResetRequired = value;
            }
        }
    }

    private void InitializePlatformSysfs() =>
        Sysfs.Directory("module/vfio_platform/parameters").Attribute("reset_required", () => _platformResetRequired ? "Y\n" : "N\n");

    /// <summary>
    /// vfio_platform_probe in Linux 6.1: ACPI or device tree identity, then the reset handler, which
    /// must exist while reset_required is set (-ENOENT otherwise, and the device stays unbound). The lock is held.
    /// </summary>
    private int ProbeVfioPlatformLocked(SimulatedPlatformDevice device)
    {
        AssertLocked();
        var model = device.Model;
        if (device.Group.Kind == SimulatedGroupKind.NoIommu && !UnsafeNoIommuMode)
        {
            return -Errno.EINVAL; // vfio_group_find_or_alloc: no IOMMU group and no no-IOMMU mode
        }
        if (!model.HasResetHandler && _platformResetRequired)
        {
            return -Errno.ENOENT; // "No reset function found for device ..."
        }
        device.ResetRequired = _platformResetRequired;
        return 0;
    }
}
