using Vfio.Interop;
using Vfio.Testing;
using static Vfio.Interop.Interop;

namespace Vfio.Tests.Simulation;

/// <summary>vfio-platform as Linux 6.1 behaves, driven through the seam.</summary>
public sealed unsafe class PlatformDeviceModelTests : IDisposable
{
    private const string Name = "fe000000.dma";
    private const uint Level = 0;
    private const uint Edge = 1;
    private readonly SimulatedKernel _kernel = new();

    public void Dispose() => _kernel.AssertNoLeaks();

    private static PlatformDeviceModel Dma(bool hasReset = true)
    {
        var model = new PlatformDeviceModel("acme,dma-v2", "acme,dma") { HasResetHandler = hasReset };
        model.AddRegion(0x1000);
        model.AddRegion(0x100);
        model.AddRegion(0x1000, readOnly: true);
        model.AddIrq(levelTriggered: true);
        model.AddIrq(levelTriggered: false);
        return model;
    }

    private static uint IrqFlags(SimulatedKernel kernel, SafeFd device, uint index)
    {
        var info = new vfio_irq_info { argsz = (uint)sizeof(vfio_irq_info), index = index };
        kernel.Ioctl(device, VfioUapi.VFIO_DEVICE_GET_IRQ_INFO, &info).Should().Be(0);
        info.count.Should().Be(1, "every platform interrupt has one vector");
        return info.flags;
    }

    private static vfio_device_info DeviceInfo(SimulatedKernel kernel, SafeFd device)
    {
        var info = new vfio_device_info { argsz = (uint)sizeof(vfio_device_info) };
        kernel.Ioctl(device, VfioUapi.VFIO_DEVICE_GET_INFO, &info).Should().Be(0);
        return info;
    }

    [Fact]
    public void SysfsShowsEveryCompatibleEntryAndTheOfModalias()
    {
        _kernel.AddPlatformDevice(Name, Dma(), iommuGroup: 9);
        Seam.ReadText(_kernel, _kernel.Sys("bus/platform/devices/" + Name + "/of_node/compatible")).Should().Be("acme,dma-v2\0acme,dma\0");
        Seam.ReadText(_kernel, _kernel.Sys("bus/platform/devices/" + Name + "/modalias")).Should().Be("of:NdmaT(null)Cacme,dma-v2Cacme,dma\n");
        Seam.ReadText(_kernel, _kernel.Sys("bus/platform/devices/" + Name + "/driver_override")).Should().Be("vfio-platform\n");
    }

    [Fact]
    public void AnAcpiDeviceHasAnAcpiModaliasAndNoDeviceTreeNode()
    {
        var model = new PlatformDeviceModel { AcpiHid = "AMDI8001" };
        model.AddRegion(0x1000);
        _kernel.AddPlatformDevice("AMDI8001:00", model, iommuGroup: 3);
        Seam.ReadText(_kernel, _kernel.Sys("bus/platform/devices/AMDI8001:00/modalias")).Should().Be("acpi:AMDI8001:\n");
        Seam.TryOpen(_kernel, _kernel.Sys("bus/platform/devices/AMDI8001:00/of_node/compatible"), out _).Should().Be(-Errno.ENOENT);
    }

    [Fact]
    public void AModelWithoutCompatibleOrAcpiIdIsRefused()
    {
        var act = () => _kernel.AddPlatformDevice(Name, new PlatformDeviceModel(), iommuGroup: 9);
        act.Should().Throw<InvalidOperationException>().WithMessage("*compatible*ACPI*");
    }

