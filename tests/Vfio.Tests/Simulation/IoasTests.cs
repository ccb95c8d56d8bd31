using Vfio.Interop;
using Vfio.Testing;
using static Vfio.Interop.Interop;

namespace Vfio.Tests.Simulation;

/// <summary>
/// An IO address space on the simulated kernel's <c>/dev/iommu</c>, checked rule by rule against Linux
/// 7.2's drivers/iommu/iommufd (ioas.c, io_pagetable.c, pages.c): each test names the function it mirrors.
/// </summary>
public sealed unsafe class IoasTests : IDisposable
{
    private const ulong Page = 4096;
    private readonly SimulatedKernel _kernel = new();
    private readonly SafeFd _iommufd;
    private readonly uint _ioas;
    private readonly SafeMapping _memory;
    private SafeFd? _device;
    private SafeFd? _second;

    public IoasTests()
    {
        _kernel.AddPciDevice("0000:00:03.0", new EduDeviceModel(), iommuGroup: 5);
        _iommufd = IommufdSeam.Open(_kernel);
        _ioas = IommufdSeam.AllocIoas(_kernel, _iommufd);
        _memory = Seam.Anonymous(_kernel, 16 * 4096);
    }

    private ulong Vaddr => (ulong)_memory.Address;

    public void Dispose()
    {
        _device?.Dispose();
        _second?.Dispose();
        _memory.Dispose();
        _iommufd.Dispose();
        _kernel.AssertNoLeaks();
        _kernel.LockedMemory.Should().Be(0);
        _kernel.UserLockedMemory.Should().Be(0);
    }

    /// <summary>Binds the edu device to the iommufd and attaches it to the IOAS: the IOAS gets a domain.</summary>
    private uint AttachDevice()
    {
        _device = IommufdSeam.OpenCdev(_kernel, "vfio0");
        IommufdSeam.Bind(_kernel, _device, _iommufd, out _).Should().Be(0);
        uint pt = _ioas;
        IommufdSeam.Attach(_kernel, _device, ref pt).Should().Be(0);
        return pt;
    }

    private List<(ulong Start, ulong Last)> Ranges(out ulong alignment)
    {
        var output = new iommu_iova_range[8];
        IommufdSeam.IovaRanges(_kernel, _iommufd, _ioas, output, out uint count, out alignment).Should().Be(0);
        return [.. output.Take((int)count).Select(r => (r.start, r.last))];
    }

    [Fact]
    public void AFreshIoasOffersTheWholeIovaSpaceWithNoAlignment()
    {
        // iopt_init_table: a software table over all of size_t, iova_alignment 1.
        Ranges(out ulong alignment).Should().Equal((0UL, ulong.MaxValue));
        alignment.Should().Be(1);
    }

    [Fact]
    public void AnAttachedDeviceNarrowsTheRangesToTheApertureWithoutTheMsiWindow()
    {
        // iopt_table_add_domain reserves outside the domain's aperture (VT-d, 39 bits) and raises the
        // alignment to the IOMMU's smallest page; iopt_table_enforce_dev_resv_regions reserves the
        // device's MSI window (IOAPIC_RANGE 0xfee00000-0xfeefffff).
        AttachDevice();

        Ranges(out ulong alignment).Should().Equal((0UL, 0xfedf_ffffUL), (0xfef0_0000UL, 0x7f_ffff_ffffUL));
        alignment.Should().Be(Page);
    }

    [Fact]
    public void DetachingWidensTheRangesAgain()
    {
        // iommufd_hw_pagetable_detach drops the device's reservations; the automatic page table goes
        // with its last device and takes the aperture's with it (iopt_table_remove_domain).
        AttachDevice();
        IommufdSeam.Detach(_kernel, _device!).Should().Be(0);

        Ranges(out ulong alignment).Should().Equal((0UL, ulong.MaxValue));
        alignment.Should().Be(1);
    }

