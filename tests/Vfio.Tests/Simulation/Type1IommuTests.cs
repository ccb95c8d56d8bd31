using System.Runtime.InteropServices;
using Vfio.Interop;
using Vfio.Testing;

namespace Vfio.Tests.Simulation;

public sealed unsafe class Type1IommuTests : IDisposable
{
    private readonly SimulatedKernel _kernel = new();
    private readonly Opened _opened;
    private readonly SafeMapping _memory;

    public Type1IommuTests()
    {
        _kernel.AddPciDevice("0000:00:03.0", 0x1234, 0x11e8, 0x00ff00, iommuGroup: 5);
        _opened = Seam.OpenDevice(_kernel, 5, "0000:00:03.0");
        _memory = Seam.Anonymous(_kernel, 16 * 4096);
    }

    private ulong Vaddr => (ulong)_memory.Address;

    public void Dispose()
    {
        _memory.Dispose();
        _opened.Dispose();
        _kernel.AssertNoLeaks();
    }

    [Fact]
    public void InfoWithABufferTooSmallForCapabilitiesRaisesArgsz()
    {
        var info = new vfio_iommu_type1_info { argsz = (uint)sizeof(vfio_iommu_type1_info) };
        _kernel.Ioctl(_opened.Container, VfioUapi.VFIO_IOMMU_GET_INFO, &info).Should().Be(0);
        info.flags.Should().Be(VfioUapi.VFIO_IOMMU_INFO_PGSIZES | VfioUapi.VFIO_IOMMU_INFO_CAPS);
        info.iova_pgsizes.Should().Be(0x4020_1000);
        info.cap_offset.Should().Be(0);
        info.argsz.Should().BeGreaterThan((uint)sizeof(vfio_iommu_type1_info));
    }

    [Fact]
    public void InfoWritesTheCapabilityChainWithOffsetsFromTheStart()
    {
        byte[] buffer = new byte[512];
        fixed (byte* p = buffer)
        {
            ((vfio_iommu_type1_info*)p)->argsz = (uint)buffer.Length;
            _kernel.Ioctl(_opened.Container, VfioUapi.VFIO_IOMMU_GET_INFO, p).Should().Be(0);
            var info = (vfio_iommu_type1_info*)p;
            info->cap_offset.Should().Be((uint)sizeof(vfio_iommu_type1_info));
            var seen = new Dictionary<ushort, uint>();
            for (uint offset = info->cap_offset; offset != 0;)
            {
                var header = (vfio_info_cap_header*)(p + offset);
                seen[header->id] = offset;
                offset = header->next;
            }
            seen.Keys.Should().BeEquivalentTo(new ushort[] { 1, 2, 3 });
            // Linux 6.1 packs them without padding: migration (32 bytes), DMA avail (12), IOVA ranges.
            seen[(ushort)VfioUapi.VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION].Should().Be(24);
            seen[(ushort)VfioUapi.VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL].Should().Be(56);
            seen[(ushort)VfioUapi.VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE].Should().Be(68);
            var avail = (vfio_iommu_type1_info_dma_avail*)(p + seen[(ushort)VfioUapi.VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL]);
            avail->avail.Should().Be(65535);
            var ranges = (vfio_iommu_type1_info_cap_iova_range*)(p + seen[(ushort)VfioUapi.VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE]);
            ranges->nr_iovas.Should().Be(2);
            var first = (vfio_iova_range*)((byte*)ranges + sizeof(vfio_iommu_type1_info_cap_iova_range));
            first[0].start.Should().Be(0);
            first[0].end.Should().Be(0xfedf_ffff);
            first[1].start.Should().Be(0xfef0_0000);
        }
    }

    [Fact]
    public void MapChecksSizeAlignmentAndPermissions()
    {
        Seam.Map(_kernel, _opened.Container, Vaddr, 0x10000, 0).Should().Be(-Errno.EINVAL);
        Seam.Map(_kernel, _opened.Container, Vaddr, 0x10800, 4096).Should().Be(-Errno.EINVAL);
        Seam.Map(_kernel, _opened.Container, Vaddr, 0x10000, 100).Should().Be(-Errno.EINVAL);
        Seam.Map(_kernel, _opened.Container, Vaddr, 0x10000, 4096, flags: 0).Should().Be(-Errno.EINVAL);
        Seam.Map(_kernel, _opened.Container, Vaddr, 0x10000, 4096, flags: 0x80).Should().Be(-Errno.EINVAL);
        Seam.Map(_kernel, _opened.Container, 0x1000, 0x10000, 4096).Should().Be(-Errno.EFAULT, "nothing is mapped at that address");
        Seam.Map(_kernel, _opened.Container, Vaddr, 0x10000, 4096).Should().Be(0);
    }

