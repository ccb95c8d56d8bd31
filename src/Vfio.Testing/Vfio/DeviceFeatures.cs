using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Vfio.Interop;

namespace Vfio.Testing;

/// <summary>
/// VFIO_DEVICE_FEATURE on a device file, as Linux 6.1 decodes it: the core's header checks
/// (<c>vfio_ioctl_device_feature</c>), the core's migration and DMA logging features, then the bus
/// driver's <c>device_feature</c> (vfio-pci: low power and the VF token; vfio-platform has none). Every
/// feature validates its flags with <c>vfio_check_feature</c>. Runs without the kernel lock: the
/// model's lock is taken first, the kernel's after it, as for every model hook.
/// </summary>
internal static unsafe class DeviceFeatures
{
    private const uint Get = VfioUapi.VFIO_DEVICE_FEATURE_GET;
    private const uint Set = VfioUapi.VFIO_DEVICE_FEATURE_SET;
    private const uint Probe = VfioUapi.VFIO_DEVICE_FEATURE_PROBE;

    /// <summary>LOG_MAX_RANGES: as many ranges as fit in one page.</summary>
    private const int MaxLogRanges = SimulatedKernel.PageSize / 16;

    // Each device's state is its own lock (guards Engaged and Wakeup), a leaf: the wake-up eventfd is
    // put under the kernel lock only after it is released.
    private static readonly ConditionalWeakTable<SimulatedDevice, LowPower> LowPowerStates = [];

    public static int Ioctl(SimulatedKernel kernel, SimulatedDevice device, byte* argument)
    {
        var header = (vfio_device_feature*)argument;
        uint argsz = header->argsz;
        uint flags = header->flags;
        int headerSize = sizeof(vfio_device_feature);
        if (argsz < headerSize)
        {
            return -Errno.EINVAL;
        }
        if ((flags & ~(VfioUapi.VFIO_DEVICE_FEATURE_MASK | Get | Set | Probe)) != 0)
        {
            return -Errno.EINVAL;
        }
        if ((flags & Probe) == 0 && (flags & Set) != 0 && (flags & Get) != 0)
        {
            return -Errno.EINVAL;
        }
        byte* data = argument + headerSize;
        long size = argsz - headerSize;
        var migratable = MigrationDrivers.Of(device.Model);
        switch (flags & VfioUapi.VFIO_DEVICE_FEATURE_MASK)
        {
            case VfioUapi.VFIO_DEVICE_FEATURE_MIGRATION:
            {
                if (migratable is null)
                {
                    return -Errno.ENOTTY;
                }
                int r = CheckFeature(flags, size, Get, sizeof(vfio_device_feature_migration));
                if (r != 1)
                {
                    return r;
                }
                ((vfio_device_feature_migration*)data)->flags = (ulong)migratable.Capabilities;
                return 0;
            }
            case VfioUapi.VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE:
                return migratable is null ? -Errno.ENOTTY : DeviceState(kernel, migratable, flags, size, (vfio_device_feature_mig_state*)data);
            case VfioUapi.VFIO_DEVICE_FEATURE_DMA_LOGGING_START:
            case VfioUapi.VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP:
            case VfioUapi.VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT:
                return migratable is { SupportsDmaLogging: true } ? DmaLogging(migratable, flags, size, data) : -Errno.ENOTTY;
            case VfioUapi.VFIO_DEVICE_FEATURE_MIG_DATA_SIZE when migratable is { ReportsDataSize: true }:
            {
                // Linux 6.2's core feature; on 6.1 the number falls through to the driver, which answers ENOTTY.
                int r = CheckFeature(flags, size, Get, sizeof(vfio_device_feature_mig_data_size));
                if (r != 1)
                {
                    return r;
                }
                r = migratable.GetMigrationDataSize(out ulong length);
                if (r == 0)
                {
                    ((vfio_device_feature_mig_data_size*)data)->stop_copy_length = length;
                }
                return r;
            }
            default:
                // The bus driver's device_feature: vfio-platform has none, and 6.1's core then answers EINVAL.
                return device.Model is PciDeviceModel ? PciFeature(kernel, device, flags, size, data) : -Errno.EINVAL;
        }
    }

