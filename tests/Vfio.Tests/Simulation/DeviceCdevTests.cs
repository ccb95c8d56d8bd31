using Vfio.Interop;
using Vfio.Testing;
using static Vfio.Interop.Interop;

namespace Vfio.Tests.Simulation;

/// <summary>
/// The VFIO device cdev (<c>/dev/vfio/devices/vfioN</c>) on the simulated kernel: its nodes, binding to
/// an iommufd against the legacy group API, attach and detach, and the PCI hot reset in its dev-id form,
/// checked against Linux 7.2's drivers/vfio (device_cdev.c, vfio_main.c, group.c, iommufd.c,
/// pci/vfio_pci_core.c) and drivers/iommu/iommufd/device.c.
/// </summary>
public sealed class DeviceCdevTests : IDisposable
{
    private const string Edu = "0000:00:03.0";
    private readonly SimulatedKernel _kernel = new();
    private readonly SimulatedPciDevice _edu;
    private readonly List<IDisposable> _open = [];

    public DeviceCdevTests()
    {
        _edu = _kernel.AddPciDevice(Edu, new EduDeviceModel(), iommuGroup: 5);
    }

    public void Dispose()
    {
        foreach (var item in Enumerable.Reverse(_open))
        {
            item.Dispose();
        }
        _kernel.AssertNoLeaks();
    }

    private T Keep<T>(T item)
        where T : IDisposable
    {
        _open.Add(item);
        return item;
    }

    private SafeFd Iommufd() => Keep(IommufdSeam.Open(_kernel));

    private SafeFd Cdev(string name = "vfio0") => Keep(IommufdSeam.OpenCdev(_kernel, name));

    [Fact]
    public void AVfioPciDeviceHasACdevNodeAndAVfioDevFolderInSysfs()
    {
        // vfio_device_add: cdev_device_add of "vfio-dev" class device vfioN, node vfio/devices/vfioN.
        _kernel.AddPciDevice("0000:00:04.0", 0x8086, 0x10d3, 0x020000, iommuGroup: 6, driver: "e1000e");

        _kernel.ListDirectory(_kernel.Dev("vfio/devices"), out var nodes).Should().Be(0);
        nodes.Should().Equal("vfio0");
        _kernel.ListDirectory(_edu.SysfsPath + "/vfio-dev", out var names).Should().Be(0);
        names.Should().Equal("vfio0");
        _kernel.ReadLink(_kernel.SysfsRoot + "/class/vfio-dev/vfio0", out var target).Should().Be(0);
        target.Should().EndWith("/" + Edu + "/vfio-dev/vfio0");
        _kernel.ListDirectory(_kernel.SysfsRoot + "/devices/pci0000:00/0000:00:04.0/vfio-dev", out _).Should().Be(-Errno.ENOENT, "e1000e is no vfio driver");
    }

    [Fact]
    public void IndexesAreTheLowestFreeAndGoWithTheUnbind()
    {
        // vfio_init_device: ida_alloc of the device index; vfio_device_release frees it.
        var second = _kernel.AddPciDevice("0000:00:05.0", new EduDeviceModel(), iommuGroup: 6);
        _edu.Unbind();
        _kernel.ListDirectory(_kernel.Dev("vfio/devices"), out var nodes).Should().Be(0);
        nodes.Should().Equal("vfio1");
        _kernel.ListDirectory(_kernel.SysfsRoot + "/class/vfio-dev", out var names).Should().Be(0);
        names.Should().Equal("vfio1");

        _edu.Bind("vfio-pci");

        _kernel.ListDirectory(_edu.SysfsPath + "/vfio-dev", out names).Should().Be(0);
        names.Should().Equal("vfio0");
        second.Unbind();
        _edu.Unbind();
        _kernel.ListDirectory(_kernel.Dev("vfio/devices"), out _).Should().Be(-Errno.ENOENT, "devtmpfs removes the empty folder");
    }

