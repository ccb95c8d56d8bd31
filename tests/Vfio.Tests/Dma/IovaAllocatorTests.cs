namespace Vfio.Tests.Dma;

public class IovaAllocatorTests
{
    private const ulong Page = 0x1000;
    private static readonly IovaRange[] VtdRanges = [new(0, 0xfedf_ffff), new(0xfef0_0000, 0x7f_ffff_ffff)];

    [Fact]
    public void TheFirstPageIsNeverHandedOut()
    {
        var allocator = new IovaAllocator(VtdRanges, Page);

        allocator.Allocate(Page, ulong.MaxValue).Should().Be(Page);
        allocator.Reserve(0, Page).Should().BeTrue("page 0 can still be asked for explicitly");
    }

    [Fact]
    public void AllocationsStayBelowTheMaskAndInsideTheRanges()
    {
        var allocator = new IovaAllocator([new(0x10_0000, 0x1f_ffff), new(0x40_0000, 0xffff_ffff)], Page);
        ulong mask = 0x4f_ffff;

        var got = new List<ulong>();
        while (allocator.Allocate(0x8_0000, mask) is ulong iova)
        {
            got.Add(iova);
        }

        got.Should().BeEquivalentTo(new ulong[] { 0x10_0000, 0x18_0000, 0x40_0000, 0x48_0000 });
        allocator.Allocate(Page, mask).Should().BeNull("everything below the mask is used");
        allocator.Allocate(Page, ulong.MaxValue).Should().Be(0x50_0000, "a wider mask reaches the rest of the range");
    }

    [Fact]
    public void AFreedRangeIsReusedAndNeighboursMerge()
    {
        var allocator = new IovaAllocator([new(0, 0xf_ffff)], Page);
        ulong a = allocator.Allocate(Page, ulong.MaxValue)!.Value;
        ulong b = allocator.Allocate(Page, ulong.MaxValue)!.Value;
        ulong c = allocator.Allocate(Page, ulong.MaxValue)!.Value;

        allocator.Free(a).Should().BeTrue();
        allocator.Free(b).Should().BeTrue();
        allocator.Free(b).Should().BeFalse("it is free already");

        allocator.Allocate(2 * Page, ulong.MaxValue).Should().Be(a, "the two freed neighbours merged into one extent");
        allocator.Free(c);
        allocator.Count.Should().Be(1);
    }

    [Fact]
    public void AReservationMustLieInsideOneFreeExtent()
    {
        var allocator = new IovaAllocator(VtdRanges, Page);

        allocator.Reserve(0x10_0000, 0x2000).Should().BeTrue();
        allocator.Reserve(0x10_1000, 0x1000).Should().BeFalse("inside the first");
        allocator.Reserve(0xf_f000, 0x2000).Should().BeFalse("straddles its start");
        allocator.Reserve(0xfee0_0000, 0x1000).Should().BeFalse("the interrupt window is not a valid range");
        allocator.Reserve(0xfedf_f000, 0x2000).Should().BeFalse("runs past the end of a range");
        allocator.Reserve(0x10_2000, 0x1000).Should().BeTrue("right after the first");
    }

    [Fact]
    public void AnAlignedAllocationStartsOnItsAlignment()
    {
        var allocator = new IovaAllocator(VtdRanges, Page);
        allocator.Allocate(Page, ulong.MaxValue);

        ulong huge = allocator.Allocate(0x20_0000, ulong.MaxValue, 0x20_0000)!.Value;

        huge.Should().Be(0x20_0000);
        allocator.Allocate(Page, ulong.MaxValue).Should().Be(0x2000, "the gap below the aligned range stays free");
    }

    [Fact]
    public void TheWholeAddressSpaceWorksWithoutOverflow()
    {
        var allocator = new IovaAllocator([new(0, ulong.MaxValue)], Page);

        allocator.Reserve(ulong.MaxValue - Page + 1, Page).Should().BeTrue();
        allocator.Allocate(Page, ulong.MaxValue).Should().Be(Page);
        allocator.Allocate(ulong.MaxValue, ulong.MaxValue).Should().BeNull("the size overflows when rounded up");
        allocator.Free(ulong.MaxValue - Page + 1).Should().BeTrue();
    }

    [Fact]
    public void ManyAllocationsAndFreesKeepTheBookkeepingConsistent()
    {
        var allocator = new IovaAllocator([new(0, 0x7f_ffff_ffff)], Page);
        var random = new Random(7);
        var live = new Dictionary<ulong, ulong>();
        for (int step = 0; step < 20_000; step++)
        {
            if (live.Count > 0 && random.Next(3) == 0)
            {
                ulong victim = live.Keys.ElementAt(random.Next(live.Count));
                allocator.Free(victim).Should().BeTrue();
                live.Remove(victim);
                continue;
            }
            ulong size = (ulong)random.Next(1, 5) * Page;
            ulong iova = allocator.Allocate(size, ulong.MaxValue)!.Value;
            foreach (var (start, length) in live)
            {
                (iova + size <= start || start + length <= iova).Should().BeTrue("a new range never overlaps a live one");
            }
            live.Add(iova, size);
            if (live.Count > 200)
            {
                // Keep the overlap check above cheap.
                ulong oldest = live.Keys.First();
                allocator.Free(oldest);
                live.Remove(oldest);
            }
        }
        allocator.Count.Should().Be(live.Count);
    }
}