    [Fact]
    public void TooShortARangeArrayIsEmsgsizeWithTheTotalWrittenBack()
    {
        // iommufd_ioas_iova_ranges fills what fits, answers num_iovas = the total, then fails with
        // EMSGSIZE: the caller's second call brings an array of that length.
        AttachDevice();
        var none = Array.Empty<iommu_iova_range>();
        IommufdSeam.IovaRanges(_kernel, _iommufd, _ioas, none, out uint needed, out _).Should().Be(-Errno.EMSGSIZE);
        needed.Should().Be(2);

        var one = new iommu_iova_range[1];
        IommufdSeam.IovaRanges(_kernel, _iommufd, _ioas, one, out uint total, out _).Should().Be(-Errno.EMSGSIZE);
        total.Should().Be(2);
        one[0].last.Should().Be(0xfedf_ffff, "what fits is filled in");

        var both = new iommu_iova_range[needed];
        IommufdSeam.IovaRanges(_kernel, _iommufd, _ioas, both, out total, out _).Should().Be(0);
        total.Should().Be(2);
        both[1].start.Should().Be(0xfef0_0000);
    }

    [Fact]
    public void AFixedMapOverAnExistingOneIsEexist()
    {
        // iopt_check_iova: existing IOVA cannot be replaced.
        IommufdSeam.MapAt(_kernel, _iommufd, _ioas, Vaddr, 2 * Page, 0x10000).Should().Be(0);
        IommufdSeam.MapAt(_kernel, _iommufd, _ioas, Vaddr, Page, 0x11000).Should().Be(-Errno.EEXIST);
        IommufdSeam.MapAt(_kernel, _iommufd, _ioas, Vaddr, 2 * Page, 0xf000).Should().Be(-Errno.EEXIST);
        IommufdSeam.MapAt(_kernel, _iommufd, _ioas, Vaddr, Page, 0x12000).Should().Be(0);
    }

    [Fact]
    public void MisalignedIovasAndLengthsAreEinvalOnlyOnceADomainSetsTheAlignment()
    {
        // Without a domain the IOAS has iova_alignment 1: any IOVA and length map (iopt_check_iova,
        // iopt_alloc_area_pages). Attaching requires the existing areas to conform (EADDRINUSE,
        // iopt_check_iova_alignment); afterwards misalignment is EINVAL.
        IommufdSeam.MapAt(_kernel, _iommufd, _ioas, Vaddr + 0x10, 100, 0x20010).Should().Be(0);
        var device = IommufdSeam.OpenCdev(_kernel, "vfio0");
        IommufdSeam.Bind(_kernel, device, _iommufd, out _).Should().Be(0);
        uint pt = _ioas;
        IommufdSeam.Attach(_kernel, device, ref pt).Should().Be(-Errno.EADDRINUSE);
        IommufdSeam.Unmap(_kernel, _iommufd, _ioas, 0, ulong.MaxValue, out _).Should().Be(0);
        _device = device;
        IommufdSeam.Attach(_kernel, device, ref pt).Should().Be(0);

        IommufdSeam.MapAt(_kernel, _iommufd, _ioas, Vaddr, Page, 0x10800).Should().Be(-Errno.EINVAL);
        IommufdSeam.MapAt(_kernel, _iommufd, _ioas, Vaddr, 100, 0x10000).Should().Be(-Errno.EINVAL);
        IommufdSeam.MapAt(_kernel, _iommufd, _ioas, Vaddr + 0x10, Page, 0x10000).Should().Be(-Errno.EINVAL, "the page offset of the user address must be aligned too");
        IommufdSeam.MapAt(_kernel, _iommufd, _ioas, Vaddr, 0, 0x10000).Should().Be(-Errno.EINVAL);
        IommufdSeam.MapAt(_kernel, _iommufd, _ioas, Vaddr, Page, 0x10000).Should().Be(0);
    }

    [Fact]
    public void AFixedMapIntoAReservedRangeIsEinval()
    {
        // iopt_check_iova: no reserved IOVA may intersect the range.
        AttachDevice();
        IommufdSeam.MapAt(_kernel, _iommufd, _ioas, Vaddr, Page, 0xfee0_0000).Should().Be(-Errno.EINVAL);
        IommufdSeam.MapAt(_kernel, _iommufd, _ioas, Vaddr, Page, 0x80_0000_0000).Should().Be(-Errno.EINVAL);
    }

