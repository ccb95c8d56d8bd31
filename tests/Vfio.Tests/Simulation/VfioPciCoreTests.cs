using Vfio.Interop;
using Vfio.Testing;

namespace Vfio.Tests.Simulation;

/// <summary>
/// The simulated vfio-pci's device file against vfio_pci_core.c and the PCI core's reset: which
/// reset methods a function has, what VFIO_DEVICE_FLAGS_RESET then says, when the device is reset
/// (first open, last close, a bus reset once its set is closed), and the MSI-X table.
/// </summary>
public sealed unsafe class VfioPciCoreTests : IDisposable
{
    private readonly SimulatedKernel _kernel = new();

    public void Dispose() => _kernel.AssertNoLeaks();

    /// <summary>A function whose BAR0 is plain memory (cleared by a reset) and which counts its resets.</summary>
    private sealed class MemoryModel : PciDeviceModel
    {
        public MemoryModel(bool powerManagement = false, bool flr = false, bool express = false)
            : base(0x1af4, 0x1110, 0x050000, express)
        {
            DefineBar(0, 0x1000);
            HasPowerManagement = powerManagement;
            FunctionLevelReset = flr;
        }

        public int Resets { get; private set; }

        protected override void OnReset()
        {
            base.OnReset();
            Resets++;
        }
    }

    private uint Flags(Opened opened)
    {
        var info = new vfio_device_info { argsz = (uint)sizeof(vfio_device_info) };
        _kernel.Ioctl(opened.Device, VfioUapi.VFIO_DEVICE_GET_INFO, &info).Should().Be(0);
        return info.flags;
    }

    private void WriteWord(Opened opened, uint value) =>
        Seam.WriteRegion(_kernel, opened.Device, 0, 0, BitConverter.GetBytes(value)).Should().Be(4);

    private uint ReadWord(Opened opened)
    {
        var word = new byte[4];
        Seam.ReadRegion(_kernel, opened.Device, 0, 0, word).Should().Be(4);
        return BitConverter.ToUInt32(word);
    }

    [Theory]
    [InlineData(false, false, false, "")]
    [InlineData(true, false, false, "pm")]
    [InlineData(false, true, true, "flr")]
    [InlineData(true, true, true, "flr pm")]
    public void ResetMethodsComeFromTheFunctionsCapabilitiesAsSysfsListsThem(bool powerManagement, bool flr, bool express, string expected)
    {
        var device = _kernel.AddPciDevice("0000:00:07.0", new MemoryModel(powerManagement, flr, express), iommuGroup: 7);

        string.Join(' ', device.ResetMethods).Should().Be(expected);
        int found = _kernel.ListDirectory(device.SysfsPath, out var names);
        found.Should().Be(0);
        names.Contains("reset_method").Should().Be(expected.Length > 0, "the attribute exists only for a function with a reset method");
        if (expected.Length > 0)
        {
            Seam.ReadText(_kernel, device.SysfsPath + "/reset_method").Should().Be(expected + "\n");
        }
        device.Model.SupportsReset.Should().Be(expected.Length > 0);
    }

    [Fact]
    public void NoSoftResetTakesThePmMethodAway()
    {
        var model = new MemoryModel(powerManagement: true) { PowerManagementNoSoftReset = true };

        _kernel.AddPciDevice("0000:00:07.0", model, iommuGroup: 7).ResetMethods.Should().BeEmpty();
    }

    [Fact]
    public void AFunctionWithoutResetMethodReportsNoResetAndKeepsItsStateAcrossCloseAndReopen()
    {
        var model = new MemoryModel();
        _kernel.AddPciDevice("0000:00:07.0", model, iommuGroup: 7);
        using (var opened = Seam.OpenDevice(_kernel, 7, "0000:00:07.0"))
        {
            Flags(opened).Should().Be(VfioUapi.VFIO_DEVICE_FLAGS_PCI);
            _kernel.Ioctl(opened.Device, VfioUapi.VFIO_DEVICE_RESET, 0).Should().Be(-Errno.EINVAL);
            WriteWord(opened, 0x5a5a);
        }
        using (var again = Seam.OpenDevice(_kernel, 7, "0000:00:07.0"))
        {
            ReadWord(again).Should().Be(0x5a5au, "no reset at close or open: as QEMU's ivshmem-plain on Linux");
        }
        model.Resets.Should().Be(0);
    }

    [Fact]
    public void AFunctionWithAResetMethodIsResetAtOpenAndAtCloseAndByTheIoctl()
    {
        var model = new MemoryModel(flr: true, express: true);
        _kernel.AddPciDevice("0000:00:07.0", model, iommuGroup: 7);
        using (var opened = Seam.OpenDevice(_kernel, 7, "0000:00:07.0"))
        {
            model.Resets.Should().Be(1, "the first open resets the function");
            Flags(opened).Should().Be(VfioUapi.VFIO_DEVICE_FLAGS_PCI | VfioUapi.VFIO_DEVICE_FLAGS_RESET);
            WriteWord(opened, 0x5a5a);
            _kernel.Ioctl(opened.Device, VfioUapi.VFIO_DEVICE_RESET, 0).Should().Be(0);
            ReadWord(opened).Should().Be(0u);
            WriteWord(opened, 0x5a5a);
        }
        model.Resets.Should().Be(3, "and the last close");
        using (var again = Seam.OpenDevice(_kernel, 7, "0000:00:07.0"))
        {
            ReadWord(again).Should().Be(0u);
        }
    }

