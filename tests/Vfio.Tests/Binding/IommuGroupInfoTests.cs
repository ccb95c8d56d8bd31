using Vfio.Testing;

namespace Vfio.Tests.Binding;

/// <summary>IOMMU groups as sysfs shows them: members, drivers, viability.</summary>
public sealed class IommuGroupInfoTests
{
    private readonly SimulatedKernel _kernel = new();

    [Fact]
    public void AGroupWithAMemberOnADmaUsingDriverIsNotViableAndNamesIt()
    {
        _kernel.AddPciDevice("0000:00:04.0", 0x1234, 0x11e8, 0x00ff00, 4);
        _kernel.AddPciDevice("0000:00:04.1", 0x1b36, 0x0010, 0x010802, 4, "nvme");

        var group = IommuGroupInfo.Read(_kernel, 4);

        group.Members.Should().Equal(new IommuGroupMember("0000:00:04.0", "vfio-pci"), new IommuGroupMember("0000:00:04.1", "nvme"));
        group.IsViable.Should().BeFalse();
        group.BlockingMembers.Should().Equal(new IommuGroupMember("0000:00:04.1", "nvme"));
        group.HasVfioMember.Should().BeTrue();
    }

    [Theory]
    [InlineData("pcieport")]
    [InlineData("pci-stub")]
    [InlineData("mlx5_vfio_pci")]
    [InlineData(null)]
    public void DriversThatManageDmaThemselvesAndUnboundDevicesKeepAGroupViable(string? driver)
    {
        _kernel.AddPciDevice("0000:00:04.0", 0x1234, 0x11e8, 0x00ff00, 4);
        _kernel.AddPciDevice("0000:00:04.1", 0x8086, 0x1234, 0x020000, 4, driver);

        IommuGroupInfo.Read(_kernel, 4).IsViable.Should().BeTrue();
    }

    [Fact]
    public void EveryGroupIsReadInNumberOrder()
    {
        _kernel.AddPciDevice("0000:00:06.0", 0x1b36, 0x0010, 0x010802, 12, "nvme");
        _kernel.AddPciDevice("0000:00:03.0", 0x1234, 0x11e8, 0x00ff00, 3);

        IommuGroupInfo.ReadAll(_kernel).Select(g => g.Id).Should().Equal(3, 12);
    }

    [Fact]
    public void AGroupThatIsNotThereIsNamed()
    {
        var read = () => IommuGroupInfo.Read(_kernel, 42);

        read.Should().Throw<VfioNotFoundException>().Which.Message.Should().Contain("IOMMU group 42");
    }
}