    [Fact]
    public void AKernelWithoutTheCdevOrIommufdHasNoNodesButStillTheSysfsFolder()
    {
        // VFIO_DEVICE_CDEV depends on IOMMUFD; the vfio-dev class device exists without them (Linux 6.1 has it).
        _kernel.DeviceCdevEnabled = false;
        Seam.TryOpen(_kernel, _kernel.Dev("vfio/devices/vfio0"), out _).Should().Be(-Errno.ENOENT);
        _kernel.ListDirectory(_kernel.Dev("vfio"), out var names).Should().Be(0);
        names.Should().Equal("5", "vfio");
        _kernel.ListDirectory(_edu.SysfsPath + "/vfio-dev", out names).Should().Be(0);
        names.Should().Equal("vfio0");

        _kernel.DeviceCdevEnabled = true;
        _kernel.IommufdEnabled = false;
        Seam.TryOpen(_kernel, _kernel.Dev("vfio/devices/vfio0"), out _).Should().Be(-Errno.ENOENT);
    }

    [Fact]
    public void ANoIommuDeviceHasNoCdev()
    {
        // vfio_device_add: "cdev does not support noiommu device". vfio-pci takes such a device only in no-IOMMU mode.
        _kernel.UnsafeNoIommuMode = true;
        _kernel.AddPciDevice("0000:00:06.0", new EduDeviceModel(), 9, SimulatedGroupKind.NoIommu, "vfio-pci");

        _kernel.ListDirectory(_kernel.Dev("vfio/devices"), out var nodes).Should().Be(0);
        nodes.Should().Equal("vfio0");
        _kernel.ListDirectory(_kernel.SysfsRoot + "/class/vfio-dev", out var names).Should().Be(0);
        names.Should().Equal("vfio0", "vfio1");
    }

    [Fact]
    public unsafe void BeforeBindEveryOtherCallIsEinval()
    {
        // vfio_device_fops_unl_ioctl, _read, _write, _mmap: -EINVAL until access_granted.
        var device = Cdev();
        var info = new vfio_device_info { argsz = (uint)sizeof(vfio_device_info) };

        _kernel.Ioctl(device, VfioUapi.VFIO_DEVICE_GET_INFO, &info).Should().Be(-Errno.EINVAL);
        _kernel.Ioctl(device, VfioUapi.VFIO_DEVICE_RESET, 0).Should().Be(-Errno.EINVAL);
        IommufdSeam.Detach(_kernel, device).Should().Be(-Errno.EINVAL);
        _kernel.PRead(device, new byte[4], 7L << 40).Should().Be(-Errno.EINVAL);
        _kernel.PWrite(device, new byte[4], 7L << 40).Should().Be(-Errno.EINVAL);
        _kernel.Mmap(device, 4096, Flags.PROT_READ, Flags.MAP_SHARED, 0, out _).Should().Be(-Errno.EINVAL);
        _edu.IsOpen.Should().BeFalse();
    }

    [Fact]
    public unsafe void BindReturnsTheDevidAndOpensTheDevice()
    {
        // vfio_df_ioctl_bind_iommufd: vfio_df_open, out_devid written; the device then answers.
        var iommufd = Iommufd();
        var device = Cdev();

        IommufdSeam.Bind(_kernel, device, iommufd, out uint devid).Should().Be(0);

        devid.Should().Be(1);
        _edu.IsOpen.Should().BeTrue();
        var info = new vfio_device_info { argsz = (uint)sizeof(vfio_device_info) };
        _kernel.Ioctl(device, VfioUapi.VFIO_DEVICE_GET_INFO, &info).Should().Be(0);
        (info.flags & VfioUapi.VFIO_DEVICE_FLAGS_PCI).Should().NotBe(0);
        IommufdSeam.Bind(_kernel, device, iommufd, out _).Should().Be(-Errno.EINVAL, "one device file binds once");
    }

