using System.Buffers.Binary;
using Vfio.Interop;
using Vfio.Testing;
using static Vfio.Interop.Interop;

namespace Vfio.Tests.Simulation;

public sealed unsafe class PciDeviceModelTests : IDisposable
{
    private readonly SimulatedKernel _kernel = new();
    private readonly CounterModel _model = new();
    private readonly Opened _opened;

    public PciDeviceModelTests()
    {
        _kernel.AddPciDevice("0000:00:03.0", _model, iommuGroup: 5);
        _opened = Seam.OpenDevice(_kernel, 5, "0000:00:03.0");
    }

    public void Dispose()
    {
        _opened.Dispose();
        _kernel.AssertNoLeaks();
    }

    /// <summary>BAR0 register 0 counts reads; register 8 raises MSI vector (value) on write; register 0x10 DMAs.</summary>
    private sealed class CounterModel : PciDeviceModel
    {
        private uint _reads;

        public CounterModel()
            : base(0x1234, 0x11e8, 0x00ff00, isExpress: true)
        {
            DefineBar(0, 0x1000);
            DefineBar(2, 0x4000, PciBarKind.Memory64, prefetchable: true);
            DefineSparseMmap(2, new SparseMmapArea(0, 0x1000), new SparseMmapArea(0x3000, 0x1000));
            MsiVectors = 4;
            MsixVectors = 8;
            MsixBar = 2;
        }

        public int Resets { get; private set; }

        protected override ulong ReadBar(int bar, ulong offset, int size) =>
            bar == 0 && offset == 0 ? ++_reads : base.ReadBar(bar, offset, size);

        protected override void WriteBar(int bar, ulong offset, int size, ulong value)
        {
            if (bar == 0 && offset == 8)
            {
                SignalInterrupt((int)value);
                return;
            }
            base.WriteBar(bar, offset, size, value);
        }

        protected override void OnReset()
        {
            base.OnReset();
            _reads = 0;
            Resets++;
        }
    }

    [Fact]
    public void DeviceInfoDescribesAPciDeviceWithResetNineRegionsAndFiveIrqs()
    {
        var info = new vfio_device_info { argsz = (uint)sizeof(vfio_device_info) };
        _kernel.Ioctl(_opened.Device, VfioUapi.VFIO_DEVICE_GET_INFO, &info).Should().Be(0);
        info.flags.Should().Be(VfioUapi.VFIO_DEVICE_FLAGS_PCI | VfioUapi.VFIO_DEVICE_FLAGS_RESET);
        info.num_regions.Should().Be(9);
        info.num_irqs.Should().Be(5);
        info.argsz = 8;
        _kernel.Ioctl(_opened.Device, VfioUapi.VFIO_DEVICE_GET_INFO, &info).Should().Be(-Errno.EINVAL);
    }

    [Fact]
    public void RegionInfoPlacesEachRegionAtItsIndexShiftedBy40()
    {
        var bar0 = Seam.RegionInfo(_kernel, _opened.Device, 0);
        bar0.size.Should().Be(0x1000);
        bar0.offset.Should().Be(0);
        bar0.flags.Should().Be(VfioUapi.VFIO_REGION_INFO_FLAG_READ | VfioUapi.VFIO_REGION_INFO_FLAG_WRITE | VfioUapi.VFIO_REGION_INFO_FLAG_MMAP);
        var bar1 = Seam.RegionInfo(_kernel, _opened.Device, 1);
        bar1.size.Should().Be(0);
        bar1.flags.Should().Be(0);
        var config = Seam.RegionInfo(_kernel, _opened.Device, VfioUapi.VFIO_PCI_CONFIG_REGION_INDEX);
        config.size.Should().Be(4096);
        config.offset.Should().Be(7UL << 40);
        var bad = new vfio_region_info { argsz = (uint)sizeof(vfio_region_info), index = 9 };
        _kernel.Ioctl(_opened.Device, VfioUapi.VFIO_DEVICE_GET_REGION_INFO, &bad).Should().Be(-Errno.EINVAL);
    }

