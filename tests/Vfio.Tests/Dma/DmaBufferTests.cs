using Vfio.Testing;

namespace Vfio.Tests.Dma;

/// <summary>DMA buffers: page rounding, hugepages from the pool (or a clear error), access flags, nothing leaked.</summary>
public class DmaBufferTests : KernelTest
{
    private const ulong TwoMiB = 2UL << 20;

    [Fact]
    public void AFailedMunmapOfTheMemoryIsReportedAndTheNextDisposeFreesIt()
    {
        AddPci();
        var device = RegisterPci();
        using var open = device.Open();
        int mappings = Kernel.MappingCount;
        var buffer = device.AllocateDmaBuffer(64 << 10);
        Kernel.FailNext(SimulatedCall.Munmap, Errno.EINVAL);

        var error = buffer.Invoking(b => b.Dispose()).Should().Throw<VfioException>().Which;

        error.Operation.Should().Be("munmap");
        error.Errno.Should().Be(Errno.EINVAL);
        error.Message.Should().Contain(device.Name).And.Contain("dispose the buffer again");
        Logs.Named("DmaMemoryUnmapFailed").Should().ContainSingle();
        buffer.IsMapped.Should().BeFalse("the device no longer reaches it");
        Kernel.MappingCount.Should().Be(mappings + 1, "the memory is still mapped, and the books say so");
        buffer.Dispose();
        Kernel.MappingCount.Should().Be(mappings);
        buffer.Dispose();
    }

    [Fact]
    public void ALengthIsRoundedUpToTheIommuPageAndTheMemoryIsPageAligned()
    {
        AddPci();
        var device = RegisterPci();
        using var open = device.Open();

        using var buffer = device.AllocateDmaBuffer(100);

        buffer.Length.Should().Be(0x1000);
        buffer.IsHugePages.Should().BeFalse();
        ((ulong)buffer.HostAddress % 0x1000).Should().Be(0);
        buffer.Span.Length.Should().Be(0x1000);
        buffer.IovaAt(0xfff).Should().Be(buffer.Iova + 0xfff);
        buffer.Invoking(b => b.IovaAt(0x1000)).Should().Throw<ArgumentOutOfRangeException>();
    }

    [Fact]
    public void HugePagesComeFromThePoolAreAlignedTo2MiBAndGoBackAtDispose()
    {
        Kernel.HugePages = 2;
        AddPci();
        var device = RegisterPci();
        using var open = device.Open();
        using var first = device.AllocateDmaBuffer(0x1000);

        var huge = device.AllocateDmaBuffer(0x1000, pages: DmaPages.Huge);

        huge.IsHugePages.Should().BeTrue();
        huge.Length.Should().Be(TwoMiB);
        (huge.Iova % TwoMiB).Should().Be(0, "the IOMMU can map it with one 2 MiB page");
        ((ulong)huge.HostAddress % TwoMiB).Should().Be(0);
        Kernel.FreeHugePages.Should().Be(1);
        huge.Dispose();
        Kernel.FreeHugePages.Should().Be(2);
    }

    [Fact]
    public void WithTooFewFreeHugePagesTheErrorSaysHowToReserveThem()
    {
        Kernel.HugePages = 1;
        AddPci();
        var device = RegisterPci();
        using var open = device.Open();
        int references = device.ReferenceCount;

        var error = device.Invoking(d => d.AllocateDmaBuffer(3 << 20, pages: DmaPages.Huge)).Should().Throw<VfioResourceLimitException>().Which;

        error.Limit.Should().Be(VfioResourceLimitException.HugePages);
        error.Errno.Should().Be(Errno.ENOMEM);
        error.Device.Should().Be("0000:00:03.0");
        error.Message.Should().Contain("needs 2 free hugepages").And.Contain("1 free of 1 reserved")
            .And.Contain("/proc/sys/vm/nr_hugepages").And.Contain("HugeIfAvailable");
        Kernel.MappingCount.Should().Be(0);
        Kernel.DmaMappingCount.Should().Be(0);
        device.ReferenceCount.Should().Be(references, "the failed allocation released its reference");
    }