    [Fact]
    public unsafe void BindChecksItsArgumentAndTheIommufd()
    {
        // vfio_df_ioctl_bind_iommufd: argsz below offsetofend(out_devid) EINVAL, copy_struct_from_user
        // E2BIG, a negative fd or unknown flags EINVAL, a VF token on a device that wants none EINVAL
        // (vfio_pci_core_match_token_uuid); iommufd_ctx_from_fd: EBADF, or EBADFD for another file.
        var iommufd = Iommufd();
        var device = Cdev();
        var buffer = new byte[32];
        fixed (byte* p = buffer)
        {
            var bind = (vfio_device_bind_iommufd*)p;
            bind->argsz = 12;
            bind->iommufd = iommufd.Value;
            _kernel.Ioctl(device, VfioUapi.VFIO_DEVICE_BIND_IOMMUFD, p).Should().Be(-Errno.EINVAL);
            bind->argsz = 32;
            p[28] = 1;
            _kernel.Ioctl(device, VfioUapi.VFIO_DEVICE_BIND_IOMMUFD, p).Should().Be(-Errno.E2BIG);
            p[28] = 0;
            bind->flags = VfioUapi.VFIO_DEVICE_BIND_FLAG_TOKEN;
            _kernel.Ioctl(device, VfioUapi.VFIO_DEVICE_BIND_IOMMUFD, p).Should().Be(-Errno.EINVAL);
            bind->flags = 2;
            _kernel.Ioctl(device, VfioUapi.VFIO_DEVICE_BIND_IOMMUFD, p).Should().Be(-Errno.EINVAL);
        }
        IommufdSeam.Bind(_kernel, device, -1, out _).Should().Be(-Errno.EINVAL);
        IommufdSeam.Bind(_kernel, device, 99, out _).Should().Be(-Errno.EBADF);
        using var container = Seam.Container(_kernel);
        IommufdSeam.Bind(_kernel, device, container, out _).Should().Be(-Errno.EBADFD);
        _edu.IsOpen.Should().BeFalse();
    }

    [Fact]
    public void BindIsBusyWhileTheGroupIsOpenThroughTheLegacyApiAndViceVersa()
    {
        // vfio_device_block_group: EBUSY while the group has its opened_file; vfio_group_fops_open:
        // EBUSY while cdev_device_open_cnt is raised by a bound device.
        var iommufd = Iommufd();
        var device = Cdev();
        var group = Seam.Group(_kernel, 5);
        IommufdSeam.Bind(_kernel, device, iommufd, out _).Should().Be(-Errno.EBUSY);
        group.Dispose();

        IommufdSeam.Bind(_kernel, device, iommufd, out _).Should().Be(0);

        Seam.TryOpen(_kernel, _kernel.Dev("vfio/5"), out _).Should().Be(-Errno.EBUSY);
    }

    [Fact]
    public void AGroupOpenedCdevIsFreeAgainOnceTheBoundFileCloses()
    {
        // vfio_df_unbind_iommufd unblocks the group at close.
        var iommufd = Iommufd();
        using (var device = IommufdSeam.OpenCdev(_kernel, "vfio0"))
        {
            IommufdSeam.Bind(_kernel, device, iommufd, out _).Should().Be(0);
        }

        using var opened = Seam.OpenDevice(_kernel, 5, Edu);
        _edu.IsOpen.Should().BeTrue();
    }

    [Fact]
    public void ASecondCdevFileOfAnOpenDeviceCannotBind()
    {
        // vfio_df_open: the cdev path opens a device only once (open_count != 0 and no group: EINVAL),
        // though opening the node itself succeeds.
        var iommufd = Iommufd();
        IommufdSeam.Bind(_kernel, Cdev(), iommufd, out _).Should().Be(0);
        var second = Cdev();

        IommufdSeam.Bind(_kernel, second, iommufd, out _).Should().Be(-Errno.EINVAL);
        IommufdSeam.Bind(_kernel, second, Iommufd(), out _).Should().Be(-Errno.EINVAL);
    }

    [Fact]
    public void BindOnADeviceFileFromTheGroupIsEinvalOrUnknownWithoutTheCdev()
    {
        // vfio_df_ioctl_bind_iommufd: "BIND_IOMMUFD only allowed for cdev fds"; a kernel without
        // VFIO_DEVICE_CDEV does not know the ioctl.
        var iommufd = Iommufd();
        var opened = Keep(Seam.OpenDevice(_kernel, 5, Edu));
        IommufdSeam.Bind(_kernel, opened.Device, iommufd, out _).Should().Be(-Errno.EINVAL);
        uint pt = 1;
        IommufdSeam.Attach(_kernel, opened.Device, ref pt).Should().Be(-Errno.ENOTTY, "vfio-pci's ioctl does not know attach");

        _kernel.DeviceCdevEnabled = false;

        IommufdSeam.Bind(_kernel, opened.Device, iommufd, out _).Should().Be(-Errno.ENOTTY);
    }