    /// <summary>vfio-pci's <c>pm_runtime_engaged</c>: low power was allowed and not left; a mapped access is then SIGBUS.</summary>
    internal static bool LowPowerEngaged(SimulatedDevice device)
    {
        if (!LowPowerStates.TryGetValue(device, out var state))
        {
            return false;
        }
        lock (state)
        {
            return state.Engaged;
        }
    }

    /// <summary>Forgets the device's low power state on its last close (vfio-pci's close_device); the kernel lock is held.</summary>
    public static void LastClose(SimulatedDevice device)
    {
        device.Kernel.AssertLocked();
        if (LowPowerStates.TryGetValue(device, out var state))
        {
            LowPowerStates.Remove(device);
            lock (state)
            {
                state.Wakeup?.Put();
                state.Wakeup = null;
            }
        }
    }

    /// <summary>
    /// <c>vfio_check_feature</c>: 1 when the driver should do the GET or SET, otherwise the value to
    /// return (0 for a successful probe, -EINVAL for an unsupported direction or short data).
    /// </summary>
    internal static int CheckFeature(uint flags, long argsz, uint supported, int minsz)
    {
        if ((flags & (Get | Set) & ~supported) != 0)
        {
            return -Errno.EINVAL;
        }
        if ((flags & Probe) != 0)
        {
            return 0;
        }
        if ((flags & (Get | Set)) == 0)
        {
            return -Errno.EINVAL;
        }
        return argsz < minsz ? -Errno.EINVAL : 1;
    }

    private static int DeviceState(SimulatedKernel kernel, IMigrationDriver model, uint flags, long size, vfio_device_feature_mig_state* mig)
    {
        int r = CheckFeature(flags, size, Get | Set, sizeof(vfio_device_feature_mig_state));
        if (r != 1)
        {
            return r;
        }
        if ((flags & Get) != 0)
        {
            r = model.GetMigrationState(out var state);
            if (r < 0)
            {
                return r;
            }
            mig->device_state = (uint)state;
            mig->data_fd = -1;
            return 0;
        }
        r = model.SetMigrationState((VfioMigrationState)mig->device_state, out var file);
        if (file is null)
        {
            mig->data_fd = -1;
            return r;
        }
        using (kernel.Enter())
        {
            mig->data_fd = kernel.Files.Install(file);
        }
        return 0;
    }

    private static int DmaLogging(IMigrationDriver model, uint flags, long size, byte* data)
    {
        switch (flags & VfioUapi.VFIO_DEVICE_FEATURE_MASK)
        {
            case VfioUapi.VFIO_DEVICE_FEATURE_DMA_LOGGING_START:
            {
                int r = CheckFeature(flags, size, Set, sizeof(vfio_device_feature_dma_logging_control));
                if (r != 1)
                {
                    return r;
                }
                var control = (vfio_device_feature_dma_logging_control*)data;
                uint count = control->num_ranges;
                if (count == 0)
                {
                    return -Errno.EINVAL;
                }
                if (count > MaxLogRanges)
                {
                    return -Errno.E2BIG;
                }
                var user = (vfio_device_feature_dma_logging_range*)control->ranges;
                var ranges = new List<(ulong Iova, ulong Length)>((int)count);
                ulong pageSize = control->page_size;
                for (int i = 0; i < count; i++)
                {
                    var range = user[i];
                    if (!Aligned(range.iova, pageSize) || !Aligned(range.length, pageSize))
                    {
                        return -Errno.EINVAL;
                    }
                    if (range.iova + range.length < range.iova)
                    {
                        return -Errno.EOVERFLOW;
                    }
                    if (ranges.Any(o => range.iova <= o.Iova + o.Length - 1 && o.Iova <= range.iova + range.length - 1))
                    {
                        return -Errno.EINVAL; // overlapping ranges
                    }
                    ranges.Add((range.iova, range.length));
                }
                r = model.StartDmaLogging(ranges, ref pageSize);
                if (r == 0)
                {
                    control->page_size = pageSize;
                }
                return r;
            }
            case VfioUapi.VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP:
            {
                int r = CheckFeature(flags, size, Set, 0);
                return r != 1 ? r : model.StopDmaLogging();
            }
            default:
            {
                int r = CheckFeature(flags, size, Get, sizeof(vfio_device_feature_dma_logging_report));
                if (r != 1)
                {
                    return r;
                }
                var report = (vfio_device_feature_dma_logging_report*)data;
                ulong pageSize = report->page_size;
                if (pageSize < 4096 || (pageSize & (pageSize - 1)) != 0)
                {
                    return -Errno.EINVAL;
                }
                if (report->iova + report->length < report->iova)
                {
                    return -Errno.EOVERFLOW;
                }
                ulong bits = (report->length + pageSize - 1) / pageSize;
                var bitmap = new Span<ulong>((void*)report->bitmap, (int)((bits + 63) / 64));
                return model.ReportDmaLogging(report->iova, report->length, pageSize, bitmap);
            }
        }
    }