    [Fact]
    public void MapChecksItsFlagsAndSizesBeforeLookingUpTheIoas()
    {
        // iommufd_ioas_map: unknown flags or __reserved EOPNOTSUPP, iova or length of U64_MAX EOVERFLOW,
        // no access EINVAL, all before iommufd_get_ioas (ENOENT).
        var map = new iommu_ioas_map { size = (uint)sizeof(iommu_ioas_map), flags = 0x80 | IommufdSeam.Fixed, ioas_id = 99, user_va = Vaddr, length = Page };
        _kernel.Ioctl(_iommufd, IommufdUapi.IOMMU_IOAS_MAP, &map).Should().Be(-Errno.EOPNOTSUPP);
        map.flags = IommufdSeam.Fixed;
        map.__reserved = 1;
        _kernel.Ioctl(_iommufd, IommufdUapi.IOMMU_IOAS_MAP, &map).Should().Be(-Errno.EOPNOTSUPP);
        map.__reserved = 0;
        map.iova = ulong.MaxValue;
        _kernel.Ioctl(_iommufd, IommufdUapi.IOMMU_IOAS_MAP, &map).Should().Be(-Errno.EOVERFLOW);
        map.iova = 0;
        map.flags = IommufdUapi.IOMMU_IOAS_MAP_FIXED_IOVA;
        _kernel.Ioctl(_iommufd, IommufdUapi.IOMMU_IOAS_MAP, &map).Should().Be(-Errno.EINVAL);
        map.flags = IommufdSeam.Fixed;
        _kernel.Ioctl(_iommufd, IommufdUapi.IOMMU_IOAS_MAP, &map).Should().Be(-Errno.ENOENT);
    }

    [Fact]
    public void MapAndUnmapOfAnIdThatIsNoIoasAreEnoent()
    {
        // iommufd_get_ioas: the id must name an IOAS; a device id does not.
        uint devid = 0;
        _device = IommufdSeam.OpenCdev(_kernel, "vfio0");
        IommufdSeam.Bind(_kernel, _device, _iommufd, out devid).Should().Be(0);

        IommufdSeam.MapAt(_kernel, _iommufd, devid, Vaddr, Page, 0x10000).Should().Be(-Errno.ENOENT);
        IommufdSeam.Unmap(_kernel, _iommufd, 42, 0, ulong.MaxValue, out _).Should().Be(-Errno.ENOENT);
        IommufdSeam.IovaRanges(_kernel, _iommufd, devid, new iommu_iova_range[1], out _, out _).Should().Be(-Errno.ENOENT);
    }

    [Fact]
    public void WithoutFixedIovaTheKernelPicksTheLowestAlignedFreeIovaAboveZero()
    {
        // iopt_alloc_iova: never IOVA 0; aligned to the length's power of two, but no more than the
        // user address's own alignment (a 2 MiB hugepage here), so the second map fits below the first.
        _kernel.HugePages = 1;
        _kernel.Mmap(null, 2 << 20, Flags.PROT_READ | Flags.PROT_WRITE, Flags.MAP_PRIVATE | Flags.MAP_ANONYMOUS | Flags.MAP_HUGETLB, 0, out var huge).Should().Be(0);
        using (huge)
        {
            ulong iova = 0;
            IommufdSeam.Map(_kernel, _iommufd, _ioas, (ulong)huge.Address, 2 * Page, ref iova, IommufdSeam.ReadWrite).Should().Be(0);
            iova.Should().Be(0x2000);
            IommufdSeam.Map(_kernel, _iommufd, _ioas, (ulong)huge.Address + (2 * Page), Page, ref iova, IommufdSeam.ReadWrite).Should().Be(0);
            iova.Should().Be(0x1000);
            IommufdSeam.Unmap(_kernel, _iommufd, _ioas, 0, ulong.MaxValue, out _).Should().Be(0);
        }
    }

