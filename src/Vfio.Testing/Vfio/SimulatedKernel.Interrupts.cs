using Vfio.Interop;

namespace Vfio.Testing;

public sealed partial class SimulatedKernel
{
    private const int Intx = 0;
    private const int Msi = 1;
    private const int Msix = 2;
    private const int Err = 3;
    private const int Req = 4;

    /// <summary>
    /// How many MSI or MSI-X vectors the host can allocate for one function (pci_alloc_irq_vectors);
    /// unlimited by default. Enabling more makes VFIO_DEVICE_SET_IRQS return this number (a positive
    /// result, as vfio-pci's MSI enable returns it), with nothing enabled.
    /// </summary>
    public int HostIrqVectors { get; set; } = int.MaxValue;

    /// <summary>VFIO_DEVICE_SET_IRQS (vfio_set_irqs_validate_and_prepare, then the bus driver); the lock is held.</summary>
    internal unsafe int SetIrqsLocked(SimulatedDevice device, vfio_irq_set* set)
    {
        AssertLocked();
        const int MinSize = 20; // offsetofend(struct vfio_irq_set, count)
        var model = device.Model;
        uint flags = set->flags;
        uint start = set->start;
        uint count = set->count;
        if (set->argsz < MinSize || set->index >= (uint)model.IrqIndexCount || count >= uint.MaxValue - start
            || (flags & ~(VfioUapi.VFIO_IRQ_SET_DATA_TYPE_MASK | VfioUapi.VFIO_IRQ_SET_ACTION_TYPE_MASK)) != 0)
        {
            return -Errno.EINVAL;
        }
        int index = (int)set->index;
        int max = model.IrqCount(index);
        if (start >= max || start + count > max)
        {
            return -Errno.EINVAL;
        }
        uint dataType = flags & VfioUapi.VFIO_IRQ_SET_DATA_TYPE_MASK;
        int elementSize = dataType switch
        {
            VfioUapi.VFIO_IRQ_SET_DATA_NONE => 0,
            VfioUapi.VFIO_IRQ_SET_DATA_BOOL => 1,
            VfioUapi.VFIO_IRQ_SET_DATA_EVENTFD => 4,
            _ => -1,
        };
        if (elementSize < 0 || (elementSize > 0 && set->argsz - MinSize < count * (ulong)elementSize))
        {
            return -Errno.EINVAL;
        }
        var request = new IrqRequest(device, index, (int)start, (int)count, dataType, flags & VfioUapi.VFIO_IRQ_SET_ACTION_TYPE_MASK, (byte*)set + MinSize);
        return model is PciDeviceModel ? SetPciIrqsLocked(request) : SetPlatformIrqsLocked(request);
    }

    private unsafe readonly struct IrqRequest(SimulatedDevice device, int index, int start, int count, uint dataType, uint action, byte* data)
    {
        public SimulatedDevice Device { get; } = device;

        public int Index { get; } = index;

        public int Start { get; } = start;

        public int Count { get; } = count;

        public uint DataType { get; } = dataType;

        public uint Action { get; } = action;

        public bool None => DataType == VfioUapi.VFIO_IRQ_SET_DATA_NONE;

        public bool Bool => DataType == VfioUapi.VFIO_IRQ_SET_DATA_BOOL;

        public bool EventFd => DataType == VfioUapi.VFIO_IRQ_SET_DATA_EVENTFD;

        public bool BoolAt(int i) => data[i] != 0;

        public int FdAt(int i) => ((int*)data)[i];

        public IrqLine Line(int vector) => Device.Irqs[Index][vector];
    }

    private int SetPciIrqsLocked(IrqRequest r)
    {
        AssertLocked();
        return (r.Index, r.Action) switch
        {
            (Intx, VfioUapi.VFIO_IRQ_SET_ACTION_MASK) => IntxMaskLocked(r, mask: true),
            (Intx, VfioUapi.VFIO_IRQ_SET_ACTION_UNMASK) => IntxMaskLocked(r, mask: false),
            (Intx, VfioUapi.VFIO_IRQ_SET_ACTION_TRIGGER) => IntxTriggerLocked(r),
            (Msi or Msix, VfioUapi.VFIO_IRQ_SET_ACTION_TRIGGER) => MsiTriggerLocked(r),
            (Err or Req, VfioUapi.VFIO_IRQ_SET_ACTION_TRIGGER) when r.Start == 0 && r.Count <= 1 => SingleTriggerLocked(r),
            (Err or Req, VfioUapi.VFIO_IRQ_SET_ACTION_TRIGGER) => -Errno.EINVAL,
            _ => -Errno.ENOTTY, // MSI/MSI-X masking is not exported by vfio-pci
        };
    }

