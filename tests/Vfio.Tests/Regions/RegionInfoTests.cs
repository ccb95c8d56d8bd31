using System.Runtime.InteropServices;
using Vfio.Interop;
using Vfio.Testing;

namespace Vfio.Tests.Regions;

/// <summary>Region info: the capability chain parsed into typed records, and malformed chains refused.</summary>
public abstract class RegionInfoTests(VfioBackend backend) : KernelTest(backend)
{
    /// <summary>The tests on the legacy backend (a kernel that behaves as Linux 6.1).</summary>
    public sealed class Legacy() : RegionInfoTests(VfioBackend.Legacy);

    /// <summary>The tests on the iommufd backend (a kernel that behaves as Linux 7.2).</summary>
    public sealed class Iommufd() : RegionInfoTests(VfioBackend.Iommufd);

    private const int Fixed = 32; // sizeof(struct vfio_region_info)
    private static readonly ErrorTarget Target = new(Device: "0000:00:03.0");

    /// <summary>A vfio_region_info of a 16 KiB mappable region followed by room for capabilities.</summary>
    private static byte[] Info(int length, uint capOffset)
    {
        var buffer = new byte[length];
        var info = new vfio_region_info
        {
            argsz = (uint)length,
            flags = VfioUapi.VFIO_REGION_INFO_FLAG_READ | VfioUapi.VFIO_REGION_INFO_FLAG_WRITE | VfioUapi.VFIO_REGION_INFO_FLAG_MMAP | VfioUapi.VFIO_REGION_INFO_FLAG_CAPS,
            index = 2,
            cap_offset = capOffset,
            size = 0x4000,
            offset = 2UL << 40,
        };
        MemoryMarshal.Write(buffer, in info);
        return buffer;
    }

    private static void Header(byte[] buffer, int at, ushort id, uint next, ushort version = 1) =>
        MemoryMarshal.Write(buffer.AsSpan(at), new vfio_info_cap_header { id = id, version = version, next = next });

    private static void Sparse(byte[] buffer, int at, uint next, params (ulong Offset, ulong Size)[] areas)
    {
        Header(buffer, at, (ushort)VfioUapi.VFIO_REGION_INFO_CAP_SPARSE_MMAP, next);
        MemoryMarshal.Write(buffer.AsSpan(at + 8), (uint)areas.Length);
        for (int i = 0; i < areas.Length; i++)
        {
            MemoryMarshal.Write(buffer.AsSpan(at + 16 + (16 * i)), new vfio_region_sparse_mmap_area { offset = areas[i].Offset, size = areas[i].Size });
        }
    }

    private static Action Parsing(byte[] buffer) => () => RegionInfo.Parse(buffer, 2, Target);

    [Fact]
    public void AWellFormedChainGivesSparseAreasTypeAndMsixMappable()
    {
        var buffer = Info(Fixed + 48 + 16 + 8, Fixed);
        Sparse(buffer, Fixed, Fixed + 48, (0, 0x1000), (0x3000, 0x1000));
        Header(buffer, Fixed + 48, (ushort)VfioUapi.VFIO_REGION_INFO_CAP_TYPE, Fixed + 48 + 16);
        MemoryMarshal.Write(buffer.AsSpan(Fixed + 48 + 8), 0x8000_1234u);
        MemoryMarshal.Write(buffer.AsSpan(Fixed + 48 + 12), 7u);
        Header(buffer, Fixed + 48 + 16, (ushort)VfioUapi.VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, 0);

        var info = RegionInfo.Parse(buffer, 2, Target);

        info.SparseMmapAreas.Should().Equal(new SparseMmapArea(0, 0x1000), new SparseMmapArea(0x3000, 0x1000));
        info.Type.Should().Be(new RegionType(0x8000_1234, 7));
        info.MsixMappable.Should().BeTrue();
        info.Size.Should().Be(0x4000);
    }

    [Fact]
    public void AChainThatLoopsIsRefusedNamingTheDeviceAndRegion()
    {
        var buffer = Info(Fixed + 16, Fixed);
        Header(buffer, Fixed, (ushort)VfioUapi.VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, Fixed + 8);
        Header(buffer, Fixed + 8, (ushort)VfioUapi.VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, Fixed);

        var e = Parsing(buffer).Should().Throw<VfioException>().WithMessage("*region 2 of 0000:00:03.0*loops back to offset 32*").Which;
        e.Device.Should().Be("0000:00:03.0");
        e.RegionIndex.Should().Be(2);
    }

    [Fact]
    public void ACapabilityThatPointsToItselfIsRefused()
    {
        var buffer = Info(Fixed + 8, Fixed);
        Header(buffer, Fixed, (ushort)VfioUapi.VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, Fixed);

        Parsing(buffer).Should().Throw<VfioException>().WithMessage("*loops back*");
    }

