using System.Buffers.Binary;
using Vfio.Testing;

namespace Vfio.Tests.Devices;

/// <summary>Config space of a PCI device: the header, the command register, the capability lists and their typed views.</summary>
public class PciVfioDeviceTests : KernelTest
{
    /// <summary>A PCI Express function with power management, 4 MSI vectors and 8 MSI-X vectors in BAR2.</summary>
    private static PciDeviceModel ExpressModel(Action<PciDeviceModel>? more = null)
    {
        var model = new PciDeviceModel(0x1b36, 0x0010, 0x010802, isExpress: true) { SubsystemVendorId = 0x1af4, SubsystemId = 0x1100, Revision = 2 };
        model.DefineBar(0, 0x4000, PciBarKind.Memory64);
        model.DefineBar(2, 0x1000);
        model.MsiVectors = 4;
        model.MsixVectors = 8;
        model.MsixBar = 2;
        model.FunctionLevelReset = true;
        more?.Invoke(model);
        return model;
    }

    /// <summary>A function whose capability list is whatever the test writes into config space.</summary>
    private sealed class CraftedConfigModel(Action<Span<byte>> craft) : PciDeviceModel(0x1234, 0x11e8, 0x00ff00, isExpress: true)
    {
        private bool _crafted;

        protected override uint ReadConfig(int offset, int size)
        {
            if (!_crafted)
            {
                _crafted = true;
                craft(ConfigSpace);
            }
            return base.ReadConfig(offset, size);
        }
    }

    private RecordingPciDevice OpenWith(PciDeviceModel model, out DeviceReference open)
    {
        AddPci(model: model);
        var device = RegisterPci();
        open = device.Open();
        return device;
    }

    [Fact]
    public void TheHeaderIsReadAsTheModelDefinesIt()
    {
        var device = OpenWith(ExpressModel(), out var open);
        using (open)
        {
            var header = device.ReadConfigHeader();

            header.VendorId.Should().Be(0x1b36);
            header.DeviceId.Should().Be(0x0010);
            header.ClassCode.Should().Be(0x010802u);
            header.RevisionId.Should().Be(2);
            header.SubsystemVendorId.Should().Be(0x1af4);
            header.SubsystemId.Should().Be(0x1100);
            header.InterruptPin.Should().Be(1);
            header.HasCapabilityList.Should().BeTrue();
            header.CapabilitiesPointer.Should().Be(0x40);
            header.Command.Should().HaveFlag(PciCommand.MemorySpace, "the kernel enabled decoding when the device was opened");
        }
    }

    [Fact]
    public void UpdateCommandSetsAndClearsBits()
    {
        var device = OpenWith(ExpressModel(), out var open);
        using (open)
        {
            device.Command.Should().NotHaveFlag(PciCommand.BusMaster);

            device.UpdateCommand(PciCommand.BusMaster).Should().HaveFlag(PciCommand.BusMaster);
            device.Command.Should().HaveFlag(PciCommand.BusMaster | PciCommand.MemorySpace);

            device.UpdateCommand(PciCommand.None, PciCommand.MemorySpace | PciCommand.BusMaster);
            device.Command.Should().NotHaveFlag(PciCommand.MemorySpace).And.NotHaveFlag(PciCommand.BusMaster);

            device.EnableCommand();
            device.Command.Should().HaveFlag(PciCommand.MemorySpace | PciCommand.BusMaster);
        }
    }

    [Fact]
    public void TheCapabilityListIsWalkedInOrder()
    {
        var device = OpenWith(ExpressModel(), out var open);
        using (open)
        {
            device.Capabilities.Select(c => c.Id).Should().Equal(
                PciCapabilityId.PowerManagement, PciCapabilityId.Msi, PciCapabilityId.MsiX, PciCapabilityId.PciExpress);
            device.Capabilities[0].Offset.Should().Be(0x40);
            device.TryFindCapability(PciCapabilityId.MsiX, out var msix).Should().BeTrue();
            msix.Should().Be(device.Capabilities[2]);
            device.TryFindCapability(PciCapabilityId.VendorSpecific, out _).Should().BeFalse();
        }
    }

