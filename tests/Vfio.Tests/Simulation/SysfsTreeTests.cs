using Vfio.Interop;
using Vfio.Testing;

namespace Vfio.Tests.Simulation;

public sealed class SysfsTreeTests : IDisposable
{
    private readonly SimulatedKernel _kernel = new();

    public SysfsTreeTests()
    {
        _kernel.AddPciDevice("0000:00:03.0", 0x1234, 0x11e8, 0x00ff00, iommuGroup: 5);
        _kernel.AddPciDevice("0000:00:04.0", 0x8086, 0x10d3, 0x020000, iommuGroup: 6, driver: "e1000e");
    }

    public void Dispose() => _kernel.AssertNoLeaks();

    [Fact]
    public void PciAttributesReadAsTheKernelWritesThem()
    {
        Seam.ReadText(_kernel, _kernel.Sys("bus/pci/devices/0000:00:04.0/vendor")).Should().Be("0x8086\n");
        Seam.ReadText(_kernel, _kernel.Sys("bus/pci/devices/0000:00:04.0/device")).Should().Be("0x10d3\n");
        Seam.ReadText(_kernel, _kernel.Sys("bus/pci/devices/0000:00:04.0/class")).Should().Be("0x020000\n");
        Seam.ReadText(_kernel, _kernel.Sys("bus/pci/devices/0000:00:04.0/driver_override")).Should().Be("(null)\n");
    }

    [Fact]
    public void LinksAreRelativeAsInTheKernel()
    {
        _kernel.ReadLink(_kernel.Sys("bus/pci/devices/0000:00:03.0"), out var device).Should().Be(0);
        device.Should().Be("../../../devices/pci0000:00/0000:00:03.0");
        _kernel.ReadLink(_kernel.Sys("bus/pci/devices/0000:00:03.0/iommu_group"), out var group).Should().Be(0);
        group.Should().Be("../../../kernel/iommu_groups/5");
        _kernel.ReadLink(_kernel.Sys("bus/pci/devices/0000:00:03.0/driver"), out var driver).Should().Be(0);
        driver.Should().Be("../../../bus/pci/drivers/vfio-pci");
        _kernel.ReadLink(_kernel.Sys("bus/pci/devices/0000:00:03.0/vendor"), out _).Should().Be(-Errno.EINVAL);
        _kernel.ListDirectory(_kernel.Sys("kernel/iommu_groups/6/devices"), out var names).Should().Be(0);
        names.Should().Equal("0000:00:04.0");
    }

    [Fact]
    public void BindingThroughDriverOverrideAndProbeMakesTheGroupNodeAppear()
    {
        Seam.TryOpen(_kernel, _kernel.Dev("vfio/6"), out _).Should().Be(-Errno.ENOENT);
        Seam.WriteText(_kernel, _kernel.Sys("bus/pci/devices/0000:00:04.0/driver_override"), "vfio-pci\n").Should().Be(9);
        Seam.WriteText(_kernel, _kernel.Sys("bus/pci/drivers/e1000e/unbind"), "0000:00:04.0").Should().Be(12);
        Seam.WriteText(_kernel, _kernel.Sys("bus/pci/drivers_probe"), "0000:00:04.0").Should().Be(12);
        _kernel.FindDevice("0000:00:04.0").Driver.Should().Be("vfio-pci");
        using (Seam.Group(_kernel, 6))
        {
        }
        Seam.WriteText(_kernel, _kernel.Sys("bus/pci/drivers/vfio-pci/unbind"), "0000:00:04.0").Should().Be(12);
        Seam.WriteText(_kernel, _kernel.Sys("bus/pci/devices/0000:00:04.0/driver_override"), "\n").Should().Be(1);
        Seam.WriteText(_kernel, _kernel.Sys("bus/pci/drivers/e1000e/bind"), "0000:00:04.0").Should().Be(12);
        _kernel.FindDevice("0000:00:04.0").Driver.Should().Be("e1000e");
    }

    [Fact]
    public void BindRefusesADeviceThatDoesNotMatchOrIsBound()
    {
        Seam.WriteText(_kernel, _kernel.Sys("bus/pci/drivers/vfio-pci/bind"), "0000:00:04.0").Should().Be(-Errno.ENODEV, "vfio-pci matches only by override");
        Seam.WriteText(_kernel, _kernel.Sys("bus/pci/drivers/e1000e/bind"), "0000:00:04.0").Should().Be(-Errno.EBUSY);
        Seam.WriteText(_kernel, _kernel.Sys("bus/pci/drivers/e1000e/bind"), "0000:00:09.0").Should().Be(-Errno.ENODEV);
    }