    [Fact]
    public void AnAllocatedIovaKeepsTheUserAddressOffsetWithinItsPage()
    {
        // iopt_alloc_iova ORs the page offset in: with alignment 1 (no domain) a sub-page buffer maps as is.
        ulong iova = 0;
        IommufdSeam.Map(_kernel, _iommufd, _ioas, Vaddr + 0x10, 0x100, ref iova, IommufdSeam.ReadWrite).Should().Be(0);
        (iova % Page).Should().Be(0x10);
        IommufdSeam.Unmap(_kernel, _iommufd, _ioas, 0, ulong.MaxValue, out _).Should().Be(0);
    }

    [Fact]
    public void AllowedRangesConfineAutomaticAllocation()
    {
        // iopt_alloc_iova searches the allowed ranges when there are any.
        IommufdSeam.AllowIovas(_kernel, _iommufd, _ioas, new iommu_iova_range { start = 0x10_0000, last = 0x1f_ffff }).Should().Be(0);
        ulong iova = 0;
        IommufdSeam.Map(_kernel, _iommufd, _ioas, Vaddr, Page, ref iova, IommufdSeam.ReadWrite).Should().Be(0);
        iova.Should().Be(0x10_0000);
        IommufdSeam.Unmap(_kernel, _iommufd, _ioas, iova, Page, out _).Should().Be(0);
    }

    [Fact]
    public void AllowIovasRefusesEmptyOverlappingAndReservedRanges()
    {
        // iommufd_ioas_load_iovas: start < last and no overlap (EINVAL); iopt_set_allow_iova: none may
        // intersect a reserved range (EADDRINUSE), and the old list stays.
        IommufdSeam.AllowIovas(_kernel, _iommufd, _ioas, new iommu_iova_range { start = 0x2000, last = 0x2000 }).Should().Be(-Errno.EINVAL);
        IommufdSeam.AllowIovas(_kernel, _iommufd, _ioas,
            new iommu_iova_range { start = 0x1000, last = 0x3fff }, new iommu_iova_range { start = 0x3000, last = 0x8fff }).Should().Be(-Errno.EINVAL);
        AttachDevice();
        IommufdSeam.AllowIovas(_kernel, _iommufd, _ioas, new iommu_iova_range { start = 0xfee0_0000, last = 0xfee0_ffff }).Should().Be(-Errno.EADDRINUSE);
    }

    [Fact]
    public void AnAttachWhoseReservedRegionsMeetAnAllowedRangeIsEaddrinuse()
    {
        // iopt_reserve_iova refuses to reserve over an allowed range, so the device cannot attach.
        IommufdSeam.AllowIovas(_kernel, _iommufd, _ioas, new iommu_iova_range { start = 0xfee0_0000, last = 0xfee0_ffff }).Should().Be(0);
        _device = IommufdSeam.OpenCdev(_kernel, "vfio0");
        IommufdSeam.Bind(_kernel, _device, _iommufd, out _).Should().Be(0);
        uint pt = _ioas;

        IommufdSeam.Attach(_kernel, _device, ref pt).Should().Be(-Errno.EADDRINUSE);
        Ranges(out _).Should().Equal((0UL, ulong.MaxValue));
    }

    [Fact]
    public void AnUnmapMustCoverWholeMappings()
    {
        // iopt_unmap_iova_range: an area sticking out of the range is ENOENT; areas before it are
        // already gone; a range holding nothing is ENOENT (iommufd_ioas_unmap).
        IommufdSeam.MapAt(_kernel, _iommufd, _ioas, Vaddr, 2 * Page, 0x10000).Should().Be(0);
        IommufdSeam.MapAt(_kernel, _iommufd, _ioas, Vaddr, 2 * Page, 0x12000).Should().Be(0);

        IommufdSeam.Unmap(_kernel, _iommufd, _ioas, 0x11000, 0x3000, out _).Should().Be(-Errno.ENOENT, "it starts inside the first mapping");
        _kernel.DmaMappingCount.Should().Be(2);
        IommufdSeam.Unmap(_kernel, _iommufd, _ioas, 0x10000, 0x3000, out _).Should().Be(-Errno.ENOENT, "it cuts the second mapping");
        _kernel.DmaMappingCount.Should().Be(1, "the first was unmapped before the second stopped the walk");
        IommufdSeam.Unmap(_kernel, _iommufd, _ioas, 0x10000, 0x2000, out _).Should().Be(-Errno.ENOENT, "nothing is mapped there any more");
        IommufdSeam.Unmap(_kernel, _iommufd, _ioas, 0x10000, 0x10000, out ulong unmapped).Should().Be(0);
        unmapped.Should().Be(2 * Page);
    }

