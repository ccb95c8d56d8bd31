using Vfio.Interop;
using Vfio.Testing;

namespace Vfio.Tests.Registry;

/// <summary>Containers: the IOMMU type is chosen after the first group joins; groups share a container.</summary>
public class VfioContainerTests() : KernelTest(VfioBackend.Legacy)
{
    /// <summary>The operations of a device's open path, in order: call K is failed for each K and the exception names it.</summary>
    private List<string> OpenPathOperations(VfioDevice device)
    {
        device.Open().Dispose(); // the registry's first open also looks for /dev/iommu, once
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

        operations.Should().ContainInOrder("VFIO_GET_API_VERSION", "IOMMU_OPTION (IOMMU_OPTION_RLIMIT_MODE, get) on the container, asking whether iommufd serves it", "VFIO_GROUP_SET_CONTAINER", "VFIO_CHECK_EXTENSION", "VFIO_SET_IOMMU", "VFIO_GROUP_GET_DEVICE_FD");
        operations.Should().ContainSingle(o => o == "VFIO_SET_IOMMU");
        operations.IndexOf("VFIO_SET_IOMMU").Should().BeGreaterThan(operations.IndexOf("VFIO_GROUP_SET_CONTAINER"));
    }

    [Fact]
    public void AContainerKnowsFromTheKernelWhenIommufdServesIt()
    {
        Kernel.IommufdServesContainer = true;
        AddPci();
        var device = RegisterPci();

        using var open = device.Open();

        var container = device.Group!.Container!;
        container.IsIommufdCompat.Should().BeTrue();
        container.IommuTypeName.Should().Be("type1v2");
        container.ToString().Should().StartWith("iommufd compatibility container (type1v2");
        container.DmaMappingsAvailable.Should().Be(int.MaxValue, "iommufd's DMA_AVAIL is u32's maximum and counts nothing");
        Logs.Named("ContainerOpened").Should().ContainSingle().Which["Provider"].Should().Be("iommufd's compatibility container");
        using var buffer = device.AllocateDmaBuffer(4096);
        container.DmaMappingsAvailable.Should().Be(int.MaxValue);
    }

    [Fact]
    public void VfiosOwnContainerIsNotTakenForIommufds()
    {
        AddPci();
        var device = RegisterPci();

        using var open = device.Open();

        device.Group!.Container!.IsIommufdCompat.Should().BeFalse();
        device.Group.Container.ToString().Should().StartWith("container (type1v2");
        Logs.Named("ContainerOpened").Should().ContainSingle().Which["Provider"].Should().Be("vfio's own container");
    }