    [Fact]
    public void AnOffsetPastTheBufferIsRefused()
    {
        var buffer = Info(Fixed + 8, Fixed);
        Header(buffer, Fixed, (ushort)VfioUapi.VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, 0x10000);

        Parsing(buffer).Should().Throw<VfioException>().WithMessage("*region 2 of 0000:00:03.0*offset 65536 runs past the 40-byte buffer*");
    }

    [Fact]
    public void AHeaderCutShortByTheBufferIsRefused()
    {
        var buffer = Info(Fixed + 4, Fixed);

        Parsing(buffer).Should().Throw<VfioException>().WithMessage("*header at offset 32 runs past the 36-byte buffer*");
    }

    [Fact]
    public void ANextPointerBackIntoTheFixedStructIsRefused()
    {
        var buffer = Info(Fixed + 8, Fixed);
        Header(buffer, Fixed, (ushort)VfioUapi.VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, 8);

        Parsing(buffer).Should().Throw<VfioException>().WithMessage("*offset 8 overlaps the 32-byte info struct*");
    }

    [Fact]
    public void AFirstOffsetInsideTheFixedStructIsRefused()
    {
        var buffer = Info(Fixed + 8, 4);

        Parsing(buffer).Should().Throw<VfioException>().WithMessage("*offset 4 overlaps*");
    }

    [Fact]
    public void ASparseCapabilityWhoseAreasRunPastTheBufferIsRefused()
    {
        var buffer = Info(Fixed + 16 + 16, Fixed);
        Sparse(buffer, Fixed, 0, (0, 0x1000));
        MemoryMarshal.Write(buffer.AsSpan(Fixed + 8), 1000u); // nr_areas far beyond the buffer

        Parsing(buffer).Should().Throw<VfioException>().WithMessage("*region 2 of 0000:00:03.0*capability 1 at offset 32 is truncated*");
    }

    [Fact]
    public void ASparseAreaOutsideTheRegionIsRefused()
    {
        var buffer = Info(Fixed + 16 + 16, Fixed);
        Sparse(buffer, Fixed, 0, (0x3000, 0x2000));

        Parsing(buffer).Should().Throw<VfioException>().WithMessage("*sparse mmap area [3000, +2000) lies outside the 4000-byte region*")
            .Which.RegionIndex.Should().Be(2);
    }

    [Fact]
    public void ASparseAreaWhoseEndWrapsIsRefused()
    {
        var buffer = Info(Fixed + 16 + 16, Fixed);
        Sparse(buffer, Fixed, 0, (0x1000, ulong.MaxValue));

        Parsing(buffer).Should().Throw<VfioException>().WithMessage("*lies outside*");
    }

    [Fact]
    public void ATypeCapabilityCutShortIsRefused()
    {
        var buffer = Info(Fixed + 12, Fixed);
        Header(buffer, Fixed, (ushort)VfioUapi.VFIO_REGION_INFO_CAP_TYPE, 0);

        Parsing(buffer).Should().Throw<VfioException>().WithMessage("*capability 2 at offset 32 is truncated*");
    }

    [Fact]
    public void UnknownCapabilitiesAreSkipped()
    {
        var buffer = Info(Fixed + 16, Fixed);
        Header(buffer, Fixed, 0x77, Fixed + 8);
        Header(buffer, Fixed + 8, (ushort)VfioUapi.VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, 0);

        RegionInfo.Parse(buffer, 2, Target).MsixMappable.Should().BeTrue();
    }

    [Fact]
    public void TheQueryGrowsArgszWhenTheKernelAsksForRoomForCapabilities()
    {
        var model = new PciDeviceModel(0x1234, 0x11e8, 0x00ff00);
        model.DefineBar(2, 0x4000, PciBarKind.Memory64);
        model.DefineSparseMmap(2, new SparseMmapArea(0, 0x1000), new SparseMmapArea(0x3000, 0x1000));
        model.MsixVectors = 4;
        model.MsixBar = 2;
        AddPci(model: model);
        var device = RegisterPci();
        using var open = device.Open();
        long before = Kernel.CallCount;

        var info = device.GetRegionInfo(2);

        Kernel.CallCount.Should().Be(before + 2, "the first ioctl learns the size, the second gets the chain");
        info.SparseMmapAreas.Should().Equal(new SparseMmapArea(0, 0x1000), new SparseMmapArea(0x3000, 0x1000));
        info.MsixMappable.Should().BeTrue();
        info.Flags.Should().HaveFlag(RegionAccess.Caps);
    }

    [Fact]
    public void ARegionWithoutCapabilitiesTakesOneIoctl()
    {
        AddPci(model: new EduDeviceModel());
        var device = RegisterPci();
        using var open = device.Open();
        long before = Kernel.CallCount;

        var info = device.GetRegionInfo(0);

        Kernel.CallCount.Should().Be(before + 1);
        info.SparseMmapAreas.Should().BeNull();
        info.Type.Should().BeNull();
    }
}