    [Fact]
    public void DevicesOfOneGroupBindOnlyToTheSameIommufd()
    {
        // iommu_device_claim_dma_owner: a group owned by another owner is EPERM.
        var sibling = _kernel.AddPciDevice("0000:00:03.1", new EduDeviceModel(), iommuGroup: 5);
        IommufdSeam.Bind(_kernel, Cdev("vfio0"), Iommufd(), out _).Should().Be(0);

        IommufdSeam.Bind(_kernel, Cdev("vfio1"), Iommufd(), out _).Should().Be(-Errno.EPERM);
        sibling.IsOpen.Should().BeFalse();
    }

    [Fact]
    public void ASiblingInTheSameIommufdBindsAndMustShareThePageTable()
    {
        // iommu_device_claim_dma_owner counts a second claim by the same owner; iommufd_hw_pagetable_attach
        // puts a group on one page table (EINVAL for another).
        _kernel.AddPciDevice("0000:00:03.1", new EduDeviceModel(), iommuGroup: 5);
        var iommufd = Iommufd();
        var first = Cdev("vfio0");
        var second = Cdev("vfio1");
        IommufdSeam.Bind(_kernel, first, iommufd, out _).Should().Be(0);
        IommufdSeam.Bind(_kernel, second, iommufd, out _).Should().Be(0);
        uint a = IommufdSeam.AllocIoas(_kernel, iommufd);
        uint b = IommufdSeam.AllocIoas(_kernel, iommufd);
        uint pt = a;
        IommufdSeam.Attach(_kernel, first, ref pt).Should().Be(0);

        uint other = b;
        IommufdSeam.Attach(_kernel, second, ref other).Should().Be(-Errno.EINVAL);
        uint same = a;
        IommufdSeam.Attach(_kernel, second, ref same).Should().Be(0);
        same.Should().Be(pt);
    }

    [Fact]
    public void ANonViableGroupOrUnisolatedMsiCannotBind()
    {
        // iommu_device_claim_dma_owner: EPERM while a kernel driver uses the group's DMA;
        // iommufd_device_bind: EPERM without isolated MSI (allow_unsafe_interrupts unset).
        _kernel.AddPciDevice("0000:00:03.1", 0x8086, 0x10d3, 0x020000, iommuGroup: 5, driver: "e1000e");
        var iommufd = Iommufd();
        var device = Cdev();
        IommufdSeam.Bind(_kernel, device, iommufd, out _).Should().Be(-Errno.EPERM);

        _kernel.FindDevice("0000:00:03.1").Should().BeOfType<SimulatedPciDevice>().Which.Unbind();
        _kernel.IsolatedMsi = false;
        IommufdSeam.Bind(_kernel, device, iommufd, out _).Should().Be(-Errno.EPERM);
        _kernel.IsolatedMsi = true;
        IommufdSeam.Bind(_kernel, device, iommufd, out _).Should().Be(0);
    }

    [Fact]
    public void AKernelDriverCannotProbeInAGroupBoundToAnIommufd()
    {
        // The group's DMA is owned: a driver using the DMA API fails to probe (EBUSY).
        var other = _kernel.AddPciDevice("0000:00:03.1", 0x8086, 0x10d3, 0x020000, iommuGroup: 5, driver: null);
        IommufdSeam.Bind(_kernel, Cdev(), Iommufd(), out _).Should().Be(0);

        var act = () => other.Bind("e1000e");

        act.Should().Throw<InvalidOperationException>().WithMessage("*EBUSY*");
    }

    [Fact]
    public void AttachToAnIoasReturnsItsAutomaticPageTableWhichDevicesShare()
    {
        // iommufd_device_auto_get_domain: a compatible automatic domain of the IOAS is reused, else one
        // is made; pt_id comes back as the page table's id.
        _kernel.AddPciDevice("0000:00:05.0", new EduDeviceModel(), iommuGroup: 6);
        var iommufd = Iommufd();
        var first = Cdev("vfio0");
        var second = Cdev("vfio1");
        IommufdSeam.Bind(_kernel, first, iommufd, out uint one).Should().Be(0);
        IommufdSeam.Bind(_kernel, second, iommufd, out uint two).Should().Be(0);
        uint ioas = IommufdSeam.AllocIoas(_kernel, iommufd);

        uint pt1 = ioas;
        IommufdSeam.Attach(_kernel, first, ref pt1).Should().Be(0);
        uint pt2 = ioas;
        IommufdSeam.Attach(_kernel, second, ref pt2).Should().Be(0);

        (one, two, ioas).Should().Be((1u, 2u, 3u));
        pt1.Should().Be(4);
        pt2.Should().Be(pt1);
    }

