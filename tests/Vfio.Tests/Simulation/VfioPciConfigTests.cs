using System.Buffers.Binary;
using Vfio.Interop;
using Vfio.Testing;

namespace Vfio.Tests.Simulation;

/// <summary>
/// The simulated vfio-pci's config space view against vfio_pci_config.c: what the device file shows
/// and where a write goes, next to what the device itself holds (<see cref="PciDeviceModel.ReadConfigRegister"/>).
/// The same rules run on Linux in the VM suite (tests/Vfio.Scenarios/ConfigVirtualizationScenarios.cs).
/// </summary>
public sealed class VfioPciConfigTests : IDisposable
{
    private readonly SimulatedKernel _kernel = new();
    private readonly List<Opened> _opened = [];

    public void Dispose()
    {
        foreach (var opened in _opened)
        {
            opened.Dispose();
        }
        _kernel.AssertNoLeaks();
    }

    private Opened Open(PciDeviceModel model, string address = "0000:00:03.0", int group = 5)
    {
        _kernel.AddPciDevice(address, model, group);
        var opened = Seam.OpenDevice(_kernel, group, address);
        _opened.Add(opened);
        return opened;
    }

    private uint Read(Opened opened, int offset, int size) => Seam.ReadConfig(_kernel, opened.Device, offset, size);

    private void Write(Opened opened, int offset, int size, uint value) => Seam.WriteConfig(_kernel, opened.Device, offset, size, value);

    private static EduDeviceModel Edu() => new();

    /// <summary>A PCI Express function with MSI-X in BAR0, FLR, and a BAR0 word at 0 that a reset clears.</summary>
    private sealed class StatefulModel : PciDeviceModel
    {
        public StatefulModel(bool noSoftReset = false, Action<StatefulModel>? define = null)
            : base(0x1b36, 0x0010, 0x010802, isExpress: true)
        {
            DefineBar(0, 0x4000, PciBarKind.Memory64);
            MsixVectors = 4;
            MsixTableOffset = 0x2000;
            FunctionLevelReset = true;
            PowerManagementNoSoftReset = noSoftReset;
            define?.Invoke(this);
        }

        public uint Word { get; set; }

        public int Resets { get; private set; }

        public List<(int Offset, int Size, uint Value)> ConfigWrites { get; } = [];

        protected override ulong ReadBar(int bar, ulong offset, int size) => offset == 0 ? Word : base.ReadBar(bar, offset, size);

        protected override void WriteBar(int bar, ulong offset, int size, ulong value)
        {
            if (offset == 0)
            {
                Word = (uint)value;
                return;
            }
            base.WriteBar(bar, offset, size, value);
        }

        protected override void WriteConfig(int offset, int size, uint value)
        {
            ConfigWrites.Add((offset, size, value));
            base.WriteConfig(offset, size, value);
        }

        protected override void OnReset()
        {
            base.OnReset();
            Word = 0;
            Resets++;
        }
    }

    [Fact]
    public void BarSizingAnswersFromVfioPcisCopyAndTheDeviceKeepsItsAddress()
    {
        var model = Edu();
        var opened = Open(model);
        uint address = model.ReadConfigRegister(0x10, 4);

        Write(opened, 0x10, 4, 0xffff_ffff);

        Read(opened, 0x10, 4).Should().Be(0xfff0_0000u, "a 1 MiB 32-bit memory BAR answers sizing with its size mask");
        model.ReadConfigRegister(0x10, 4).Should().Be(address, "vfio-pci never writes the device's BARs");
        Write(opened, 0x10, 4, address);
        Read(opened, 0x10, 4).Should().Be(address);
    }

    [Fact]
    public void AnUnimplementedBarAndTheRomBarReadZero()
    {
        var opened = Open(Edu());

        Write(opened, 0x14, 4, 0xffff_ffff);
        Write(opened, 0x30, 4, 0xffff_ffff);

        Read(opened, 0x14, 4).Should().Be(0u);
        Read(opened, 0x30, 4).Should().Be(0u);
    }

    [Fact]
    public void A64BitBarSizesAcrossBothRegisters()
    {
        var opened = Open(new StatefulModel());

        Write(opened, 0x10, 4, 0xffff_ffff);
        Write(opened, 0x14, 4, 0xffff_ffff);

        Read(opened, 0x10, 4).Should().Be(0xffff_c004u, "16 KiB, 64-bit");
        Read(opened, 0x14, 4).Should().Be(0xffff_ffffu);
    }

