using Vfio.Interop;
using Vfio.Testing;
using static Vfio.Interop.Interop;

namespace Vfio.Tests.Simulation;

/// <summary>
/// An iommufd context on the simulated kernel's <c>/dev/iommu</c>: the ioctl framing, object ids and
/// their destruction, options, hardware info and page tables, checked against Linux 7.2's
/// drivers/iommu/iommufd (main.c, ioas.c, device.c, hw_pagetable.c, vfio_compat.c).
/// </summary>
public sealed unsafe class IommufdTests : IDisposable
{
    private readonly SimulatedKernel _kernel = new();
    private readonly SafeFd _iommufd;
    private readonly SafeMapping _memory;
    private SafeFd? _device;

    public IommufdTests()
    {
        _kernel.AddPciDevice("0000:00:03.0", new EduDeviceModel(), iommuGroup: 5);
        _iommufd = IommufdSeam.Open(_kernel);
        _memory = Seam.Anonymous(_kernel, 4 * 4096);
    }

    public void Dispose()
    {
        _device?.Dispose();
        _memory.Dispose();
        _iommufd.Dispose();
        _kernel.AssertNoLeaks();
    }

    private uint BindDevice()
    {
        _device = IommufdSeam.OpenCdev(_kernel, "vfio0");
        IommufdSeam.Bind(_kernel, _device, _iommufd, out uint devid).Should().Be(0);
        return devid;
    }

    [Fact]
    public void DevIommuExistsUnlessTheKernelLacksIommufd()
    {
        // iommufd_init registers the "iommu" misc device; a kernel without CONFIG_IOMMUFD has none.
        _kernel.ListDirectory(_kernel.DevRoot, out var names).Should().Be(0);
        names.Should().Contain("iommu");

        _kernel.IommufdEnabled = false;

        Seam.TryOpen(_kernel, _kernel.Dev("iommu"), out _).Should().Be(-Errno.ENOENT);
        _kernel.ListDirectory(_kernel.DevRoot, out names).Should().Be(0);
        names.Should().Equal("vfio");
    }

    [Fact]
    public void IdsStartAtOneAreSharedByEveryObjectAndTheLowestFreeIsReused()
    {
        // _iommufd_object_alloc: xa_alloc on an XA_FLAGS_ALLOC1 xarray.
        IommufdSeam.AllocIoas(_kernel, _iommufd).Should().Be(1);
        IommufdSeam.AllocIoas(_kernel, _iommufd).Should().Be(2);
        BindDevice().Should().Be(3);
        IommufdSeam.Destroy(_kernel, _iommufd, 1).Should().Be(0);
        IommufdSeam.AllocIoas(_kernel, _iommufd).Should().Be(1);
    }

    [Fact]
    public void DestroyRemovesOnlyAnObjectNothingElseUses()
    {
        // iommufd_object_remove: ENOENT for no object, EBUSY unless the table holds the only user. A
        // bound device is held by VFIO; an IOAS by the page table a device is attached through.
        uint ioas = IommufdSeam.AllocIoas(_kernel, _iommufd);
        uint devid = BindDevice();
        uint pt = ioas;
        IommufdSeam.Attach(_kernel, _device!, ref pt).Should().Be(0);

        IommufdSeam.Destroy(_kernel, _iommufd, 99).Should().Be(-Errno.ENOENT);
        IommufdSeam.Destroy(_kernel, _iommufd, devid).Should().Be(-Errno.EBUSY);
        IommufdSeam.Destroy(_kernel, _iommufd, ioas).Should().Be(-Errno.EBUSY);
        IommufdSeam.Destroy(_kernel, _iommufd, pt).Should().Be(-Errno.EBUSY, "the automatic page table has a device");

        IommufdSeam.Detach(_kernel, _device!).Should().Be(0);
        IommufdSeam.Destroy(_kernel, _iommufd, pt).Should().Be(-Errno.ENOENT, "the automatic page table went with its last device");
        IommufdSeam.Destroy(_kernel, _iommufd, ioas).Should().Be(0);
    }

    [Fact]
    public void DestroyingAnIoasUnmapsIt()
    {
        // iommufd_ioas_destroy: iopt_unmap_all.
        uint ioas = IommufdSeam.AllocIoas(_kernel, _iommufd);
        IommufdSeam.MapAt(_kernel, _iommufd, ioas, (ulong)_memory.Address, 4096, 0x1000).Should().Be(0);
        _kernel.DmaMappingCount.Should().Be(1);

        IommufdSeam.Destroy(_kernel, _iommufd, ioas).Should().Be(0);

        _kernel.DmaMappingCount.Should().Be(0);
    }

