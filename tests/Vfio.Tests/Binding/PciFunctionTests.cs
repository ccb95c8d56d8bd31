using Vfio.Testing;
using Vfio.Tests.Simulation;

namespace Vfio.Tests.Binding;

/// <summary>Reading PCI functions from sysfs, whatever they are bound to.</summary>
public sealed class PciFunctionTests
{
    private readonly SimulatedKernel _kernel = new();

    [Fact]
    public void EveryFunctionIsReadInAddressOrderWithItsIdsDriverOverrideAndGroup()
    {
        _kernel.AddPciDevice("0000:00:06.0", new PciDeviceModel(0x1b36, 0x0010, 0x010802) { SubsystemVendorId = 0x1af4, SubsystemId = 0x1100 }, 7, "nvme");
        var edu = _kernel.AddPciDevice("0000:00:03.0", 0x1234, 0x11e8, 0x00ff00, 5, driver: null);
        Seam.WriteText(_kernel, edu.SysfsPath + "/driver_override", "vfio-pci").Should().BeGreaterThan(0);

        var functions = PciFunction.ReadAll(_kernel);

        functions.Should().Equal(
            new PciFunction(PciAddress.Parse("0000:00:03.0"), 0x1234, 0x11e8, 0x00ff00, 0, 0, null, "vfio-pci", 5, IommuGroupKind.Iommu),
            new PciFunction(PciAddress.Parse("0000:00:06.0"), 0x1b36, 0x0010, 0x010802, 0x1af4, 0x1100, "nvme", null, 7, IommuGroupKind.Iommu));
        functions[1].BlocksGroup.Should().BeTrue();
        functions[1].IsBoundToVfio.Should().BeFalse();
    }

    [Fact]
    public void AFunctionOnVfioPciIsBoundToVfioAndBlocksNothing()
    {
        _kernel.AddPciDevice("0000:00:03.0", 0x1234, 0x11e8, 0x00ff00, 5);

        var function = PciFunction.Read(_kernel, PciAddress.Parse("0000:00:03.0"));

        function.IsBoundToVfio.Should().BeTrue();
        function.BlocksGroup.Should().BeFalse();
        function.IsBridge.Should().BeFalse();
    }

    [Theory]
    [InlineData(0x060400u, true)]
    [InlineData(0x060401u, true)]
    [InlineData(0x060700u, true)]
    [InlineData(0x060000u, false)]
    [InlineData(0x010802u, false)]
    public void BridgesAreTheFunctionsWithATypeOneOrTwoHeader(uint classCode, bool bridge)
    {
        new PciFunction(default, 0, 0, classCode, 0, 0, null, null, null, null).IsBridge.Should().Be(bridge);
    }

    [Fact]
    public void ANoIommuGroupIsReadAsOne()
    {
        _kernel.UnsafeNoIommuMode = true;
        _kernel.AddPciDevice("0000:00:05.0", new PciDeviceModel(0x1af4, 0x1000, 0x020000), 0, SimulatedGroupKind.NoIommu, "vfio-pci");

        PciFunction.Read(_kernel, PciAddress.Parse("0000:00:05.0")).GroupKind.Should().Be(IommuGroupKind.NoIommu);
        IommuGroupInfo.Read(_kernel, 0).NodePath(_kernel).Should().Be(_kernel.Dev("vfio/noiommu-0"));
    }

    [Fact]
    public void AnAddressThatIsNotThereIsNamedInTheError()
    {
        var read = () => PciFunction.Read(_kernel, PciAddress.Parse("0000:00:09.0"));

        read.Should().Throw<VfioNotFoundException>().Which.Message.Should().Contain("0000:00:09.0").And.Contain("vfio list");
    }

    [Fact]
    public void AFunctionWhoseIdsCannotBeReadIsLeftOutOfTheListAndNamedWhenAskedFor()
    {
        var broken = _kernel.AddPciDevice("0000:00:03.0", 0x1234, 0x11e8, 0x00ff00, 5);
        _kernel.AddPciDevice("0000:00:04.0", 0x1234, 0x11e8, 0x00ff00, 6);
        _kernel.Sysfs.Directory(broken.SysfsRelative).Attribute("device", () => "0xffffffffff\n");

        PciFunction.ReadAll(_kernel).Select(f => f.Address.ToString()).Should().Equal("0000:00:04.0");
        var read = () => PciFunction.Read(_kernel, PciAddress.Parse("0000:00:03.0"));
        read.Should().Throw<VfioException>().WithMessage("*0000:00:03.0*device*0xffffffffff*");
    }
}