    [Fact]
    public void InterruptLineIsVirtualAndThePinReadOnly()
    {
        var model = Edu();
        var opened = Open(model);
        byte line = (byte)model.ReadConfigRegister(0x3c, 1);

        Write(opened, 0x3c, 1, 0x0b);
        Write(opened, 0x3d, 1, 0x04);

        Read(opened, 0x3c, 1).Should().Be(0x0bu);
        model.ReadConfigRegister(0x3c, 1).Should().Be(line, "the interrupt line lives in vfio-pci's copy");
        Read(opened, 0x3d, 1).Should().Be(1u);
    }

    [Fact]
    public void IntxDisableIsVirtualAndHoldsIntxBackUntilCleared()
    {
        var model = Edu();
        var opened = Open(model);
        using var trigger = Seam.EventFd(_kernel);
        Seam.SetIrqEventFds(_kernel, opened.Device, 0, 0, trigger.Value).Should().Be(0);
        ushort command = (ushort)Read(opened, 0x04, 2);

        Write(opened, 0x04, 2, command | 0x400u);
        Read(opened, 0x04, 2).Should().Be(command | 0x400u);
        (model.Command & 0x400).Should().Be(0x400, "the device's own INTx disable follows");
        model.RaiseInterrupt(0).Should().BeFalse("INTx is masked while user space disables it");

        Write(opened, 0x04, 2, command);
        Seam.ReadCounter(_kernel, trigger).Should().Be(1UL, "the held interrupt fires once INTx is enabled again");
        (model.Command & 0x400).Should().Be(0);
    }

    [Fact]
    public void StatusTakesNoWrite()
    {
        var opened = Open(Edu());
        uint status = Read(opened, 0x06, 2);

        Write(opened, 0x06, 2, 0xffff);

        Read(opened, 0x06, 2).Should().Be(status);
    }

    [Fact]
    public void MsixControlIsReadOnlyThroughConfigSpace()
    {
        var model = new StatefulModel();
        var opened = Open(model);
        int msix = model.FindCapability(0x11)!.Offset;

        Write(opened, msix + 2, 2, 0xc000);

        Read(opened, msix + 2, 2).Should().Be(3u, "table size 4, neither enabled nor masked");
        model.MsixEnabled.Should().BeFalse();
    }

    [Fact]
    public void VendorSpecificCapabilityWritesReachTheDevice()
    {
        PciModelCapability? vendor = null;
        var model = new StatefulModel(define: m => vendor = m.AddVendorCapability([5, 0, 0, 0, 0, 0, 0, 0, 0], [0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]));
        var opened = Open(model);
        int at = vendor!.Offset;

        Write(opened, at + 4, 4, 0x1234_5678);
        Write(opened, at + 8, 4, 0xffff_ffff);

        Read(opened, at + 2, 1).Should().Be(12u, "the length byte is filled in");
        Read(opened, at + 4, 4).Should().Be(0x1234_5678u, "vfio-pci writes a vendor-specific capability straight through");
        Read(opened, at + 8, 4).Should().Be(0u, "the device keeps only its writable bits");
        model.ConfigWrites.Should().Contain((at + 4, 4, 0x1234_5678u));
    }

    [Fact]
    public void AVendorSpecificCapabilityWithLengthZeroIsHidden()
    {
        var model = new PciDeviceModel(0x1234, 0x5678, 0x00ff00) { HasPowerManagement = false, MsiVectors = 1 };
        model.AddCapability(0x09, new byte[6]);
        var opened = Open(model);

        Read(opened, 0x34, 1).Should().Be(0x40u, "MSI first");
        Read(opened, 0x41, 1).Should().Be(0u, "vfio-pci reads the vendor capability's length as 0 and leaves it out");
        model.ReadConfigRegister(0x41, 1).Should().Be(0x50u, "the device links it");
    }