    [Fact]
    public void AttachingAgainReplacesThePageTable()
    {
        // vfio_iommufd_physical_attach_ioas: replace when attached; the same page table is a no-op, and
        // the old automatic one goes with its last device, freeing its IOAS (iommufd_device_do_replace).
        var iommufd = Iommufd();
        var device = Cdev();
        IommufdSeam.Bind(_kernel, device, iommufd, out _).Should().Be(0);
        uint a = IommufdSeam.AllocIoas(_kernel, iommufd);
        uint b = IommufdSeam.AllocIoas(_kernel, iommufd);
        uint first = a;
        IommufdSeam.Attach(_kernel, device, ref first).Should().Be(0);
        uint again = a;
        IommufdSeam.Attach(_kernel, device, ref again).Should().Be(0);
        again.Should().Be(first);

        uint moved = b;
        IommufdSeam.Attach(_kernel, device, ref moved).Should().Be(0);

        moved.Should().NotBe(first);
        IommufdSeam.Destroy(_kernel, iommufd, a).Should().Be(0);
        IommufdSeam.Destroy(_kernel, iommufd, b).Should().Be(-Errno.EBUSY);
    }

    [Fact]
    public unsafe void AttachNeedsAnIoasOrAPageTable()
    {
        // iommufd_device_change_pt: ENOENT for no object, EINVAL for one of another type; pasid attach
        // needs a PASID-capable device (EOPNOTSUPP), unknown flags EINVAL (vfio_df_ioctl_attach_pt).
        var iommufd = Iommufd();
        var device = Cdev();
        IommufdSeam.Bind(_kernel, device, iommufd, out uint devid).Should().Be(0);
        uint pt = 50;
        IommufdSeam.Attach(_kernel, device, ref pt).Should().Be(-Errno.ENOENT);
        pt = devid;
        IommufdSeam.Attach(_kernel, device, ref pt).Should().Be(-Errno.EINVAL);
        var attach = new vfio_device_attach_iommufd_pt { argsz = (uint)sizeof(vfio_device_attach_iommufd_pt), flags = VfioUapi.VFIO_DEVICE_ATTACH_PASID, pt_id = devid };
        _kernel.Ioctl(device, VfioUapi.VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach).Should().Be(-Errno.EOPNOTSUPP);
        attach.flags = 2;
        _kernel.Ioctl(device, VfioUapi.VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach).Should().Be(-Errno.EINVAL);
        attach = new vfio_device_attach_iommufd_pt { argsz = 8, pt_id = devid };
        _kernel.Ioctl(device, VfioUapi.VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach).Should().Be(-Errno.EINVAL);
    }

    [Fact]
    public void DetachWithoutAnAttachmentSucceeds()
    {
        // vfio_iommufd_physical_detach_ioas returns quietly when not attached.
        var device = Cdev();
        IommufdSeam.Bind(_kernel, device, Iommufd(), out _).Should().Be(0);

        IommufdSeam.Detach(_kernel, device).Should().Be(0);
        IommufdSeam.Detach(_kernel, device).Should().Be(0);
    }

    [Fact]
    public void TheIommufdOutlivesItsDescriptorWhileADeviceIsBound()
    {
        // iommufd_device_bind takes a context reference (iommufd_ctx_get) until unbind.
        var memory = Keep(Seam.Anonymous(_kernel, 4096));
        var iommufd = IommufdSeam.Open(_kernel);
        var device = Cdev();
        IommufdSeam.Bind(_kernel, device, iommufd, out _).Should().Be(0);
        uint ioas = IommufdSeam.AllocIoas(_kernel, iommufd);
        uint pt = ioas;
        IommufdSeam.Attach(_kernel, device, ref pt).Should().Be(0);
        IommufdSeam.MapAt(_kernel, iommufd, ioas, (ulong)memory.Address, 4096, 0x40000).Should().Be(0);

        iommufd.Dispose();

        _kernel.DmaMappingCount.Should().Be(1, "the context lives on behind the device");
        _kernel.UserLockedMemory.Should().Be(4096);
        device.Dispose();
        _kernel.DmaMappingCount.Should().Be(0);
        _kernel.UserLockedMemory.Should().Be(0);
    }