    [Fact]
    public void TheTypedViewsDecodeTheRegisters()
    {
        var device = OpenWith(ExpressModel(), out var open);
        using (open)
        {
            var msi = device.ReadMsiCapability()!;
            msi.MultipleMessageCapable.Should().Be(4);
            msi.MultipleMessageEnable.Should().Be(1);
            msi.Is64Bit.Should().BeTrue();
            msi.PerVectorMasking.Should().BeFalse();
            msi.Enabled.Should().BeFalse();

            var msix = device.ReadMsixCapability()!;
            msix.TableSize.Should().Be(8);
            msix.TableBar.Should().Be(2);
            msix.TableOffset.Should().Be(0);
            msix.PendingBitArrayBar.Should().Be(2);
            msix.PendingBitArrayOffset.Should().Be(0x80, "8 entries of 16 bytes");
            msix.Enabled.Should().BeFalse();
            msix.FunctionMasked.Should().BeFalse();

            var express = device.ReadPciExpressCapability()!;
            express.Version.Should().Be(2);
            express.PortType.Should().Be(PciExpressPortType.Endpoint);
            express.SupportsFunctionLevelReset.Should().BeTrue();
            express.MaxPayloadSizeSupported.Should().Be(128);
            express.LinkSpeed.Should().Be(1);
            express.LinkWidth.Should().Be(1);
            express.MaxLinkWidth.Should().Be(1);

            var pm = device.ReadPowerManagementCapability()!;
            pm.Version.Should().Be(3);
            pm.PowerState.Should().Be(PciPowerState.D0);
            pm.NoSoftReset.Should().BeFalse();
        }
    }

    [Fact]
    public void TheMsixViewShowsWhatTheKernelEnabled()
    {
        var model = ExpressModel();
        var device = OpenWith(model, out var open);
        using (open)
        {
            using (device.EnableInterrupts(PciIrq.Msix, count: 2))
            {
                model.MsixEnabled.Should().BeTrue();
                device.ReadMsixCapability()!.Enabled.Should().BeTrue("vfio-pci reads MSI-X control from the device");
            }
            device.ReadMsixCapability()!.Enabled.Should().BeFalse("disposing the interrupts disabled MSI-X");
        }
    }

    [Fact]
    public void TheMsiViewShowsVfiosVirtualControlNotTheDevicesEnable()
    {
        var model = ExpressModel();
        var device = OpenWith(model, out var open);
        using (open)
        {
            using (device.EnableInterrupts(PciIrq.Msi, count: 2))
            {
                model.MsiEnabled.Should().BeTrue("the kernel enabled MSI in the device");
                var msi = device.ReadMsiCapability()!;
                msi.Enabled.Should().BeFalse("vfio-pci virtualizes the low byte of MSI control, and SET_IRQS does not touch it");
                msi.MultipleMessageCapable.Should().Be(4);
                msi.MultipleMessageEnable.Should().Be(1);
            }
        }
    }

    [Fact]
    public void AnMsiEnableWrittenWithoutTheKernelsMsiDoesNotReachTheDevice()
    {
        var model = ExpressModel();
        var device = OpenWith(model, out var open);
        using (open)
        {
            device.TryFindCapability(PciCapabilityId.Msi, out var msi).Should().BeTrue();
            int control = msi.Offset + 2;

            device.WriteConfig8(control, (byte)(device.ReadConfig8(control) | 1));

            // vfio_msi_config_write writes the byte back to its copy and to the device with the enable bit cleared
            // (the VM suite's pci_msi_enable_written_without_msi shows Linux doing so).
            device.ReadMsiCapability()!.Enabled.Should().BeFalse("vfio-pci clears the enable bit in its copy too");
            model.MsiEnabled.Should().BeFalse("vfio-pci clears the enable bit it writes to the device while it has not enabled MSI");
        }
    }

