using System.Globalization;

namespace Vfio.Testing;

/// <summary>
/// QEMU's educational PCI device ("edu", hw/misc/edu.c as of QEMU 7.2), register for register:
/// vendor 0x1234, device 0x11e8, class 0x00ff00, revision 0x10, a 1 MiB MMIO BAR0, one MSI vector
/// and INTx, no power management capability and therefore no reset the kernel could use.
/// </summary>
/// <remarks>
/// <para>BAR0 registers (4-byte accesses below 0x80, 4- or 8-byte accesses from 0x80; any other
/// access reads as all ones and is ignored on write, as QEMU does):</para>
/// <list type="table">
/// <item><term>0x00</term><description>identification, 0x010000ed (read only).</description></item>
/// <item><term>0x04</term><description>liveness check: reads the bitwise inverse of what was written.</description></item>
/// <item><term>0x08</term><description>factorial: a write starts computing n! unless a computation is running; a read gives the value.</description></item>
/// <item><term>0x20</term><description>status: bit 0 computing (read only), bit 7 raise interrupt 0x1 when the factorial completes.</description></item>
/// <item><term>0x24</term><description>interrupt status (read only).</description></item>
/// <item><term>0x60</term><description>raise interrupt: ORs the value into the interrupt status and signals.</description></item>
/// <item><term>0x64</term><description>acknowledge: clears those bits of the interrupt status.</description></item>
/// <item><term>0x80, 0x88, 0x90</term><description>DMA source, destination and count (ignored while a transfer runs).</description></item>
/// <item><term>0x98</term><description>DMA command: bit 0 start, bit 1 direction (0 RAM to device, 1 device to RAM), bit 2 raise interrupt 0x100 when done.</description></item>
/// </list>
/// <para>
/// As in QEMU, the factorial and the DMA complete after the register write returns (QEMU uses a
/// thread and a 100 ms timer): the model schedules them (<see cref="DeviceModel.ScheduleWork(TimeSpan, Action)"/>,
/// a transfer 100 ms of device time later), so they run in the background or when a test moves the
/// kernel's device clock. <see cref="DeviceModel.WhenIdleAsync"/> waits for the work in flight. The device's DMA goes through the
/// simulated IOMMU (<see cref="DeviceModel.DmaRead"/>, <see cref="DeviceModel.DmaWrite"/>): a
/// transfer to an address that is not mapped shows in <see cref="SimulatedKernel.DmaFaults"/>, and the
/// device still completes it (and raises its interrupt), as QEMU does. Addresses are clamped to the
/// DMA mask (28 bits).
/// </para>
/// <para>
/// The device's side of a transfer must lie in its 4 KiB buffer at 0x40000. QEMU 7.2 checks that the
/// end of the transfer lies strictly inside the buffer, so a transfer of 0 bytes, or one that
/// reaches the buffer's last byte, is out of range too; QEMU then stops with a hardware error. The
/// model records it in <see cref="Failure"/> and stops: from then on reads give all ones and writes
/// are ignored.
/// </para>
/// </remarks>
public sealed class EduDeviceModel : PciDeviceModel
{
    /// <summary>The identification register's value: major 1, minor 0, 0xed.</summary>
    public const uint Identification = 0x010000ed;

    /// <summary>Where the device's DMA buffer sits in its own address space.</summary>
    public const ulong DmaBufferAddress = 0x40000;

    /// <summary>The size of the device's DMA buffer.</summary>
    public const int DmaBufferSize = 4096;

    /// <summary>The interrupt status bit set when a factorial completes.</summary>
    public const uint FactorialInterrupt = 0x001;

    /// <summary>The interrupt status bit set when a DMA transfer completes.</summary>
    public const uint DmaInterrupt = 0x100;

    private const uint StatusComputing = 0x01;
    private const uint StatusIrqOnFactorial = 0x80;
    private const ulong DmaRun = 0x1;
    private const ulong DmaToRam = 0x2;
    private const ulong DmaIrq = 0x4;
    private static readonly TimeSpan DmaTime = TimeSpan.FromMilliseconds(100);

    private readonly byte[] _buffer = new byte[DmaBufferSize];
    private uint _liveness;
    private uint _factorial;
    private uint _status;
    private uint _interruptStatus;
    private ulong _dmaSource;
    private ulong _dmaDestination;
    private ulong _dmaCount;
    private ulong _dmaCommand;
    private string? _failure;

    /// <summary>Creates the device as QEMU's <c>-device edu</c> does.</summary>
    public EduDeviceModel()
        : base(0x1234, 0x11e8, 0x00ff00)
    {
        Revision = 0x10;
        DefineBar(0, 1UL << 20);
        MsiVectors = 1;
        InterruptPin = 1;
        HasPowerManagement = false;
    }

    /// <summary>The DMA mask: addresses the device puts on the bus are ANDed with it. 28 bits, as QEMU's default.</summary>
    public ulong DmaMask { get; init; } = (1UL << 28) - 1;

    /// <summary>Why the device stopped (a DMA range error, fatal in QEMU 7.2), or null while it works.</summary>
    public string? Failure
    {
        get
        {
            lock (Gate)
            {
                return _failure;
            }
        }
    }

