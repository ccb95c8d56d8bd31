using Vfio.Testing;

namespace Vfio.Tests.Regions;

/// <summary>Bulk copies into and out of a region: widths, the ways a region is reached, bounds and lifetime.</summary>
public partial class MmioRegionTests
{
    /// <summary>A function whose BAR0 is plain memory and that records every register access it sees, in order.</summary>
    private sealed class AccessRecordingModel : PciDeviceModel
    {
        public AccessRecordingModel()
            : base(0x1234, 0x11e8, 0x00ff00)
        {
            DefineBar(0, 0x1000);
        }

        public List<(ulong Offset, int Size, bool Write)> Accesses { get; } = [];

        protected override ulong ReadBar(int bar, ulong offset, int size)
        {
            Accesses.Add((offset, size, false));
            return base.ReadBar(bar, offset, size);
        }

        protected override void WriteBar(int bar, ulong offset, int size, ulong value)
        {
            Accesses.Add((offset, size, true));
            base.WriteBar(bar, offset, size, value);
        }
    }

    private static byte[] Pattern(int length, int seed)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    [Fact]
    public void ACopyThroughAMappingMakesTheWidestAlignedAccessesInAscendingOrder()
    {
        var model = new AccessRecordingModel();
        AddPci(model: model);
        var device = RegisterPci();
        using var open = device.Open();
        using var bar0 = device.OpenRegion(0);
        bar0.IsMapped.Should().BeTrue();
        byte[] written = Pattern(19, 1);
        model.Accesses.Clear();

        bar0.Write(3, written);

        // [3, 22): a byte up to 4-byte alignment, a dword up to 8, a qword, then what the end leaves.
        (ulong, int)[] widths = [(3, 1), (4, 4), (8, 8), (16, 4), (20, 2)];
        model.Accesses.Should().Equal(widths.Select(w => (w.Item1, w.Item2, true)));
        model.Accesses.Clear();

        var read = new byte[19];
        bar0.Read(3, read);

        model.Accesses.Should().Equal(widths.Select(w => (w.Item1, w.Item2, false)));
        read.Should().Equal(written);
        bar0.Read8(2).Should().Be(0, "the byte before the copy is untouched");
        bar0.Read8(22).Should().Be(0, "the byte after it too");
        bar0.Read32(4).Should().Be(BitConverter.ToUInt32(written, 1), "the device sees the bytes in order (PCI is little-endian)");
    }

    [Fact]
    public void ACopyOverMemoryRoundTripsAtEveryAlignmentAndLength()
    {
        using var region = OverMemory(0x1000);
        byte[] background = Pattern(0x80, 2);
        var read = new byte[40];

        for (ulong offset = 0; offset < 8; offset++)
        {
            for (int length = 0; length <= 40; length++)
            {
                region.Write(0, background);
                byte[] written = Pattern(length, (int)offset * 100 + length);

                region.Write(offset + 16, written);
                region.Read(offset + 16, read.AsSpan(0, length));

                read.AsSpan(0, length).ToArray().Should().Equal(written, "offset {0}, length {1}", offset + 16, length);
                for (ulong at = 0; at < (ulong)background.Length; at++)
                {
                    bool inside = at >= offset + 16 && at < offset + 16 + (ulong)length;
                    region.Read8(at).Should().Be(inside ? written[at - offset - 16] : background[at], "byte 0x{0:x} after a {1}-byte copy at 0x{2:x}", at, length, offset + 16);
                }
            }
        }
    }

    [Fact]
    public void ACopyReachesTheLastByteOfTheRegionAndNoFurther()
    {
        using var region = OverMemory(0x1000);
        byte[] written = Pattern(13, 3);

        region.Write(0x1000 - 13, written);

        var read = new byte[13];
        region.Read(0x1000 - 13, read);
        read.Should().Equal(written);
        region.Read(0x1000, Span<byte>.Empty); // an empty copy at the end is inside
    }

    [Theory]
    [InlineData(0xff0UL, 32)]
    [InlineData(0x1000UL, 1)]
    [InlineData(0x1001UL, 0)]
    [InlineData(ulong.MaxValue, 2)]
    [InlineData(0UL, 0x1001)]
    public void ACopyOutsideTheRegionIsRefusedNamingTheRegionAndDevice(ulong offset, int length)
    {
        using var small = OverMemory(0x1000);
        var buffer = new byte[length];

        small.Invoking(r => r.Read(offset, buffer)).Should().Throw<ArgumentOutOfRangeException>()
            .WithMessage($"A {length}-byte copy at 0x{offset:x} is outside region 0 of test memory (0x1000 bytes)*");
        small.Invoking(r => r.Write(offset, buffer)).Should().Throw<ArgumentOutOfRangeException>()
            .WithMessage($"A {length}-byte copy at 0x{offset:x}*");
    }

