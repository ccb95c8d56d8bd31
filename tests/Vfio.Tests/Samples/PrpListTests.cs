using System.Buffers.Binary;
using NvmeDriver;

namespace Vfio.Tests.Samples;

/// <summary>The NVMe sample's PRP1/PRP2 builder: one page, two pages, a list, and what it refuses.</summary>
public class PrpListTests : KernelTest
{
    [Fact]
    public void ATransferWithinItsFirstPageNeedsPrp1Only()
    {
        using var open = Open(out var device);
        using var data = device.AllocateDmaBuffer(2 * 4096);

        var (prp1, prp2) = PrpList.Build(data, 4096 + 512, 3584, [], 0);

        prp1.Should().Be(data.Iova + 4096 + 512);
        prp2.Should().Be(0);
        PrpList.NeedsList(4096 + 512, 3584).Should().BeFalse();
    }

    [Fact]
    public void ATransferIntoASecondPageTakesItsPageAsPrp2()
    {
        using var open = Open(out var device);
        using var data = device.AllocateDmaBuffer(3 * 4096);

        var (prp1, prp2) = PrpList.Build(data, 1024, (2 * 4096) - 1024, [], 0);

        prp1.Should().Be(data.Iova + 1024);
        prp2.Should().Be(data.Iova + 4096, "the second page starts at the next page boundary, not at PRP1 + 4096");
    }

    [Fact]
    public void ATransferOverMoreThanTwoPagesListsEveryPageAfterTheFirst()
    {
        using var open = Open(out var device);
        using var data = device.AllocateDmaBuffer(6 * 4096);
        using var list = device.AllocateDmaBuffer(4096);
        list.Span.Fill(0xee);

        var (prp1, prp2) = PrpList.Build(data, 512, (4 * 4096) + 100, list.Span, list.Iova);

        prp1.Should().Be(data.Iova + 512);
        prp2.Should().Be(list.Iova);
        var entries = Enumerable.Range(0, 5).Select(i => BinaryPrimitives.ReadUInt64LittleEndian(list.Span[(i * 8)..])).ToArray();
        entries.Should().Equal(Enumerable.Range(1, 4).Select(i => data.Iova + ((ulong)i * 4096)).Append(0xeeeeeeeeeeeeeeeeUL),
            "4 pages follow the first, partly used one, and nothing past them is written");
        PrpList.NeedsList(512, (4 * 4096) + 100).Should().BeTrue();
    }

    [Fact]
    public void TransfersOutsideTheBufferMisalignedOrLongerThanOneListAreRefused()
    {
        using var open = Open(out var device);
        using var data = device.AllocateDmaBuffer(4096);
        using var large = device.AllocateDmaBuffer((ulong)PrpList.MaxTransferBytes + 4096);
        using var list = device.AllocateDmaBuffer(4096);

        data.Invoking(d => PrpList.Build(d, 0, 4097, [], 0)).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*not a dword-aligned range inside*");
        data.Invoking(d => PrpList.Build(d, 2, 16, [], 0)).Should().Throw<ArgumentOutOfRangeException>();
        data.Invoking(d => PrpList.Build(d, 0, 0, [], 0)).Should().Throw<ArgumentOutOfRangeException>();
        large.Invoking(d => PrpList.Build(d, 0, 3 * 4096, [], 0)).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*needs 2 PRP list entries; one list page holds 0*");
        large.Invoking(d => PrpList.Build(d, 4, PrpList.MaxTransferBytes, list.Span, list.Iova)).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*needs 513 PRP list entries*");
        PrpList.Build(large, 0, PrpList.MaxTransferBytes, list.Span, list.Iova).Prp2.Should().Be(list.Iova, "512 entries fill the list page");
    }

    private DeviceReference Open(out PciVfioDevice device)
    {
        AddPci();
        var registered = RegisterPci();
        device = registered;
        return registered.Open();
    }
}
