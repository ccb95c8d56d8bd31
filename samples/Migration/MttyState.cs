using System.Globalization;
using System.Text;
using MdevLifecycle;

namespace MigrationSample;

/// <summary>
/// What a driver can see of an mtty-2 card's state through its registers, to tell whether a
/// migration carried it over: on port 0 the line, modem and interrupt-enable registers, the scratch
/// register, the line status and interrupt id, and the bytes waiting in the loopback FIFO; on port 1
/// the baud rate divisor, left visible (LCR's divisor latch bit set). Reading it drains port 0's FIFO.
/// </summary>
public static class MttyState
{
    /// <summary>Line control set on port 0: 8 data bits, no parity, one stop bit.</summary>
    public const byte LineControl = 0x03;

    /// <summary>Modem control set on port 0: DTR, RTS and OUT2.</summary>
    public const byte ModemControl = 0x0b;

    /// <summary>Scratch register value on port 0.</summary>
    public const byte Scratch = 0x5a;

    /// <summary>Interrupt enable on port 0: received data and line status (no transmitter-empty interrupt).</summary>
    public const byte InterruptEnable = 0x05;

    /// <summary>Port 1's baud rate divisor (9600 baud of a 1.8432 MHz clock is 12; 0x010c is a value no default has).</summary>
    public const ushort Divisor = 0x010c;

    private const byte DivisorLatch = 0x80;

    /// <summary>
    /// Gives the card a state of its own: port 0's registers set and <paramref name="received"/> (at
    /// most 15 bytes) in its FIFO; port 1's divisor latched.
    /// </summary>
    /// <param name="device">An open mtty-2 device.</param>
    /// <param name="received">The bytes to leave in port 0's receive FIFO.</param>
    public static void Prepare(MttyDevice device, ReadOnlySpan<byte> received)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(received.Length, 15);
        if (device.Ports != 2)
        {
            throw new ArgumentException($"mdev {device.Name} has {device.Ports} port(s); the state uses both ports of an mtty-2 card.", nameof(device));
        }
        device.WriteRegister(0, MttyDevice.FifoControl, 0x07); // FIFOs on and cleared
        device.WriteRegister(0, 3, LineControl);
        device.WriteRegister(0, 4, ModemControl);
        device.WriteRegister(0, MttyDevice.Scratch, Scratch);
        device.WriteRegister(0, 1, InterruptEnable);
        foreach (byte b in received)
        {
            device.WriteRegister(0, MttyDevice.Data, b); // the transmitter loops back into the FIFO
        }
        device.WriteRegister(1, 3, DivisorLatch | LineControl); // latching clears the divisor
        device.WriteRegister(1, MttyDevice.Data, (byte)(Divisor & 0xff));
        device.WriteRegister(1, 1, Divisor >> 8);
    }

    /// <summary>Reads the state <see cref="Prepare"/> sets (whatever the card holds), as one line of text; drains port 0's FIFO.</summary>
    /// <param name="device">An open mtty-2 device.</param>
    public static string Read(MttyDevice device)
    {
        ArgumentNullException.ThrowIfNull(device);
        var text = new StringBuilder();
        byte lineStatus = device.ReadRegister(0, MttyDevice.LineStatus);
        byte interruptId = device.ReadRegister(0, 2);
        text.Append(CultureInfo.InvariantCulture, $"port 0: LCR {device.ReadRegister(0, 3):x2} MCR {device.ReadRegister(0, 4):x2} SCR {device.ReadRegister(0, MttyDevice.Scratch):x2} ");
        text.Append(CultureInfo.InvariantCulture, $"IER {device.ReadRegister(0, 1):x2} LSR {lineStatus:x2} IIR {interruptId:x2} FIFO [");
        var fifo = new List<byte>();
        while ((device.ReadRegister(0, MttyDevice.LineStatus) & MttyDevice.DataReady) != 0 && fifo.Count <= 16)
        {
            fifo.Add(device.ReadRegister(0, MttyDevice.Data));
        }
        text.Append(Convert.ToHexString([.. fifo]));
        byte latch = device.ReadRegister(1, 3);
        // With the latch bit set, the data and interrupt-enable registers read the divisor's two bytes.
        int divisor = (device.ReadRegister(1, 1) << 8) | device.ReadRegister(1, MttyDevice.Data);
        text.Append(CultureInfo.InvariantCulture, $"]; port 1: LCR {latch:x2} divisor 0x{divisor:x4}");
        return text.ToString();
    }
}