    [Fact]
    public async Task UnbindingTheDriverWaitsForAnOpenCdevEvenUnbound()
    {
        // vfio_device_fops_cdev_open holds the registration; vfio_unregister_group_dev waits for it.
        _kernel.ReleaseRequestInterval = TimeSpan.FromMilliseconds(20);
        var device = IommufdSeam.OpenCdev(_kernel, "vfio0");

        var unbind = Task.Run(_edu.Unbind);
        SpinWait.SpinUntil(() => _kernel.ReleaseRequests > 0, TimeSpan.FromSeconds(30)).Should().BeTrue();
        unbind.IsCompleted.Should().BeFalse();
        device.Dispose();

        await unbind.WaitAsync(TimeSpan.FromSeconds(30));
        _edu.Driver.Should().BeNull();
        Seam.TryOpen(_kernel, _kernel.Dev("vfio/devices/vfio0"), out _).Should().Be(-Errno.ENOENT);
    }

    /// <summary>Two edu functions in one slot behind a root port, each in its own group: one reset scope.</summary>
    private SimulatedPciDevice SlotBehindABridge(string? secondDriver = "vfio-pci")
    {
        _kernel.AddPciBridge("0000:00:1c.0", 1);
        _kernel.AddPciDevice("0000:01:00.0", new EduDeviceModel(), iommuGroup: 10);
        return secondDriver is null || secondDriver == "vfio-pci"
            ? _kernel.AddPciDevice("0000:01:00.1", new EduDeviceModel(), iommuGroup: 11, driver: secondDriver)
            : _kernel.AddPciDevice("0000:01:00.1", 0x8086, 0x10d3, 0x020000, iommuGroup: 11, driver: secondDriver);
    }

    private unsafe (uint Flags, vfio_pci_dependent_device[] Devices) HotResetInfo(SafeFd device)
    {
        byte* buffer = stackalloc byte[64];
        var info = (vfio_pci_hot_reset_info*)buffer;
        *info = new vfio_pci_hot_reset_info { argsz = 64 };
        _kernel.Ioctl(device, VfioUapi.VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, buffer).Should().Be(0);
        return (info->flags, new ReadOnlySpan<vfio_pci_dependent_device>(buffer + sizeof(vfio_pci_hot_reset_info), (int)info->count).ToArray());
    }

    private unsafe int HotReset(SafeFd device, params int[] groupFds)
    {
        int size = sizeof(vfio_pci_hot_reset) + (4 * groupFds.Length);
        byte* buffer = stackalloc byte[size];
        *(vfio_pci_hot_reset*)buffer = new vfio_pci_hot_reset { argsz = (uint)size, count = (uint)groupFds.Length };
        groupFds.CopyTo(new Span<int>(buffer + sizeof(vfio_pci_hot_reset), groupFds.Length));
        return _kernel.Ioctl(device, VfioUapi.VFIO_DEVICE_PCI_HOT_RESET, buffer);
    }

    [Fact]
    public void HotResetInfoOfACdevNamesDevidsAndSaysWhenEverythingIsOwned()
    {
        // vfio_pci_ioctl_get_pci_hot_reset_info with vfio_pci_fill_devs: a cdev-opened device gets
        // FLAG_DEV_ID, each entry its devid in the caller's iommufd, and DEV_ID_OWNED while none is NOT_OWNED.
        SlotBehindABridge();
        var iommufd = Iommufd();
        var first = Cdev("vfio1");
        IommufdSeam.Bind(_kernel, first, iommufd, out uint firstId).Should().Be(0);

        var (flags, devices) = HotResetInfo(first);
        flags.Should().Be(VfioUapi.VFIO_PCI_HOT_RESET_FLAG_DEV_ID);
        devices.Select(d => d.devid).Should().Equal(firstId, unchecked((uint)VfioUapi.VFIO_PCI_DEVID_NOT_OWNED));
        devices[1].devfn.Should().Be(1);
        HotReset(first).Should().Be(-Errno.EINVAL, "the second function is not owned");

        var second = Cdev("vfio2");
        IommufdSeam.Bind(_kernel, second, iommufd, out uint secondId).Should().Be(0);
        (flags, devices) = HotResetInfo(first);
        flags.Should().Be(VfioUapi.VFIO_PCI_HOT_RESET_FLAG_DEV_ID | VfioUapi.VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED);
        devices.Select(d => d.devid).Should().Equal(firstId, secondId);
        HotReset(first).Should().Be(0);
    }

