using System.Buffers.Binary;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Vfio;

namespace VirtioRngPlatform;

/// <summary>
/// A user-space driver for a virtio entropy device behind a virtio-mmio transport (virtio 1.x,
/// transport version 2), handed over by vfio-platform: QEMU's <c>-M microvm</c> describes each
/// transport as the ACPI device <c>LNRO0005</c> (a device tree describes it as <c>virtio,mmio</c>).
/// Its registers are region 0, its interrupt is platform interrupt 0 (level-triggered: the kernel
/// masks it when it fires, the driver acknowledges the device's interrupt status and unmasks), and
/// its one virtqueue lives in DMA memory whose device addresses the library gives (IOVAs behind an
/// IOMMU, physical addresses in no-IOMMU mode).
/// </summary>
public sealed class VirtioRngDevice : PlatformVfioDevice
{
    /// <summary>The magic value at offset 0: "virt".</summary>
    public const uint Magic = 0x74726976;

    /// <summary>The virtio device id of an entropy source.</summary>
    public const uint EntropyDeviceId = 4;

    /// <summary>The entries of the virtqueue this driver sets up.</summary>
    public const int QueueSize = 8;

    private const ulong MagicValue = 0x000, Version = 0x004, DeviceId = 0x008, VendorId = 0x00c;
    private const ulong DeviceFeatures = 0x010, DeviceFeaturesSelect = 0x014, DriverFeatures = 0x020, DriverFeaturesSelect = 0x024;
    private const ulong QueueSelect = 0x030, QueueNumMax = 0x034, QueueNum = 0x038, QueueReady = 0x044, QueueNotify = 0x050;
    private const ulong InterruptStatus = 0x060, InterruptAck = 0x064, Status = 0x070;
    private const ulong QueueDescLow = 0x080, QueueDescHigh = 0x084, QueueDriverLow = 0x090, QueueDriverHigh = 0x094, QueueDeviceLow = 0x0a0, QueueDeviceHigh = 0x0a4;
    private const uint Acknowledge = 1, Driver = 2, DriverOk = 4, FeaturesOk = 8, Failed = 128;
    private const uint VersionOneHigh = 1; // VIRTIO_F_VERSION_1 is feature bit 32: bit 0 of the second word
    private const ushort DescriptorWrite = 2;

    // The split virtqueue in one page: 8 descriptors (16 bytes each) at 0, the driver (available)
    // ring at 128, the device (used) ring at 256.
    private const int AvailableRing = 128, UsedRing = 256;

    private readonly SemaphoreSlim _request = new(1, 1);
    private MmioRegion? _registers;
    private PlatformInterrupt? _interrupt;
    private DmaBuffer? _queue;
    private DmaBuffer? _data;
    private ushort _available;
    private ushort _used;

    /// <summary>Creates the device; no kernel I/O until it is opened.</summary>
    /// <param name="context">The discovered platform device.</param>
    public VirtioRngDevice(PlatformDeviceContext context)
        : base(context)
    {
    }

    /// <summary>The transport's version register (2: virtio 1.x), read at open.</summary>
    public uint TransportVersion { get; private set; }

    /// <summary>The vendor id register ("QEMU" for QEMU's devices), read at open.</summary>
    public uint Vendor { get; private set; }

    /// <summary>The interrupt, as the kernel describes it; known once open.</summary>
    public PlatformIrqInfo? InterruptInfo => _interrupt?.Info;

    /// <summary>How many times the interrupt fired since the device was opened.</summary>
    public ulong Interrupts { get; private set; }

    /// <summary>The device addresses of the virtqueue and the data buffer (what the device was told), known once open.</summary>
    public (ulong Queue, ulong Data) DeviceAddresses => (_queue?.Iova ?? 0, _data?.Iova ?? 0);

    /// <summary>Reads a 32-bit register of the transport; the device must be open.</summary>
    /// <param name="offset">The register's offset.</param>
    public uint ReadRegister(ulong offset) => Registers.Read32(offset);

