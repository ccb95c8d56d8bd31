using System.Text;
using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio.Scenarios;

/// <summary>
/// Interrupts of the edu device on the public API: what vfio-pci reports for every index, MSI and
/// INTx (with a resample eventfd) driven by edu's raise-interrupt register, and the kernel's request
/// to release the device when it is unbound from vfio-pci while open (REQ).
/// </summary>
internal static class InterruptScenarios
{
    private const ulong RegInterruptStatus = 0x24;
    private const ulong RegRaise = 0x60;
    private const ulong RegAcknowledge = 0x64;
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    /// <summary>
    /// The first version whose vfio-pci offers the error interrupt index for a conventional PCI
    /// function too (measured: 6.1.192 and 6.12.118, 7.2.13 refuse it; 7.3.4 offers it).
    /// </summary>
    private static readonly Version ErrIndexForEveryFunction = new(7, 3);

    /// <summary>Every interrupt scenario, in the order they run (the unbind last: it rebinds the device afterwards).</summary>
    public static IReadOnlyList<Scenario> All { get; } =
    [
        new("irq_info_every_index", IrqInfoEveryIndex),
        new("irq_msi_enable_disable", MsiEnableDisable),
        new("irq_intx_resample_unmask", IntxResampleUnmask),
        new("irq_req_on_unbind_releases", ReqOnUnbindReleases),
    ];

    public static Task IrqInfoEveryIndex(ScenarioContext context) => WithOpenAsync(context, (device, _) =>
    {
        IReadOnlyList<IrqInfo> infos = device.GetIrqInfos();
        context.Note("irq info: " + string.Join(", ", infos.Select(i => FormattableString.Invariant($"{i.Index}:count={i.Count},flags=0x{i.Flags:x}"))));
        Check.Equal(5, infos.Count, "interrupt indexes of a vfio-pci device");
        const uint EventFd = VfioUapi.VFIO_IRQ_INFO_EVENTFD;
        const uint NoResize = VfioUapi.VFIO_IRQ_INFO_NORESIZE;
        Expect(infos[PciIrq.Intx], 1, EventFd | VfioUapi.VFIO_IRQ_INFO_MASKABLE | VfioUapi.VFIO_IRQ_INFO_AUTOMASKED);
        Expect(infos[PciIrq.Msi], 1, EventFd | NoResize);
        Expect(infos[PciIrq.Msix], 0, EventFd | NoResize);
        Expect(infos[PciIrq.Req], 1, EventFd | NoResize);
        if (context.KernelVersion < ErrIndexForEveryFunction)
        {
            // edu is conventional PCI: before 7.3, vfio-pci offers the ERR index to PCI Express
            // functions only and answers EINVAL for it (the library reads that as count 0).
            Expect(infos[PciIrq.Err], 0, 0);
            try
            {
                device.GetIrqInfo(PciIrq.Err);
                throw new ScenarioFailedException("VFIO_DEVICE_GET_IRQ_INFO for ERR of a conventional PCI function succeeded before Linux 7.3");
            }
            catch (VfioException e) when (e.Errno == Errno.EINVAL)
            {
            }
        }
        else
        {
            // From 7.3 on, vfio_pci_ioctl_get_irq_info offers ERR for every function, with one vector.
            Expect(infos[PciIrq.Err], 1, EventFd | NoResize);
        }
        return Task.CompletedTask;
    });

