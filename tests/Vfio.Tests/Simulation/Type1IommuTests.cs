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

    [Fact]
    public void TheMigrationCapabilityReportsOnlyTheSmallestPageSize()
    {
        byte[] buffer = Info(_kernel, _opened.Container);
        var caps = Caps(buffer);

        caps.Select(c => c.Id).Should().Equal(2, 3, 1);
        fixed (byte* p = buffer)
        {
            var migration = (vfio_iommu_type1_info_cap_migration*)(p + caps[0].Offset);
            migration->pgsize_bitmap.Should().Be(0x1000, "Linux reports 1 << __ffs(pgsize_bitmap), the dirty-bitmap granule");
            migration->flags.Should().Be(0);
        }
    }

    [Fact]
    public void AnOlderKernelLeavesDmaAvailOutAndAnEmptyRangeListLeavesRangesOut()
    {
        using var kernel = new KernelWithLimit(8, k =>
        {
            k.ReportsDmaAvailable = false;
            k.IovaRanges = [];
        });

        var caps = Caps(Info(kernel.Kernel, kernel.Opened.Container));

        caps.Select(c => c.Id).Should().Equal(2);
        Seam.Map(kernel.Kernel, kernel.Opened.Container, kernel.Vaddr, 0xfee0_0000, 4096).Should().Be(0, "with no ranges every IOVA is valid, as for an mdev-only container");
        Seam.Unmap(kernel.Kernel, kernel.Opened.Container, 0xfee0_0000, 4096, out _).Should().Be(0);
    }

    [Fact]
    public void AShortArgszGetsOnlyTheFieldsItCovers()
    {
        byte[] buffer = new byte[sizeof(vfio_iommu_type1_info)];
        buffer.AsSpan().Fill(0xee);
        fixed (byte* p = buffer)
        {
            ((vfio_iommu_type1_info*)p)->argsz = 18;
            _kernel.Ioctl(_opened.Container, VfioUapi.VFIO_IOMMU_GET_INFO, p).Should().Be(0);
            ((vfio_iommu_type1_info*)p)->iova_pgsizes.Should().Be(0x4020_1000);
        }
        buffer[16..].Should().OnlyContain(b => b == 0xee, "bytes past iova_pgsizes belong to the caller when argsz does not cover cap_offset");
    }

    [Fact]
    public void MapChecksRunInTheKernelsOrder()
    {
        using var kernel = new KernelWithLimit(1, k => k.MemoryLockLimit = 0);
        var container = kernel.Opened.Container;

        // EFAULT (pinning an unmapped address) comes before the locked-memory charge.
        Seam.Map(kernel.Kernel, container, 0x1000, 0x10000, 4096).Should().Be(-Errno.EFAULT);
        Seam.Map(kernel.Kernel, container, kernel.Vaddr, 0x10000, 4096).Should().Be(-Errno.ENOMEM, "RLIMIT_MEMLOCK is 0");
        kernel.Kernel.MemoryLockLimit = null;
        Seam.Map(kernel.Kernel, container, kernel.Vaddr, 0x10000, 4096).Should().Be(0, "a failed pin gave its mapping slot back");
        // The overlap check comes before the limit, and the limit before the IOVA ranges.
        Seam.Map(kernel.Kernel, container, kernel.Vaddr, 0x10000, 4096).Should().Be(-Errno.EEXIST);
        Seam.Map(kernel.Kernel, container, kernel.Vaddr, 0xfee0_0000, 4096).Should().Be(-Errno.ENOSPC);
        Seam.Unmap(kernel.Kernel, container, 0x10000, 4096, out _).Should().Be(0);
    }

    [Fact]
    public void PinnedPagesAreChargedToTheMemoryLockLimitUntilUnmapped()
    {
        _kernel.MemoryLockLimit = 3 * 4096;
        Seam.Map(_kernel, _opened.Container, Vaddr, 0x10000, 2 * 4096).Should().Be(0);
        Seam.Map(_kernel, _opened.Container, Vaddr, 0x20000, 2 * 4096).Should().Be(-Errno.ENOMEM);
        _kernel.LockedMemory.Should().Be(2 * 4096);
        Seam.Map(_kernel, _opened.Container, Vaddr, 0x20000, 4096).Should().Be(0);
        Seam.Unmap(_kernel, _opened.Container, 0, 0, out _, VfioUapi.VFIO_DMA_UNMAP_FLAG_ALL).Should().Be(0);
        _kernel.LockedMemory.Should().Be(0);
    }

    [Fact]
    public void AHugetlbMappingTakesPagesFromThePool()
    {
        _kernel.HugePages = 2;
        const int Huge = Vfio.Interop.Interop.Flags.MAP_PRIVATE | Vfio.Interop.Interop.Flags.MAP_ANONYMOUS | Vfio.Interop.Interop.Flags.MAP_HUGETLB;
        const int Rw = Vfio.Interop.Interop.Flags.PROT_READ | Vfio.Interop.Interop.Flags.PROT_WRITE;

        _kernel.Mmap(null, 3 << 20, Rw, Huge, 0, out var twoPages).Should().Be(0);
        _kernel.FreeHugePages.Should().Be(0, "3 MiB rounds up to two 2 MiB pages");
        _kernel.Mmap(null, 4096, Rw, Huge, 0, out _).Should().Be(-Errno.ENOMEM);
        Seam.ReadText(_kernel, _kernel.Sys("kernel/mm/hugepages/hugepages-2048kB/free_hugepages")).Should().Be("0\n");
        twoPages.Dispose();
        _kernel.FreeHugePages.Should().Be(2);
    }

    private static byte[] Info(SimulatedKernel kernel, SafeFd container)
    {
        byte[] buffer = new byte[512];
        fixed (byte* p = buffer)
        {
            ((vfio_iommu_type1_info*)p)->argsz = (uint)buffer.Length;
            kernel.Ioctl(container, VfioUapi.VFIO_IOMMU_GET_INFO, p).Should().Be(0);
        }
        return buffer;
    }

    private static List<(ushort Id, int Offset)> Caps(byte[] buffer)
    {
        var caps = new List<(ushort, int)>();
        var info = MemoryMarshal.Read<vfio_iommu_type1_info>(buffer);
        for (uint offset = info.cap_offset; offset != 0;)
        {
            var header = MemoryMarshal.Read<vfio_info_cap_header>(buffer.AsSpan((int)offset));
            caps.Add((header.id, (int)offset));
            offset = header.next;
        }
        return caps;
    }

    private sealed class KernelWithLimit : IDisposable
    {
        private readonly SafeMapping _memory;

        public KernelWithLimit(int limit, Action<SimulatedKernel>? configure = null)
        {
            Kernel = new SimulatedKernel { DmaEntryLimit = limit };
            configure?.Invoke(Kernel);
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
