namespace Vfio.Tests.Sysfs;

/// <summary>The syntax every name is checked against before it becomes part of a sysfs or /dev path.</summary>
public sealed class KernelNamesTests
{
    [Theory]
    [InlineData("PciAddress", "0000:00:03.0")]
    [InlineData("PciAddress", "0001:ff:1f.7")]
    [InlineData("Device", "mtty")]
    [InlineData("Device", "fe000000.dma")]
    [InlineData("Device", "LNRO0005:00")]
    [InlineData("Device", "0000:00:02.0")]
    [InlineData("Driver", "vfio-pci")]
    [InlineData("Driver", "snd_hda_intel")]
    [InlineData("MdevType", "mtty-2")]
    [InlineData("MdevType", "i915-GVTg_V5_4")]
    [InlineData("Uuid", "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001")]
    [InlineData("GroupId", "0")]
    [InlineData("GroupId", "17")]
    [InlineData("Cdev", "vfio0")]
    [InlineData("Cdev", "vfio12")]
    public void ANameOfItsKindIsValid(string kindName, string name)
    {
        var kind = Enum.Parse<KernelNameKind>(kindName);
        KernelNames.IsValid(kind, name).Should().BeTrue();
        KernelNames.Join("class/mdev_bus", kind, name).Should().Be("class/mdev_bus/" + name);
    }

    [Theory]
    [InlineData("PciAddress", "0000:00:03.00")]
    [InlineData("PciAddress", "00:03.0")]
    [InlineData("PciAddress", "0000:00:03.0/..")]
    [InlineData("PciAddress", "0000:00:1F.0")]
    [InlineData("Device", "../../bus/pci")]
    [InlineData("Device", "mtty/mdev_supported_types")]
    [InlineData("Device", "..")]
    [InlineData("Device", ".")]
    [InlineData("Device", "")]
    [InlineData("Device", "mt ty")]
    [InlineData("Device", "mtty\n")]
    [InlineData("Device", "mtty\0")]
    [InlineData("Driver", "../../../module/vfio")]
    [InlineData("Driver", "nvme/unbind")]
    [InlineData("MdevType", "mtty-2/../../")]
    [InlineData("Uuid", "83B8F4F2-509F-382F-3C1E-E6BFE0FA1001")]
    [InlineData("Uuid", "{83b8f4f2-509f-382f-3c1e-e6bfe0fa1001}")]
    [InlineData("Uuid", "83b8f4f2509f382f3c1ee6bfe0fa1001")]
    [InlineData("GroupId", "-1")]
    [InlineData("GroupId", "07")]
    [InlineData("GroupId", "+7")]
    [InlineData("GroupId", "9999999999")]
    [InlineData("GroupId", "noiommu-0")]
    [InlineData("Cdev", "vfio")]
    [InlineData("Cdev", "vfio0/../../vfio")]
    [InlineData("Cdev", "iommu")]
    public void ANameOutsideItsKindsSyntaxIsRefusedBeforeItIsJoined(string kindName, string name)
    {
        var kind = Enum.Parse<KernelNameKind>(kindName);
        KernelNames.IsValid(kind, name).Should().BeFalse();
        var join = () => KernelNames.Join("class/mdev_bus", kind, name);
        join.Should().Throw<ArgumentException>().WithMessage("*is not*");
    }

    [Fact]
    public void AnErrorShowsControlCharactersItCannotPrint()
    {
        KernelNames.Describe(KernelNameKind.Device, "a\0b\n").Should().StartWith(@"'a\x00b\x0a' is not a device name");
    }
}