    [Fact]
    public void UnmapChecksItsRange()
    {
        // iommufd_ioas_unmap and iopt_unmap_iova: EOVERFLOW for U64_MAX or a wrapping range, EINVAL for length 0.
        IommufdSeam.Unmap(_kernel, _iommufd, _ioas, ulong.MaxValue, Page, out _).Should().Be(-Errno.EOVERFLOW);
        IommufdSeam.Unmap(_kernel, _iommufd, _ioas, 0x1000, ulong.MaxValue, out _).Should().Be(-Errno.EOVERFLOW);
        IommufdSeam.Unmap(_kernel, _iommufd, _ioas, ulong.MaxValue - Page, 2 * Page, out _).Should().Be(-Errno.EOVERFLOW);
        IommufdSeam.Unmap(_kernel, _iommufd, _ioas, 0x1000, 0, out _).Should().Be(-Errno.EINVAL);
    }

    [Fact]
    public void UnmapAllTakesIovaZeroAndLengthU64MaxAndSucceedsOnNothing()
    {
        // iommufd_ioas_unmap: 0 / U64_MAX is iopt_unmap_all, which succeeds on an empty IOAS.
        IommufdSeam.Unmap(_kernel, _iommufd, _ioas, 0, ulong.MaxValue, out ulong unmapped).Should().Be(0);
        unmapped.Should().Be(0);
        IommufdSeam.MapAt(_kernel, _iommufd, _ioas, Vaddr, Page, 0x10000).Should().Be(0);
        IommufdSeam.MapAt(_kernel, _iommufd, _ioas, Vaddr, 3 * Page, 0x40000).Should().Be(0);

        IommufdSeam.Unmap(_kernel, _iommufd, _ioas, 0, ulong.MaxValue, out unmapped).Should().Be(0);

        unmapped.Should().Be(4 * Page);
        _kernel.DmaMappingCount.Should().Be(0);
    }

    [Fact]
    public void CopyMapsTheSameMemoryInAnotherIoasAndRequiresTheSourceCovered()
    {
        // iommufd_ioas_copy and iopt_get_pages: the source range must be covered by areas without a gap
        // (ENOENT); the new areas share the pages, so writing needs a writable source (EPERM).
        uint other = IommufdSeam.AllocIoas(_kernel, _iommufd);
        IommufdSeam.MapAt(_kernel, _iommufd, _ioas, Vaddr, 2 * Page, 0x10000).Should().Be(0);
        IommufdSeam.MapAt(_kernel, _iommufd, _ioas, Vaddr + (2 * Page), Page, 0x12000, IommufdUapi.IOMMU_IOAS_MAP_FIXED_IOVA | IommufdUapi.IOMMU_IOAS_MAP_READABLE).Should().Be(0);

        Copy(other, 0x10000, 3 * Page, 0x50000, IommufdSeam.Fixed).Should().Be(-Errno.EPERM, "the third page is read-only in the source");
        Copy(other, 0x10000, 4 * Page, 0x50000, IommufdSeam.Fixed).Should().Be(-Errno.ENOENT, "0x13000 is not mapped");
        Copy(other, 0x11000, 2 * Page, 0x50000, IommufdUapi.IOMMU_IOAS_MAP_FIXED_IOVA | IommufdUapi.IOMMU_IOAS_MAP_READABLE).Should().Be(0);

        _kernel.DmaMappingCount.Should().Be(4, "the copy made one area per source area it spans");
        IommufdSeam.Destroy(_kernel, _iommufd, other).Should().Be(0);
        IommufdSeam.Unmap(_kernel, _iommufd, _ioas, 0, ulong.MaxValue, out _).Should().Be(0);
    }