    [Fact]
    public void AnUnexpectedAnswerToWhoServesTheContainerFailsTheOpenNamingTheGroupAndLeavesNothingOpen()
    {
        AddPci();
        var device = RegisterPci();
        Kernel.FailNext(SimulatedCall.Ioctl, Errno.EIO, IommufdUapi.IOMMU_OPTION);

        var error = device.Invoking(d => d.Open()).Should().Throw<VfioException>().Which;

        error.Errno.Should().Be(Errno.EIO);
        error.Operation.Should().StartWith("IOMMU_OPTION");
        error.GroupId.Should().Be(5);
        Registry.Containers.Should().BeEmpty();
        Kernel.OpenFileCountTotal.Should().Be(0);
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

    [Theory]
    [InlineData(Errno.EINVAL)]
    [InlineData(Errno.EBUSY)]
    public void AGroupTheOpenContainerRefusesAsIncompatibleGetsAContainerOfItsOwn(int errno)
    {
        AddPci();
        AddPci("0000:00:04.0", group: 6);
        var first = RegisterPci();
        var second = RegisterPci("0000:00:04.0");
        using var firstOpen = first.Open();

        // type1's attach refuses a group whose aperture or reserved regions conflict with the
        // container's mappings (EINVAL), or joins into a container whose vaddrs are invalidated (EBUSY).
        Kernel.FailNext(SimulatedCall.Ioctl, errno, VfioUapi.VFIO_GROUP_SET_CONTAINER);
        using var secondOpen = second.Open();

        Registry.Containers.Should().HaveCount(2);
        second.Group!.Container.Should().NotBeSameAs(first.Group!.Container);
    }

    [Theory]
    [InlineData(Errno.EINTR)]
    [InlineData(Errno.ENOMEM)]
    [InlineData(Errno.EIO)]
    [InlineData(Errno.EPERM)]
    public void AGroupTheOpenContainerRefusesForAnotherReasonFailsWithoutANewContainer(int errno)
    {
        AddPci();
        AddPci("0000:00:04.0", group: 6);
        var first = RegisterPci();
        var second = RegisterPci("0000:00:04.0");
        using var firstOpen = first.Open();

        Kernel.FailNext(SimulatedCall.Ioctl, errno, VfioUapi.VFIO_GROUP_SET_CONTAINER);
        var error = second.Invoking(d => d.Open()).Should().Throw<VfioException>().Which;

        error.Errno.Should().Be(errno);
        error.Operation.Should().Be("VFIO_GROUP_SET_CONTAINER");
        error.GroupId.Should().Be(6);
        Registry.Containers.Should().ContainSingle("no second container was opened for an error a new one would not cure");
        Kernel.OpenFileCount(SimulatedFileKind.Container).Should().Be(1);
        using (second.Open())
        {
            Registry.Containers.Should().ContainSingle().Which.Groups.Select(g => g.Id).Should().BeEquivalentTo([5, 6]);
        }
    }

    [Fact]
    public void OpeningTheContainerFileNamesTheGroupItWasFor()
    {
        AddPci();
        var device = RegisterPci();
        Kernel.DenyAccess(Kernel.Dev("vfio/vfio"));

        var error = device.Invoking(d => d.Open()).Should().Throw<VfioAccessDeniedException>().Which;

        error.Operation.Should().Be("open " + Kernel.Dev("vfio/vfio"));
        error.GroupId.Should().Be(5);
        error.Message.Should().Contain("group 5");
    }

    [Fact]
    public void AnIommuInfoFailureDuringADmaAllocationNamesTheDeviceAndGroup()
    {
        AddPci();
        var device = RegisterPci();
        using var open = device.Open();
        Kernel.FailNext(SimulatedCall.Ioctl, Errno.EIO, VfioUapi.VFIO_IOMMU_GET_INFO);

        var error = device.Invoking(d => d.AllocateDmaBuffer(4096)).Should().Throw<VfioException>().Which;

        error.Operation.Should().Be("VFIO_IOMMU_GET_INFO");
        error.Device.Should().Be("0000:00:03.0");
        error.GroupId.Should().Be(5);
        using var buffer = device.AllocateDmaBuffer(4096);
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

/// <summary>A container's DMA mappings: the kernel's mapping budget, its refusals turned into clear errors, teardown.</summary>
public class VfioContainerDmaTests() : KernelTest(VfioBackend.Legacy)
{
    [Fact]
    public void TheContainersMappingLimitIsCheckedBeforeAnyMemoryIsAllocated()
    {
        Kernel.DmaEntryLimit = 1;
        AddPci();
        var device = RegisterPci();
        using var open = device.Open();
        using var first = device.AllocateDmaBuffer(0x1000);
        Kernel.FailNext(SimulatedCall.Mmap, Errno.EINVAL);

        var error = device.Invoking(d => d.AllocateDmaBuffer(0x1000)).Should().Throw<VfioResourceLimitException>().Which;

        error.Limit.Should().Be(VfioResourceLimitException.DmaEntryLimit);
        Kernel.MappingCount.Should().Be(1, "only the first buffer's memory");
    }

    [Fact]
    public void MappingsAvailableFollowDmaAvailAndTheLibraryRefusesBeforeTheKernel()
    {
        Kernel.DmaEntryLimit = 3;
        AddPci();
        var device = RegisterPci();
        using var open = device.Open();
        var container = device.Group!.Container!;
        container.DmaMappingsAvailable.Should().Be(3);
        var buffers = Enumerable.Range(0, 3).Select(_ => device.AllocateDmaBuffer(0x1000)).ToList();
        long calls = Kernel.CallCount;

        var error = device.Invoking(d => d.AllocateDmaBuffer(0x1000)).Should().Throw<VfioResourceLimitException>().Which;

        error.Limit.Should().Be(VfioResourceLimitException.DmaEntryLimit);
        error.Errno.Should().Be(0, "the library counted and refused; the kernel was not asked");
        error.Message.Should().Contain("0000:00:03.0").And.Contain("dma_entry_limit").And.Contain("3 DMA mappings");
        Kernel.CallCount.Should().Be(calls, "the library refused before allocating the buffer's memory");
        container.DmaMappingsAvailable.Should().Be(0);
        container.QueryIommuInfo().DmaMappingsAvailable.Should().Be(0u);
        buffers[0].Dispose();
        container.DmaMappingsAvailable.Should().Be(1);
        container.QueryIommuInfo().DmaMappingsAvailable.Should().Be(1u);
        buffers.ForEach(b => b.Dispose());
    }

    [Fact]
    public void WithoutDmaAvailTheModuleParameterIsTheLimit()
    {
        Kernel.ReportsDmaAvailable = false;
        Kernel.DmaEntryLimit = 2;
        AddPci();
        var device = RegisterPci();
        using var open = device.Open();
        var container = device.Group!.Container!;

        container.IommuInfo.DmaMappingsAvailable.Should().BeNull();
        container.DmaMappingsAvailable.Should().Be(2, "read from /sys/module/vfio_iommu_type1/parameters/dma_entry_limit");
        using var a = device.AllocateDmaBuffer(0x1000);
        using var b = device.AllocateDmaBuffer(0x1000);
        device.Invoking(d => d.AllocateDmaBuffer(0x1000)).Should().Throw<VfioResourceLimitException>()
            .Which.Errno.Should().Be(0);
    }

    [Fact]
    public void TheKernelsEnospcBecomesALimitErrorAndTheIovaIsFreed()
    {
        AddPci();
        var device = RegisterPci();
        using var open = device.Open();
        Kernel.FailNext(SimulatedCall.Ioctl, Errno.ENOSPC, VfioUapi.VFIO_IOMMU_MAP_DMA);

        var error = device.Invoking(d => d.AllocateDmaBuffer(0x1000)).Should().Throw<VfioResourceLimitException>().Which;

        error.Limit.Should().Be(VfioResourceLimitException.DmaEntryLimit);
        error.Errno.Should().Be(Errno.ENOSPC);
        error.Operation.Should().StartWith("VFIO_IOMMU_MAP_DMA");
        error.Message.Should().Contain("dma_entry_limit");
        Kernel.MappingCount.Should().Be(0, "the buffer's memory was given back");
        using var next = device.AllocateDmaBuffer(0x1000);
        next.Iova.Should().Be(0x1000, "the refused mapping's IOVA was freed");
    }

    [Fact]
    public void TheKernelsEexistIsAnErrorNeverIgnored()
    {
        AddPci();
        var device = RegisterPci();
        using var open = device.Open();
        Kernel.FailNext(SimulatedCall.Ioctl, Errno.EEXIST, VfioUapi.VFIO_IOMMU_MAP_DMA);

        var error = device.Invoking(d => d.AllocateDmaBuffer(0x1000, iova: 0x10000)).Should().Throw<VfioException>().Which;

        error.Errno.Should().Be(Errno.EEXIST);
        error.Message.Should().Contain("EEXIST").And.Contain("overlaps");
        device.Group!.Container!.DmaMappingCount.Should().Be(0);
        Kernel.DmaMappingCount.Should().Be(0);
    }

    [Fact]
    public void PinningBeyondTheMemoryLockLimitNamesUlimit()
    {
        Kernel.MemoryLockLimit = 0x3000;
        AddPci();
        var device = RegisterPci();
        using var open = device.Open();
        using var first = device.AllocateDmaBuffer(0x2000);

        var error = device.Invoking(d => d.AllocateDmaBuffer(0x2000)).Should().Throw<VfioResourceLimitException>().Which;

        error.Limit.Should().Be(VfioResourceLimitException.MemoryLock);
        error.Errno.Should().Be(Errno.ENOMEM);
        error.Message.Should().Contain("RLIMIT_MEMLOCK").And.Contain("ulimit -l");
        Kernel.LockedMemory.Should().Be(0x2000);
        first.Dispose();
        Kernel.LockedMemory.Should().Be(0);
    }

    [Fact]
    public void TeardownUnmapsEveryBufferAndTranslationForgetsThem()
    {
        AddPci();
        var device = RegisterPci();
        var open = device.Open();
        var container = device.Group!.Container!;
        var buffers = Enumerable.Range(0, 5).Select(_ => device.AllocateDmaBuffer(0x1000)).ToList();
        container.TranslateToIova(buffers[3].HostAddress + 0x10).Should().Be(buffers[3].Iova + 0x10);
        Kernel.FailNext(SimulatedCall.Ioctl, Errno.EIO, VfioUapi.VFIO_IOMMU_UNMAP_DMA);

        open.Dispose();

        Kernel.DmaMappingCount.Should().Be(0);
        buffers.Should().OnlyContain(b => !b.IsMapped);
        container.TranslateToIova(buffers[3].HostAddress + 0x10).Should().BeNull();
        Logs.Named("DmaUnmapFailed").Should().ContainSingle("closing the device revoked the buffers and one unmap failed");
        Logs.Named("DmaUnmappingAll").Should().ContainSingle("the container kept the failed one and unmapped it when its group left")
            .Which["Count"].Should().Be(1);
        buffers.ForEach(b => b.Dispose());
    }

    [Fact]
    public void RefusalsNameTheRangeTheValidRangesAndTheMaskInHex()
    {
        AddPci();
        var device = RegisterPci();
        using var open = device.Open();

        device.Invoking(d => d.AllocateDmaBuffer(0x1000, iova: 0xfee0_0000)).Should().Throw<VfioException>()
            .WithMessage("*0000:00:03.0*IOVA range 0xfee00000+0x1000 lies outside the IOMMU's valid ranges (0x0-0xfedfffff, 0xfef00000-0x7fffffffff)*");
        Kernel.DmaMappingCount.Should().Be(0);
    }

    [Fact]
    public void TranslationFindsEveryLiveBufferAndNothingElse()
    {
        AddPci();
        var device = RegisterPci();
        using var open = device.Open();
        var container = device.Group!.Container!;
        var buffers = Enumerable.Range(0, 600).Select(i => device.AllocateDmaBuffer((ulong)(1 + (i % 3)) * 0x1000)).ToList();
        foreach (var b in buffers.Where((_, i) => i % 2 == 1))
        {
            b.Dispose();
        }

        for (int i = 0; i < buffers.Count; i++)
        {
            var b = buffers[i];
            nint last = b.HostAddress + (nint)b.Length - 1;
            if (i % 2 == 0)
            {
                container.TryTranslateToIova(last, out ulong iova).Should().BeTrue();
                iova.Should().Be(b.Iova + b.Length - 1);
            }
            else
            {
                container.TranslateToIova(last).Should().BeNull();
            }
        }
        container.DmaMappingCount.Should().Be(300);
        buffers.ForEach(b => b.Dispose());
    }
}