    public static Task MsiEnableDisable(ScenarioContext context) => WithOpenAsync(context, async (device, bar0) =>
    {
        using var timeout = new CancellationTokenSource(Timeout);
        using (InterruptSet msi = device.EnableInterrupts(PciIrq.Msi))
        {
            await RaiseAndWaitAsync(bar0, msi, timeout.Token).ConfigureAwait(false);
            ExpectErrno(() => msi.Mask(0), Errno.ENOTTY, "masking MSI");
            msi.DisableVectors(0);
            msi.EnableVectors(0);
            await RaiseAndWaitAsync(bar0, msi, timeout.Token).ConfigureAwait(false);
        }
        try
        {
            using InterruptSet msix = device.EnableInterrupts(PciIrq.Msix);
            throw new ScenarioFailedException("enabling MSI-X on edu, which has none, succeeded");
        }
        catch (VfioNotSupportedException)
        {
        }
        // MSI is off again: INTx can be enabled, which vfio-pci refuses while MSI is on.
        using (device.EnableInterrupts(PciIrq.Intx))
        {
        }
        using (InterruptSet again = device.EnableInterrupts(PciIrq.Msi))
        {
            await RaiseAndWaitAsync(bar0, again, timeout.Token).ConfigureAwait(false);
        }
    });

    public static Task IntxResampleUnmask(ScenarioContext context) => WithOpenAsync(context, async (device, bar0) =>
    {
        using var timeout = new CancellationTokenSource(Timeout);
        using InterruptSet intx = device.EnableInterrupts(PciIrq.Intx);
        intx.EnableResample();
        Check.Fails(AttachUnmaskEventFd(device), Errno.EBUSY, "VFIO_DEVICE_SET_IRQS with a second INTx unmask eventfd");

        bar0.Write32(RegRaise, 1);
        Check.True(await intx.WaitAsync(0, timeout.Token).ConfigureAwait(false) >= 1, "INTx fired");
        bar0.Write32(RegAcknowledge, 1);
        // The kernel masked INTx when it fired: a new assertion waits until the resample eventfd unmasks it.
        bar0.Write32(RegRaise, 2);
        var second = intx.WaitAsync(0, timeout.Token).AsTask();
        intx.Unmask(0);
        Check.True(await second.ConfigureAwait(false) >= 1, "INTx fired again after the resample unmask");
        Check.Equal(2u, bar0.Read32(RegInterruptStatus), "interrupt status");
        bar0.Write32(RegAcknowledge, 2);
        intx.Unmask(0);
    });