    [Fact]
    public void ConfigSpaceAfterTheLastCloseIsWhatTheFirstOpenSaved()
    {
        var model = new MemoryModel(powerManagement: true);
        _kernel.AddPciDevice("0000:00:07.0", model, iommuGroup: 7);
        using (var opened = Seam.OpenDevice(_kernel, 7, "0000:00:07.0"))
        {
            Seam.WriteConfig(_kernel, opened.Device, 0x04, 2, 0x0006); // memory and bus master
            Seam.WriteConfig(_kernel, opened.Device, 0x0c, 1, 0x10); // cache line size
        }

        model.Command.Should().Be(0x0002, "the open enabled memory decoding and saved that, bus mastering is cleared at close");
        model.ReadConfigRegister(0x0c, 1).Should().Be(0u);
    }

    [Fact]
    public void TheFirstFunctionOnABusBehindABridgeHasTheBusMethodButLosesItToASecondFunction()
    {
        _kernel.AddPciBridge("0000:00:05.0", secondaryBus: 1);
        var first = _kernel.AddPciDevice("0000:01:00.0", new MemoryModel(), iommuGroup: 6);
        var second = _kernel.AddPciDevice("0000:01:00.1", new MemoryModel(), iommuGroup: 6);

        first.ResetMethods.Should().Equal("bus");
        second.ResetMethods.Should().BeEmpty("the kernel probed it with the first function on its bus");
        using var opened = Seam.OpenDevice(_kernel, 6, "0000:01:00.0");
        Flags(opened).Should().Be(VfioUapi.VFIO_DEVICE_FLAGS_PCI, "the bus reset the open tries finds another function on the bus");
    }

    [Fact]
    public void AFunctionAloneBehindABridgeIsResetWithItsBus()
    {
        _kernel.AddPciBridge("0000:00:09.0", secondaryBus: 2);
        var model = new MemoryModel();
        _kernel.AddPciDevice("0000:02:00.0", model, iommuGroup: 8);
        using (var opened = Seam.OpenDevice(_kernel, 8, "0000:02:00.0"))
        {
            Flags(opened).Should().Be(VfioUapi.VFIO_DEVICE_FLAGS_PCI | VfioUapi.VFIO_DEVICE_FLAGS_RESET);
            WriteWord(opened, 0x5a5a);
        }
        using (var again = Seam.OpenDevice(_kernel, 8, "0000:02:00.0"))
        {
            ReadWord(again).Should().Be(0u);
        }
    }

    [Fact]
    public void TheBusIsResetWhenTheLastDeviceOfItsSetClosesAndOneNeedsIt()
    {
        _kernel.AddPciBridge("0000:00:05.0", secondaryBus: 1);
        var first = new MemoryModel();
        var second = new MemoryModel();
        _kernel.AddPciDevice("0000:01:00.0", first, iommuGroup: 6);
        _kernel.AddPciDevice("0000:01:00.1", second, iommuGroup: 6);
        var group = Seam.OpenDevice(_kernel, 6, "0000:01:00.0");
        Seam.GetDeviceFd(_kernel, group.Group, "0000:01:00.1", out var other).Should().BeGreaterThan(0);

        group.Device.Dispose();
        first.Resets.Should().Be(0, "another device of the set is still open");
        other.Dispose();
        group.Dispose();

        first.Resets.Should().Be(1);
        second.Resets.Should().Be(1);
    }

    [Fact]
    public void NoBusResetWhileAFunctionOnTheBusIsNotBoundToVfioPci()
    {
        _kernel.AddPciBridge("0000:00:05.0", secondaryBus: 1);
        var first = new MemoryModel();
        _kernel.AddPciDevice("0000:01:00.0", first, iommuGroup: 6);
        _kernel.AddPciDevice("0000:01:00.1", new MemoryModel(), iommuGroup: 9, driver: null);

        Seam.OpenDevice(_kernel, 6, "0000:01:00.0").Dispose();

        first.Resets.Should().Be(0);
    }

    [Fact]
    public void TheMsixTableIsMaskedAfterResetAndTheHostUnmasksTheVectorsItGivesAnEventfd()
    {
        var model = new PciDeviceModel(0x1b36, 0x0010, 0x010802, isExpress: true) { MsixVectors = 3, MsixTableOffset = 0x2000 };
        model.DefineBar(0, 0x4000, PciBarKind.Memory64);
        _kernel.AddPciDevice("0000:00:06.0", model, iommuGroup: 6);
        using var opened = Seam.OpenDevice(_kernel, 6, "0000:00:06.0");
        using var trigger = Seam.EventFd(_kernel);

        Enumerable.Range(0, 3).Select(v => model.ReadMsixEntry(v).VectorControl).Should().Equal(1u, 1u, 1u);
        Seam.SetIrqEventFds(_kernel, opened.Device, 2, 0, trigger.Value, -1).Should().Be(0);
        var entry = model.ReadMsixEntry(0);
        entry.VectorControl.Should().Be(0u);
        entry.Address.Should().NotBe(0UL, "the host programmed the message");
        model.ReadMsixEntry(1).VectorControl.Should().Be(1u, "a vector without an eventfd stays masked");
        Seam.SetIrqs(_kernel, opened.Device, 2, VfioUapi.VFIO_IRQ_SET_DATA_NONE | VfioUapi.VFIO_IRQ_SET_ACTION_TRIGGER, 0, 0).Should().Be(0);
        model.ReadMsixEntry(0).VectorControl.Should().Be(1u, "disabling MSI-X masks every vector");
    }
}