    /// <summary>Resolves an eventfd number (eventfd_ctx_fdget): EBADF when not open, EINVAL when not an eventfd.</summary>
    /// <summary>The eventfd behind <paramref name="fd"/>; a negative fd means none (null, no error), as vfio's set-irqs handlers read it.</summary>
    private int EventFdLocked(int fd, out EventFdFile? eventFd)
    {
        AssertLocked();
        eventFd = null;
        if (fd < 0)
        {
            return 0;
        }
        var file = FileLocked(fd);
        if (file is null)
        {
            return -Errno.EBADF;
        }
        if (file is not EventFdFile e)
        {
            return -Errno.EINVAL;
        }
        eventFd = e;
        return 0;
    }

    private static void Replace(IrqLine line, EventFdFile? trigger)
    {
        trigger?.Get();
        line.Trigger?.Put();
        line.Trigger = trigger;
    }

    private int IntxMaskLocked(IrqRequest r, bool mask)
    {
        AssertLocked();
        var device = r.Device;
        if (device.ActiveIrqIndex != Intx || r.Start != 0 || r.Count != 1)
        {
            return -Errno.EINVAL;
        }
        var line = r.Line(0);
        if (r.EventFd)
        {
            if (mask)
            {
                return -Errno.ENOTTY;
            }
            // An unmask irqfd (vfio_virqfd_enable): each write to the eventfd unmasks INTx. A
            // negative fd detaches it; attaching a second one while one is attached is EBUSY.
            int fd = r.FdAt(0);
            if (fd < 0)
            {
                line.Unmask?.SetConsumer(null);
                line.Unmask?.Put();
                line.Unmask = null;
            }
            else
            {
                int e = EventFdLocked(fd, out var eventFd);
                if (e < 0)
                {
                    return e;
                }
                if (line.Unmask is not null)
                {
                    return -Errno.EBUSY;
                }
                eventFd!.Get();
                line.Unmask = eventFd;
                eventFd.SetConsumer(() =>
                {
                    using (Enter())
                    {
                        if (device.Irqs.Length > 0 && ReferenceEquals(device.Irqs[0][0], line))
                        {
                            UnmaskIntxLocked(device, line);
                        }
                    }
                });
                // A signal already in the eventfd when it is attached counts as one (virqfd polls it at once).
                if (eventFd.Count > 0)
                {
                    UnmaskIntxLocked(device, line);
                }
            }
            return 0;
        }
        if (r.None || r.BoolAt(0))
        {
            if (mask)
            {
                line.Masked = true;
            }
            else
            {
                UnmaskIntxLocked(device, line);
            }
        }
        return 0;
    }

    private static void UnmaskIntxLocked(SimulatedDevice device, IrqLine line)
    {
        device.Kernel.AssertLocked();
        if (!line.Masked || device.VirqDisabled)
        {
            return; // vfio_pci_intx_unmask_handler: nothing while user space disables INTx in the command register
        }
        line.Masked = false;
        // A level-triggered line still asserted fires again as soon as it is unmasked.
        if (line.Pending && device.ActiveIrqIndex == Intx)
        {
            line.Pending = false;
            line.Masked = true;
            line.Trigger?.Signal();
        }
    }