    /// <summary>The interrupt status register (0x24).</summary>
    public uint InterruptStatus
    {
        get
        {
            lock (Gate)
            {
                return _interruptStatus;
            }
        }
    }

    /// <summary>A copy of the device's 4 KiB DMA buffer.</summary>
    public byte[] GetDmaBuffer()
    {
        lock (Gate)
        {
            return (byte[])_buffer.Clone();
        }
    }

    /// <inheritdoc/>
    protected override ulong ReadBar(int bar, ulong offset, int size)
    {
        ulong ones = size >= 8 ? ulong.MaxValue : (1UL << (8 * size)) - 1;
        if (bar != 0 || _failure is not null || !ValidSize(offset, size))
        {
            return ones;
        }
        ulong value = offset switch
        {
            0x00 => Identification,
            0x04 => _liveness,
            0x08 => _factorial,
            0x20 => _status,
            0x24 => _interruptStatus,
            0x80 => _dmaSource,
            0x88 => _dmaDestination,
            0x90 => _dmaCount,
            0x98 => _dmaCommand,
            _ => ulong.MaxValue,
        };
        return value & ones;
    }

    /// <inheritdoc/>
    protected override void WriteBar(int bar, ulong offset, int size, ulong value)
    {
        if (bar != 0 || _failure is not null || !ValidSize(offset, size))
        {
            return;
        }
        bool running = (_dmaCommand & DmaRun) != 0;
        switch (offset)
        {
            case 0x04:
                _liveness = ~(uint)value;
                break;
            case 0x08:
                if ((_status & StatusComputing) == 0)
                {
                    _factorial = (uint)value;
                    _status |= StatusComputing;
                    ScheduleWork(CompleteFactorial); // QEMU computes on its own thread
                }
                break;
            case 0x20:
                _status = (value & StatusIrqOnFactorial) != 0 ? _status | StatusIrqOnFactorial : _status & ~StatusIrqOnFactorial;
                break;
            case 0x60:
                Raise((uint)value);
                break;
            case 0x64:
                _interruptStatus &= ~(uint)value;
                break;
            case 0x80 when !running:
                _dmaSource = value;
                break;
            case 0x88 when !running:
                _dmaDestination = value;
                break;
            case 0x90 when !running:
                _dmaCount = value;
                break;
            case 0x98 when !running && (value & DmaRun) != 0:
                _dmaCommand = value;
                ScheduleWork(DmaTime, CompleteDma); // QEMU completes a transfer on a 100 ms timer
                break;
        }
    }

    /// <summary>Registers below 0x80 take 4-byte accesses only; from 0x80 on, 4 or 8 bytes.</summary>
    private static bool ValidSize(ulong offset, int size) => size == 4 || (offset >= 0x80 && size == 8);

    /// <summary>Sets interrupt status bits and signals: MSI when enabled, INTx otherwise.</summary>
    private void Raise(uint bits)
    {
        _interruptStatus |= bits;
        if (_interruptStatus != 0)
        {
            SignalInterrupt(0);
        }
    }



    private void CompleteFactorial()
    {
        if (_failure is not null || (_status & StatusComputing) == 0)
        {
            return;
        }
        uint result = 1;
        for (uint n = _factorial; n > 0; n--)
        {
            result *= n;
        }
        _factorial = result;
        _status &= ~StatusComputing;
        if ((_status & StatusIrqOnFactorial) != 0)
        {
            Raise(FactorialInterrupt);
        }
    }

    private void CompleteDma()
    {
        if (_failure is not null || (_dmaCommand & DmaRun) == 0)
        {
            return;
        }
        bool toRam = (_dmaCommand & DmaToRam) != 0;
        ulong deviceSide = toRam ? _dmaSource : _dmaDestination;
        if (!InBuffer(deviceSide, _dmaCount))
        {
            _failure = string.Create(CultureInfo.InvariantCulture,
                $"EDU: DMA range 0x{deviceSide:x16}-0x{deviceSide + _dmaCount - 1:x16} out of bounds (0x{DmaBufferAddress:x16}-0x{DmaBufferAddress + DmaBufferSize - 1:x16})!");
            return;
        }
        var span = _buffer.AsSpan((int)(deviceSide - DmaBufferAddress), (int)_dmaCount);
        if (toRam)
        {
            DmaWrite(_dmaDestination & DmaMask, span);
        }
        else
        {
            DmaRead(_dmaSource & DmaMask, span);
        }
        _dmaCommand &= ~DmaRun;
        if ((_dmaCommand & DmaIrq) != 0)
        {
            Raise(DmaInterrupt);
        }
    }

    /// <summary>QEMU 7.2's range check: the start and the end of the transfer both lie in [buffer, buffer end).</summary>
    private static bool InBuffer(ulong address, ulong count)
    {
        const ulong End = DmaBufferAddress + DmaBufferSize;
        ulong last = address + count;
        return address >= DmaBufferAddress && address < End && last > address && last >= DmaBufferAddress && last < End;
    }
}