    [Fact]
    public void AHostDriverCannotProbeWhileUserSpaceOwnsTheGroupsDma()
    {
        _kernel.AddPciDevice("0000:00:03.1", 0x8086, 0x10d3, 0x020000, iommuGroup: 5, driver: null);
        using var container = Seam.Container(_kernel);
        using var group = Seam.Group(_kernel, 5);
        Seam.SetContainer(_kernel, group, container).Should().Be(0);
        var act = () => ((SimulatedPciDevice)_kernel.FindDevice("0000:00:03.1")).Bind("e1000e");
        act.Should().Throw<InvalidOperationException>().WithMessage("*EBUSY*");
    }

    [Fact]
    public async Task UnbindingADeviceInUseWaitsForItsReleaseAndSignalsTheRequest()
    {
        var opened = Seam.OpenDevice(_kernel, 5, "0000:00:03.0");
        using var request = Seam.EventFd(_kernel);
        Seam.SetIrqEventFds(_kernel, opened.Device, VfioUapi.VFIO_PCI_REQ_IRQ_INDEX, 0, request.Value).Should().Be(0);
        var device = (SimulatedPciDevice)_kernel.FindDevice("0000:00:03.0");
        var unbind = Task.Run(device.Unbind);
        Seam.ReadCounter(_kernel, request).Should().BeGreaterThan(0, "the kernel asked for the device back");
        unbind.IsCompleted.Should().BeFalse();
        opened.Dispose();
        await unbind.WaitAsync(TimeSpan.FromMinutes(1));
        device.Driver.Should().BeNull();
    }

    [Fact]
    public void DeniedNodesFailWithTheChosenErrno()
    {
        string path = _kernel.Sys("bus/pci/devices/0000:00:03.0/driver_override");
        _kernel.DenyAccess(path);
        Seam.WriteText(_kernel, path, "vfio-pci").Should().Be(-Errno.EACCES);
        _kernel.DenyAccess(_kernel.Dev("vfio/5"), Errno.EPERM);
        Seam.TryOpen(_kernel, _kernel.Dev("vfio/5"), out _).Should().Be(-Errno.EPERM);
        _kernel.AllowAccess(path);
        Seam.ReadText(_kernel, path).Should().Be("(null)\n");
    }

    [Fact]
    public void ReadOnlyAttributesCannotBeOpenedForWriting()
    {
        Seam.WriteText(_kernel, _kernel.Sys("bus/pci/devices/0000:00:03.0/vendor"), "1").Should().Be(-Errno.EACCES);
    }

    [Fact]
    public void PlatformDevicesShowTheirCompatibleString()
    {
        var model = new PlatformDeviceModel("arm,pl330");
        model.AddRegion(0x1000);
        model.AddIrq();
        _kernel.AddPlatformDevice("fe000000.dma", model, iommuGroup: 9);
        Seam.ReadText(_kernel, _kernel.Sys("bus/platform/devices/fe000000.dma/of_node/compatible")).Should().Be("arm,pl330\0");
        _kernel.ReadLink(_kernel.Sys("bus/platform/devices/fe000000.dma/driver"), out var driver).Should().Be(0);
        driver.Should().Be("../../../bus/platform/drivers/vfio-platform");
        using var opened = Seam.OpenDevice(_kernel, 9, "fe000000.dma");
    }

    [Fact]
    public void WritingAUuidToCreateMakesAnMdevWithItsOwnGroup()
    {
        var type = new SimulatedMdevType("1", 2, () => new PciDeviceModel(0x4348, 0x3253, 0x070002), "Single port serial");
        _kernel.AddMdevParent("mtty", "mtty", type);
        string types = "class/mdev_bus/mtty/mdev_supported_types/mtty-1/";
        Seam.ReadText(_kernel, _kernel.Sys(types + "available_instances")).Should().Be("2\n");
        const string Uuid = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001";
        Seam.WriteText(_kernel, _kernel.Sys(types + "create"), Uuid).Should().Be(36);
        Seam.WriteText(_kernel, _kernel.Sys(types + "create"), Uuid).Should().Be(-Errno.EEXIST);
        Seam.ReadText(_kernel, _kernel.Sys(types + "available_instances")).Should().Be("1\n");
        _kernel.ReadLink(_kernel.Sys("bus/mdev/devices/" + Uuid + "/iommu_group"), out var group).Should().Be(0);
        int id = int.Parse(group.Split('/')[^1], System.Globalization.CultureInfo.InvariantCulture);
        using (Seam.OpenDevice(_kernel, id, Uuid))
        {
        }
        Seam.WriteText(_kernel, _kernel.Sys("bus/mdev/devices/" + Uuid + "/remove"), "1").Should().Be(1);
        Seam.ReadText(_kernel, _kernel.Sys(types + "available_instances")).Should().Be("2\n");
    }
}