    [Fact]
    public void AFunctionInAGroupTheIommufdOwnsIsOwnedWithoutADevid()
    {
        // vfio_iommufd_get_dev_id: -ENOENT (reported VFIO_PCI_DEVID_OWNED) for an unbound device whose
        // group has a device bound to the caller's iommufd.
        _kernel.AddPciBridge("0000:00:1c.0", 1);
        _kernel.AddPciDevice("0000:01:00.0", new EduDeviceModel(), iommuGroup: 10);
        _kernel.AddPciDevice("0000:01:00.1", new EduDeviceModel(), iommuGroup: 10);
        var device = Cdev("vfio1");
        IommufdSeam.Bind(_kernel, device, Iommufd(), out uint devid).Should().Be(0);

        var (flags, devices) = HotResetInfo(device);

        flags.Should().Be(VfioUapi.VFIO_PCI_HOT_RESET_FLAG_DEV_ID | VfioUapi.VFIO_PCI_HOT_RESET_FLAG_DEV_ID_OWNED);
        devices.Select(d => d.devid).Should().Equal(devid, (uint)VfioUapi.VFIO_PCI_DEVID_OWNED);
        HotReset(device).Should().Be(0);
    }

    [Fact]
    public void AFunctionOutsideTheDevSetOrInAnotherIommufdIsNotOwned()
    {
        // vfio_pci_fill_devs: a function not in the dev_set (not bound to vfio-pci) or bound to another
        // iommufd is NOT_OWNED; vfio_pci_dev_set_hot_reset then refuses (EINVAL).
        var second = SlotBehindABridge(secondDriver: "e1000e");
        var device = Cdev("vfio1");
        IommufdSeam.Bind(_kernel, device, Iommufd(), out _).Should().Be(0);
        HotResetInfo(device).Devices[1].devid.Should().Be(unchecked((uint)VfioUapi.VFIO_PCI_DEVID_NOT_OWNED));
        HotReset(device).Should().Be(-Errno.EINVAL);

        second.Unbind();
        second.Bind("vfio-pci");
        IommufdSeam.Bind(_kernel, Cdev("vfio2"), Iommufd(), out _).Should().Be(0);
        HotResetInfo(device).Flags.Should().Be(VfioUapi.VFIO_PCI_HOT_RESET_FLAG_DEV_ID);
        HotReset(device).Should().Be(-Errno.EINVAL);
    }

    [Fact]
    public void TheEmptyFdArrayIsForCdevsOnlyAndOnlyIt()
    {
        // vfio_pci_ioctl_pci_hot_reset: "zero-length array is only for cdev opened devices".
        SlotBehindABridge();
        var iommufd = Iommufd();
        var first = Cdev("vfio1");
        IommufdSeam.Bind(_kernel, first, iommufd, out _).Should().Be(0);
        IommufdSeam.Bind(_kernel, Cdev("vfio2"), iommufd, out _).Should().Be(0);
        var legacy = Keep(Seam.OpenDevice(_kernel, 5, Edu));

        HotReset(first, legacy.Group.Value).Should().Be(-Errno.EINVAL);
        HotReset(legacy.Device).Should().Be(-Errno.EINVAL);
        HotReset(first).Should().Be(0);
    }

    [Fact]
    public void ALegacyOpenedDeviceStillSeesGroupIds()
    {
        // vfio_pci_fill_devs without FLAG_DEV_ID: group ids, flags 0.
        SlotBehindABridge();
        var container = Keep(Seam.Container(_kernel));
        var group = Keep(Seam.Group(_kernel, 10));
        Seam.SetContainer(_kernel, group, container).Should().Be(0);
        _kernel.Ioctl(container, VfioUapi.VFIO_SET_IOMMU, VfioUapi.VFIO_TYPE1v2_IOMMU).Should().Be(0);
        Seam.GetDeviceFd(_kernel, group, "0000:01:00.0", out var device).Should().BeGreaterThan(0);
        Keep(device);

        var (flags, devices) = HotResetInfo(device);

        flags.Should().Be(0);
        devices.Select(d => d.group_id).Should().Equal(10u, 11u);
    }
}