    [Fact]
    public void InterruptInfoReportsLevelAsMaskableAndAutomaskedAndEdgeAsNeither()
    {
        _kernel.AddPlatformDevice(Name, Dma(), iommuGroup: 9);
        using var opened = Seam.OpenDevice(_kernel, 9, Name);
        IrqFlags(_kernel, opened.Device, Level).Should().Be(VfioUapi.VFIO_IRQ_INFO_EVENTFD | VfioUapi.VFIO_IRQ_INFO_MASKABLE | VfioUapi.VFIO_IRQ_INFO_AUTOMASKED);
        IrqFlags(_kernel, opened.Device, Edge).Should().Be(VfioUapi.VFIO_IRQ_INFO_EVENTFD);
        var info = new vfio_irq_info { argsz = (uint)sizeof(vfio_irq_info), index = 2 };
        _kernel.Ioctl(opened.Device, VfioUapi.VFIO_DEVICE_GET_IRQ_INFO, &info).Should().Be(-Errno.EINVAL);
    }

    [Fact]
    public void RegionsReportReadWriteAndMmapPerResourceAndNoConfigSpace()
    {
        _kernel.AddPlatformDevice(Name, Dma(), iommuGroup: 9);
        using var opened = Seam.OpenDevice(_kernel, 9, Name);
        var info = DeviceInfo(_kernel, opened.Device);
        info.flags.Should().Be(VfioUapi.VFIO_DEVICE_FLAGS_PLATFORM | VfioUapi.VFIO_DEVICE_FLAGS_RESET);
        info.num_regions.Should().Be(3);
        info.num_irqs.Should().Be(2);
        const uint Rw = VfioUapi.VFIO_REGION_INFO_FLAG_READ | VfioUapi.VFIO_REGION_INFO_FLAG_WRITE;
        Seam.RegionInfo(_kernel, opened.Device, 0).flags.Should().Be(Rw | VfioUapi.VFIO_REGION_INFO_FLAG_MMAP);
        Seam.RegionInfo(_kernel, opened.Device, 1).flags.Should().Be(Rw, "a resource smaller than a page cannot be mapped");
        Seam.RegionInfo(_kernel, opened.Device, 2).flags.Should().Be(VfioUapi.VFIO_REGION_INFO_FLAG_READ | VfioUapi.VFIO_REGION_INFO_FLAG_MMAP);
        Seam.RegionInfo(_kernel, opened.Device, 1).offset.Should().Be(1UL << 40);
        var missing = new vfio_region_info { argsz = (uint)sizeof(vfio_region_info), index = 3 };
        _kernel.Ioctl(opened.Device, VfioUapi.VFIO_DEVICE_GET_REGION_INFO, &missing).Should().Be(-Errno.EINVAL);
    }

    [Fact]
    public void AReadOnlyRegionRefusesWritesAndWritableMappings()
    {
        _kernel.AddPlatformDevice(Name, Dma(), iommuGroup: 9);
        using var opened = Seam.OpenDevice(_kernel, 9, Name);
        long offset = 2L << 40;
        _kernel.PWrite(opened.Device, new byte[4], offset).Should().Be(-Errno.EINVAL);
        _kernel.PRead(opened.Device, new byte[4], offset).Should().Be(4);
        _kernel.Mmap(opened.Device, 0x1000, Flags.PROT_READ | Flags.PROT_WRITE, Flags.MAP_SHARED, offset, out _).Should().Be(-Errno.EINVAL);
        _kernel.Mmap(opened.Device, 0x1000, Flags.PROT_READ, Flags.MAP_SHARED, offset, out var mapping).Should().Be(0);
        mapping.Dispose();
        _kernel.PRead(opened.Device, new byte[4], (1L << 40) + 0x100).Should().Be(-Errno.EINVAL, "reads past the end of a region fail");
    }

