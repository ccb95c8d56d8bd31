using System.Buffers.Binary;
using Vfio.Interop;

namespace Vfio.Testing;

/// <summary>
/// A device of the kernel's mtty sample driver (samples/vfio-mdev/mtty.c, Linux 6.1): a mediated PCI
/// serial card with one or two 16550-style ports. Each port is an 8-byte I/O BAR (BAR0, BAR1) whose
/// transmit register loops back into a 16-byte FIFO that the receive register drains; configuration
/// space is mtty's 255-byte emulation (vendor 0x4348, device 0x3253, class 0x070002). Regions are read
/// and written through the device file only (no mmap). It signals the INTx or MSI eventfd where mtty
/// does (receive FIFO at its trigger level, overrun, transmitter empty; not the modem-status cases). mtty's quirks
/// are kept: a full FIFO (head back on tail) reads as empty, as Linux 6.1's mtty shows it (7.x's too).
/// It migrates as Linux 6.7 and later's mtty does (MttyDeviceModel.Migration.cs).
/// </summary>
public sealed partial class MttyDeviceModel : PciDeviceModel
{
    /// <summary>The ports all mtty devices share (MAX_MTTYS).</summary>
    public const int MaxPorts = 24;

    /// <summary>The size of mtty's configuration space region (MTTY_CONFIG_SPACE_SIZE).</summary>
    public const int ConfigRegionSize = 0xff;

    /// <summary>The size of each port's I/O BAR (MTTY_IO_BAR_SIZE).</summary>
    public const int PortBarSize = 8;

    private const int FifoSize = 16;
    private readonly byte[] _config = new byte[ConfigRegionSize];
    private readonly uint[] _barMask = new uint[2];
    private readonly Port[] _ports = [new(), new()];
    private int _triggers;

    /// <summary>Creates the device of an mtty type.</summary>
    /// <param name="ports">1 (type mtty-1) or 2 (type mtty-2).</param>
    public MttyDeviceModel(int ports)
        : base(0x4348, 0x3253, 0x070002)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(ports, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(ports, 2);
        Ports = ports;
        CreateConfigSpace();
    }

    /// <summary>The number of serial ports (BARs).</summary>
    public int Ports { get; }

    // mtty reports VFIO_DEVICE_FLAGS_PCI alone, and its open and close do nothing to the device: no vfio-pci behind it.
    internal override bool ResetWorks => false;

    internal override void Enable()
    {
    }