    [Fact]
    public void RegionInfoReportsSparseAreasAndMsixMappableInACapabilityChain()
    {
        var small = Seam.RegionInfo(_kernel, _opened.Device, 2);
        (small.flags & VfioUapi.VFIO_REGION_INFO_FLAG_CAPS).Should().Be(VfioUapi.VFIO_REGION_INFO_FLAG_CAPS);
        small.cap_offset.Should().Be(0);
        small.argsz.Should().Be((uint)(sizeof(vfio_region_info) + 16 + 32 + 8));

        byte[] buffer = new byte[small.argsz];
        fixed (byte* p = buffer)
        {
            var info = (vfio_region_info*)p;
            info->argsz = small.argsz;
            info->index = 2;
            _kernel.Ioctl(_opened.Device, VfioUapi.VFIO_DEVICE_GET_REGION_INFO, p).Should().Be(0);
            info->cap_offset.Should().Be((uint)sizeof(vfio_region_info));
            var sparse = (vfio_region_info_cap_sparse_mmap*)(p + info->cap_offset);
            sparse->header.id.Should().Be((ushort)VfioUapi.VFIO_REGION_INFO_CAP_SPARSE_MMAP);
            sparse->nr_areas.Should().Be(2);
            var areas = (vfio_region_sparse_mmap_area*)((byte*)sparse + sizeof(vfio_region_info_cap_sparse_mmap));
            areas[1].offset.Should().Be(0x3000);
            var msix = (vfio_info_cap_header*)(p + sparse->header.next);
            msix->id.Should().Be((ushort)VfioUapi.VFIO_REGION_INFO_CAP_MSIX_MAPPABLE);
            msix->next.Should().Be(0);
        }
    }

    [Fact]
    public void ConfigSpaceReadsShowTheIdentityAndBarsAnswerSizing()
    {
        var config = new byte[64];
        _kernel.PRead(_opened.Device, config, 7L << 40).Should().Be(64);
        BinaryPrimitives.ReadUInt16LittleEndian(config).Should().Be(0x1234);
        BinaryPrimitives.ReadUInt16LittleEndian(config.AsSpan(2)).Should().Be(0x11e8);
        (BinaryPrimitives.ReadUInt16LittleEndian(config.AsSpan(4)) & 0x2).Should().Be(2, "opening enabled memory decoding");

        _kernel.PWrite(_opened.Device, BitConverter.GetBytes(0xffffffffu), (7L << 40) + 0x10).Should().Be(4);
        var bar0 = new byte[4];
        _kernel.PRead(_opened.Device, bar0, (7L << 40) + 0x10).Should().Be(4);
        BinaryPrimitives.ReadUInt32LittleEndian(bar0).Should().Be(0xfffff000);
    }

    [Fact]
    public void ConfigAccessPastTheEndFailsWithEfaultWhileABarAccessIsCutShort()
    {
        var eight = new byte[8];
        _kernel.PRead(_opened.Device, eight, (7L << 40) + 0xffc).Should().Be(-Errno.EFAULT, "vfio_config_do_rw refuses it whole");
        _kernel.PWrite(_opened.Device, eight, (7L << 40) + 0xffc).Should().Be(-Errno.EFAULT);
        _kernel.PRead(_opened.Device, eight.AsSpan(0, 4), (7L << 40) + 0xffc).Should().Be(4);
        _kernel.PRead(_opened.Device, eight, 0xffc).Should().Be(4, "vfio_pci_bar_rw cuts an access at the BAR's end");
    }

    [Fact]
    public void BarAccessGoesThroughTheModelAndFailsWhileDecodingIsOff()
    {
        var value = new byte[4];
        _kernel.PRead(_opened.Device, value, 0).Should().Be(4);
        BinaryPrimitives.ReadUInt32LittleEndian(value).Should().Be(1);
        _kernel.PRead(_opened.Device, value, 0x1000).Should().Be(-Errno.EINVAL);
        _kernel.PWrite(_opened.Device, new byte[2], (7L << 40) + 4).Should().Be(2);
        _kernel.PRead(_opened.Device, value, 0).Should().Be(-Errno.EIO);
    }