    private int IntxTriggerLocked(IrqRequest r)
    {
        AssertLocked();
        var device = r.Device;
        bool isIntx = device.ActiveIrqIndex == Intx;
        if (isIntx && r.Count == 0 && r.None)
        {
            DisableActiveLocked(device);
            return 0;
        }
        if (!(isIntx || device.ActiveIrqIndex < 0) || r.Start != 0 || r.Count != 1)
        {
            return -Errno.EINVAL;
        }
        var line = r.Line(0);
        if (r.EventFd)
        {
            int e = EventFdLocked(r.FdAt(0), out EventFdFile? eventFd);
            if (e < 0)
            {
                return e;
            }
            if (!isIntx)
            {
                device.ActiveIrqIndex = Intx;
                line.Masked = device.VirqDisabled; // vfio_intx_enable: masked while INTx is disabled in the command register
            }
            Replace(line, eventFd);
            if (eventFd is not null && line.Pending && !line.Masked)
            {
                line.Pending = false;
                line.Masked = true;
                eventFd.Signal();
            }
            return 0;
        }
        if (!isIntx)
        {
            return -Errno.EINVAL;
        }
        if (r.None || r.BoolAt(0))
        {
            line.Trigger?.Signal();
        }
        return 0;
    }

    private int MsiTriggerLocked(IrqRequest r)
    {
        AssertLocked();
        var device = r.Device;
        bool active = device.ActiveIrqIndex == r.Index;
        if (active && r.Count == 0 && r.None)
        {
            DisableActiveLocked(device);
            return 0;
        }
        if (!(active || device.ActiveIrqIndex < 0))
        {
            return -Errno.EINVAL;
        }
        if (r.EventFd)
        {
            // 6.1 sizes the vectors when MSI/MSI-X is enabled; later calls stay within them.
            if (active && r.Start + r.Count > device.EnabledVectors)
            {
                return -Errno.EINVAL;
            }
            var triggers = new EventFdFile?[r.Count];
            for (int i = 0; i < r.Count; i++)
            {
                int fd = r.FdAt(i);
                if (fd >= 0)
                {
                    int e = EventFdLocked(fd, out triggers[i]);
                    if (e < 0)
                    {
                        // vfio_msi_set_block sets vectors one by one and, on a failure, detaches
                        // every vector of the block up to the failed one (which it had already let go of);
                        // a failed enable disables MSI again.
                        for (int j = 0; active && j <= i; j++)
                        {
                            Replace(r.Line(r.Start + j), null);
                        }
                        return e;
                    }
                }
            }
            if (!active && r.Start + r.Count > HostIrqVectors)
            {
                return HostIrqVectors;
            }
            if (!active)
            {
                device.ActiveIrqIndex = r.Index;
                device.EnabledVectors = r.Start + r.Count;
                var model = (PciDeviceModel)device.Model;
                int index = r.Index;
                int vectors = r.Start + r.Count;
                Defer(() => model.VfioPci.Config.SetMessageInterrupts(index, true, vectors));
            }
            for (int i = 0; i < r.Count; i++)
            {
                var line = r.Line(r.Start + i);
                Replace(line, triggers[i]);
                if (triggers[i] is { } trigger && line.Pending)
                {
                    line.Pending = false;
                    trigger.Signal();
                }
            }
            if (r.Index == Msix)
            {
                // request_irq unmasks the vector in the device's table, free_irq masks it.
                var vfioPci = ((PciDeviceModel)device.Model).VfioPci;
                var used = triggers.Select(t => t is not null).ToArray();
                int first = r.Start;
                Defer(() =>
                {
                    for (int i = 0; i < used.Length; i++)
                    {
                        vfioPci.ProgramMsixVector(first + i, used[i]);
                    }
                });
            }
            return 0;
        }
        if (!active)
        {
            return -Errno.EINVAL;
        }
        for (int i = 0; i < r.Count; i++)
        {
            if (r.None || r.BoolAt(i))
            {
                r.Line(r.Start + i).Trigger?.Signal();
            }
        }
        return 0;
    }

    private int SingleTriggerLocked(IrqRequest r)
    {
        AssertLocked();
        var line = r.Line(0);
        if (r.None)
        {
            if (line.Trigger is null)
            {
                return -Errno.EINVAL;
            }
            if (r.Count > 0)
            {
                line.Trigger.Signal();
            }
            else
            {
                Replace(line, null);
            }
            return 0;
        }
        if (r.Count == 0)
        {
            return -Errno.EINVAL;
        }
        if (r.Bool)
        {
            if (r.BoolAt(0))
            {
                line.Trigger?.Signal();
            }
            return 0;
        }
        int fd = r.FdAt(0);
        if (fd == -1)
        {
            Replace(line, null);
        }
        else if (fd >= 0)
        {
            int e = EventFdLocked(fd, out var eventFd);
            if (e < 0)
            {
                return e;
            }
            Replace(line, eventFd);
        }
        return 0;
    }