    [Fact]
    public void ClosingTheIommufdDestroysWhatIsLeft()
    {
        // iommufd_fops_release destroys the leaves until the table is empty.
        using var other = IommufdSeam.Open(_kernel);
        uint ioas = IommufdSeam.AllocIoas(_kernel, other);
        IommufdSeam.MapAt(_kernel, other, ioas, (ulong)_memory.Address, 4096, 0x1000).Should().Be(0);

        other.Dispose();

        _kernel.DmaMappingCount.Should().Be(0);
    }

    [Fact]
    public void TheUserSizeIsCheckedAgainstTheCommandsMinimumAndItsUnknownTail()
    {
        // iommufd_fops_ioctl: size below the command's minimum EINVAL; copy_struct_from_user: bytes past
        // the kernel's struct must be zero (E2BIG), and a shorter known prefix is zero-filled.
        byte* buffer = stackalloc byte[64];
        new Span<byte>(buffer, 64).Clear();
        var alloc = (iommu_ioas_alloc*)buffer;

        alloc->size = 8;
        _kernel.Ioctl(_iommufd, IommufdUapi.IOMMU_IOAS_ALLOC, buffer).Should().Be(-Errno.EINVAL);
        alloc->size = 64;
        buffer[40] = 1;
        _kernel.Ioctl(_iommufd, IommufdUapi.IOMMU_IOAS_ALLOC, buffer).Should().Be(-Errno.E2BIG);
        buffer[40] = 0;
        _kernel.Ioctl(_iommufd, IommufdUapi.IOMMU_IOAS_ALLOC, buffer).Should().Be(0);
        alloc->out_ioas_id.Should().Be(1);
    }

    [Fact]
    public void NumbersOutsideTheTableOrWithOtherBitsAreNotIommufdCommands()
    {
        // iommufd_fops_ioctl: op->ioctl_num must equal the request (ENOIOCTLCMD, seen as ENOTTY).
        var alloc = new iommu_ioas_alloc { size = (uint)sizeof(iommu_ioas_alloc) };
        nuint withSize = Ioc._IOWR(IommufdUapi.IOMMUFD_TYPE, IommufdUapi.IOMMUFD_CMD_IOAS_ALLOC, (uint)sizeof(iommu_ioas_alloc));

        _kernel.Ioctl(_iommufd, withSize, &alloc).Should().Be(-Errno.ENOTTY);
        _kernel.Ioctl(_iommufd, VfioUapi.VFIO_DEVICE_GET_INFO, &alloc).Should().Be(-Errno.ENOTTY);
        _kernel.Ioctl(_iommufd, IommufdUapi.IOMMU_IOAS_ALLOC, (void*)null).Should().Be(-Errno.EFAULT);
    }

    [Fact]
    public void IoasAllocTakesNoFlags()
    {
        // iommufd_ioas_alloc_ioctl: flags must be 0 (EOPNOTSUPP).
        var alloc = new iommu_ioas_alloc { size = (uint)sizeof(iommu_ioas_alloc), flags = 1 };
        _kernel.Ioctl(_iommufd, IommufdUapi.IOMMU_IOAS_ALLOC, &alloc).Should().Be(-Errno.EOPNOTSUPP);
    }

    [Fact]
    public void RlimitModeIsUserByDefaultAndSetOnlyByTheCapableOnAnEmptyContext()
    {
        // iommufd_option_rlimit_mode: global (object_id 0, else EOPNOTSUPP); SET needs CAP_SYS_RESOURCE
        // (EPERM) and no objects yet (EBUSY); only 0 and 1 (EINVAL).
        ulong value = 9;
        Option(IommufdUapi.IOMMU_OPTION_OP_GET, 0, ref value).Should().Be(0);
        value.Should().Be(0);
        Option(IommufdUapi.IOMMU_OPTION_OP_GET, 1, ref value).Should().Be(-Errno.EOPNOTSUPP);
        value = 2;
        Option(IommufdUapi.IOMMU_OPTION_OP_SET, 0, ref value).Should().Be(-Errno.EINVAL);
        _kernel.HasSysResourceCapability = false;
        value = 1;
        Option(IommufdUapi.IOMMU_OPTION_OP_SET, 0, ref value).Should().Be(-Errno.EPERM);
        _kernel.HasSysResourceCapability = true;
        Option(IommufdUapi.IOMMU_OPTION_OP_SET, 0, ref value).Should().Be(0);
        Option(IommufdUapi.IOMMU_OPTION_OP_GET, 0, ref value).Should().Be(0);
        value.Should().Be(1);

        IommufdSeam.AllocIoas(_kernel, _iommufd);
        value = 0;
        Option(IommufdUapi.IOMMU_OPTION_OP_SET, 0, ref value).Should().Be(-Errno.EBUSY);
    }

