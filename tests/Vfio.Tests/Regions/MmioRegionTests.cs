using Vfio.Interop;
using Vfio.Testing;
using static Vfio.Interop.Interop;

namespace Vfio.Tests.Regions;

/// <summary>Register access through a region: whole mappings, sparse mappings, the file, bounds and lifetime.</summary>
public abstract class MmioRegionTests(VfioBackend backend) : KernelTest(backend)
{
    /// <summary>The tests on the legacy backend (a kernel that behaves as Linux 6.1).</summary>
    public sealed class Legacy() : MmioRegionTests(VfioBackend.Legacy);

    /// <summary>The tests on the iommufd backend (a kernel that behaves as Linux 7.2).</summary>
    public sealed class Iommufd() : MmioRegionTests(VfioBackend.Iommufd);

    /// <summary>BAR2 is 16 KiB, of which [0, 4K) and [12K, 16K) can be mapped; BAR0 cannot be mapped at all.</summary>
    private static PciDeviceModel SparseModel()
    {
        var model = new PciDeviceModel(0x1234, 0x11e8, 0x00ff00);
        model.DefineBar(0, 0x1000, mappable: false);
        model.DefineBar(2, 0x4000, PciBarKind.Memory64);
        model.DefineSparseMmap(2, new SparseMmapArea(0, 0x1000), new SparseMmapArea(0x3000, 0x1000));
        return model;
    }

    [Fact]
    public void ASparseRegionMapsEachAreaAndReachesTheRestThroughTheFile()
    {
        AddPci(model: SparseModel());
        var device = RegisterPci();
        using var open = device.Open();
        int mappings = Kernel.MappingCount;

        using var bar2 = device.OpenRegion(2);

        bar2.IsMapped.Should().BeTrue();
        bar2.MappedAreas.Should().Equal(new SparseMmapArea(0, 0x1000), new SparseMmapArea(0x3000, 0x1000));
        Kernel.MappingCount.Should().Be(mappings + 2, "one mapping per sparse area");

        long calls = Kernel.CallCount;
        bar2.Write32(0x10, 0x11111111);
        bar2.Write64(0x3ff8, 0x2222222233333333);
        bar2.Read32(0x10).Should().Be(0x11111111);
        bar2.Read64(0x3ff8).Should().Be(0x2222222233333333);
        Kernel.CallCount.Should().Be(calls, "accesses inside the areas go through their mappings");

        bar2.Write16(0x2000, 0x4444);
        bar2.Read16(0x2000).Should().Be(0x4444);
        Kernel.CallCount.Should().Be(calls + 2, "accesses between the areas are a pwrite and a pread");

        // The same register seen both ways: written through the second area's mapping, read with pread.
        bar2.Write8(0x3000, 0x5a);
        Kernel.CallCount.Should().Be(calls + 2);
        Span<byte> b = stackalloc byte[1];
        device.ReadRegion(2, 0x3000, b);
        b[0].Should().Be(0x5a, "the mapped area and the file reach the same register");
    }

    [Fact]
    public void ARegionThatCannotBeMappedGoesThroughTheFile()
    {
        AddPci(model: SparseModel());
        var device = RegisterPci();
        using var open = device.Open();
        int mappings = Kernel.MappingCount;

        using var bar0 = device.OpenRegion(0);

        bar0.IsMapped.Should().BeFalse();
        bar0.MappedAreas.Should().BeEmpty();
        Kernel.MappingCount.Should().Be(mappings);
        bar0.Write32(0x20, 0xcafe);
        bar0.Read32(0x20).Should().Be(0xcafe);
    }

