using Vfio.Testing;
using static Vfio.Tests.Simulation.RawPciFunction;

namespace Vfio.Tests.Simulation;

public sealed class EduDeviceModelTests : IAsyncLifetime
{
    private const string Address = "0000:00:03.0";

    private readonly SimulatedKernel _kernel = new();
    private readonly EduDeviceModel _model = new();
    private RawPciFunction _function = null!;
    private PciVfioDevice _device = null!;

    public async Task InitializeAsync()
    {
        _function = new RawPciFunction(_kernel, Address, _model, iommuGroup: 3);
        _device = _function.Device;
        await Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        await _model.WhenIdleAsync();
        await _function.DisposeAsync();
    }

    private MmioRegion Bar0 => _function.Bar0;

    [Fact]
    public void ConfigSpaceIsQemusEduWithOnlyAnMsiCapability()
    {
        _device.ReadConfig16(PciConfig.VendorId).Should().Be(0x1234);
        _device.ReadConfig16(PciConfig.DeviceId).Should().Be(0x11e8);
        _device.ReadConfig8(PciConfig.RevisionId).Should().Be(0x10);
        (_device.ReadConfig32(PciConfig.RevisionId) >> 8).Should().Be(0x00ff00);
        _device.ReadConfig8(PciConfig.InterruptPin).Should().Be(1);
        byte first = _device.ReadConfig8(PciConfig.CapabilitiesPointer);
        first.Should().Be(0x40);
        _device.ReadConfig8(first).Should().Be(0x05, "the only capability is MSI");
        _device.ReadConfig8(first + 1).Should().Be(0, "MSI is the last capability");
    }

    [Fact]
    public void DeviceInfoSaysPciWithoutReset()
    {
        _device.Info!.Flags.Should().Be(0x2u);
        _device.Info.CanReset.Should().BeFalse();
        _device.GetRegionInfo(0).Size.Should().Be(1UL << 20);
        _device.GetRegionInfo(0).CanMmap.Should().BeTrue();
        _device.GetIrqInfo(PciIrq.Intx).Count.Should().Be(1);
        _device.GetIrqInfo(PciIrq.Msi).Count.Should().Be(1);
        _device.GetIrqInfo(PciIrq.Msix).Count.Should().Be(0);
    }

    [Fact]
    public void ResetIsRefusedWithAClearError()
    {
        var reset = () => _device.Reset();
        reset.Should().Throw<VfioNotSupportedException>().WithMessage("*does not support VFIO_DEVICE_RESET*");
    }

    [Fact]
    public void IdentificationAndLivenessAnswerAsQemu()
    {
        Bar0.Read32(0x00).Should().Be(EduDeviceModel.Identification);
        Bar0.Write32(0x04, 0x12345678);
        Bar0.Read32(0x04).Should().Be(~0x12345678u);
        Bar0.Read32(0x0c).Should().Be(uint.MaxValue, "an unassigned register reads as all ones");
    }

    [Fact]
    public void AccessesOfTheWrongSizeReadAllOnesAndAreIgnored()
    {
        Bar0.Read64(0x00).Should().Be(ulong.MaxValue, "registers below 0x80 take 4-byte accesses only");
        Bar0.Read16(0x00).Should().Be(0xffff);
        Bar0.Write64(0x08, 5);
        Bar0.Read32(0x20).Should().Be(0, "the 8-byte write did not start a factorial");
        Bar0.Read32(0x08).Should().Be(0);
        Bar0.Write64(0x80, 0x1_2345_6789);
        Bar0.Read64(0x80).Should().Be(0x1_2345_6789, "DMA registers take 8-byte accesses");
        Bar0.Read32(0x80).Should().Be(0x2345_6789u);
    }

    [Fact]
    public async Task FactorialCompletesAfterTheWriteAndRaisesMsiWhenAsked()
    {
        using var irq = _device.EnableInterrupts(PciIrq.Msi);
        Bar0.Write32(0x20, 0x80);
        Bar0.Write32(0x08, 10);
        await irq.WaitAsync(0, Soon());
        (Bar0.Read32(0x20) & 0x1).Should().Be(0, "computing is over");
        Bar0.Read32(0x08).Should().Be(3628800);
        Bar0.Read32(0x24).Should().Be(EduDeviceModel.FactorialInterrupt);
        Bar0.Write32(0x64, EduDeviceModel.FactorialInterrupt);
        Bar0.Read32(0x24).Should().Be(0);
    }

    [Fact]
    public async Task FactorialWithoutTheIrqBitRaisesNothing()
    {
        Bar0.Write32(0x20, 0);
        Bar0.Write32(0x08, 5);
        await _model.WhenIdleAsync();
        Bar0.Read32(0x20).Should().Be(0);
        Bar0.Read32(0x08).Should().Be(120);
        Bar0.Read32(0x24).Should().Be(0);
    }

    [Fact]
    public async Task RaiseAndAcknowledgeDriveTheInterruptStatus()
    {
        using var irq = _device.EnableInterrupts(PciIrq.Msi);
        Bar0.Write32(0x60, 0x5);
        await irq.WaitAsync(0, Soon());
        Bar0.Read32(0x24).Should().Be(0x5);
        Bar0.Write32(0x64, 0x1);
        Bar0.Read32(0x24).Should().Be(0x4);
    }