    [Fact]
    public void AMappedBarTrapsIntoTheModelAndHoldsTheDeviceOpen()
    {
        _kernel.Mmap(_opened.Device, 0x1000, Flags.PROT_READ | Flags.PROT_WRITE, Flags.MAP_SHARED, 0, out var mapping).Should().Be(0);
        mapping.IsTrapped.Should().BeTrue();
        mapping.ReadTrapped(0, 4).Should().Be(1);
        mapping.WriteTrapped(0x20, 4, 0xabcd);
        mapping.ReadTrapped(0x20, 4).Should().Be(0xabcd);
        _kernel.Mmap(_opened.Device, 0x2000, Flags.PROT_READ, Flags.MAP_SHARED, 0, out _).Should().Be(-Errno.EINVAL);
        _kernel.Mmap(_opened.Device, 0x1000, Flags.PROT_READ, Flags.MAP_PRIVATE, 0, out _).Should().Be(-Errno.EINVAL);
        _kernel.Mmap(_opened.Device, 0x1000, Flags.PROT_READ, Flags.MAP_SHARED, (2L << 40) + 0x1000, out _).Should().Be(-Errno.EINVAL, "outside the sparse areas");
        _kernel.Mmap(_opened.Device, 0x1000, Flags.PROT_READ, Flags.MAP_SHARED, 7L << 40, out _).Should().Be(-Errno.EINVAL, "config space cannot be mapped");

        _opened.Device.Dispose();
        _kernel.FindDevice("0000:00:03.0").IsOpen.Should().BeTrue("the mapping holds the device file");
        mapping.Dispose();
        _kernel.FindDevice("0000:00:03.0").IsOpen.Should().BeFalse();
    }

    [Fact]
    public void IrqInfoFollowsTheCapabilities()
    {
        var info = new vfio_irq_info { argsz = (uint)sizeof(vfio_irq_info), index = 0 };
        _kernel.Ioctl(_opened.Device, VfioUapi.VFIO_DEVICE_GET_IRQ_INFO, &info).Should().Be(0);
        info.count.Should().Be(1);
        info.flags.Should().Be(VfioUapi.VFIO_IRQ_INFO_EVENTFD | VfioUapi.VFIO_IRQ_INFO_MASKABLE | VfioUapi.VFIO_IRQ_INFO_AUTOMASKED);
        info.index = 2;
        _kernel.Ioctl(_opened.Device, VfioUapi.VFIO_DEVICE_GET_IRQ_INFO, &info).Should().Be(0);
        info.count.Should().Be(8);
        info.flags.Should().Be(VfioUapi.VFIO_IRQ_INFO_EVENTFD | VfioUapi.VFIO_IRQ_INFO_NORESIZE);
        info.index = 5;
        _kernel.Ioctl(_opened.Device, VfioUapi.VFIO_DEVICE_GET_IRQ_INFO, &info).Should().Be(-Errno.EINVAL);
    }

    [Fact]
    public void MsiInterruptsReachTheRegisteredEventFds()
    {
        using var v0 = Seam.EventFd(_kernel, Flags.EFD_NONBLOCK);
        using var v1 = Seam.EventFd(_kernel, Flags.EFD_NONBLOCK);
        Seam.SetIrqEventFds(_kernel, _opened.Device, 1, 0, v0.Value, v1.Value).Should().Be(0);
        _model.MsiEnabled.Should().BeTrue();
        _kernel.PWrite(_opened.Device, BitConverter.GetBytes(1u), 8).Should().Be(4);
        Seam.ReadCounter(_kernel, v1).Should().Be(1);
        Seam.ReadCounter(_kernel, v0).Should().Be(unchecked((ulong)-Errno.EAGAIN));
        Seam.SetIrqEventFds(_kernel, _opened.Device, 1, 2, v0.Value).Should().Be(-Errno.EINVAL, "6.1 does not grow enabled vectors");
        Seam.SetIrqEventFds(_kernel, _opened.Device, 2, 0, v0.Value).Should().Be(-Errno.EINVAL, "MSI is in use");
        Seam.SetIrqs(_kernel, _opened.Device, 1, VfioUapi.VFIO_IRQ_SET_DATA_NONE | VfioUapi.VFIO_IRQ_SET_ACTION_TRIGGER, 0, 0).Should().Be(0);
        _model.MsiEnabled.Should().BeFalse();
        _model.RaiseInterrupt(1, 0).Should().BeFalse("a disabled vector leaves the interrupt pending");
    }