    [Fact]
    public void AnUnknownOptionOrReservedBitsAreEopnotsupp()
    {
        // iommufd_option: __reserved must be 0, option_id one of enum iommufd_option.
        ulong value = 0;
        IommufdSeam.Option(_kernel, _iommufd, 7, IommufdUapi.IOMMU_OPTION_OP_GET, 0, ref value).Should().Be(-Errno.EOPNOTSUPP);
        var cmd = new iommu_option { size = (uint)sizeof(iommu_option), __reserved = 1 };
        _kernel.Ioctl(_iommufd, IommufdUapi.IOMMU_OPTION, &cmd).Should().Be(-Errno.EOPNOTSUPP);
    }

    private int Option(ushort op, uint objectId, ref ulong value) =>
        IommufdSeam.Option(_kernel, _iommufd, IommufdUapi.IOMMU_OPTION_RLIMIT_MODE, op, objectId, ref value);

    [Fact]
    public void HwInfoReportsIntelVtdDataWithTheKernelsLengthAndZeroesTheRest()
    {
        // iommufd_get_hw_info with intel_iommu_hw_info: type INTEL_VTD, data_len the kernel's 24 bytes,
        // a bigger buffer zeroed past them; the erratum flag set; no dirty tracking; no ATS.
        _kernel.VtdCapabilityRegister = 0x00d2_0080_8100_c462;
        uint devid = BindDevice();
        var data = new byte[32];
        data.AsSpan().Fill(0xee);
        fixed (byte* p = data)
        {
            var info = new iommu_hw_info { size = (uint)sizeof(iommu_hw_info), dev_id = devid, data_len = (uint)data.Length, data_uptr = (ulong)p };
            _kernel.Ioctl(_iommufd, IommufdUapi.IOMMU_GET_HW_INFO, &info).Should().Be(0);

            info.out_data_type.Should().Be(IommufdUapi.IOMMU_HW_INFO_TYPE_INTEL_VTD);
            info.data_len.Should().Be((uint)sizeof(iommu_hw_info_vtd));
            (info.out_capabilities & IommufdUapi.IOMMU_HW_CAP_DIRTY_TRACKING).Should().Be(0);
            info.out_max_pasid_log2.Should().Be(0);
            var vtd = *(iommu_hw_info_vtd*)p;
            vtd.flags.Should().Be(IommufdUapi.IOMMU_HW_INFO_VTD_ERRATA_772415_SPR17);
            vtd.cap_reg.Should().Be(0x00d2_0080_8100_c462);
            data.AsSpan(24).ToArray().Should().OnlyContain(b => b == 0);
        }
    }

    [Fact]
    public void HwInfoNeedsABoundDeviceAndZeroReservedBytes()
    {
        // iommufd_get_hw_info: unknown flags or __reserved EOPNOTSUPP; iommufd_get_device ENOENT for an
        // id that is no device.
        uint ioas = IommufdSeam.AllocIoas(_kernel, _iommufd);
        var info = new iommu_hw_info { size = (uint)sizeof(iommu_hw_info), dev_id = ioas };
        _kernel.Ioctl(_iommufd, IommufdUapi.IOMMU_GET_HW_INFO, &info).Should().Be(-Errno.ENOENT);
        info.flags = 2;
        _kernel.Ioctl(_iommufd, IommufdUapi.IOMMU_GET_HW_INFO, &info).Should().Be(-Errno.EOPNOTSUPP);
        info.flags = 0;
        info.__reserved[1] = 1;
        _kernel.Ioctl(_iommufd, IommufdUapi.IOMMU_GET_HW_INFO, &info).Should().Be(-Errno.EOPNOTSUPP);
    }

