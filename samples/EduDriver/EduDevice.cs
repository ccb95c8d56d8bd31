using Vfio;

namespace EduDriver;

/// <summary>
/// A driver for QEMU's educational PCI device (vendor 0x1234, device 0x11e8): an identification
/// register, a liveness check, a factorial unit that raises an interrupt when done, and a DMA
/// engine with a 4 KiB buffer at device address 0x40000. Written only against the public API.
/// </summary>
public sealed class EduDevice : PciVfioDevice
{
    /// <summary>QEMU's vendor id.</summary>
    public const ushort Vendor = 0x1234;

    /// <summary>The edu device id.</summary>
    public const ushort Device = 0x11e8;

    /// <summary>Where the device's DMA buffer sits in its own address space.</summary>
    public const ulong DeviceBuffer = 0x40000;

    /// <summary>The size of the device's DMA buffer.</summary>
    public const int DeviceBufferSize = 4096;

    /// <summary>
    /// The longest transfer the device takes, and the end of the usable buffer: QEMU up to 9.0
    /// (including 7.2) requires a transfer to end strictly before the buffer's last byte and stops
    /// the whole machine with a hardware error otherwise, so the last byte is never used.
    /// </summary>
    public const int MaxTransfer = DeviceBufferSize - 1;

    private const ulong RegIdentification = 0x00;
    private const ulong RegLiveness = 0x04;
    private const ulong RegFactorial = 0x08;
    private const ulong RegStatus = 0x20;
    private const ulong RegInterruptStatus = 0x24;
    private const ulong RegInterruptAck = 0x64;
    private const ulong RegDmaSource = 0x80;
    private const ulong RegDmaDestination = 0x88;
    private const ulong RegDmaCount = 0x90;
    private const ulong RegDmaCommand = 0x98;

    private const uint StatusComputing = 0x01;
    private const uint StatusIrqOnFactorial = 0x80;
    private const uint IrqFactorial = 0x001;
    private const uint IrqDma = 0x100;
    private const ulong DmaStart = 0x1;
    private const ulong DmaToRam = 0x2;
    private const ulong DmaRaiseIrq = 0x4;

    private MmioRegion? _bar0;
    private InterruptSet? _interrupts;

    /// <summary>Creates the device; no kernel I/O until it is opened.</summary>
    /// <param name="context">The discovered function.</param>
    public EduDevice(PciDeviceContext context)
        : base(context)
    {
        // The edu device drives 28 address bits: IOVAs must stay below 256 MiB.
        DmaMask = (1UL << 28) - 1;
    }

    /// <summary>Which interrupt mode the device was opened with.</summary>
    public string InterruptMode { get; private set; } = "none";

    private MmioRegion Bar0 => _bar0 ?? throw new InvalidOperationException("The edu device is not open.");

    private InterruptSet Interrupts => _interrupts ?? throw new InvalidOperationException("The edu device is not open.");

    /// <summary>The identification register: 0x010000ed (major 1, minor 0, 0xed).</summary>
    public uint ReadIdentification() => Bar0.Read32(RegIdentification);

    /// <summary>Writes a value to the liveness register; the device answers with its bitwise inverse.</summary>
    /// <param name="value">Any value.</param>
    /// <returns>True when the device answered ~value.</returns>
    public bool CheckLiveness(uint value)
    {
        Bar0.Write32(RegLiveness, value);
        return Bar0.Read32(RegLiveness) == ~value;
    }

    /// <summary>Computes n! on the device, waiting for its completion interrupt.</summary>
    /// <param name="n">The argument (12! is the largest that fits 32 bits).</param>
    /// <param name="cancellationToken">Stops waiting.</param>
    public async Task<uint> ComputeFactorialAsync(uint n, CancellationToken cancellationToken = default)
    {
        Bar0.Write32(RegStatus, StatusIrqOnFactorial);
        Bar0.Write32(RegFactorial, n);
        await WaitForInterruptAsync(IrqFactorial, cancellationToken).ConfigureAwait(false);
        if ((Bar0.Read32(RegStatus) & StatusComputing) != 0)
        {
            throw new InvalidOperationException("The edu device raised its factorial interrupt while still computing.");
        }
        return Bar0.Read32(RegFactorial);
    }