    [Fact]
    public void DisposingASparseRegionUnmapsEveryAreaAndReleasesItsReference()
    {
        AddPci(model: SparseModel());
        var device = RegisterPci();
        using var open = device.Open();
        int mappings = Kernel.MappingCount;
        int references = device.ReferenceCount;

        var bar2 = device.OpenRegion(2);
        device.ReferenceCount.Should().Be(references + 1, "a region holds a device reference");
        bar2.Dispose();

        Kernel.MappingCount.Should().Be(mappings);
        device.ReferenceCount.Should().Be(references);
        bar2.Invoking(r => r.Read32(0)).Should().Throw<ObjectDisposedException>();
        bar2.Invoking(r => r.Read32(0x2000)).Should().Throw<ObjectDisposedException>();
    }

    [Fact]
    public void ClosingTheDeviceUnmapsTheSparseAreasOfARegionStillOpen()
    {
        AddPci(model: SparseModel());
        var device = RegisterPci();
        var open = device.Open();
        var bar2 = device.OpenRegion(2);

        open.Dispose();

        bar2.IsLive.Should().BeFalse();
        Kernel.MappingCount.Should().Be(0);
        device.ReferenceCount.Should().Be(1, "only the registration is left");
        bar2.Dispose();
    }

    [Fact]
    public void AFailedAreaMappingUnmapsTheAreasAlreadyMapped()
    {
        AddPci(model: SparseModel());
        var device = RegisterPci();
        using var open = device.Open();
        int mappings = Kernel.MappingCount;
        int references = device.ReferenceCount;
        // GET_REGION_INFO twice (size, then chain), the first area's mmap, then the second area's mmap fails.
        Kernel.FailCall(4, Errno.ENOMEM);

        var e = device.Invoking(d => d.OpenRegion(2)).Should().Throw<VfioException>().Which;

        e.Operation.Should().Be("mmap");
        e.RegionIndex.Should().Be(2);
        Kernel.MappingCount.Should().Be(mappings, "the first area was unmapped again");
        device.ReferenceCount.Should().Be(references);
    }

    [Theory]
    [InlineData(0x1000UL, 4)]
    [InlineData(0xffcUL, 8)]
    [InlineData(0x2UL, 4)]
    [InlineData(ulong.MaxValue, 1)]
    public void AnAccessOutsideTheRegionOrMisalignedIsRefused(ulong offset, int size)
    {
        using var small = OverMemory(0x1000);

        Action access = size switch
        {
            1 => () => small.Read8(offset),
            4 => () => small.Read32(offset),
            _ => () => small.Write64(offset, 0),
        };

        access.Should().Throw<ArgumentOutOfRangeException>().WithMessage($"*{size}-byte access*");
    }

    [Fact]
    public void AnAccessWiderThanTheWholeRegionIsRefused()
    {
        using var tiny = OverMemory(4);

        tiny.Invoking(r => r.Read64(0)).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*8-byte access at 0x0 is outside region 0 of test memory (0x4 bytes)*");
        tiny.Invoking(r => r.Write64(0, 1)).Should().Throw<ArgumentOutOfRangeException>();
        tiny.Read32(0).Should().Be(0);
    }

    [Fact]
    public void ARegionOverMemoryReadsAndWritesEveryWidth()
    {
        using var region = OverMemory(0x1000);

        region.Write8(1, 0xab);
        region.Write16(2, 0xcdef);
        region.Write32(4, 0x01234567);
        region.Write64(8, 0x89abcdef01234567);

        region.Read8(1).Should().Be(0xab);
        region.Read16(2).Should().Be(0xcdef);
        region.Read32(4).Should().Be(0x01234567);
        region.Read64(8).Should().Be(0x89abcdef01234567);
        region.Read32(0).Should().Be(0xcdefab00, "little-endian bytes 0 to 3");
    }

    private MmioRegion OverMemory(nuint length)
    {
        Kernel.Mmap(null, length, Flags.PROT_READ | Flags.PROT_WRITE, Flags.MAP_SHARED | Flags.MAP_ANONYMOUS, 0, out var mapping).Should().Be(0);
        return MmioRegion.OverMemory(mapping, "test memory");
    }
}