    [Fact]
    public void AnAllocatedPageTablePinsItsIoasAndTakesDevicesByItsId()
    {
        // iommufd_hwpt_alloc from an IOAS: iopt_table_add_domain at once (pins); a device attaches to
        // it by id; it lives until IOMMU_DESTROY, which waits for its devices (EBUSY) and keeps its IOAS.
        uint ioas = IommufdSeam.AllocIoas(_kernel, _iommufd);
        IommufdSeam.MapAt(_kernel, _iommufd, ioas, (ulong)_memory.Address, 4096, 0x1000).Should().Be(0);
        uint devid = BindDevice();
        var alloc = new iommu_hwpt_alloc { size = (uint)sizeof(iommu_hwpt_alloc), dev_id = devid, pt_id = ioas };
        _kernel.Ioctl(_iommufd, IommufdUapi.IOMMU_HWPT_ALLOC, &alloc).Should().Be(0);
        _kernel.UserLockedMemory.Should().Be(4096);

        uint pt = alloc.out_hwpt_id;
        IommufdSeam.Attach(_kernel, _device!, ref pt).Should().Be(0);
        pt.Should().Be(alloc.out_hwpt_id);
        IommufdSeam.Destroy(_kernel, _iommufd, ioas).Should().Be(-Errno.EBUSY);
        IommufdSeam.Destroy(_kernel, _iommufd, pt).Should().Be(-Errno.EBUSY);
        IommufdSeam.Detach(_kernel, _device!).Should().Be(0);
        IommufdSeam.Destroy(_kernel, _iommufd, pt).Should().Be(0);
        _kernel.UserLockedMemory.Should().Be(0);
        IommufdSeam.Destroy(_kernel, _iommufd, ioas).Should().Be(0);
    }

    [Fact]
    public void PageTableAllocationChecksItsArgumentsAndWhatTheIommuOffers()
    {
        // iommufd_hwpt_alloc: data_type and data_len agree (EINVAL); the device must exist (ENOENT); the
        // pt_id must (EINVAL); dirty tracking needs IOMMU_CAP_DIRTY_TRACKING and a nest parent nesting
        // support, which the simulated VT-d (like QEMU's) lacks (EOPNOTSUPP).
        uint ioas = IommufdSeam.AllocIoas(_kernel, _iommufd);
        uint devid = BindDevice();
        HwptAlloc(devid, ioas, 0, IommufdUapi.IOMMU_HWPT_DATA_NONE, 8).Should().Be(-Errno.EINVAL);
        HwptAlloc(ioas, ioas, 0, IommufdUapi.IOMMU_HWPT_DATA_NONE, 0).Should().Be(-Errno.ENOENT);
        HwptAlloc(devid, 77, 0, IommufdUapi.IOMMU_HWPT_DATA_NONE, 0).Should().Be(-Errno.EINVAL);
        HwptAlloc(devid, devid, 0, IommufdUapi.IOMMU_HWPT_DATA_NONE, 0).Should().Be(-Errno.EINVAL);
        HwptAlloc(devid, ioas, IommufdUapi.IOMMU_HWPT_ALLOC_DIRTY_TRACKING, IommufdUapi.IOMMU_HWPT_DATA_NONE, 0).Should().Be(-Errno.EOPNOTSUPP);
        HwptAlloc(devid, ioas, IommufdUapi.IOMMU_HWPT_ALLOC_NEST_PARENT, IommufdUapi.IOMMU_HWPT_DATA_NONE, 0).Should().Be(-Errno.EOPNOTSUPP);
        HwptAlloc(devid, ioas, 1u << 10, IommufdUapi.IOMMU_HWPT_DATA_NONE, 0).Should().Be(-Errno.EOPNOTSUPP);
        _kernel.OpenFileCountTotal.Should().Be(2, "no failed allocation left anything");
        IommufdSeam.AllocIoas(_kernel, _iommufd).Should().Be(3, "no failed allocation kept an id");
    }

    private int HwptAlloc(uint devid, uint ptId, uint flags, uint dataType, uint dataLength)
    {
        var alloc = new iommu_hwpt_alloc { size = (uint)sizeof(iommu_hwpt_alloc), flags = flags, dev_id = devid, pt_id = ptId, data_type = dataType, data_len = dataLength };
        return _kernel.Ioctl(_iommufd, IommufdUapi.IOMMU_HWPT_ALLOC, &alloc);
    }