    [Fact]
    public void BytesNoCapabilityClaimsAreWrittenThroughToTheDevice()
    {
        var model = new StatefulModel();
        var opened = Open(model);
        int express = model.FindCapability(0x10)!.Offset;

        Write(opened, 0xf0, 4, 0xcafe_f00d);
        Write(opened, express + 0x34, 4, 0x0bad_cafe);

        model.ConfigWrites.Should().Contain((0xf0, 4, 0xcafe_f00du)).And.Contain((express + 0x34, 4, 0x0bad_cafeu),
            "vfio-pci claims only 0x32 bytes of a version 2 endpoint's PCI Express capability");
        Read(opened, 0xf0, 4).Should().Be(0u, "the device's writable mask keeps the byte at 0");
    }

    /// <summary>Power management with PME support for D0 and D3hot, and PME enable writable.</summary>
    private sealed class PmeModel : PciDeviceModel
    {
        public PmeModel()
            : base(0x1234, 0x5678, 0x020000)
        {
            DefineBar(0, 0x1000);
            int pm = FindCapability(0x01)!.Offset;
            BinaryPrimitives.WriteUInt16LittleEndian(ConfigSpace[(pm + 2)..], 0x4803); // PME from D0 and D3hot
            BinaryPrimitives.WriteUInt16LittleEndian(ConfigSpace[(pm + 4)..], 0x8100); // PME status and enable
        }

        public int PowerManagementOffset => FindCapability(0x01)!.Offset;
    }

    [Fact]
    public void PmeSupportAndPmeBitsAreHiddenFromUserSpace()
    {
        var model = new PmeModel();
        var opened = Open(model);
        int pm = model.PowerManagementOffset;

        Read(opened, pm + 2, 2).Should().Be(0x0003u, "vfio-pci clears PME support in its copy");
        (Read(opened, pm + 4, 2) & 0x8100).Should().Be(0u, "and PME status and enable");
        (model.ReadConfigRegister(pm + 2, 2) & 0xf800).Should().Be(0x4800u, "the device keeps them");
    }

    [Fact]
    public void D3HotStopsBarAccessAndD0BringsItBack()
    {
        var model = new StatefulModel(noSoftReset: true);
        var opened = Open(model);
        int pm = model.FindCapability(0x01)!.Offset;
        Span<byte> word = stackalloc byte[4];
        Seam.WriteRegion(_kernel, opened.Device, 0, 0, [0x5a, 0, 0, 0]).Should().Be(4);

        Write(opened, pm + 4, 2, 3);

        Read(opened, pm + 4, 2).Should().Be(0x000bu, "D3hot, No_Soft_Reset");
        model.PowerState.Should().Be(PciPowerState.D3Hot);
        Seam.ReadRegion(_kernel, opened.Device, 0, 0, word).Should().Be(-Errno.EIO);
        Write(opened, pm + 4, 2, 0);
        Seam.ReadRegion(_kernel, opened.Device, 0, 0, word).Should().Be(4);
        model.Word.Should().Be(0x5au, "No_Soft_Reset: the function keeps its state through D3hot");
    }

    [Fact]
    public void ReturningFromD3HotResetsAFunctionThatLosesItsStateAndVfioRestoresConfigSpace()
    {
        var model = new StatefulModel();
        var opened = Open(model);
        int pm = model.FindCapability(0x01)!.Offset;
        Seam.WriteRegion(_kernel, opened.Device, 0, 0, [0x5a, 0, 0, 0]).Should().Be(4);
        uint command = model.ReadConfigRegister(0x04, 2);
        int resets = model.Resets;

        Write(opened, pm + 4, 2, 3);
        Write(opened, pm + 4, 2, 0);

        model.Resets.Should().Be(resets + 1);
        model.Word.Should().Be(0u);
        model.ReadConfigRegister(0x04, 2).Should().Be(command, "vfio-pci saved config space entering D3hot and restored it");
    }

    [Fact]
    public void FlrThroughDeviceControlResetsTheFunctionAndReadsZero()
    {
        var model = new StatefulModel();
        var opened = Open(model);
        int express = model.FindCapability(0x10)!.Offset;
        Seam.WriteRegion(_kernel, opened.Device, 0, 0, [0x5a, 0, 0, 0]).Should().Be(4);

        Write(opened, express + 8, 2, Read(opened, express + 8, 2) | 0x8000);

        (Read(opened, express + 8, 2) & 0x8000).Should().Be(0u);
        model.Word.Should().Be(0u, "the function was reset");
    }