    [Fact]
    public void ACopyThroughTheFileIsOnePreadOrPwrite()
    {
        AddPci(model: SparseModel());
        var device = RegisterPci();
        using var open = device.Open();
        using var bar0 = device.OpenRegion(0);
        bar0.IsMapped.Should().BeFalse();
        byte[] written = Pattern(0x101, 4);
        long calls = Kernel.CallCount;

        bar0.Write(0x13, written);
        var read = new byte[0x101];
        bar0.Read(0x13, read);

        Kernel.CallCount.Should().Be(calls + 2, "one pwrite and one pread");
        read.Should().Equal(written);
        bar0.Read32(0x14).Should().Be(BitConverter.ToUInt32(written, 1));
    }

    [Fact]
    public void ACopyAcrossSparseAreasUsesTheirMappingsAndTheFileForTheGapBetween()
    {
        AddPci(model: SparseModel());
        var device = RegisterPci();
        using var open = device.Open();
        using var bar2 = device.OpenRegion(2);
        byte[] written = Pattern(0x2200, 5);
        long calls = Kernel.CallCount;

        // [0xf00, 0x3100): the end of the first area, the gap [0x1000, 0x3000), the start of the second.
        bar2.Write(0xf00, written);
        Kernel.CallCount.Should().Be(calls + 1, "only the gap goes through the file, in one pwrite");
        var read = new byte[0x2200];
        bar2.Read(0xf00, read);
        Kernel.CallCount.Should().Be(calls + 2, "and one pread");

        read.Should().Equal(written);
        Span<byte> b = stackalloc byte[1];
        device.ReadRegion(2, 0x3000, b);
        b[0].Should().Be(written[0x2100], "the second area's mapping reached the device");
        bar2.Read8(0x1000).Should().Be(written[0x100]);
    }

    [Fact]
    public void ACopyAfterDisposeIsRefused()
    {
        var region = OverMemory(0x1000);
        AddPci(model: SparseModel());
        var device = RegisterPci();
        using var open = device.Open();
        var bar0 = device.OpenRegion(0);
        var buffer = new byte[8];

        region.Dispose();
        bar0.Dispose();

        foreach (var disposed in new[] { region, bar0 })
        {
            disposed.Invoking(r => r.Read(0, buffer)).Should().Throw<ObjectDisposedException>();
            disposed.Invoking(r => r.Write(0, buffer)).Should().Throw<ObjectDisposedException>();
            disposed.Invoking(r => r.Read(0, Span<byte>.Empty)).Should().Throw<ObjectDisposedException>("even an empty copy");
            disposed.Invoking(r => r.Write(0x2000, buffer)).Should().Throw<ObjectDisposedException>("disposal is reported before the bounds");
        }
    }

    [Fact]
    public void ACopyAfterTheDeviceClosesIsRefused()
    {
        var (_, _, open, bar0) = MappedBar0();
        using (bar0)
        {
            open.Dispose();

            bar0.Invoking(r => r.Read(0, new byte[16])).Should().Throw<ObjectDisposedException>();
            bar0.Invoking(r => r.Write(0, new byte[16])).Should().Throw<ObjectDisposedException>();
        }
    }

    [Fact]
    public void WhileMemorySpaceIsOffACopyReadsAllOnesAndItsWritesAreDropped()
    {
        var (model, device, open, bar0) = MappedBar0();
        using (open)
        using (bar0)
        {
            byte[] written = Pattern(0x40, 6);
            bar0.Write(0x10, written);

            device.UpdateCommand(PciCommand.None, clear: PciCommand.MemorySpace);

            var read = new byte[0x40];
            bar0.Read(0x10, read);
            read.Should().OnlyContain(b => b == 0xff, "a device that does not decode reads all-ones");
            bar0.Write(0x10, new byte[0x40]); // dropped: it neither faults nor reaches the device
            device.UpdateCommand(PciCommand.MemorySpace);
            bar0.Read(0x10, read);
            read.Should().Equal(written, "the dropped copy never reached the device");
        }
    }

    [Fact]
    public void ACopyAllocatesNothing()
    {
        using var region = OverMemory(0x1000);
        var bytes = new byte[0x100];
        region.Write(1, bytes);
        region.Read(1, bytes);

        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 100; i++)
        {
            region.Write((ulong)i, bytes);
            region.Read((ulong)i, bytes);
        }
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        allocated.Should().Be(0);
    }
}
