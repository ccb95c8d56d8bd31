using Vfio.Testing;

namespace Vfio.Tests.Simulation;

/// <summary>The simulated mdev core's sysfs, checked against Linux 6.1's mdev_sysfs.c and mdev_core.c and the mtty sample.</summary>
public sealed class SimulatedMdevTests
{
    private const string Types = "class/mdev_bus/mtty/mdev_supported_types/";
    private readonly SimulatedKernel _kernel = new();

    public SimulatedMdevTests() => _kernel.AddMttyParent();

    private string Read(string relative) => Seam.ReadText(_kernel, _kernel.Sys(relative));

    private long Write(string relative, string text) => Seam.WriteText(_kernel, _kernel.Sys(relative), text);

    [Fact]
    public void MttyTypesShowTheirPrettyNameAndNoDescription()
    {
        Read(Types + "mtty-1/name").Should().Be("Single port serial\n");
        Read(Types + "mtty-2/name").Should().Be("Dual port serial\n");
        Read(Types + "mtty-2/device_api").Should().Be("vfio-pci\n");
        _kernel.ListDirectory(_kernel.Sys(Types + "mtty-1"), out var names).Should().Be(0);
        names.Should().NotContain("description");
    }

    [Fact]
    public void TheTypesShareTwentyFourPorts()
    {
        Write(Types + "mtty-2/create", Guid.NewGuid().ToString()).Should().BeGreaterThan(0);
        Write(Types + "mtty-1/create", Guid.NewGuid() + "\n").Should().Be(37);
        Read(Types + "mtty-1/available_instances").Should().Be("21\n");
        Read(Types + "mtty-2/available_instances").Should().Be("10\n");
    }

    [Theory]
    [InlineData("83b8f4f2-509f-382f-3c1e-e6bfe0fa100")]
    [InlineData("83b8f4f2-509f-382f-3c1e-e6bfe0fa1001\n\n")]
    [InlineData("83b8f4f2x509f-382f-3c1e-e6bfe0fa1001")]
    public void ACreateThatIsNotAUuidIsEinval(string text) =>
        Write(Types + "mtty-1/create", text).Should().Be(-Errno.EINVAL);

    [Fact]
    public void TheLastPortsRunOutWithEnospcFromTheProbe()
    {
        for (int i = 0; i < 23; i++)
        {
            Write(Types + "mtty-1/create", Guid.NewGuid().ToString()).Should().Be(36);
        }
        Read(Types + "mtty-2/available_instances").Should().Be("0\n");
        Write(Types + "mtty-2/create", Guid.NewGuid().ToString()).Should().Be(-Errno.ENOSPC);
        Write(Types + "mtty-1/create", Guid.NewGuid().ToString()).Should().Be(36);
    }

    [Fact]
    public void RemoveTakesANumberAndZeroDoesNothing()
    {
        string uuid = Guid.NewGuid().ToString();
        Write(Types + "mtty-1/create", uuid);
        string remove = "bus/mdev/devices/" + uuid + "/remove";
        Write(remove, "yes").Should().Be(-Errno.EINVAL);
        Write(remove, "0").Should().Be(1);
        _kernel.TryFindDevice(uuid, out _).Should().BeTrue();
        Write(remove, "0x1\n").Should().Be(4);
        _kernel.TryFindDevice(uuid, out _).Should().BeFalse();
        Read(Types + "mtty-1/available_instances").Should().Be("24\n");
    }

    [Fact]
    public void TheMdevGetsTheLowestFreeGroupNamedLikeANoIommuGroup()
    {
        _kernel.AddPciDevice("0000:00:03.0", new EduDeviceModel(), iommuGroup: 1);
        string uuid = Guid.NewGuid().ToString();
        Write(Types + "mtty-1/create", uuid);
        _kernel.ReadLink(_kernel.Sys("bus/mdev/devices/" + uuid + "/iommu_group"), out var group).Should().Be(0);
        group.Should().EndWith("iommu_groups/0");
        Read("kernel/iommu_groups/0/name").Should().Be("vfio-noiommu\n");
        _kernel.FindDevice(uuid).GroupKind.Should().Be(SimulatedGroupKind.Emulated);
    }

    [Fact]
    public void RemovingTheParentRemovesItsMdevsAndItsFolders()
    {
        string uuid = Guid.NewGuid().ToString();
        Write(Types + "mtty-1/create", uuid);
        var parent = ((SimulatedMdevDevice)_kernel.FindDevice(uuid)).Parent;
        parent.Remove();
        _kernel.TryFindDevice(uuid, out _).Should().BeFalse();
        _kernel.ListDirectory(_kernel.Sys("class/mdev_bus"), out var parents).Should().Be(0);
        parents.Should().BeEmpty();
        _kernel.AssertNoLeaks();
    }
}