    // IS_ALIGNED(x, a): (x & (a - 1)) == 0.
    private static bool Aligned(ulong value, ulong alignment) => (value & (alignment - 1)) == 0;

    /// <summary>vfio-pci's device_feature (vfio_pci_core_ioctl_feature, Linux 6.1).</summary>
    private static int PciFeature(SimulatedKernel kernel, SimulatedDevice device, uint flags, long size, byte* data)
    {
        switch (flags & VfioUapi.VFIO_DEVICE_FEATURE_MASK)
        {
            case VfioUapi.VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY:
            {
                int r = CheckFeature(flags, size, Set, 0);
                return r != 1 ? r : Enter(kernel, device, null);
            }
            case VfioUapi.VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP:
            {
                int r = CheckFeature(flags, size, Set, sizeof(vfio_device_low_power_entry_with_wakeup));
                if (r != 1)
                {
                    return r;
                }
                int fd = ((vfio_device_low_power_entry_with_wakeup*)data)->wakeup_eventfd;
                if (fd < 0)
                {
                    return -Errno.EINVAL;
                }
                EventFdFile? eventFd;
                using (kernel.Enter())
                {
                    var file = kernel.FileLocked(fd);
                    if (file is null)
                    {
                        return -Errno.EBADF;
                    }
                    eventFd = file as EventFdFile;
                    if (eventFd is null)
                    {
                        return -Errno.EINVAL;
                    }
                    eventFd.Get();
                }
                r = Enter(kernel, device, eventFd);
                if (r < 0)
                {
                    using (kernel.Enter())
                    {
                        eventFd.Put();
                    }
                }
                return r;
            }
            case VfioUapi.VFIO_DEVICE_FEATURE_LOW_POWER_EXIT:
            {
                int r = CheckFeature(flags, size, Set, 0);
                if (r != 1)
                {
                    return r;
                }
                var state = LowPowerStates.GetOrCreateValue(device);
                EventFdFile? wake;
                lock (state)
                {
                    wake = state.Wakeup;
                    state.Engaged = false;
                    state.Wakeup = null;
                }
                if (wake is not null)
                {
                    using (kernel.Enter())
                    {
                        wake.Put();
                    }
                }
                return 0;
            }
            case VfioUapi.VFIO_DEVICE_FEATURE_PCI_VF_TOKEN:
                return -Errno.ENOTTY; // not an SR-IOV PF with a VF token
            default:
                return -Errno.ENOTTY;
        }
    }

    private static int Enter(SimulatedKernel kernel, SimulatedDevice device, EventFdFile? wakeup)
    {
        _ = kernel;
        var state = LowPowerStates.GetOrCreateValue(device);
        lock (state)
        {
            if (state.Engaged)
            {
                return -Errno.EINVAL;
            }
            state.Engaged = true;
            state.Wakeup = wakeup;
            return 0;
        }
    }

    /// <summary>vfio-pci's pm_runtime_engaged and pm_wake_eventfd_ctx.</summary>
    private sealed class LowPower
    {
        public bool Engaged { get; set; }

        public EventFdFile? Wakeup { get; set; }
    }
}
