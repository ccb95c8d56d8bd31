using System.Buffers.Binary;
using System.Security.Cryptography;

namespace Vfio.Testing;

/// <summary>
/// A virtio entropy device behind a virtio-mmio transport (version 2, the virtio 1.x register layout),
/// as QEMU's <c>-M microvm</c> machine describes one: an ACPI platform device <c>LNRO0005</c> with
/// one 0x200-byte register window (not page-aligned, so vfio-platform offers no mmap) and one
/// level-triggered interrupt, asserted while <c>InterruptStatus</c> is not zero. Its one virtqueue
/// (8 entries, split layout) takes device-writable buffers and fills them with random bytes; the
/// device reads and writes the rings and buffers by DMA, so in a no-IOMMU group it uses physical
/// addresses. Add it with <see cref="SimulatedKernel.AddPlatformDevice(string, PlatformDeviceModel, int, SimulatedGroupKind, string?)"/>.
/// </summary>
public sealed class VirtioMmioRngModel : PlatformDeviceModel
{
    /// <summary>The magic value at offset 0: "virt" in little-endian.</summary>
    public const uint Magic = 0x74726976;

    /// <summary>The virtio device id of an entropy source.</summary>
    public const uint EntropyDeviceId = 4;

    /// <summary>The size of the register window QEMU gives each virtio-mmio transport.</summary>
    public const ulong WindowSize = 0x200;

    /// <summary>The entries of the device's one virtqueue (QEMU's virtio-rng: 8).</summary>
    public const int QueueSize = 8;

    private const uint QemuVendorId = 0x554d4551; // "QEMU"
    private const ulong VersionOneFeature = 1UL << 32; // VIRTIO_F_VERSION_1
    private const uint StatusFeaturesOk = 8;
    private const ushort DescriptorNext = 1;
    private const ushort DescriptorWrite = 2;

    private uint _deviceFeaturesSelect;
    private uint _driverFeaturesSelect;
    private ulong _driverFeatures;
    private uint _status;
    private uint _interruptStatus;
    private uint _queueSelect;
    private uint _queueSize;
    private bool _queueReady;
    private ulong _descriptors;
    private ulong _available;
    private ulong _used;
    private ushort _lastAvailable;
    private ushort _usedIndex;

    /// <summary>Creates the transport with its register window and interrupt.</summary>
    public VirtioMmioRngModel()
    {
        AcpiHid = "LNRO0005";
        HasResetHandler = false; // no _RST in QEMU's DSDT: vfio-platform needs reset_required=0
        AddRegion(WindowSize, mappable: false);
        AddIrq(levelTriggered: true);
    }

    /// <summary>How many buffers the device has filled since its last reset.</summary>
    public int BuffersFilled { get; private set; }

    /// <inheritdoc/>
    protected override ulong ReadRegister(int region, ulong offset, int size)
    {
        if (size != 4)
        {
            return 0; // the transport answers 32-bit accesses only (QEMU logs and returns 0)
        }
        return offset switch
        {
            0x000 => Magic,
            0x004 => 2,
            0x008 => EntropyDeviceId,
            0x00c => QemuVendorId,
            0x010 => _deviceFeaturesSelect == 1 ? (uint)(VersionOneFeature >> 32) : 0,
            0x034 => _queueSelect == 0 ? 1024u : 0, // VIRTQUEUE_MAX_SIZE for a queue that exists
            0x044 => _queueSelect == 0 && _queueReady ? 1u : 0,
            0x060 => _interruptStatus,
            0x070 => _status,
            0x080 => (uint)_descriptors,
            0x084 => (uint)(_descriptors >> 32),
            0x090 => (uint)_available,
            0x094 => (uint)(_available >> 32),
            0x0a0 => (uint)_used,
            0x0a4 => (uint)(_used >> 32),
            0x0fc => 0, // ConfigGeneration; an entropy device has no configuration space
            _ => 0,
        };
    }