    [Fact]
    public void TheMsixTableAndPbaMayStartAnywhereAlignedInTheirBar()
    {
        var model = new PciDeviceModel(0x1234, 0x5678, 0x010802) { MsixVectors = 4, MsixBar = 0, MsixTableOffset = 0x100, HasPowerManagement = false };
        var act = () => model.MsixTableOffset = 0x104;
        act.Should().Throw<ArgumentOutOfRangeException>();
        model.DefineBar(0, 0x200);
        var kernel = new SimulatedKernel();
        kernel.AddPciDevice("0000:00:04.0", model, iommuGroup: 4);
        int capability = 0x40;
        model.ReadConfigRegister(capability, 1).Should().Be(0x11u, "MSI-X is the first capability without power management or MSI");
        model.ReadConfigRegister(capability + 4, 4).Should().Be(0x100u);
        model.ReadConfigRegister(capability + 8, 4).Should().Be(0x140u, "the PBA follows the 4-entry table");

        var tooSmall = new PciDeviceModel(0x1234, 0x5678, 0x010802) { MsixVectors = 4, MsixBar = 0, MsixTableOffset = 0x1000, HasPowerManagement = false };
        tooSmall.DefineBar(0, 0x1000);
        var add = () => kernel.AddPciDevice("0000:00:04.1", tooSmall, iommuGroup: 6);
        add.Should().Throw<InvalidOperationException>();
    }

    [Fact]
    public void SetIrqsValidatesItsHeader()
    {
        Seam.SetIrqs(_kernel, _opened.Device, 6, VfioUapi.VFIO_IRQ_SET_DATA_NONE | VfioUapi.VFIO_IRQ_SET_ACTION_TRIGGER, 0, 1).Should().Be(-Errno.EINVAL);
        Seam.SetIrqs(_kernel, _opened.Device, 1, VfioUapi.VFIO_IRQ_SET_DATA_NONE | VfioUapi.VFIO_IRQ_SET_ACTION_TRIGGER, 3, 2).Should().Be(-Errno.EINVAL);
        Seam.SetIrqs(_kernel, _opened.Device, 1, VfioUapi.VFIO_IRQ_SET_DATA_EVENTFD | VfioUapi.VFIO_IRQ_SET_ACTION_TRIGGER, 0, 1).Should().Be(-Errno.EINVAL, "argsz has no room for the eventfd");
        Seam.SetIrqs(_kernel, _opened.Device, 1, VfioUapi.VFIO_IRQ_SET_DATA_NONE | VfioUapi.VFIO_IRQ_SET_DATA_BOOL | VfioUapi.VFIO_IRQ_SET_ACTION_TRIGGER, 0, 1).Should().Be(-Errno.EINVAL);
        Seam.SetIrqs(_kernel, _opened.Device, 1, VfioUapi.VFIO_IRQ_SET_DATA_NONE | VfioUapi.VFIO_IRQ_SET_ACTION_MASK, 0, 1).Should().Be(-Errno.ENOTTY);
        Seam.SetIrqEventFds(_kernel, _opened.Device, 1, 0, 77).Should().Be(-Errno.EBADF);
    }

    [Fact]
    public void IntxMasksItselfWhenItFiresUntilUnmasked()
    {
        using var e = Seam.EventFd(_kernel, Flags.EFD_NONBLOCK);
        Seam.SetIrqEventFds(_kernel, _opened.Device, 0, 0, e.Value).Should().Be(0);
        _model.SignalInterrupt().Should().BeTrue();
        _model.SignalInterrupt().Should().BeFalse("INTx is masked until unmasked");
        Seam.ReadCounter(_kernel, e).Should().Be(1);
        Seam.SetIrqs(_kernel, _opened.Device, 0, VfioUapi.VFIO_IRQ_SET_DATA_NONE | VfioUapi.VFIO_IRQ_SET_ACTION_UNMASK, 0, 1).Should().Be(0);
        Seam.ReadCounter(_kernel, e).Should().Be(1, "the pending interrupt fired on unmask");
    }