    [Fact]
    public void AConventionalFunctionWithoutCapabilitiesHasEmptyListsAndNoViews()
    {
        var model = new PciDeviceModel(0x1234, 0x11e8, 0x00ff00) { HasPowerManagement = false };
        var device = OpenWith(model, out var open);
        using (open)
        {
            device.ReadConfigHeader().HasCapabilityList.Should().BeFalse();
            device.Capabilities.Should().BeEmpty();
            device.ExtendedCapabilities.Should().BeEmpty();
            device.ReadMsiCapability().Should().BeNull();
            device.ReadMsixCapability().Should().BeNull();
            device.ReadPciExpressCapability().Should().BeNull();
            device.ReadPowerManagementCapability().Should().BeNull();
        }
    }

    [Fact]
    public void TheExtendedListIsWalkedFrom0x100()
    {
        var device = OpenWith(ExpressModel(m =>
        {
            m.AddExtendedCapability(0x0001, 2, 0x48);
            m.AddExtendedCapability(0x0003, 1, 0x0c);
            m.AddExtendedCapability(0x0018, 1, 0x08);
        }), out var open);
        using (open)
        {
            device.ExtendedCapabilities.Should().Equal(
                new PciExtendedCapability(PciExtendedCapabilityId.AdvancedErrorReporting, 2, 0x100),
                new PciExtendedCapability(PciExtendedCapabilityId.SerialNumber, 1, 0x148),
                new PciExtendedCapability(PciExtendedCapabilityId.LatencyToleranceReporting, 1, 0x158));
            device.TryFindExtendedCapability(PciExtendedCapabilityId.SerialNumber, out var serial).Should().BeTrue();
            serial.Offset.Should().Be(0x148);
            device.TryFindExtendedCapability(PciExtendedCapabilityId.SingleRootIov, out _).Should().BeFalse();
        }
    }

    [Fact]
    public void CapabilitiesVfioHidesAreLeftOutOfTheStandardList()
    {
        var device = OpenWith(ExpressModel(m =>
        {
            m.AddCapability(0x0d, 8); // bridge subsystem vendor id: vfio-pci hides it
            m.AddCapability(0x09, 8); // vendor specific: shown
            m.AddCapability(0x14, 8); // enhanced allocation: above what vfio-pci knows, hidden
        }), out var open);
        using (open)
        {
            device.Capabilities.Select(c => c.Id).Should().Equal(
                PciCapabilityId.PowerManagement, PciCapabilityId.Msi, PciCapabilityId.MsiX, PciCapabilityId.PciExpress, PciCapabilityId.VendorSpecific);
        }
    }

    [Fact]
    public void AHiddenFirstExtendedCapabilityBecomesAPlaceholderThatLinksToTheRest()
    {
        var model = ExpressModel(m =>
        {
            m.AddExtendedCapability(0x0019, 1, 0x10); // secondary PCIe: hidden, and first
            m.AddExtendedCapability(0x0001, 2, 0x48);
            m.AddExtendedCapability(0x001e, 1, 0x10); // L1 PM substates: hidden
            m.AddExtendedCapability(0x000e, 1, 0x08);
        });
        var device = OpenWith(model, out var open);
        using (open)
        {
            uint placeholder = device.ReadConfig32(0x100);
            (placeholder & 0xf_ffff).Should().Be(0u, "vfio-pci clears the id and version of a hidden first capability");
            (placeholder >> 20).Should().Be(0x110u, "and keeps its next pointer");
            (model.ReadConfigRegister(0x100, 4) & 0xf_ffff).Should().Be(0x10019u, "the device's own header is left as it is");
            device.ExtendedCapabilities.Should().Equal(
                new PciExtendedCapability(PciExtendedCapabilityId.AdvancedErrorReporting, 2, 0x110),
                new PciExtendedCapability(PciExtendedCapabilityId.AlternativeRoutingId, 1, 0x168));
        }
    }

    [Fact]
    public void OnlyHiddenExtendedCapabilitiesLeaveAnEmptyList()
    {
        var model = ExpressModel(m => m.AddExtendedCapability(0x0019, 1, 0x10));
        var device = OpenWith(model, out var open);
        using (open)
        {
            device.ReadConfig32(0x100).Should().Be(0u);
            device.ExtendedCapabilities.Should().BeEmpty();
        }
    }