    [Fact]
    public void AnEdgeInterruptCannotBeMaskedOrUnmasked()
    {
        _kernel.AddPlatformDevice(Name, Dma(), iommuGroup: 9);
        using var opened = Seam.OpenDevice(_kernel, 9, Name);
        Seam.SetIrqs(_kernel, opened.Device, Edge, VfioUapi.VFIO_IRQ_SET_DATA_NONE | VfioUapi.VFIO_IRQ_SET_ACTION_MASK, 0, 1).Should().Be(-Errno.EINVAL);
        Seam.SetIrqs(_kernel, opened.Device, Edge, VfioUapi.VFIO_IRQ_SET_DATA_NONE | VfioUapi.VFIO_IRQ_SET_ACTION_UNMASK, 0, 1).Should().Be(-Errno.EINVAL);
        Seam.SetIrqs(_kernel, opened.Device, Level, VfioUapi.VFIO_IRQ_SET_DATA_NONE | VfioUapi.VFIO_IRQ_SET_ACTION_MASK, 0, 1).Should().Be(0);
        Seam.SetIrqs(_kernel, opened.Device, Level, VfioUapi.VFIO_IRQ_SET_DATA_NONE | VfioUapi.VFIO_IRQ_SET_ACTION_MASK, 0, 2).Should().Be(-Errno.EINVAL, "one vector per index");
    }

    [Fact]
    public void AnEdgeInterruptSignalsEveryTimeItFires()
    {
        var model = Dma();
        _kernel.AddPlatformDevice(Name, model, iommuGroup: 9);
        using var opened = Seam.OpenDevice(_kernel, 9, Name);
        using var trigger = Seam.EventFd(_kernel);
        Seam.SetIrqEventFds(_kernel, opened.Device, Edge, 0, trigger.Value).Should().Be(0);
        model.RaiseInterrupt((int)Edge).Should().BeTrue();
        model.RaiseInterrupt((int)Edge).Should().BeTrue();
        Seam.ReadCounter(_kernel, trigger).Should().Be(2);
        Seam.SetIrqs(_kernel, opened.Device, Edge, VfioUapi.VFIO_IRQ_SET_DATA_NONE | VfioUapi.VFIO_IRQ_SET_ACTION_TRIGGER, 0, 0).Should().Be(0);
    }

    [Fact]
    public void ALevelInterruptIsMaskedWhenItFiresAndFiresAgainWhenUnmaskedWhileAsserted()
    {
        var model = Dma();
        _kernel.AddPlatformDevice(Name, model, iommuGroup: 9);
        using var opened = Seam.OpenDevice(_kernel, 9, Name);
        using var trigger = Seam.EventFd(_kernel, Flags.EFD_NONBLOCK);
        Seam.SetIrqEventFds(_kernel, opened.Device, Level, 0, trigger.Value).Should().Be(0);
        model.RaiseInterrupt((int)Level).Should().BeTrue();
        model.RaiseInterrupt((int)Level).Should().BeFalse("the line is automasked until unmasked");
        Seam.ReadCounter(_kernel, trigger).Should().Be(1);
        Seam.SetIrqs(_kernel, opened.Device, Level, VfioUapi.VFIO_IRQ_SET_DATA_NONE | VfioUapi.VFIO_IRQ_SET_ACTION_UNMASK, 0, 1).Should().Be(0);
        Seam.ReadCounter(_kernel, trigger).Should().Be(1, "the pending assertion fires as soon as the line is unmasked");
    }

    [Fact]
    public void ALevelLineLoweredWhileMaskedDoesNotFireWhenUnmaskedButAnEdgeStaysLatched()
    {
        var model = Dma();
        _kernel.AddPlatformDevice(Name, model, iommuGroup: 9);
        using var opened = Seam.OpenDevice(_kernel, 9, Name);
        using var trigger = Seam.EventFd(_kernel, Flags.EFD_NONBLOCK);
        Seam.SetIrqEventFds(_kernel, opened.Device, Level, 0, trigger.Value).Should().Be(0);
        model.RaiseInterrupt((int)Level).Should().BeTrue();
        model.RaiseInterrupt((int)Level).Should().BeFalse();
        model.LowerInterrupt((int)Level);
        Seam.SetIrqs(_kernel, opened.Device, Level, VfioUapi.VFIO_IRQ_SET_DATA_NONE | VfioUapi.VFIO_IRQ_SET_ACTION_UNMASK, 0, 1).Should().Be(0);
        Seam.ReadCounter(_kernel, trigger).Should().Be(1, "only the first assertion was delivered");
        Seam.ReadCounter(_kernel, trigger).Should().Be(unchecked((ulong)-Errno.EAGAIN));

        model.RaiseInterrupt((int)Edge).Should().BeFalse("no eventfd yet");
        model.LowerInterrupt((int)Edge);
        using var edge = Seam.EventFd(_kernel, Flags.EFD_NONBLOCK);
        Seam.SetIrqEventFds(_kernel, opened.Device, Edge, 0, edge.Value).Should().Be(0);
        Seam.ReadCounter(_kernel, edge).Should().Be(1, "an edge is latched, lowering does not undo it");
        var beyond = () => model.LowerInterrupt(2);
        beyond.Should().Throw<ArgumentOutOfRangeException>();
    }