    public static Task ReqOnUnbindReleases(ScenarioContext context) => WithDeviceAsync(context, async device =>
    {
        var kernel = context.Kernel;
        string address = context.DeviceAddress;
        DeviceReference open = device.Open();
        var asked = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        device.WhenReleaseRequested = count =>
        {
            asked.TrySetResult(count);
            open.Dispose();
        };
        // The write blocks in the kernel until the device file closes, so it runs on a thread of its own.
        var unbind = Task.Factory.StartNew(() => WriteSysfs(kernel, "bus/pci/drivers/vfio-pci/unbind", address),
            CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        try
        {
            int count = await asked.Task.WaitAsync(Timeout).ConfigureAwait(false);
            Check.Equal(0, count, "the first request's count");
            await unbind.WaitAsync(Timeout).ConfigureAwait(false);
            Check.True(!device.IsOpen, "the device is still open after its holder released it");
            Check.Fails(kernel.ReadLink(kernel.Sys("bus/pci/devices/" + address + "/driver"), out _), Errno.ENOENT, "readlink of the unbound device's driver");
        }
        finally
        {
            // Never leave the unbind blocked: release the device if the request did not come.
            device.WhenReleaseRequested = null;
            if (!asked.Task.IsCompleted)
            {
                open.Dispose();
            }
            await unbind.WaitAsync(Timeout).ConfigureAwait(false);
            WriteSysfs(kernel, "bus/pci/devices/" + address + "/driver_override", "vfio-pci");
            WriteSysfs(kernel, "bus/pci/drivers_probe", address);
        }
        Check.Ok(kernel.ReadLink(kernel.Sys("bus/pci/devices/" + address + "/driver"), out string driver), "readlink of the rebound device's driver");
        Check.True(driver.EndsWith("/vfio-pci", StringComparison.Ordinal), "the device is bound to " + driver + " after the probe");
    });

    /// <summary>Wires one more unmask (resample) eventfd to INTx through the seam; the kernel keeps one.</summary>
    private static unsafe int AttachUnmaskEventFd(VfioDevice device)
    {
        var kernel = device.Kernel;
        Check.Ok(kernel.EventFd(0, 0, out SafeFd eventFd), "eventfd");
        using (eventFd)
        {
            byte* buffer = stackalloc byte[sizeof(vfio_irq_set) + sizeof(int)];
            var set = (vfio_irq_set*)buffer;
            *set = new vfio_irq_set
            {
                argsz = (uint)(sizeof(vfio_irq_set) + sizeof(int)),
                flags = VfioUapi.VFIO_IRQ_SET_DATA_EVENTFD | VfioUapi.VFIO_IRQ_SET_ACTION_UNMASK,
                index = PciIrq.Intx,
                count = 1,
            };
            *(int*)(buffer + sizeof(vfio_irq_set)) = eventFd.Value;
            return kernel.Ioctl(device.DeviceFd, VfioUapi.VFIO_DEVICE_SET_IRQS, buffer);
        }
    }

    private static void Expect(IrqInfo info, uint count, uint flags)
    {
        Check.Equal(count, info.Count, FormattableString.Invariant($"vectors of index {info.Index}"));
        Check.Equal(flags, info.Flags, FormattableString.Invariant($"flags of index {info.Index}"));
    }

    private static void ExpectErrno(Action action, int errno, string what)
    {
        try
        {
            action();
        }
        catch (VfioException e) when (e.Errno == errno)
        {
            return;
        }
        throw new ScenarioFailedException(what + " did not fail with " + Errno.Name(errno));
    }

    private static async Task RaiseAndWaitAsync(MmioRegion bar0, InterruptSet set, CancellationToken cancellationToken)
    {
        bar0.Write32(RegRaise, 1);
        Check.True(await set.WaitAsync(0, cancellationToken).ConfigureAwait(false) >= 1, "the interrupt fired");
        Check.Equal(1u, bar0.Read32(RegInterruptStatus), "interrupt status");
        bar0.Write32(RegAcknowledge, 1);
    }

    private static void WriteSysfs(VfioKernel kernel, string relative, string text)
    {
        string path = kernel.Sys(relative);
        Check.Ok(kernel.Open(path, Flags.O_WRONLY, out SafeFd fd), "open " + path);
        using (fd)
        {
            long n = kernel.Write(fd, Encoding.ASCII.GetBytes(text));
            if (n < 0)
            {
                Check.Ok((int)n, "write " + path);
            }
        }
    }

    /// <summary>Registers the context's edu function with a bare driver (no interrupts of its own) and cleans up.</summary>
    private static Task WithDeviceAsync(ScenarioContext context, Func<BareEdu, Task> body) =>
        ScenarioRegistry.WithRegisteredAsync<BareEdu>(context, new BareEduDriver(), context.DeviceAddress, (_, device) => body(device));

    private static Task WithOpenAsync(ScenarioContext context, Func<BareEdu, MmioRegion, Task> body) => WithDeviceAsync(context, async device =>
    {
        using DeviceReference open = device.Open();
        device.EnableCommand(memorySpace: true, busMaster: true);
        using MmioRegion bar0 = device.OpenRegion(0);
        await body(device, bar0).ConfigureAwait(false);
    });

    /// <summary>The edu function with no driver logic: the scenario enables interrupts itself.</summary>
    private sealed class BareEdu(PciDeviceContext context) : PciVfioDevice(context)
    {
        public Action<int>? WhenReleaseRequested { get; set; }

        protected override void OnReleaseRequested(int count) => WhenReleaseRequested?.Invoke(count);
    }

    private sealed class BareEduDriver() : PciDriver<BareEdu>("edu-bare", PciMatch.Id(0x1234, 0x11e8))
    {
        protected internal override BareEdu CreateDevice(PciDeviceContext context) => new(context);
    }
}