    private int Copy(uint destination, ulong srcIova, ulong length, ulong dstIova, uint flags)
    {
        var copy = new iommu_ioas_copy { size = (uint)sizeof(iommu_ioas_copy), flags = flags, dst_ioas_id = destination, src_ioas_id = _ioas, length = length, dst_iova = dstIova, src_iova = srcIova };
        return _kernel.Ioctl(_iommufd, IommufdUapi.IOMMU_IOAS_COPY, &copy);
    }

    [Fact]
    public void WithoutADomainNothingIsPinnedAndTheFirstDomainPinsEverything()
    {
        // iopt_map_user_pages only records the range for a table without domains; iopt_fill_domain pins
        // every area when the first domain arrives, and iopt_unfill_domain unpins with the last.
        IommufdSeam.MapAt(_kernel, _iommufd, _ioas, Vaddr, 4 * Page, 0x10000).Should().Be(0);
        _kernel.UserLockedMemory.Should().Be(0);

        AttachDevice();
        _kernel.UserLockedMemory.Should().Be(4 * Page);

        IommufdSeam.Detach(_kernel, _device!).Should().Be(0);
        _kernel.UserLockedMemory.Should().Be(0);
        IommufdSeam.Unmap(_kernel, _iommufd, _ioas, 0, ulong.MaxValue, out _).Should().Be(0);
    }

    [Fact]
    public void PinnedPagesAreChargedToTheUserByDefaultAndToTheMmInRlimitModeOne()
    {
        // iopt_pages_update_pinned: IOPT_PAGES_ACCOUNT_USER (user->locked_vm, default) or, after
        // IOMMU_OPTION_RLIMIT_MODE = 1, IOPT_PAGES_ACCOUNT_MM (the mm's locked_vm, as type1 charges).
        AttachDevice();
        IommufdSeam.MapAt(_kernel, _iommufd, _ioas, Vaddr, 2 * Page, 0x10000).Should().Be(0);
        _kernel.UserLockedMemory.Should().Be(2 * Page);
        _kernel.LockedMemory.Should().Be(0);
        IommufdSeam.Unmap(_kernel, _iommufd, _ioas, 0x10000, 2 * Page, out _).Should().Be(0);
        _kernel.UserLockedMemory.Should().Be(0);

        using var mm = IommufdSeam.Open(_kernel);
        ulong mode = 1;
        IommufdSeam.Option(_kernel, mm, IommufdUapi.IOMMU_OPTION_RLIMIT_MODE, IommufdUapi.IOMMU_OPTION_OP_SET, 0, ref mode).Should().Be(0);
        uint ioas = IommufdSeam.AllocIoas(_kernel, mm);
        uint hwpt = AllocHwpt(mm, ioas, DeviceIdIn(mm));
        IommufdSeam.MapAt(_kernel, mm, ioas, Vaddr, 3 * Page, 0x10000).Should().Be(0);

        _kernel.LockedMemory.Should().Be(3 * Page);
        _kernel.UserLockedMemory.Should().Be(0);
        IommufdSeam.Destroy(_kernel, mm, hwpt).Should().Be(0);
        _kernel.LockedMemory.Should().Be(0, "the IOAS lost its only domain");
    }

    /// <summary>A second device bound to <paramref name="iommufd"/> (a page table needs one), in its own group.</summary>
    private uint DeviceIdIn(SafeFd iommufd)
    {
        _kernel.AddPciDevice("0000:00:05.0", new EduDeviceModel(), iommuGroup: 7);
        _second = IommufdSeam.OpenCdev(_kernel, "vfio1");
        IommufdSeam.Bind(_kernel, _second, iommufd, out uint devid).Should().Be(0);
        return devid;
    }

    private uint AllocHwpt(SafeFd iommufd, uint ioas, uint devid)
    {
        var alloc = new iommu_hwpt_alloc { size = (uint)sizeof(iommu_hwpt_alloc), dev_id = devid, pt_id = ioas };
        _kernel.Ioctl(iommufd, IommufdUapi.IOMMU_HWPT_ALLOC, &alloc).Should().Be(0);
        return alloc.out_hwpt_id;
    }