    /// <summary>vfio_platform_set_irqs_ioctl in Linux 6.1: one vector per index; only level-triggered lines are maskable.</summary>
    private int SetPlatformIrqsLocked(IrqRequest r)
    {
        AssertLocked();
        var line = r.Line(0);
        var device = r.Device;
        if (r.Action == VfioUapi.VFIO_IRQ_SET_ACTION_TRIGGER)
        {
            if (r.Count == 0 && r.None)
            {
                Replace(line, null);
                return 0;
            }
            if (r.Start != 0 || r.Count != 1)
            {
                return -Errno.EINVAL;
            }
            if (r.EventFd)
            {
                int e = EventFdLocked(r.FdAt(0), out EventFdFile? eventFd);
                if (e < 0)
                {
                    return e;
                }
                Replace(line, eventFd);
                // The line is requested and enabled (unless masked): an interrupt the device raised
                // while nobody listened is taken now.
                if (eventFd is not null && line.Pending && !line.Masked)
                {
                    line.Pending = false;
                    FirePlatformLocked(device, r.Index, line, loopback: false);
                }
                return 0;
            }
            if (r.None || r.BoolAt(0))
            {
                FirePlatformLocked(device, r.Index, line, loopback: true);
            }
            return 0;
        }
        if (r.Action is not (VfioUapi.VFIO_IRQ_SET_ACTION_MASK or VfioUapi.VFIO_IRQ_SET_ACTION_UNMASK))
        {
            return -Errno.ENOTTY;
        }
        if (r.Start != 0 || r.Count != 1)
        {
            return -Errno.EINVAL;
        }
        if (!((PlatformDeviceModel)device.Model).IsLevelTriggered(r.Index))
        {
            return -Errno.EINVAL; // not VFIO_IRQ_INFO_MASKABLE: edge-triggered
        }
        bool mask = r.Action == VfioUapi.VFIO_IRQ_SET_ACTION_MASK;
        if (r.EventFd)
        {
            var slot = mask ? line.Mask : line.Unmask;
            slot?.SetConsumer(null);
            slot?.Put();
            EventFdFile? eventFd = null;
            int fd = r.FdAt(0);
            if (fd >= 0)
            {
                int e = EventFdLocked(fd, out eventFd);
                if (e < 0)
                {
                    return e;
                }
                eventFd!.Get();
                eventFd.SetConsumer(() =>
                {
                    using (Enter())
                    {
                        SetPlatformMaskLocked(device, line, mask);
                    }
                });
            }
            if (mask)
            {
                line.Mask = eventFd;
            }
            else
            {
                line.Unmask = eventFd;
            }
            return 0;
        }
        if (r.None || r.BoolAt(0))
        {
            SetPlatformMaskLocked(device, line, mask);
        }
        return 0;
    }

    private static void SetPlatformMaskLocked(SimulatedDevice device, IrqLine line, bool mask)
    {
        device.Kernel.AssertLocked();
        if (mask)
        {
            line.Masked = true;
            return;
        }
        line.Masked = false;
        // A level-triggered line the device still asserts fires again as soon as it is enabled.
        if (line.Pending && line.Trigger is not null)
        {
            line.Pending = false;
            int index = Array.FindIndex(device.Irqs, l => ReferenceEquals(l[0], line));
            FirePlatformLocked(device, index, line, loopback: false);
        }
    }

    /// <summary>
    /// The device raised the line (or user space looped a trigger back). Without a trigger eventfd the
    /// line is not requested and, like a masked line, the interrupt stays pending; a level-triggered
    /// line is masked when it fires (vfio_automasked_irq_handler), and a loopback on a masked one does nothing.
    /// </summary>
    private static bool FirePlatformLocked(SimulatedDevice device, int index, IrqLine line, bool loopback)
    {
        device.Kernel.AssertLocked();
        if (line.Masked || line.Trigger is null)
        {
            if (!loopback)
            {
                line.Pending = true;
            }
            return false;
        }
        if (((PlatformDeviceModel)device.Model).IsLevelTriggered(index))
        {
            line.Masked = true;
        }
        line.Trigger.Signal();
        return true;
    }

