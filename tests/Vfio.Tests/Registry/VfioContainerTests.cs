using Vfio.Interop;
using Vfio.Testing;

namespace Vfio.Tests.Registry;

/// <summary>Containers: the IOMMU type is chosen after the first group joins; groups share a container.</summary>
public class VfioContainerTests : KernelTest
{
    /// <summary>The operations of a device's open path, in order: call K is failed for each K and the exception names it.</summary>
    private List<string> OpenPathOperations(VfioDevice device)
    {
        long before = Kernel.CallCount;
        var open = device.Open();
        long calls = Kernel.CallCount - before;
        open.Dispose();
        var operations = new List<string>();
        for (long k = 1; k <= calls; k++)
        {
            Kernel.FailCall(k, Errno.EIO);
            operations.Add(device.Invoking(d => d.Open()).Should().Throw<VfioException>().Which.Operation);
        }
        return operations;
    }

    [Fact]
    public void TheIommuTypeIsSetOnlyAfterTheFirstGroupJoined()
    {
        AddPci();
        var device = RegisterPci();

        var operations = OpenPathOperations(device);

        operations.Should().ContainInOrder("VFIO_GET_API_VERSION", "VFIO_GROUP_SET_CONTAINER", "VFIO_CHECK_EXTENSION", "VFIO_SET_IOMMU", "VFIO_GROUP_GET_DEVICE_FD");
        operations.Should().ContainSingle(o => o == "VFIO_SET_IOMMU");
        operations.IndexOf("VFIO_SET_IOMMU").Should().BeGreaterThan(operations.IndexOf("VFIO_GROUP_SET_CONTAINER"));
    }

    [Fact]
    public void Type1v2IsChosenWhenTheKernelOffersIt()
    {
        AddPci();
        var device = RegisterPci();

        using var open = device.Open();

        var container = device.Group!.Container!;
        container.IommuType.Should().Be(VfioUapi.VFIO_TYPE1v2_IOMMU);
        container.IommuTypeName.Should().Be("type1v2");
        container.Groups.Should().ContainSingle().Which.Should().BeSameAs(device.Group);
        Logs.Named("GroupAttached").Should().ContainSingle().Which["IommuType"].Should().Be("type1v2");
    }

    [Fact]
    public void AFailedIommuSetupDetachesTheGroupAndClosesTheContainer()
    {
        AddPci();
        var device = RegisterPci();
        Kernel.FailNext(SimulatedCall.Ioctl, Errno.ENODEV, VfioUapi.VFIO_SET_IOMMU);

        var error = device.Invoking(d => d.Open()).Should().Throw<VfioNotFoundException>().Which;

        error.Operation.Should().Be("VFIO_SET_IOMMU");
        error.GroupId.Should().Be(5);
        Registry.Containers.Should().BeEmpty();
        Kernel.OpenFileCountTotal.Should().Be(0);
        using (device.Open())
        {
            device.Group!.Container!.IommuTypeName.Should().Be("type1v2");
        }
    }

    [Fact]
    public void ASecondGroupJoinsTheOpenContainerWithoutSettingTheIommuAgain()
    {
        AddPci();
        AddPci("0000:00:04.0", group: 6);
        var first = RegisterPci();
        var second = RegisterPci("0000:00:04.0");

        var firstOpen = first.Open();
        // The kernel refuses a second VFIO_SET_IOMMU on a container (EINVAL): the join would fail if it were issued.
        var secondOpen = second.Open();

        var container = Registry.Containers.Should().ContainSingle().Which;
        container.Groups.Select(g => g.Id).Should().BeEquivalentTo([5, 6]);
        second.Group!.Container.Should().BeSameAs(container);
        Kernel.OpenFileCount(SimulatedFileKind.Container).Should().Be(1);

        firstOpen.Dispose();
        Registry.Containers.Should().ContainSingle().Which.Groups.Select(g => g.Id).Should().Equal(6);
        container.IommuTypeName.Should().Be("type1v2");

        secondOpen.Dispose();
        Registry.Containers.Should().BeEmpty();
        container.IommuType.Should().Be(0, "the last group took the IOMMU with it");
        Kernel.OpenFileCountTotal.Should().Be(0);
    }

    [Fact]
    public void DmaMappingsAreUnmappedWhenTheLastGroupLeaves()
    {
        AddPci();
        var device = RegisterPci();
        var open = device.Open();
        var buffer = device.AllocateDmaBuffer(0x1000);
        device.Group!.Container!.DmaMappingCount.Should().Be(1);

        open.Dispose();

        Kernel.DmaMappingCount.Should().Be(0);
        buffer.IsMapped.Should().BeFalse();
        buffer.Dispose();
    }
}