    [Fact]
    public void HugeIfAvailableFallsBackToNormalPagesAndSaysSo()
    {
        AddPci();
        var device = RegisterPci();
        using var open = device.Open();

        using var buffer = device.AllocateDmaBuffer(0x3000, pages: DmaPages.HugeIfAvailable);

        buffer.IsHugePages.Should().BeFalse();
        buffer.Length.Should().Be(0x3000);
        Logs.Named("HugePagesFallback").Should().ContainSingle();
    }

    [Theory]
    [InlineData(0)]
    [InlineData(4)]
    [InlineData(7)]
    public void AnAccessThatIsNotReadWriteOrBothIsRefused(int access)
    {
        AddPci();
        var device = RegisterPci();
        using var open = device.Open();

        device.Invoking(d => d.AllocateDmaBuffer(0x1000, (DmaAccess)access)).Should().Throw<ArgumentException>();
        Kernel.MappingCount.Should().Be(0);
    }

    [Fact]
    public void TheDeviceCanOnlyUseABufferTheWayItsAccessAllows()
    {
        var model = new PciDeviceModel(0x1234, 0x11e8, 0x00ff00);
        AddPci(model: model);
        var device = RegisterPci();
        using var open = device.Open();
        device.EnableCommand();
        using var readOnly = device.AllocateDmaBuffer(0x1000, DmaAccess.DeviceReads);
        readOnly.Span[5] = 0x42;

        var data = new byte[8];
        model.DmaRead(readOnly.Iova, data).Should().BeTrue();
        model.DmaWrite(readOnly.Iova, data).Should().BeFalse();

        data[5].Should().Be(0x42);
        Kernel.DmaFaults.Should().ContainSingle().Which.Reason.Should().Contain("not writable");
    }

    [Fact]
    public void ABufferTheDmaMaskCannotHoldIsRefusedBeforeAnyMemoryIsAllocated()
    {
        AddPci();
        var device = Track(new NarrowDmaDevice(Registry.FindPci(PciAddress.Parse("0000:00:03.0"))));
        Registry.Register(device);
        using var open = device.Open();
        int references = device.ReferenceCount;
        // Were the library to allocate first, this failure would end the allocation instead of the IOVA check.
        Kernel.FailNext(SimulatedCall.Mmap, Errno.ENOMEM);

        var error = device.Invoking(d => d.AllocateDmaBuffer(512UL << 20)).Should().Throw<VfioException>().Which;

        error.Message.Should().Contain("no free IOVA range of 0x20000000 bytes below its DMA mask 0xfffffff");
        Kernel.MappingCount.Should().Be(0);
        device.ReferenceCount.Should().Be(references);
        device.Invoking(d => d.AllocateDmaBuffer(0x1000)).Should().Throw<VfioException>("the refused allocation made no mmap, so the armed failure is still there")
            .Which.Operation.Should().StartWith("mmap");
    }

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
    public void MoreMemoryThanTheMachineHasIsATypedErrorLikeLinuxsEnomem()
    {
        Kernel.MemoryBytes = 1UL << 30;
        AddPci();
        var device = RegisterPci();
        using var open = device.Open();
        int references = device.ReferenceCount;

        var error = device.Invoking(d => d.AllocateDmaBuffer(2UL << 30)).Should().Throw<VfioException>().Which;

        error.Errno.Should().Be(Errno.ENOMEM);
        error.Device.Should().Be("0000:00:03.0");
        error.Message.Should().Contain("2 GiB DMA buffer").And.Contain("memory");
        Kernel.MappingCount.Should().Be(0);
        Kernel.DmaMappingCount.Should().Be(0);
        device.ReferenceCount.Should().Be(references);
        using var fits = device.AllocateDmaBuffer(0x1000);
        fits.Iova.Should().Be(0x1000, "the IOVA range of the refused buffer was given back");
    }

    [Fact]
    public void MoreThanTheIommuCanAddressIsRefusedWithoutAllocating()
    {
        AddPci();
        var device = RegisterPci();
        using var open = device.Open();

        var error = device.Invoking(d => d.AllocateDmaBuffer(1UL << 40)).Should().Throw<VfioException>().Which;

        error.Message.Should().Contain("no free IOVA range of 0x10000000000 bytes").And.Contain("valid ranges");
        Kernel.MappingCount.Should().Be(0);
    }
}
