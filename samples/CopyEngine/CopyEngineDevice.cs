// The driver half of docs/device-models.md's example (a test compares them).
// <guide-driver>
using Vfio;

namespace CopyEngine;

/// <summary>The driver for the copy engine: it starts a copy and waits for the interrupt that ends it.</summary>
public sealed class CopyEngineDevice(PciDeviceContext context) : PciVfioDevice(context)
{
    private MmioRegion? _registers;
    private InterruptSet? _done;

    protected override void OnFirstOpen()
    {
        EnableCommand(memorySpace: true, busMaster: true);
        _registers = OpenRegion(0);
        _done = EnableInterrupts(PciIrq.Msix);
    }

    protected override void OnLastClose()
    {
        _done?.Dispose();
        _registers?.Dispose();
    }

    /// <summary>The firmware version from the vendor-specific capability.</summary>
    public Version Firmware =>
        TryFindCapability(PciCapabilityId.VendorSpecific, out var capability)
            ? new Version(ReadConfig8(capability.Offset + 3), ReadConfig8(capability.Offset + 4))
            : throw new InvalidOperationException("No vendor-specific capability.");

    /// <summary>Copies <paramref name="length"/> bytes from one DMA buffer to another.</summary>
    public async Task CopyAsync(DmaBuffer source, DmaBuffer destination, int length, CancellationToken cancellationToken = default)
    {
        var registers = _registers ?? throw new InvalidOperationException("Open the device first.");
        registers.Write32(0x08, (uint)source.Iova);
        registers.Write32(0x0c, (uint)(source.Iova >> 32));
        registers.Write32(0x10, (uint)destination.Iova);
        registers.Write32(0x14, (uint)(destination.Iova >> 32));
        registers.Write32(0x18, (uint)length);
        registers.Write32(0x1c, 1);
        await _done!.WaitAsync(0, cancellationToken);
        uint status = registers.Read32(0x20);
        registers.Write32(0x20, status);
        if ((status & 4) != 0)
        {
            throw new IOException("The copy engine could not reach a buffer by DMA.");
        }
    }
}

public sealed class CopyEngineDriver() : PciDriver<CopyEngineDevice>("copy-engine", PciMatch.Id(0x1234, 0xc0de))
{
    protected override CopyEngineDevice CreateDevice(PciDeviceContext context) => new(context);
}
// </guide-driver>