    [Fact]
    public void ALoopbackTriggerOnAMaskedLevelLineDoesNothing()
    {
        _kernel.AddPlatformDevice(Name, Dma(), iommuGroup: 9);
        using var opened = Seam.OpenDevice(_kernel, 9, Name);
        using var trigger = Seam.EventFd(_kernel, Flags.EFD_NONBLOCK);
        Seam.SetIrqEventFds(_kernel, opened.Device, Level, 0, trigger.Value).Should().Be(0);
        const uint Loopback = VfioUapi.VFIO_IRQ_SET_DATA_NONE | VfioUapi.VFIO_IRQ_SET_ACTION_TRIGGER;
        Seam.SetIrqs(_kernel, opened.Device, Level, Loopback, 0, 1).Should().Be(0);
        Seam.ReadCounter(_kernel, trigger).Should().Be(1);
        Seam.SetIrqs(_kernel, opened.Device, Level, Loopback, 0, 1).Should().Be(0);
        Seam.ReadCounter(_kernel, trigger).Should().Be(unchecked((ulong)-Errno.EAGAIN), "the automasked handler ignores a masked line");
        Seam.SetIrqs(_kernel, opened.Device, Level, VfioUapi.VFIO_IRQ_SET_DATA_NONE | VfioUapi.VFIO_IRQ_SET_ACTION_UNMASK, 0, 1).Should().Be(0);
        Seam.ReadCounter(_kernel, trigger).Should().Be(unchecked((ulong)-Errno.EAGAIN), "a loopback leaves nothing pending");
    }

    [Fact]
    public void AnInterruptRaisedBeforeAnEventFdIsRegisteredIsTakenWhenOneIs()
    {
        var model = Dma();
        _kernel.AddPlatformDevice(Name, model, iommuGroup: 9);
        using var opened = Seam.OpenDevice(_kernel, 9, Name);
        model.RaiseInterrupt((int)Level).Should().BeFalse();
        using var trigger = Seam.EventFd(_kernel, Flags.EFD_NONBLOCK);
        Seam.SetIrqEventFds(_kernel, opened.Device, Level, 0, trigger.Value).Should().Be(0);
        Seam.ReadCounter(_kernel, trigger).Should().Be(1);
    }

    [Fact]
    public void BindingWithoutAResetHandlerFailsWithEnoentWhileResetIsRequired()
    {
        Seam.ReadText(_kernel, _kernel.Sys("module/vfio_platform/parameters/reset_required")).Should().Be("Y\n");
        var device = _kernel.AddPlatformDevice(Name, Dma(hasReset: false), iommuGroup: 9);
        device.Driver.Should().BeNull("vfio-platform refused the probe at boot");
        device.DriverOverride.Should().Be("vfio-platform");
        Seam.WriteText(_kernel, _kernel.Sys("bus/platform/drivers/vfio-platform/bind"), Name).Should().Be(-Errno.ENOENT);

        _kernel.PlatformResetRequired = false;
        Seam.ReadText(_kernel, _kernel.Sys("module/vfio_platform/parameters/reset_required")).Should().Be("N\n");
        Seam.WriteText(_kernel, _kernel.Sys("bus/platform/drivers/vfio-platform/bind"), Name).Should().BeGreaterThan(0);
        device.Driver.Should().Be("vfio-platform");
    }