    [Fact]
    public void BeyondTheLockedMemoryLimitMapAndAttachAreEnomem()
    {
        // incr_user_locked_vm: ENOMEM past RLIMIT_MEMLOCK, whether the pin comes with the map (a domain
        // exists) or with the attach that brings the first domain.
        _kernel.MemoryLockLimit = 3 * Page;
        IommufdSeam.MapAt(_kernel, _iommufd, _ioas, Vaddr, 4 * Page, 0x10000).Should().Be(0, "nothing is pinned yet");
        _device = IommufdSeam.OpenCdev(_kernel, "vfio0");
        IommufdSeam.Bind(_kernel, _device, _iommufd, out _).Should().Be(0);
        uint pt = _ioas;
        IommufdSeam.Attach(_kernel, _device, ref pt).Should().Be(-Errno.ENOMEM);
        _kernel.UserLockedMemory.Should().Be(0);

        IommufdSeam.Unmap(_kernel, _iommufd, _ioas, 0, ulong.MaxValue, out _).Should().Be(0);
        IommufdSeam.Attach(_kernel, _device, ref pt).Should().Be(0);
        IommufdSeam.MapAt(_kernel, _iommufd, _ioas, Vaddr, 2 * Page, 0x10000).Should().Be(0);
        IommufdSeam.MapAt(_kernel, _iommufd, _ioas, Vaddr + (2 * Page), 2 * Page, 0x20000).Should().Be(-Errno.ENOMEM);
        _kernel.DmaMappingCount.Should().Be(1, "the failed map left nothing behind");
        IommufdSeam.Unmap(_kernel, _iommufd, _ioas, 0, ulong.MaxValue, out _).Should().Be(0);
    }

    [Fact]
    public void PagesSharedByACopyAreChargedOnce()
    {
        // The pin count is per page of the iopt_pages, which IOMMU_IOAS_COPY shares: a page pinned for
        // two domains is charged once.
        AttachDevice();
        IommufdSeam.MapAt(_kernel, _iommufd, _ioas, Vaddr, 2 * Page, 0x10000).Should().Be(0);
        var other = IommufdSeam.AllocIoas(_kernel, _iommufd);
        uint hwpt = AllocHwpt(_iommufd, other, DeviceIdIn(_iommufd));

        Copy(other, 0x10000, 2 * Page, 0x80000, IommufdSeam.Fixed).Should().Be(0);

        _kernel.UserLockedMemory.Should().Be(2 * Page);
        IommufdSeam.Destroy(_kernel, _iommufd, hwpt).Should().Be(0);
        IommufdSeam.Destroy(_kernel, _iommufd, other).Should().Be(0);
        IommufdSeam.Unmap(_kernel, _iommufd, _ioas, 0, ulong.MaxValue, out _).Should().Be(0);
    }

    [Fact]
    public void UnmappedUserMemoryFailsWhenItIsPinned()
    {
        // pin_user_pages fails with EFAULT: at the map when a domain exists, else at the attach.
        IommufdSeam.MapAt(_kernel, _iommufd, _ioas, 0x1000, Page, 0x10000).Should().Be(0, "a table without domains does not touch the memory");
        _device = IommufdSeam.OpenCdev(_kernel, "vfio0");
        IommufdSeam.Bind(_kernel, _device, _iommufd, out _).Should().Be(0);
        uint pt = _ioas;
        IommufdSeam.Attach(_kernel, _device, ref pt).Should().Be(-Errno.EFAULT);

        IommufdSeam.Unmap(_kernel, _iommufd, _ioas, 0, ulong.MaxValue, out _).Should().Be(0);
        IommufdSeam.Attach(_kernel, _device, ref pt).Should().Be(0);
        IommufdSeam.MapAt(_kernel, _iommufd, _ioas, 0x1000, Page, 0x10000).Should().Be(-Errno.EFAULT);
    }