    [Fact]
    public void MaxPayloadIsVirtualAndMaxReadRequestFollowsNoLowerThanThePayload()
    {
        var model = new StatefulModel();
        var opened = Open(model);
        int express = model.FindCapability(0x10)!.Offset;
        uint control = Read(opened, express + 8, 2);

        Write(opened, express + 8, 2, (control & ~0x70e0u) | 0x0020); // 256-byte payload, 128-byte read requests
        Read(opened, express + 8, 2).Should().Be((control & ~0x70e0u) | 0x0020);
        (model.ReadConfigRegister(express + 8, 2) & 0x00e0).Should().Be(control & 0x00e0, "the device's payload size is the kernel's");

        Write(opened, express + 8, 2, (control & ~0x70e0u) | 0x2000); // 512-byte read requests
        (model.ReadConfigRegister(express + 8, 2) & 0x7000).Should().Be(0x2000u, "the device takes the read request size");
        Write(opened, express + 8, 2, control | 0x0200);
        (Read(opened, express + 8, 2) & 0x0200).Should().Be(0u, "phantom functions are not writable");
    }

    [Fact]
    public void AdvancedFeaturesFlrResetsTheFunction()
    {
        PciModelCapability? af = null;
        var model = new StatefulModel(define: m =>
        {
            m.FunctionLevelReset = false;
            af = m.AddCapability(0x13, [6, 0x03, 0, 0], [0, 0, 0x01, 0]);
        });
        var opened = Open(model);
        Seam.WriteRegion(_kernel, opened.Device, 0, 0, [0x5a, 0, 0, 0]).Should().Be(4);

        Write(opened, af!.Offset + 4, 1, 1);

        Read(opened, af.Offset + 4, 1).Should().Be(0u);
        model.Word.Should().Be(0u);
        _kernel.FindDevice("0000:00:03.0").As<SimulatedPciDevice>().ResetMethods.Should().Equal("af_flr", "pm");
    }

    [Fact]
    public void DesignatedVendorSpecificIsHiddenAsLinux61HidesIt()
    {
        var opened = Open(new StatefulModel(define: m =>
        {
            m.AddExtendedCapability(0x0001, 2, 0x48);
            m.AddExtendedCapability(0x0023, 1, new byte[8]);
            m.AddExtendedCapability(0x000b, 1, 0x10);
        }));

        Read(opened, 0x100, 4).Should().Be(0x0001u | (2u << 16) | (0x158u << 20), "AER links past the DVSEC at 0x148 to the vendor-specific one");
        (Read(opened, 0x158, 4) & 0xffff).Should().Be(0x000bu);
    }

    [Fact]
    public void AnAerHeaderIsVirtualAndItsErrorMasksWritable()
    {
        PciModelCapability? aer = null;
        var model = new StatefulModel(define: m => aer = m.AddExtendedCapability(0x0001, 2, new byte[0x44], Enumerable.Repeat((byte)0xff, 0x44).ToArray()));
        var opened = Open(model);
        int at = aer!.Offset;
        uint header = Read(opened, at, 4);

        Write(opened, at, 4, 0xffff_ffff);
        Write(opened, at + 8, 4, 0xffff_ffff);

        Read(opened, at, 4).Should().Be(header);
        Read(opened, at + 8, 4).Should().Be(0x03ff_f031u, "only the uncorrectable error bits vfio-pci knows are written");
    }

    [Fact]
    public void ThePreadOfTheMsixTableReadsAllOnesAndTakesNoWrite()
    {
        var model = new StatefulModel();
        var opened = Open(model);
        Span<byte> entry = stackalloc byte[16];

        Seam.WriteRegion(_kernel, opened.Device, 0, 0x2000, new byte[16]).Should().Be(16);
        Seam.ReadRegion(_kernel, opened.Device, 0, 0x2000, entry).Should().Be(16);

        entry.ToArray().Should().OnlyContain(b => b == 0xff);
        model.ReadMsixEntry(0).VectorControl.Should().Be(1u, "the write did not reach the table, whose vectors are masked");
        Seam.ReadRegion(_kernel, opened.Device, 0, 0x2040, entry[..8]).Should().Be(8, "the PBA right after the table reads through");
        entry[..8].ToArray().Should().OnlyContain(b => b == 0);
    }
}