    [Fact]
    public void AnOverlappingMapExists()
    {
        Seam.Map(_kernel, _opened.Container, Vaddr, 0x10000, 2 * 4096).Should().Be(0);
        Seam.Map(_kernel, _opened.Container, Vaddr + 8192, 0x11000, 4096).Should().Be(-Errno.EEXIST);
        Seam.Map(_kernel, _opened.Container, Vaddr + 8192, 0xf000, 2 * 4096).Should().Be(-Errno.EEXIST);
        Seam.Map(_kernel, _opened.Container, Vaddr + 8192, 0x12000, 4096).Should().Be(0);
    }

    [Fact]
    public void AMapOutsideTheIovaRangesIsInvalid()
    {
        Seam.Map(_kernel, _opened.Container, Vaddr, 0xfee0_0000, 4096).Should().Be(-Errno.EINVAL);
        Seam.Map(_kernel, _opened.Container, Vaddr, 0x80_0000_0000, 4096).Should().Be(-Errno.EINVAL);
    }

    [Fact]
    public void TheMappingLimitIsNoSpace()
    {
        using var kernel = new KernelWithLimit(2);
        Seam.Map(kernel.Kernel, kernel.Opened.Container, kernel.Vaddr, 0x0000, 4096).Should().Be(0);
        Seam.Map(kernel.Kernel, kernel.Opened.Container, kernel.Vaddr, 0x1000, 4096).Should().Be(0);
        Seam.Map(kernel.Kernel, kernel.Opened.Container, kernel.Vaddr, 0x2000, 4096).Should().Be(-Errno.ENOSPC);
    }

    [Fact]
    public void UnmappingNothingSucceedsWithSizeZero()
    {
        Seam.Unmap(_kernel, _opened.Container, 0x40000, 4096, out ulong unmapped).Should().Be(0);
        unmapped.Should().Be(0);
    }

    [Fact]
    public void AnUnmapThatBisectsAMappingIsInvalid()
    {
        Seam.Map(_kernel, _opened.Container, Vaddr, 0x10000, 4 * 4096).Should().Be(0);
        Seam.Unmap(_kernel, _opened.Container, 0x11000, 4096, out _).Should().Be(-Errno.EINVAL);
        Seam.Unmap(_kernel, _opened.Container, 0xf000, 2 * 4096, out _).Should().Be(-Errno.EINVAL);
        Seam.Unmap(_kernel, _opened.Container, 0xf000, 6 * 4096, out ulong unmapped).Should().Be(0);
        unmapped.Should().Be(4 * 4096);
    }

    [Fact]
    public void UnmapAllTakesEverythingAndWantsZeroIovaAndSize()
    {
        Seam.Map(_kernel, _opened.Container, Vaddr, 0x10000, 4096).Should().Be(0);
        Seam.Map(_kernel, _opened.Container, Vaddr, 0x20000, 4096).Should().Be(0);
        Seam.Unmap(_kernel, _opened.Container, 0x10000, 0, out _, VfioUapi.VFIO_DMA_UNMAP_FLAG_ALL).Should().Be(-Errno.EINVAL);
        Seam.Unmap(_kernel, _opened.Container, 0, 0, out ulong unmapped, VfioUapi.VFIO_DMA_UNMAP_FLAG_ALL).Should().Be(0);
        unmapped.Should().Be(2 * 4096);
        _kernel.DmaMappingCount.Should().Be(0);
    }

    private sealed class KernelWithLimit : IDisposable
    {
        private readonly SafeMapping _memory;

        public KernelWithLimit(int limit)
        {
            Kernel = new SimulatedKernel { DmaEntryLimit = limit };
            Kernel.AddPciDevice("0000:00:03.0", 0x1234, 0x11e8, 0x00ff00, iommuGroup: 1);
            Opened = Seam.OpenDevice(Kernel, 1, "0000:00:03.0");
            _memory = Seam.Anonymous(Kernel, 4096);
        }

        public SimulatedKernel Kernel { get; }

        public Opened Opened { get; }

        public ulong Vaddr => (ulong)_memory.Address;

        public void Dispose()
        {
            Opened.Dispose();
            _memory.Dispose();
            Kernel.AssertNoLeaks();
        }
    }
}