    /// <summary>Copies bytes from a host DMA buffer into the device's buffer, waiting for the DMA interrupt.</summary>
    /// <param name="source">The host buffer, mapped for the device to read.</param>
    /// <param name="sourceOffset">Where in the host buffer.</param>
    /// <param name="deviceOffset">Where in the device's buffer.</param>
    /// <param name="count">How many bytes (at most <see cref="MaxTransfer"/> - <paramref name="deviceOffset"/>).</param>
    /// <param name="cancellationToken">Stops waiting.</param>
    public Task CopyToDeviceAsync(DmaBuffer source, int sourceOffset, int deviceOffset, int count, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(source);
        return DmaAsync(HostAddress(source, sourceOffset, count), DeviceBuffer + (ulong)deviceOffset, count, toRam: false, deviceOffset, cancellationToken);
    }

    /// <summary>Copies bytes from the device's buffer into a host DMA buffer, waiting for the DMA interrupt.</summary>
    /// <param name="destination">The host buffer, mapped for the device to write.</param>
    /// <param name="destinationOffset">Where in the host buffer.</param>
    /// <param name="deviceOffset">Where in the device's buffer.</param>
    /// <param name="count">How many bytes (at most <see cref="MaxTransfer"/> - <paramref name="deviceOffset"/>).</param>
    /// <param name="cancellationToken">Stops waiting.</param>
    public Task CopyFromDeviceAsync(DmaBuffer destination, int destinationOffset, int deviceOffset, int count, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(destination);
        return DmaAsync(DeviceBuffer + (ulong)deviceOffset, HostAddress(destination, destinationOffset, count), count, toRam: true, deviceOffset, cancellationToken);
    }

    private static ulong HostAddress(DmaBuffer buffer, int offset, int count)
    {
        if (offset < 0 || count < 0 || (ulong)offset + (ulong)count > buffer.Length)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), $"[{offset}, {offset + count}) is outside the {buffer.Length}-byte host buffer.");
        }
        return buffer.IovaAt((ulong)offset);
    }

    /// <inheritdoc/>
    protected override void OnFirstOpen()
    {
        EnableCommand(memorySpace: true, busMaster: true);
        _bar0 = OpenRegion(0);
        // MSI when the device offers it, INTx otherwise.
        if (GetIrqInfo(PciIrq.Msi).Count > 0)
        {
            _interrupts = EnableInterrupts(PciIrq.Msi);
            InterruptMode = "MSI";
        }
        else
        {
            _interrupts = EnableInterrupts(PciIrq.Intx);
            InterruptMode = "INTx";
        }
    }

    /// <inheritdoc/>
    protected override void OnLastClose()
    {
        _interrupts?.Dispose();
        _interrupts = null;
        _bar0?.Dispose();
        _bar0 = null;
        InterruptMode = "none";
    }

    private async Task DmaAsync(ulong source, ulong destination, int count, bool toRam, int deviceOffset, CancellationToken cancellationToken)
    {
        if (deviceOffset < 0 || count <= 0 || deviceOffset + count > MaxTransfer)
        {
            throw new ArgumentOutOfRangeException(nameof(count), $"[{deviceOffset}, {deviceOffset + count}) is outside the device's usable buffer [0, {MaxTransfer}).");
        }
        Bar0.Write64(RegDmaSource, source);
        Bar0.Write64(RegDmaDestination, destination);
        Bar0.Write64(RegDmaCount, (ulong)count);
        Bar0.Write64(RegDmaCommand, DmaStart | DmaRaiseIrq | (toRam ? DmaToRam : 0));
        await WaitForInterruptAsync(IrqDma, cancellationToken).ConfigureAwait(false);
    }

    private async Task WaitForInterruptAsync(uint expected, CancellationToken cancellationToken)
    {
        while (true)
        {
            await Interrupts.WaitAsync(0, cancellationToken).ConfigureAwait(false);
            uint status = Bar0.Read32(RegInterruptStatus);
            if (status != 0)
            {
                Bar0.Write32(RegInterruptAck, status);
            }
            if (InterruptMode == "INTx")
            {
                Interrupts.Unmask(0);
            }
            if ((status & expected) != 0)
            {
                return;
            }
        }
    }
}

/// <summary>Matches QEMU's edu device and creates an <see cref="EduDevice"/> for it.</summary>
public sealed class EduPciDriver : PciDriver<EduDevice>
{
    /// <summary>Creates the driver.</summary>
    public EduPciDriver()
        : base("edu", PciMatch.Id(EduDevice.Vendor, EduDevice.Device))
    {
    }

    /// <inheritdoc/>
    protected override EduDevice CreateDevice(PciDeviceContext context) => new(context);
}