    [Fact]
    public void ADeviceWithoutAnIommuBindsOnlyInUnsafeNoIommuMode()
    {
        _kernel.Iommu = SimulatedIommuState.Absent;
        _kernel.PlatformResetRequired = false;
        var device = _kernel.AddPlatformDevice(Name, Dma(), 0, SimulatedGroupKind.NoIommu, "vfio-platform");
        device.Driver.Should().BeNull("vfio-platform finds no IOMMU group and no-IOMMU mode is off");
        Seam.WriteText(_kernel, _kernel.Sys("bus/platform/drivers/vfio-platform/bind"), Name).Should().Be(-Errno.EINVAL);

        _kernel.UnsafeNoIommuMode = true;
        Seam.WriteText(_kernel, _kernel.Sys("bus/platform/drivers/vfio-platform/bind"), Name).Should().BeGreaterThan(0);
        device.Driver.Should().Be("vfio-platform");
        Seam.ReadText(_kernel, _kernel.Sys("kernel/iommu_groups/0/name")).Should().Be("vfio-noiommu\n");
    }

    [Fact]
    public void BindingToVfioPlatformNeedsDriverOverride()
    {
        var device = _kernel.AddPlatformDevice(Name, Dma(), iommuGroup: 9, driver: null);
        Seam.WriteText(_kernel, _kernel.Sys("bus/platform/drivers/vfio-platform/bind"), Name).Should().Be(-Errno.ENODEV);
        Seam.WriteText(_kernel, _kernel.Sys("bus/platform/devices/" + Name + "/driver_override"), "vfio-platform").Should().BeGreaterThan(0);
        Seam.WriteText(_kernel, _kernel.Sys("bus/platform/drivers/vfio-platform/bind"), Name).Should().BeGreaterThan(0);
        device.Driver.Should().Be("vfio-platform");
    }

    [Fact]
    public void WithoutAResetHandlerTheDeviceReportsNoResetAndResetFailsWithEinval()
    {
        _kernel.PlatformResetRequired = false;
        _kernel.AddPlatformDevice(Name, Dma(hasReset: false), iommuGroup: 9);
        using var opened = Seam.OpenDevice(_kernel, 9, Name);
        DeviceInfo(_kernel, opened.Device).flags.Should().Be(VfioUapi.VFIO_DEVICE_FLAGS_PLATFORM);
        _kernel.Ioctl(opened.Device, VfioUapi.VFIO_DEVICE_RESET, 0).Should().Be(-Errno.EINVAL);
    }

    [Fact]
    public void AFailingResetFailsTheOpenOnlyWhileResetIsRequired()
    {
        var model = Dma();
        model.ResetErrno = Errno.EINVAL;
        _kernel.AddPlatformDevice(Name, model, iommuGroup: 9);
        using (var container = Seam.Container(_kernel))
        using (var group = Seam.Group(_kernel, 9))
        {
            Seam.SetContainer(_kernel, group, container).Should().Be(0);
            _kernel.Ioctl(container, VfioUapi.VFIO_SET_IOMMU, VfioUapi.VFIO_TYPE1v2_IOMMU).Should().Be(0);
            Seam.GetDeviceFd(_kernel, group, Name, out _).Should().Be(-Errno.EINVAL);
        }

        var relaxed = Dma();
        relaxed.ResetErrno = Errno.ETIMEDOUT;
        _kernel.PlatformResetRequired = false;
        _kernel.AddPlatformDevice("fe100000.dma", relaxed, iommuGroup: 10);
        using var opened = Seam.OpenDevice(_kernel, 10, "fe100000.dma");
        _kernel.Ioctl(opened.Device, VfioUapi.VFIO_DEVICE_RESET, 0).Should().Be(-Errno.ETIMEDOUT);
    }
}