    [Fact]
    public void DmaReachesMappedMemoryAndFaultsOutsideIt()
    {
        using var memory = Seam.Anonymous(_kernel, 4096);
        Seam.Map(_kernel, _opened.Container, (ulong)memory.Address, 0x100000, 4096, flags: VfioUapi.VFIO_DMA_MAP_FLAG_READ | VfioUapi.VFIO_DMA_MAP_FLAG_WRITE).Should().Be(0);

        _model.DmaWrite(0x100000, [1, 2, 3]).Should().BeFalse("bus mastering is off");
        _kernel.PWrite(_opened.Device, BitConverter.GetBytes((ushort)0x6), (7L << 40) + 4).Should().Be(2);
        _model.DmaWrite(0x100010, [1, 2, 3]).Should().BeTrue();
        ((byte*)memory.Address)[0x11].Should().Be(2);
        var back = new byte[3];
        _model.DmaRead(0x100010, back).Should().BeTrue();
        back.Should().Equal(1, 2, 3);
        _model.DmaRead(0x100ffe, new byte[4]).Should().BeFalse();

        _kernel.DmaFaults.Should().HaveCount(2);
        _kernel.DmaFaults[1].Should().Be(new DmaFault("0000:00:03.0", 0x101000, 2, false, "no mapping"));
        Seam.Unmap(_kernel, _opened.Container, 0x100000, 4096, out _).Should().Be(0);
    }

    [Fact]
    public void ResetRunsTheModelsResetHook()
    {
        int before = _model.Resets;
        _kernel.Ioctl(_opened.Device, VfioUapi.VFIO_DEVICE_RESET, 0).Should().Be(0);
        _model.Resets.Should().Be(before + 1);
    }

    /// <summary>A model that declares capabilities with contents and edits config space before it joins a kernel.</summary>
    private sealed class DeclaringModel : PciDeviceModel
    {
        public DeclaringModel()
            : base(0x1234, 0x5678, 0x020000, isExpress: true)
        {
            DefineBar(0, 0x1000);
            MsixVectors = 2;
            PlaceCapability(0x11, 0xa0);
            PlaceCapability(0x10, 0x40);
            Vendor = AddVendorCapability([0xaa, 0xbb], [0, 0xff]);
            Fixed = AddCapability(0x13, [6, 0x03, 0, 0], offset: 0xc8);
            AddExtendedCapability(0x0001, 2, new byte[0x44]);
            Serial = AddExtendedCapability(0x0003, 1, [1, 2, 3, 4, 5, 6, 7, 8], offset: 0x180);
            VendorOffsetBeforeJoining = Vendor.Offset;
            ConfigSpace[0x3c] = 0x0b; // the interrupt line firmware left, part of the power-on state
        }

        public PciModelCapability Vendor { get; }

        public PciModelCapability Fixed { get; }

        public PciModelCapability Serial { get; }

        public int VendorOffsetBeforeJoining { get; }

        public void TryDefineAnotherBar() => DefineBar(2, 0x1000);
    }

    [Fact]
    public void DeclaredCapabilitiesHaveTheirBytesAndOffsetsBeforeTheModelJoinsAKernel()
    {
        var model = new DeclaringModel();

        model.VendorOffsetBeforeJoining.Should().Be(model.Vendor.Offset);
        model.FindCapability(0x10)!.Offset.Should().Be(0x40, "placed");
        model.FindCapability(0x11)!.Offset.Should().Be(0xa0, "placed");
        model.Fixed.Offset.Should().Be(0xc8);
        model.Serial.Offset.Should().Be(0x180);
        model.Vendor.Length.Should().Be(5);
        model.ReadConfigRegister(model.Vendor.Offset + 2, 1).Should().Be(5u, "the length byte is filled in");
        model.ReadConfigRegister(model.Vendor.Offset + 3, 2).Should().Be(0xbbaau);
        model.ReadConfigRegister(0x100, 4).Should().Be(0x0001u | (2u << 16) | (0x180u << 20), "AER first, linked to the serial number");
        model.ReadConfigRegister(0x180, 4).Should().Be(0x0003u | (1u << 16));
        model.ReadConfigRegister(0x184, 4).Should().Be(0x04030201u);
        model.Vendor.Contains(model.Vendor.Offset + 4).Should().BeTrue();
        model.Vendor.Contains(model.Vendor.Offset + 5).Should().BeFalse();
    }

