using System.Buffers.Binary;
using Vfio;

namespace MdevLifecycle;

/// <summary>
/// A driver for the mediated serial card of the kernel's mtty sample: one or two 16550-style ports,
/// each an 8-byte I/O BAR whose transmitter loops back into a 16-byte receive FIFO.
/// </summary>
public sealed class MttyDevice : MdevVfioDevice
{
    /// <summary>The config space region of a vfio-pci device (VFIO_PCI_CONFIG_REGION_INDEX).</summary>
    public const int ConfigRegion = 7;

    /// <summary>Receive buffer (read) and transmit holding (write) register.</summary>
    public const int Data = 0;

    /// <summary>FIFO control register (write).</summary>
    public const int FifoControl = 2;

    /// <summary>Line status register.</summary>
    public const int LineStatus = 5;

    /// <summary>Scratch register.</summary>
    public const int Scratch = 7;

    /// <summary>Line status: a received byte is waiting.</summary>
    public const byte DataReady = 0x01;

    /// <summary>Line status: the transmitter is empty.</summary>
    public const byte TransmitterEmpty = 0x40;

    private readonly MmioRegion?[] _ports = new MmioRegion?[2];

    /// <summary>Creates the device; no kernel I/O.</summary>
    /// <param name="context">The discovered mdev.</param>
    public MttyDevice(MdevDeviceContext context)
        : base(context)
    {
    }

    /// <summary>The number of serial ports (1 for mtty-1, 2 for mtty-2), known once open.</summary>
    public int Ports { get; private set; }

    /// <summary>Maps each port's BAR; the I/O BARs are reached through the device file.</summary>
    protected override void OnFirstOpen()
    {
        Ports = GetRegionInfo(1).Size > 0 ? 2 : 1;
        for (int port = 0; port < Ports; port++)
        {
            _ports[port] = OpenRegion(port);
        }
    }

    /// <summary>Releases the port regions.</summary>
    protected override void OnLastClose()
    {
        for (int port = 0; port < _ports.Length; port++)
        {
            _ports[port]?.Dispose();
            _ports[port] = null;
        }
    }

    /// <summary>Reads a 32-bit register of config space (region 7).</summary>
    /// <param name="offset">Its offset.</param>
    public uint ReadConfig32(int offset)
    {
        Span<byte> value = stackalloc byte[4];
        ReadRegion(ConfigRegion, (ulong)offset, value);
        return BinaryPrimitives.ReadUInt32LittleEndian(value);
    }

    /// <summary>Writes a 32-bit register of config space.</summary>
    /// <param name="offset">Its offset.</param>
    /// <param name="value">The value.</param>
    public void WriteConfig32(int offset, uint value)
    {
        Span<byte> bytes = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(bytes, value);
        WriteRegion(ConfigRegion, (ulong)offset, bytes);
    }

    /// <summary>Reads a UART register of a port.</summary>
    /// <param name="port">0 or 1.</param>
    /// <param name="register">The register offset (0-7).</param>
    public byte ReadRegister(int port, int register) => Port(port).Read8((ulong)register);

    /// <summary>Writes a UART register of a port.</summary>
    /// <param name="port">0 or 1.</param>
    /// <param name="register">The register offset (0-7).</param>
    /// <param name="value">The value.</param>
    public void WriteRegister(int port, int register, byte value) => Port(port).Write8((ulong)register, value);

    /// <summary>
    /// Sends bytes through a port's transmitter (at most 16, the FIFO's size) and reads them back
    /// from its receiver, which mtty wires to it; returns the bytes received.
    /// </summary>
    /// <param name="port">0 or 1.</param>
    /// <param name="data">The bytes to send.</param>
    public byte[] Loopback(int port, ReadOnlySpan<byte> data)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(data.Length, 16);
        WriteRegister(port, FifoControl, 0x07); // enable the FIFOs and clear them
        foreach (byte b in data)
        {
            WriteRegister(port, Data, b);
        }
        var received = new List<byte>(data.Length);
        while ((ReadRegister(port, LineStatus) & DataReady) != 0 && received.Count <= 16)
        {
            received.Add(ReadRegister(port, Data));
        }
        return [.. received];
    }

    private MmioRegion Port(int port) =>
        port >= 0 && port < Ports && _ports[port] is { } region
            ? region
            : throw new ArgumentOutOfRangeException(nameof(port), port, $"mdev {Name} has {Ports} port(s) and must be open.");
}

/// <summary>The driver: handles both mtty types.</summary>
public sealed class MttyDriver() : MdevDriver<MttyDevice>("mtty", "mtty-1", "mtty-2")
{
    /// <inheritdoc/>
    protected override MttyDevice CreateDevice(MdevDeviceContext context) => new(context);
}