    private void DisableActiveLocked(SimulatedDevice device)
    {
        AssertLocked();
        int index = device.ActiveIrqIndex;
        if (index < 0)
        {
            return;
        }
        foreach (var line in device.Irqs[index])
        {
            Replace(line, null);
            line.Unmask?.SetConsumer(null);
            line.Unmask?.Put();
            line.Unmask = null;
            line.Masked = false;
            line.Pending = false;
        }
        device.ActiveIrqIndex = -1;
        device.EnabledVectors = 0;
        if (index is Msi or Msix && device.Model is PciDeviceModel model)
        {
            Defer(() => model.VfioPci.Config.SetMessageInterrupts(index, false));
        }
    }

    /// <summary>Every interrupt torn down at the last close of the device; the lock is held.</summary>
    internal void DisableIrqsLocked(SimulatedDevice device)
    {
        AssertLocked();
        foreach (var lines in device.Irqs)
        {
            foreach (var line in lines)
            {
                Replace(line, null);
                foreach (var e in new[] { line.Mask, line.Unmask })
                {
                    e?.SetConsumer(null);
                    e?.Put();
                }
                line.Mask = null;
                line.Unmask = null;
            }
        }
        device.Irqs = [];
        device.ActiveIrqIndex = -1;
        device.EnabledVectors = 0;
        Wake();
    }

    /// <summary>A platform model deasserting a level-triggered line; see <see cref="PlatformDeviceModel.LowerInterrupt"/>.</summary>
    internal void LowerInterrupt(SimulatedDevice device, int index)
    {
        using (Enter())
        {
            if (index < device.Irqs.Length)
            {
                device.Irqs[index][0].Pending = false;
            }
        }
    }

    /// <summary>A model raising an interrupt; see <see cref="DeviceModel.RaiseInterrupt"/>.</summary>
    internal bool RaiseInterrupt(SimulatedDevice device, int index, int vector)
    {
        using (Enter())
        {
            if (device.Irqs.Length == 0)
            {
                return false; // not open: nothing is set up to receive it
            }
            if (index < 0 || index >= device.Irqs.Length || vector < 0 || vector >= device.Irqs[index].Length)
            {
                throw new ArgumentOutOfRangeException(nameof(vector), $"The device has no interrupt {index}/{vector}.");
            }
            var line = device.Irqs[index][vector];
            if (device.Model is PlatformDeviceModel)
            {
                return FirePlatformLocked(device, index, line, loopback: false);
            }
            switch (index)
            {
                case Intx:
                    // vfio-pci's INTx handler masks the line and signals; it stays masked until unmasked.
                    if (device.ActiveIrqIndex != Intx || line.Masked)
                    {
                        line.Pending = true;
                        return false;
                    }
                    line.Masked = true;
                    line.Pending = false;
                    line.Trigger?.Signal();
                    return line.Trigger is not null;
                case Msi or Msix:
                    if (device.ActiveIrqIndex != index || vector >= device.EnabledVectors || line.Trigger is null)
                    {
                        line.Pending = true;
                        return false;
                    }
                    line.Trigger.Signal();
                    return true;
                default:
                    line.Trigger?.Signal();
                    return line.Trigger is not null;
            }
        }
    }

    /// <summary>
    /// User space set or cleared INTx disable in the command register (vfio_pci_intx_mask and
    /// vfio_pci_intx_unmask through vdev->virq_disabled): INTx is masked meanwhile and unmasked after.
    /// Called with the device's model lock held, never the kernel's.
    /// </summary>
    internal void SetVirqDisabled(SimulatedDevice device, bool disabled)
    {
        using (Enter())
        {
            device.VirqDisabled = disabled;
            if (device.ActiveIrqIndex != Intx || device.Irqs.Length == 0)
            {
                return;
            }
            var line = device.Irqs[Intx][0];
            if (disabled)
            {
                line.Masked = true;
            }
            else
            {
                UnmaskIntxLocked(device, line);
            }
        }
    }

    /// <summary>vdev->irq_type: the IRQ index vfio-pci has enabled for the device (-1: none).</summary>
    internal int ActiveIrqIndexOf(SimulatedDevice device)
    {
        using (Enter())
        {
            return device.ActiveIrqIndex;
        }
    }
}