    [Fact]
    public void AStandardListThatLoopsIsCutWhereItComesBackAndLogged()
    {
        var device = OpenWith(new CraftedConfigModel(c =>
        {
            c[0x06] |= 0x10;
            c[0x34] = 0x40;
            c[0x40] = 0x01; c[0x41] = 0x50;
            c[0x50] = 0x05; c[0x51] = 0x40; // back to the first
        }), out var open);
        using (open)
        {
            device.Capabilities.Should().Equal(new PciCapability(PciCapabilityId.PowerManagement, 0x40), new PciCapability(PciCapabilityId.Msi, 0x50));
            device.TryFindCapability(PciCapabilityId.MsiX, out _).Should().BeFalse();
            Logs.Entries.Should().Contain(e => e.EventId.Id == 500 && e.Message.Contains("loops back to offset 40", StringComparison.Ordinal));
        }
    }

    [Fact]
    public void AStandardListEndsAtAPointerIntoTheHeaderOrAnIdOfAllOnes()
    {
        // vfio-pci walks the device's list without masking the pointer's low bits: it reads a capability at
        // 0x43 (id 0x05, next 0x60), which its copy of the pointer then shows as 0x43. The library masks them
        // and reads 0x40 on, which no capability of vfio-pci's map covers and which it reads from the device.
        var device = OpenWith(new CraftedConfigModel(c =>
        {
            c[0x06] |= 0x10;
            c[0x34] = 0x43; // low bits are ignored
            c[0x40] = 0x05; c[0x41] = 0x60;
            c[0x43] = 0x05; c[0x44] = 0x60;
            c[0x60] = 0xff; c[0x61] = 0x70; // an id of 0xff ends the walk
            c[0x70] = 0x11; c[0x71] = 0x00;
        }), out var open);
        using (open)
        {
            device.Capabilities.Should().Equal(new PciCapability(PciCapabilityId.Msi, 0x40));
        }
    }

    [Fact]
    public void AnExtendedListThatLoopsIsCut()
    {
        var device = OpenWith(new CraftedConfigModel(c =>
        {
            BinaryPrimitives.WriteUInt32LittleEndian(c[0x100..], 0x0001u | (1u << 16) | (0x200u << 20));
            BinaryPrimitives.WriteUInt32LittleEndian(c[0x200..], 0x0003u | (1u << 16) | (0x100u << 20));
        }), out var open);
        using (open)
        {
            device.ExtendedCapabilities.Select(c => c.Offset).Should().Equal(0x100, 0x200);
            Logs.Entries.Should().Contain(e => e.EventId.Id == 500);
        }
    }

    [Fact]
    public void AnExtendedNextPointerBelow0x100EndsTheList()
    {
        var device = OpenWith(new CraftedConfigModel(c =>
        {
            BinaryPrimitives.WriteUInt32LittleEndian(c[0x100..], 0x0001u | (1u << 16) | (0x0fcu << 20));
            BinaryPrimitives.WriteUInt32LittleEndian(c[0xfc..], 0x0003u | (1u << 16));
        }), out var open);
        using (open)
        {
            device.ExtendedCapabilities.Should().Equal(new PciExtendedCapability(PciExtendedCapabilityId.AdvancedErrorReporting, 1, 0x100));
        }
    }

    [Fact]
    public void ReadingCapabilitiesOfAClosedDeviceSaysItIsNotOpen()
    {
        AddPci(model: ExpressModel());
        var device = RegisterPci();

        device.Invoking(d => d.Capabilities).Should().Throw<InvalidOperationException>().WithMessage("*not open*");
    }

    [Fact]
    public void TheEduModelPresentsOneMsiCapabilityAndNothingElse()
    {
        var device = OpenWith(new EduDeviceModel(), out var open);
        using (open)
        {
            device.Capabilities.Should().Equal(new PciCapability(PciCapabilityId.Msi, 0x40));
            device.ExtendedCapabilities.Should().BeEmpty();
            var msi = device.ReadMsiCapability()!;
            msi.Is64Bit.Should().BeTrue();
            msi.PerVectorMasking.Should().BeFalse();
            msi.MultipleMessageCapable.Should().Be(1);
            device.GetRegionInfo(PciVfioDevice.ConfigRegion).Size.Should().Be(256);
        }
    }
}
