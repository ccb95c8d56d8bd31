// The example of docs/device-models.md, kept there word for word (a test compares them): a device
// model written as an author outside this repository writes one, on the public API only.
// <guide-model>
using System.Buffers.Binary;
using Vfio.Testing;

namespace CopyEngine;

/// <summary>
/// A copy engine: copies a buffer to another by DMA, then raises MSI-X vector 0. BAR0 (4 KiB):
/// 0x00 identification, 0x08/0x0c source address (low, high), 0x10/0x14 destination address,
/// 0x18 length, 0x1c doorbell (write 1 to start), 0x20 status (busy 1, done 2, error 4; write 1s
/// to clear done and error). Firmware version and a writable chunk size in a vendor capability.
/// </summary>
public sealed class CopyEngineModel : PciDeviceModel
{
    public const ushort Vendor = 0x1234;
    public const ushort Device = 0xc0de;
    public const uint Identification = 0xc0de_0001;
    public const uint Busy = 1, Done = 2, Error = 4;

    /// <summary>How long a copy takes on the device clock.</summary>
    public static readonly TimeSpan CopyTime = TimeSpan.FromMilliseconds(1);

    private readonly byte[] _registers = new byte[0x24];

    public CopyEngineModel()
        : base(Vendor, Device, classCode: 0x088000, isExpress: true)
    {
        DefineBar(0, 0x1000);
        MsixVectors = 1;                  // the MSI-X table and PBA share BAR0
        MsixTableOffset = 0x800;
        HasPowerManagement = false;
        FunctionLevelReset = true;        // the kernel resets it by FLR: at open, at close, on request
        // Firmware 2.1, and the largest chunk in KiB, which software may change.
        Firmware = AddVendorCapability([2, 1, 64], writable: [0, 0, 0xff]);
        BinaryPrimitives.WriteUInt32LittleEndian(_registers, Identification);
    }

    /// <summary>The vendor-specific capability; its offset is known once config space is laid out.</summary>
    public PciModelCapability Firmware { get; }

    private uint Register(int offset) => BinaryPrimitives.ReadUInt32LittleEndian(_registers.AsSpan(offset));

    private void SetRegister(int offset, uint value) => BinaryPrimitives.WriteUInt32LittleEndian(_registers.AsSpan(offset), value);

    protected override ulong ReadBar(int bar, ulong offset, int size) =>
        size == 4 && offset % 4 == 0 && offset < (ulong)_registers.Length ? Register((int)offset) : ulong.MaxValue;

    protected override void WriteBar(int bar, ulong offset, int size, ulong value)
    {
        if (size != 4 || offset % 4 != 0)
        {
            return;
        }
        uint status = Register(0x20);
        switch (offset)
        {
            case 0x08 or 0x0c or 0x10 or 0x14 or 0x18 when (status & Busy) == 0:
                SetRegister((int)offset, (uint)value);
                break;
            case 0x1c when (value & 1) != 0 && (status & Busy) == 0:
                SetRegister(0x20, Busy);
                ScheduleWork(CopyTime, Copy);   // the copy ends after the doorbell write has returned
                break;
            case 0x20:
                SetRegister(0x20, status & ~((uint)value & (Done | Error)));
                break;
        }
    }

    /// <summary>Runs later, with the model's lock held, like a hook: DMA both ways, then the interrupt.</summary>
    private void Copy()
    {
        if ((Register(0x20) & Busy) == 0)
        {
            return; // reset meanwhile
        }
        ulong source = Register(0x08) | ((ulong)Register(0x0c) << 32);
        ulong destination = Register(0x10) | ((ulong)Register(0x14) << 32);
        var data = new byte[Register(0x18)];
        bool copied = DmaRead(source, data) && DmaWrite(destination, data);
        SetRegister(0x20, copied ? Done : Error);
        SignalInterrupt(0);
    }

    protected override void OnReset()
    {
        base.OnReset();                   // config space, BAR memory and the MSI-X table back to power-on
        Array.Clear(_registers);
        BinaryPrimitives.WriteUInt32LittleEndian(_registers, Identification);
    }
}
// </guide-model>