    /// <summary>
    /// Asks the device for <paramref name="count"/> random bytes (at most a page) and waits for them:
    /// one device-writable buffer in the virtqueue, a notification, the interrupt.
    /// </summary>
    /// <param name="count">How many bytes to ask for, 1 to 4096.</param>
    /// <param name="cancellationToken">Stops waiting for the device.</param>
    /// <returns>The bytes the device wrote (it may write fewer than asked).</returns>
    public async Task<byte[]> ReadRandomAsync(int count, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(count, 4096);
        await _request.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var queue = _queue ?? throw new InvalidOperationException($"Platform device {Name} is not open.");
            var data = _data!;
            // Descriptor 0: the whole request, device-writable.
            var descriptor = queue.Span[..16];
            BinaryPrimitives.WriteUInt64LittleEndian(descriptor, data.Iova);
            BinaryPrimitives.WriteUInt32LittleEndian(descriptor[8..], (uint)count);
            BinaryPrimitives.WriteUInt16LittleEndian(descriptor[12..], DescriptorWrite);
            BinaryPrimitives.WriteUInt16LittleEndian(descriptor[14..], 0);
            // The ring entry first, then the index the device reads (a fence between them), then notify.
            BinaryPrimitives.WriteUInt16LittleEndian(queue.Span[(AvailableRing + 4 + (_available % QueueSize) * 2)..], 0);
            Interlocked.MemoryBarrier();
            _available++;
            BinaryPrimitives.WriteUInt16LittleEndian(queue.Span[(AvailableRing + 2)..], _available);
            Interlocked.MemoryBarrier();
            Registers.Write32(QueueNotify, 0);

            // The device interrupts after every buffer it returns (the driver ring's flags ask it to).
            do
            {
                Interrupts += await _interrupt!.WaitAsync(cancellationToken).ConfigureAwait(false);
                // Level-triggered: clear the device's cause, then let the line fire again.
                uint status = Registers.Read32(InterruptStatus);
                Registers.Write32(InterruptAck, status);
                _interrupt.Unmask();
            }
            while (UsedIndex(queue) == _used);
            Interlocked.MemoryBarrier();
            var element = queue.Span[(UsedRing + 4 + (_used % QueueSize) * 8)..];
            uint id = BinaryPrimitives.ReadUInt32LittleEndian(element);
            uint written = BinaryPrimitives.ReadUInt32LittleEndian(element[4..]);
            _used++;
            if (id != 0 || written > (uint)count)
            {
                throw new VfioException(string.Create(CultureInfo.InvariantCulture,
                    $"Platform device {Name} returned buffer {id} with {written} bytes for a request of descriptor 0 with {count}: the virtqueue is out of step."));
            }
            return data.Span[..(int)written].ToArray();
        }
        finally
        {
            _request.Release();
        }
    }

    /// <summary>Checks the transport, sets the device up (virtio 1.x initialization) with its virtqueue in DMA memory.</summary>
    protected override void OnFirstOpen()
    {
        _registers = OpenRegion(0);
        uint magic = _registers.Read32(MagicValue);
        TransportVersion = _registers.Read32(Version);
        uint device = _registers.Read32(DeviceId);
        Vendor = _registers.Read32(VendorId);
        if (magic != Magic)
        {
            throw new VfioException(string.Create(CultureInfo.InvariantCulture, $"Platform device {Name} is no virtio-mmio transport: its magic value is 0x{magic:x8}, not 0x{Magic:x8} (\"virt\")."));
        }
        if (TransportVersion != 2)
        {
            throw new VfioNotSupportedException(string.Create(CultureInfo.InvariantCulture,
                $"Platform device {Name} is a legacy virtio-mmio transport (version {TransportVersion}); this driver speaks version 2 (virtio 1.x). QEMU offers it with -global virtio-mmio.force-legacy=false."));
        }
        if (device != EntropyDeviceId)
        {
            throw new VfioNotSupportedException(string.Create(CultureInfo.InvariantCulture, $"Platform device {Name} is virtio device {device}, not an entropy source ({EntropyDeviceId})."));
        }
        _interrupt = EnableInterrupt(0);
        Initialize();
    }

    /// <summary>Resets the device (it stops using the queue), then releases the queue, the interrupt and the registers.</summary>
    protected override void OnLastClose()
    {
        _registers?.Write32(Status, 0);
        _data?.Dispose();
        _queue?.Dispose();
        _interrupt?.Dispose();
        _registers?.Dispose();
        _data = _queue = null;
        _interrupt = null;
        _registers = null;
    }

    private MmioRegion Registers => _registers ?? throw new InvalidOperationException($"Platform device {Name} is not open.");

    // Virtio 1.x, 3.1.1: reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK, the queue, DRIVER_OK.
    private void Initialize()
    {
        var r = Registers;
        r.Write32(Status, 0);
        r.Write32(Status, Acknowledge);
        r.Write32(Status, Acknowledge | Driver);
        r.Write32(DeviceFeaturesSelect, 1);
        if ((r.Read32(DeviceFeatures) & VersionOneHigh) == 0)
        {
            Fail("it does not offer VIRTIO_F_VERSION_1");
        }
        r.Write32(DriverFeaturesSelect, 0);
        r.Write32(DriverFeatures, 0);
        r.Write32(DriverFeaturesSelect, 1);
        r.Write32(DriverFeatures, VersionOneHigh);
        r.Write32(Status, Acknowledge | Driver | FeaturesOk);
        if ((r.Read32(Status) & FeaturesOk) == 0)
        {
            Fail("it refused the features (FEATURES_OK did not stay set)");
        }
        r.Write32(QueueSelect, 0);
        if (r.Read32(QueueReady) != 0)
        {
            Fail("queue 0 is in use already");
        }
        uint max = r.Read32(QueueNumMax);
        if (max < QueueSize)
        {
            Fail(string.Create(CultureInfo.InvariantCulture, $"queue 0 takes at most {max} entries"));
        }
        r.Write32(QueueNum, QueueSize);
        _queue = AllocateDmaBuffer(4096);
        _data = AllocateDmaBuffer(4096, DmaAccess.DeviceWrites);
        _available = _used = 0;
        WriteAddress(QueueDescLow, QueueDescHigh, _queue.Iova);
        WriteAddress(QueueDriverLow, QueueDriverHigh, _queue.Iova + AvailableRing);
        WriteAddress(QueueDeviceLow, QueueDeviceHigh, _queue.Iova + UsedRing);
        r.Write32(QueueReady, 1);
        r.Write32(Status, Acknowledge | Driver | FeaturesOk | DriverOk);
    }

    private void WriteAddress(ulong low, ulong high, ulong address)
    {
        Registers.Write32(low, (uint)address);
        Registers.Write32(high, (uint)(address >> 32));
    }

    // The device writes the used index by DMA: read it fresh every time (virtio is little-endian, as x86).
    private static ushort UsedIndex(DmaBuffer queue) =>
        Volatile.Read(ref Unsafe.As<byte, ushort>(ref MemoryMarshal.GetReference(queue.Span[(UsedRing + 2)..])));

    private void Fail(string why)
    {
        Registers.Write32(Status, Failed);
        throw new VfioException($"Setting up virtio entropy device {Name} failed: {why}.");
    }
}

/// <summary>
/// Binds <see cref="VirtioRngDevice"/> to virtio-mmio transports: by ACPI id <c>LNRO0005</c> (x86 and
/// Arm servers, QEMU's microvm) or the device tree's <c>virtio,mmio</c>. A transport may carry another
/// kind of virtio device; the driver checks the device id when it opens.
/// </summary>
public sealed class VirtioRngDriver : PlatformDriver<VirtioRngDevice>
{
    /// <summary>Creates the driver.</summary>
    public VirtioRngDriver()
        : base("virtio-rng-mmio", "virtio,mmio") => AcpiIds = ["LNRO0005"];

    /// <inheritdoc/>
    protected override VirtioRngDevice CreateDevice(PlatformDeviceContext context) => new(context);
}