    // mtty_create_config_space
    private void CreateConfigSpace()
    {
        var c = _config.AsSpan();
        BinaryPrimitives.WriteUInt32LittleEndian(c[0x00..], 0x32534348);
        BinaryPrimitives.WriteUInt16LittleEndian(c[0x04..], 0x0001);
        BinaryPrimitives.WriteUInt16LittleEndian(c[0x06..], 0x0200);
        c[0x08] = 0x10;
        c[0x09] = 0x02;
        c[0x0a] = 0x00;
        c[0x0b] = 0x07;
        BinaryPrimitives.WriteUInt32LittleEndian(c[0x10..], 0x000001);
        _barMask[0] = ~(uint)PortBarSize + 1;
        if (Ports == 2)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(c[0x14..], 0x000001);
            _barMask[1] = ~(uint)PortBarSize + 1;
        }
        BinaryPrimitives.WriteUInt32LittleEndian(c[0x2c..], 0x32534348);
        c[0x34] = 0x00;
        c[0x3d] = 0x01;
        c[0x40] = 0x23;
        c[0x43] = 0x80;
        c[0x44] = 0x23;
        c[0x48] = 0x23;
        c[0x4c] = 0x23;
        "PCI Serial/UART"u8.CopyTo(c[0x60..]);
    }

    internal override bool HasRegion(int index) => index >= 0 && index < RegionCount;

    // mtty_get_region_info: config 0xff bytes, BAR0 (and BAR1 with two ports) 8 bytes, the rest empty;
    // every region read/write, none mmap.
    internal override RegionDescriptor DescribeRegion(int index)
    {
        const uint ReadWrite = VfioUapi.VFIO_REGION_INFO_FLAG_READ | VfioUapi.VFIO_REGION_INFO_FLAG_WRITE;
        ulong size = index switch
        {
            (int)VfioUapi.VFIO_PCI_CONFIG_REGION_INDEX => ConfigRegionSize,
            0 => PortBarSize,
            1 when Ports == 2 => PortBarSize,
            _ => 0,
        };
        return new RegionDescriptor(size, ReadWrite);
    }

    // mtty_get_irq_info: INTx, MSI and REQ, one vector each.
    internal override bool DescribeIrq(int index, out uint flags, out int count)
    {
        flags = VfioUapi.VFIO_IRQ_INFO_EVENTFD;
        count = 1;
        switch (index)
        {
            case (int)VfioUapi.VFIO_PCI_INTX_IRQ_INDEX:
                flags |= VfioUapi.VFIO_IRQ_INFO_MASKABLE | VfioUapi.VFIO_IRQ_INFO_AUTOMASKED;
                return true;
            case (int)VfioUapi.VFIO_PCI_MSI_IRQ_INDEX:
            case (int)VfioUapi.VFIO_PCI_REQ_IRQ_INDEX:
                flags |= VfioUapi.VFIO_IRQ_INFO_NORESIZE;
                return true;
            default:
                count = 0;
                return false;
        }
    }

    // mdev_access: config space and the two port BARs, in pieces of 4, 2 or 1 bytes (mtty_read/mtty_write).
    internal override long AccessRegion(int index, ulong offset, Span<byte> data, bool write)
    {
        long result;
        int triggers;
        lock (Gate)
        {
            _triggers = 0;
            if (index == (int)VfioUapi.VFIO_PCI_CONFIG_REGION_INDEX)
            {
                result = Chunked(offset, data, write, ReadConfigPiece, WriteConfigPiece);
            }
            else if (index is 0 or 1)
            {
                result = Chunked(offset, data, write, (o, _) => ReadPort(index, (int)o), (o, _, v) => WritePort(index, (int)o, (byte)v));
            }
            else
            {
                result = -Errno.EFAULT;
            }
            triggers = _triggers;
        }
        // mtty_trigger_interrupt signals the eventfd of the index set last (INTx or MSI), outside the model's lock.
        for (int i = 0; i < triggers; i++)
        {
            if (Device?.ActiveIrqIndex is int active and ((int)VfioUapi.VFIO_PCI_INTX_IRQ_INDEX or (int)VfioUapi.VFIO_PCI_MSI_IRQ_INDEX))
            {
                RaiseInterrupt(active);
            }
        }
        return result;
    }

    private protected override ulong ReadRegisterLocked(int region, ulong offset, int size) => throw new InvalidOperationException("mtty regions cannot be mapped.");

    private protected override void WriteRegisterLocked(int region, ulong offset, int size, ulong value) => throw new InvalidOperationException("mtty regions cannot be mapped.");

    private ulong ReadConfigPiece(ulong offset, int size)
    {
        ulong value = 0;
        for (int i = size - 1; i >= 0; i--)
        {
            value = (value << 8) | (offset + (ulong)i < ConfigRegionSize ? _config[offset + (ulong)i] : (byte)0);
        }
        return value;
    }

    // handle_pci_cfg_write: the interrupt line and the BARs (sized by writing all ones) are writable;
    // BAR2-4 read back zero; everything else is ignored.
    private void WriteConfigPiece(ulong position, int size, ulong value)
    {
        int offset = (int)position;
        switch (offset)
        {
            case 0x3c:
                _config[0x3c] = (byte)value;
                break;
            case 0x10:
            case 0x14:
                int bar = offset == 0x10 ? 0 : 1;
                if (Ports == 1 && bar == 1)
                {
                    BinaryPrimitives.WriteUInt32LittleEndian(_config.AsSpan(offset), 0);
                    break;
                }
                uint address = size == 4 ? (uint)value : (uint)(value & ((1UL << (size * 8)) - 1));
                if (address == 0xffffffff)
                {
                    address &= _barMask[bar];
                }
                address |= _config[offset] & 0x3u;
                BinaryPrimitives.WriteUInt32LittleEndian(_config.AsSpan(offset), address);
                break;
            case 0x18:
            case 0x1c:
            case 0x20:
                BinaryPrimitives.WriteUInt32LittleEndian(_config.AsSpan(offset), 0);
                break;
        }
    }

    // handle_bar_read: the register file of a 16550 whose transmitter loops back into its receive FIFO.
    private byte ReadPort(int index, int offset)
    {
        var port = _ports[index];
        switch (offset)
        {
            case Uart.Rx:
                if (port.Dlab)
                {
                    return (byte)port.Divisor;
                }
                byte data = 0;
                // mtty compares the ring's indexes, not its count: a full ring (16 bytes, head back on
                // tail) reads as empty.
                if (port.Head != port.Tail)
                {
                    data = port.Fifo[port.Tail];
                    port.Tail = (port.Tail + 1) % FifoSize;
                    port.Count--;
                }
                if (port.Head == port.Tail && (port.Registers[Uart.Ier] & Uart.IerThri) != 0)
                {
                    _triggers++;
                }
                return data;
            case Uart.Ier:
                return port.Dlab ? (byte)(port.Divisor >> 8) : (byte)(port.Registers[Uart.Ier] & 0x0f);
            case Uart.Iir:
                byte ier = port.Registers[Uart.Ier];
                byte iir = 0;
                if ((ier & Uart.IerRlsi) != 0 && port.Overrun)
                {
                    iir |= 0x06;
                }
                if ((ier & Uart.IerRdi) != 0 && port.Count >= port.TriggerLevel)
                {
                    iir |= 0x04;
                }
                if ((ier & Uart.IerThri) != 0 && port.Head == port.Tail)
                {
                    iir |= 0x02;
                }
                // A modem-status interrupt (UART_IIR_MSI) is 0: it adds nothing to the value.
                return (byte)((iir == 0 ? 0x01 : iir) | 0xc0);
            case Uart.Lcr:
            case Uart.Mcr:
            case Uart.Scr:
                return port.Registers[offset];
            case Uart.Lsr:
                byte lsr = 0;
                if (port.Head != port.Tail)
                {
                    lsr |= Uart.LsrDataReady;
                }
                if (port.Overrun)
                {
                    lsr |= Uart.LsrOverrun;
                }
                if (port.Head == port.Tail)
                {
                    lsr |= Uart.LsrTransmitterEmpty | Uart.LsrHoldingEmpty;
                }
                return lsr;
            case Uart.Msr:
                byte msr = 0x20 | 0x02 | 0x80; // DSR, DDSR, DCD
                if ((port.Registers[Uart.Mcr] & Uart.McrAfe) == 0 || port.Count < port.MaxFifo)
                {
                    msr |= 0x10 | 0x01; // CTS, DCTS
                }
                return msr;
            default:
                return 0;
        }
    }

    // handle_bar_write
    private void WritePort(int index, int offset, byte data)
    {
        var port = _ports[index];
        switch (offset)
        {
            case Uart.Tx:
                if (port.Dlab)
                {
                    port.Divisor |= data;
                    break;
                }
                if (port.Count < port.MaxFifo)
                {
                    port.Fifo[port.Head] = data;
                    port.Head = (port.Head + 1) % FifoSize;
                    port.Count++;
                    port.Overrun = false;
                    if ((port.Registers[Uart.Ier] & Uart.IerRdi) != 0 && port.Count == port.TriggerLevel)
                    {
                        _triggers++;
                    }
                }
                else
                {
                    port.Overrun = true;
                    if ((port.Registers[Uart.Ier] & Uart.IerRlsi) != 0)
                    {
                        _triggers++;
                    }
                }
                break;
            case Uart.Ier:
                if (port.Dlab)
                {
                    port.Divisor |= (ushort)(data << 8);
                }
                else
                {
                    port.Registers[Uart.Ier] = data;
                    if ((data & Uart.IerThri) != 0 && port.Head == port.Tail)
                    {
                        _triggers++;
                    }
                }
                break;
            case Uart.Fcr:
                port.Fcr = data;
                if ((data & (Uart.FcrClearReceive | Uart.FcrClearTransmit)) != 0)
                {
                    port.Count = 0;
                    port.Head = 0;
                    port.Tail = 0;
                }
                port.TriggerLevel = 1;
                port.MaxFifo = (data & Uart.FcrEnableFifo) != 0 ? FifoSize : 1;
                break;
            case Uart.Lcr:
                port.Dlab = (data & Uart.LcrDlab) != 0;
                if (port.Dlab)
                {
                    port.Divisor = 0;
                }
                port.Registers[Uart.Lcr] = data;
                break;
            case Uart.Mcr:
            case Uart.Scr:
                port.Registers[offset] = data;
                break;
        }
    }

    private sealed class Port
    {
        public byte[] Registers { get; } = new byte[8];

        public byte[] Fifo { get; } = new byte[FifoSize];

        public int Head { get; set; }

        public int Tail { get; set; }

        public int Count { get; set; }

        public int MaxFifo { get; set; } = FifoSize;

        public int TriggerLevel { get; set; }

        public bool Overrun { get; set; }

        public bool Dlab { get; set; }

        public ushort Divisor { get; set; }

        public byte Fcr { get; set; }
    }

    /// <summary>16550 register offsets and bits (uapi/linux/serial_reg.h).</summary>
    private static class Uart
    {
        public const int Rx = 0;
        public const int Tx = 0;
        public const int Ier = 1;
        public const int Iir = 2;
        public const int Fcr = 2;
        public const int Lcr = 3;
        public const int Mcr = 4;
        public const int Lsr = 5;
        public const int Msr = 6;
        public const int Scr = 7;
        public const byte IerRdi = 0x01;
        public const byte IerThri = 0x02;
        public const byte IerRlsi = 0x04;
        public const byte FcrEnableFifo = 0x01;
        public const byte FcrClearReceive = 0x02;
        public const byte FcrClearTransmit = 0x04;
        public const byte LcrDlab = 0x80;
        public const byte McrAfe = 0x20;
        public const byte LsrDataReady = 0x01;
        public const byte LsrOverrun = 0x02;
        public const byte LsrHoldingEmpty = 0x20;
        public const byte LsrTransmitterEmpty = 0x40;
    }
}