    [Fact]
    public async Task InterruptsUseIntxWhenMsiIsNotEnabled()
    {
        using var irq = _device.EnableInterrupts(PciIrq.Intx);
        Bar0.Write32(0x60, 0x2);
        (await irq.WaitAsync(0, Soon())).Should().BeGreaterThan(0);
        _model.MsiEnabled.Should().BeFalse();
    }

    [Fact]
    public async Task DmaRoundTripGoesThroughTheIommuAndRaisesInterrupt0x100()
    {
        using var irq = _device.EnableInterrupts(PciIrq.Msi);
        using var source = _device.AllocateDmaBuffer(4096, DmaAccess.DeviceReads);
        using var destination = _device.AllocateDmaBuffer(4096, DmaAccess.DeviceWrites);
        Random.Shared.NextBytes(source.Span);

        await DmaAsync(irq, source.Iova, EduDeviceModel.DmaBufferAddress, 4000, toRam: false);
        _model.GetDmaBuffer().AsSpan(0, 4000).SequenceEqual(source.Span[..4000]).Should().BeTrue();
        await DmaAsync(irq, EduDeviceModel.DmaBufferAddress, destination.Iova, 4000, toRam: true);

        destination.Span[..4000].SequenceEqual(source.Span[..4000]).Should().BeTrue();
        _kernel.DmaFaults.Should().BeEmpty();
    }

    [Fact]
    public async Task DmaWithoutTheIrqBitCompletesSilently()
    {
        using var source = _device.AllocateDmaBuffer(4096, DmaAccess.DeviceReads);
        Bar0.Write64(0x80, source.Iova);
        Bar0.Write64(0x88, EduDeviceModel.DmaBufferAddress);
        Bar0.Write64(0x90, 16);
        Bar0.Write64(0x98, 0x1);
        await _model.WhenIdleAsync();
        (Bar0.Read64(0x98) & 0x1).Should().Be(0, "the start bit clears when the transfer completes");
        Bar0.Read32(0x24).Should().Be(0, "no interrupt was asked for");
    }

    [Fact]
    public async Task DmaToAnUnmappedAddressFaultsInTheIommuAndStillCompletes()
    {
        using var irq = _device.EnableInterrupts(PciIrq.Msi);
        await DmaAsync(irq, 0x0800_0000, EduDeviceModel.DmaBufferAddress, 64, toRam: false);
        _kernel.DmaFaults.Should().ContainSingle().Which.Iova.Should().Be(0x0800_0000UL);
        _model.Failure.Should().BeNull();
    }

    [Fact]
    public async Task DmaAddressesAreClampedToTheTwentyEightBitMask()
    {
        using var irq = _device.EnableInterrupts(PciIrq.Msi);
        using var source = _device.AllocateDmaBuffer(4096, DmaAccess.DeviceReads);
        source.Span[0] = 0xab;
        await DmaAsync(irq, source.Iova | 0x7_0000_0000, EduDeviceModel.DmaBufferAddress, 1, toRam: false);
        _model.GetDmaBuffer()[0].Should().Be(0xab);
        _kernel.DmaFaults.Should().BeEmpty();
    }

    [Theory]
    [InlineData(EduDeviceModel.DmaBufferAddress, 4096)]
    [InlineData(EduDeviceModel.DmaBufferAddress + 4000, 96)]
    [InlineData(EduDeviceModel.DmaBufferAddress, 0)]
    [InlineData(EduDeviceModel.DmaBufferAddress - 1, 16)]
    public async Task ADeviceRangeReachingTheBufferEndStopsTheDeviceAsQemu72Does(ulong deviceAddress, ulong count)
    {
        using var source = _device.AllocateDmaBuffer(4096, DmaAccess.DeviceReads);
        Bar0.Write64(0x80, source.Iova);
        Bar0.Write64(0x88, deviceAddress);
        Bar0.Write64(0x90, count);
        Bar0.Write64(0x98, 0x1 | 0x4);
        await _model.WhenIdleAsync();
        _model.Failure.Should().Contain("out of bounds");
        Bar0.Read32(0x00).Should().Be(uint.MaxValue, "the device stopped");
    }

    [Fact]
    public async Task TheLongestTransferEndsOneByteBeforeTheBufferEnd()
    {
        using var irq = _device.EnableInterrupts(PciIrq.Msi);
        using var source = _device.AllocateDmaBuffer(4096, DmaAccess.DeviceReads);
        await DmaAsync(irq, source.Iova, EduDeviceModel.DmaBufferAddress, EduDeviceModel.DmaBufferSize - 1, toRam: false);
        _model.Failure.Should().BeNull();
    }

    private async Task DmaAsync(InterruptSet irq, ulong source, ulong destination, ulong count, bool toRam)
    {
        Bar0.Write64(0x80, source);
        Bar0.Write64(0x88, destination);
        Bar0.Write64(0x90, count);
        Bar0.Write64(0x98, 0x1 | 0x4 | (toRam ? 0x2UL : 0));
        await irq.WaitAsync(0, Soon());
        (Bar0.Read32(0x24) & EduDeviceModel.DmaInterrupt).Should().Be(EduDeviceModel.DmaInterrupt);
        Bar0.Write32(0x64, EduDeviceModel.DmaInterrupt);
    }
}