    [Fact]
    public void HugePagesIsAPerIoasOptionThatCannotChangeUnderMappedDomains()
    {
        // iommufd_ioas_option_huge_pages and iopt_disable_large_pages: 1 by default; 0 raises the
        // alignment to PAGE_SIZE, and is refused (EINVAL) once a domain holds mappings.
        ulong value = 7;
        IommufdSeam.Option(_kernel, _iommufd, IommufdUapi.IOMMU_OPTION_HUGE_PAGES, IommufdUapi.IOMMU_OPTION_OP_GET, _ioas, ref value).Should().Be(0);
        value.Should().Be(1);
        value = 0;
        IommufdSeam.Option(_kernel, _iommufd, IommufdUapi.IOMMU_OPTION_HUGE_PAGES, IommufdUapi.IOMMU_OPTION_OP_SET, _ioas, ref value).Should().Be(0);
        Ranges(out ulong alignment);
        alignment.Should().Be(Page);
        value = 1;
        IommufdSeam.Option(_kernel, _iommufd, IommufdUapi.IOMMU_OPTION_HUGE_PAGES, IommufdUapi.IOMMU_OPTION_OP_SET, _ioas, ref value).Should().Be(0);

        AttachDevice();
        IommufdSeam.MapAt(_kernel, _iommufd, _ioas, Vaddr, Page, 0x10000).Should().Be(0);
        value = 0;
        IommufdSeam.Option(_kernel, _iommufd, IommufdUapi.IOMMU_OPTION_HUGE_PAGES, IommufdUapi.IOMMU_OPTION_OP_SET, _ioas, ref value).Should().Be(-Errno.EINVAL);
        value = 2;
        IommufdSeam.Option(_kernel, _iommufd, IommufdUapi.IOMMU_OPTION_HUGE_PAGES, IommufdUapi.IOMMU_OPTION_OP_SET, _ioas, ref value).Should().Be(-Errno.EINVAL);
        IommufdSeam.Option(_kernel, _iommufd, IommufdUapi.IOMMU_OPTION_HUGE_PAGES, 2, _ioas, ref value).Should().Be(-Errno.EOPNOTSUPP);
        IommufdSeam.Option(_kernel, _iommufd, IommufdUapi.IOMMU_OPTION_HUGE_PAGES, IommufdUapi.IOMMU_OPTION_OP_GET, 77, ref value).Should().Be(-Errno.ENOENT);
        IommufdSeam.Unmap(_kernel, _iommufd, _ioas, 0, ulong.MaxValue, out _).Should().Be(0);
    }

    [Fact]
    public void DeviceDmaReachesMemoryThroughTheIoasAndFaultsOutsideIt()
    {
        // The device's accesses go through its domain, which holds exactly the IOAS's pinned areas.
        var model = (EduDeviceModel)_kernel.FindDevice("0000:00:03.0")!.Model;
        AttachDevice();
        IommufdSeam.MapAt(_kernel, _iommufd, _ioas, Vaddr, Page, 0x40000).Should().Be(0);
        _kernel.PWrite(_device!, BitConverter.GetBytes((ushort)0x6), (7L << 40) + 4).Should().Be(2, "memory space and bus master on");
        new Span<byte>((void*)_memory.Address, 4).Fill(0xab);

        var read = new byte[4];
        model.DmaRead(0x40000, read).Should().BeTrue();
        read.Should().Equal(0xab, 0xab, 0xab, 0xab);
        model.DmaWrite(0x40002, [1, 2]).Should().BeTrue();
        new ReadOnlySpan<byte>((void*)_memory.Address, 4).ToArray().Should().Equal(0xab, 0xab, 1, 2);
        model.DmaRead(0x41000, read).Should().BeFalse();
        _kernel.DmaFaults.Should().ContainSingle(f => f.Iova == 0x41000 && f.Reason == "no mapping");

        IommufdSeam.Detach(_kernel, _device!).Should().Be(0);
        model.DmaRead(0x40000, read).Should().BeFalse("a detached device's DMA is blocked");
        _kernel.DmaFaults[^1].Reason.Should().Contain("attached to no page table");
        IommufdSeam.Unmap(_kernel, _iommufd, _ioas, 0, ulong.MaxValue, out _).Should().Be(0);
    }
}