    /// <inheritdoc/>
    protected override void WriteRegister(int region, ulong offset, int size, ulong value)
    {
        if (size != 4)
        {
            return;
        }
        uint v = (uint)value;
        switch (offset)
        {
            case 0x014:
                _deviceFeaturesSelect = v;
                break;
            case 0x020:
                if (_driverFeaturesSelect < 2)
                {
                    int shift = (int)_driverFeaturesSelect * 32;
                    _driverFeatures = (_driverFeatures & ~(0xffffffffUL << shift)) | ((ulong)v << shift);
                }
                break;
            case 0x024:
                _driverFeaturesSelect = v;
                break;
            case 0x030:
                _queueSelect = v;
                break;
            case 0x038 when _queueSelect == 0:
                _queueSize = v;
                break;
            case 0x044 when _queueSelect == 0:
                _queueReady = v != 0;
                break;
            case 0x050 when v == 0:
                Process();
                break;
            case 0x064:
                _interruptStatus &= ~v;
                if (_interruptStatus == 0)
                {
                    LowerInterrupt(0);
                }
                break;
            case 0x070:
                if (v == 0)
                {
                    ResetTransport();
                }
                else
                {
                    // FEATURES_OK stays set only for features the device offers (VERSION_1 among them).
                    _status = (v & StatusFeaturesOk) != 0 && (_driverFeatures & ~VersionOneFeature) != 0 ? v & ~StatusFeaturesOk : v;
                }
                break;
            case 0x080 when _queueSelect == 0:
                _descriptors = (_descriptors & ~0xffffffffUL) | v;
                break;
            case 0x084 when _queueSelect == 0:
                _descriptors = (_descriptors & 0xffffffffUL) | ((ulong)v << 32);
                break;
            case 0x090 when _queueSelect == 0:
                _available = (_available & ~0xffffffffUL) | v;
                break;
            case 0x094 when _queueSelect == 0:
                _available = (_available & 0xffffffffUL) | ((ulong)v << 32);
                break;
            case 0x0a0 when _queueSelect == 0:
                _used = (_used & ~0xffffffffUL) | v;
                break;
            case 0x0a4 when _queueSelect == 0:
                _used = (_used & 0xffffffffUL) | ((ulong)v << 32);
                break;
        }
    }

    /// <inheritdoc/>
    protected override void OnReset()
    {
        base.OnReset();
        ResetTransport();
        BuffersFilled = 0;
    }

    private void ResetTransport()
    {
        _deviceFeaturesSelect = _driverFeaturesSelect = 0;
        _driverFeatures = 0;
        _status = 0;
        _queueSelect = _queueSize = 0;
        _queueReady = false;
        _descriptors = _available = _used = 0;
        _lastAvailable = _usedIndex = 0;
        if (_interruptStatus != 0)
        {
            _interruptStatus = 0;
            LowerInterrupt(0);
        }
    }

    // The queue was notified: every buffer made available since the last notification is filled
    // with random bytes and put in the used ring, then the interrupt is raised once.
    private void Process()
    {
        if (!_queueReady || _queueSize == 0 || _queueSize > 1024)
        {
            return;
        }
        Span<byte> index = stackalloc byte[2];
        if (!DmaRead(_available + 2, index))
        {
            return;
        }
        ushort availableIndex = BinaryPrimitives.ReadUInt16LittleEndian(index);
        bool any = false;
        Span<byte> entry = stackalloc byte[2];
        Span<byte> used = stackalloc byte[8];
        while (_lastAvailable != availableIndex)
        {
            if (!DmaRead(_available + 4 + (ulong)(_lastAvailable % _queueSize) * 2, entry))
            {
                return;
            }
            ushort head = BinaryPrimitives.ReadUInt16LittleEndian(entry);
            uint written = FillChain(head);
            BinaryPrimitives.WriteUInt32LittleEndian(used, head);
            BinaryPrimitives.WriteUInt32LittleEndian(used[4..], written);
            if (!DmaWrite(_used + 4 + (ulong)(_usedIndex % _queueSize) * 8, used))
            {
                return;
            }
            _usedIndex++;
            BinaryPrimitives.WriteUInt16LittleEndian(index, _usedIndex);
            if (!DmaWrite(_used + 2, index))
            {
                return;
            }
            _lastAvailable++;
            BuffersFilled++;
            any = true;
        }
        if (any)
        {
            _interruptStatus |= 1; // VIRTIO_MMIO_INT_VRING
            RaiseInterrupt(0);
        }
    }

    // Walks a descriptor chain, filling each device-writable buffer; returns the bytes written.
    private uint FillChain(ushort head)
    {
        uint written = 0;
        ushort at = head;
        Span<byte> descriptor = stackalloc byte[16];
        for (int hops = 0; hops < _queueSize; hops++)
        {
            if (at >= _queueSize || !DmaRead(_descriptors + (ulong)at * 16, descriptor))
            {
                break;
            }
            ulong address = BinaryPrimitives.ReadUInt64LittleEndian(descriptor);
            uint length = BinaryPrimitives.ReadUInt32LittleEndian(descriptor[8..]);
            ushort flags = BinaryPrimitives.ReadUInt16LittleEndian(descriptor[12..]);
            if ((flags & DescriptorWrite) != 0 && length > 0)
            {
                var bytes = new byte[Math.Min(length, 64 * 1024)];
                RandomNumberGenerator.Fill(bytes);
                if (!DmaWrite(address, bytes))
                {
                    break;
                }
                written += (uint)bytes.Length;
            }
            if ((flags & DescriptorNext) == 0)
            {
                break;
            }
            at = BinaryPrimitives.ReadUInt16LittleEndian(descriptor[14..]);
        }
        return written;
    }
}