    [Fact]
    public void DirtyTrackingIsNotOfferedButItsRangeIsCheckedFirst()
    {
        // iopt_set_dirty_tracking and iopt_read_and_clear_dirty_data: EOPNOTSUPP without dirty_ops (the
        // simulated VT-d has none, like QEMU's); iommufd_check_iova_range comes first (EINVAL).
        uint ioas = IommufdSeam.AllocIoas(_kernel, _iommufd);
        BindDevice();
        uint pt = ioas;
        IommufdSeam.Attach(_kernel, _device!, ref pt).Should().Be(0);

        var set = new iommu_hwpt_set_dirty_tracking { size = (uint)sizeof(iommu_hwpt_set_dirty_tracking), flags = IommufdUapi.IOMMU_HWPT_DIRTY_TRACKING_ENABLE, hwpt_id = pt };
        _kernel.Ioctl(_iommufd, IommufdUapi.IOMMU_HWPT_SET_DIRTY_TRACKING, &set).Should().Be(-Errno.EOPNOTSUPP);
        set.hwpt_id = ioas;
        _kernel.Ioctl(_iommufd, IommufdUapi.IOMMU_HWPT_SET_DIRTY_TRACKING, &set).Should().Be(-Errno.ENOENT);

        var get = new iommu_hwpt_get_dirty_bitmap { size = (uint)sizeof(iommu_hwpt_get_dirty_bitmap), hwpt_id = pt, iova = 0x1000, length = 0x800, page_size = 4096 };
        _kernel.Ioctl(_iommufd, IommufdUapi.IOMMU_HWPT_GET_DIRTY_BITMAP, &get).Should().Be(-Errno.EINVAL);
        get.length = 0x1000;
        get.page_size = 0;
        _kernel.Ioctl(_iommufd, IommufdUapi.IOMMU_HWPT_GET_DIRTY_BITMAP, &get).Should().Be(-Errno.EINVAL);
        get.page_size = 4096;
        _kernel.Ioctl(_iommufd, IommufdUapi.IOMMU_HWPT_GET_DIRTY_BITMAP, &get).Should().Be(-Errno.EOPNOTSUPP);
    }

    [Fact]
    public void TheVfioCompatibilityIoasIsSetGotAndClearedAndGoesWithItsIoas()
    {
        // iommufd_vfio_ioas: GET without one ENODEV; SET needs an IOAS; iommufd_object_remove clears it.
        var cmd = new iommu_vfio_ioas { size = (uint)sizeof(iommu_vfio_ioas), op = IommufdUapi.IOMMU_VFIO_IOAS_GET };
        _kernel.Ioctl(_iommufd, IommufdUapi.IOMMU_VFIO_IOAS, &cmd).Should().Be(-Errno.ENODEV);
        uint ioas = IommufdSeam.AllocIoas(_kernel, _iommufd);
        cmd = new iommu_vfio_ioas { size = (uint)sizeof(iommu_vfio_ioas), op = IommufdUapi.IOMMU_VFIO_IOAS_SET, ioas_id = ioas };
        _kernel.Ioctl(_iommufd, IommufdUapi.IOMMU_VFIO_IOAS, &cmd).Should().Be(0);
        cmd = new iommu_vfio_ioas { size = (uint)sizeof(iommu_vfio_ioas), op = IommufdUapi.IOMMU_VFIO_IOAS_GET };
        _kernel.Ioctl(_iommufd, IommufdUapi.IOMMU_VFIO_IOAS, &cmd).Should().Be(0);
        cmd.ioas_id.Should().Be(ioas);

        IommufdSeam.Destroy(_kernel, _iommufd, ioas).Should().Be(0);

        _kernel.Ioctl(_iommufd, IommufdUapi.IOMMU_VFIO_IOAS, &cmd).Should().Be(-Errno.ENODEV);
        cmd.op = 3;
        _kernel.Ioctl(_iommufd, IommufdUapi.IOMMU_VFIO_IOAS, &cmd).Should().Be(-Errno.EOPNOTSUPP);
    }

    [Fact]
    public void TheLeakReportNamesIommufdObjectsAContextStillHolds()
    {
        uint ioas = IommufdSeam.AllocIoas(_kernel, _iommufd);
        IommufdSeam.MapAt(_kernel, _iommufd, ioas, (ulong)_memory.Address, 4096, 0x7000).Should().Be(0);

        var act = () => _kernel.AssertNoLeaks();

        act.Should().Throw<SimulatedLeakException>().WithMessage("*Iommufd*/iommu*IOAS 1: 1 mapping(s)*iova 0x7000 (4096 bytes)*IOAS 1*");
        IommufdSeam.Destroy(_kernel, _iommufd, ioas).Should().Be(0);
    }
}