    [Fact]
    public void PlacedBuiltInCapabilitiesLeadTheListInTheOrderPlaced()
    {
        var model = new DeclaringModel();
        var order = new List<int>();
        for (int at = (int)model.ReadConfigRegister(0x34, 1); at != 0; at = (int)model.ReadConfigRegister(at + 1, 1))
        {
            order.Add((int)model.ReadConfigRegister(at, 1));
        }

        order.Should().Equal(0x11, 0x10, 0x01, 0x09, 0x13);
    }

    [Fact]
    public void TheDefinitionIsFixedOnceConfigSpaceIsLaidOut()
    {
        var model = new DeclaringModel();

        var define = () => model.TryDefineAnotherBar();
        var place = () => model.PlaceCapability(0x01, 0x80);

        define.Should().Throw<InvalidOperationException>().WithMessage("*fixed once config space is laid out*");
        place.Should().Throw<InvalidOperationException>();
    }

    [Fact]
    public void CapabilitiesThatOverlapAreRefusedWhenConfigSpaceIsLaidOut()
    {
        var model = new PciDeviceModel(0x1234, 0x5678, 0x00ff00) { HasPowerManagement = false };
        model.AddCapability(0x09, [4, 0, 0, 0, 0, 0], offset: 0x40);
        model.AddCapability(0x13, [6, 0, 0, 0], offset: 0x44);

        var layOut = () => model.FindCapability(0x09);

        layOut.Should().Throw<InvalidOperationException>().WithMessage("*0x44 overlaps*");
    }

    [Fact]
    public void TheFirstExtendedCapabilityMustSitAt0x100()
    {
        var model = new PciDeviceModel(0x1234, 0x5678, 0x00ff00, isExpress: true);
        model.AddExtendedCapability(0x0003, 1, new byte[8], offset: 0x140);

        var layOut = () => model.FindExtendedCapability(0x0003);

        layOut.Should().Throw<InvalidOperationException>().WithMessage("*sits at 0x100*");
    }

    [Fact]
    public void ConfigSpaceAsTheModelJoinedIsThePowerOnStateAResetRestores()
    {
        var model = new DeclaringModel();
        var kernel = new SimulatedKernel();
        kernel.AddPciDevice("0000:00:04.0", model, iommuGroup: 4);
        using (var opened = Seam.OpenDevice(kernel, 4, "0000:00:04.0"))
        {
            Seam.WriteConfig(kernel, opened.Device, model.Vendor.Offset + 4, 1, 0x77);
            model.ReadConfigRegister(model.Vendor.Offset + 4, 1).Should().Be(0x77u, "vfio-pci writes a vendor capability through, and the byte is writable");
            kernel.Ioctl(opened.Device, VfioUapi.VFIO_DEVICE_RESET, 0).Should().Be(0, "the function has af_flr");
        }

        model.ReadConfigRegister(model.Vendor.Offset + 4, 1).Should().Be(0xbbu, "a reset restored the declared byte");
        model.ReadConfigRegister(0x3c, 1).Should().Be(0x0bu, "and the interrupt line written before the model joined");
        kernel.AssertNoLeaks();
    }

    [Fact]
    public void ConfigRegisterReadsAllocateNothingOnceConfigSpaceIsLaidOut()
    {
        var model = new DeclaringModel();
        model.ReadConfigRegister(0, 4);

        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 100; i++)
        {
            model.ReadConfigRegister(model.Vendor.Offset, 4);
        }

        (GC.GetAllocatedBytesForCurrentThread() - before).Should().Be(0, "a trapped doorbell write checks config space, and a driver's I/O path may expect no allocation");
    }
}
