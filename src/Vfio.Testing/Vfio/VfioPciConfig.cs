using System.Buffers.Binary;
using System.Numerics;

namespace Vfio.Testing;

/// <summary>
/// vfio-pci's view of a function's config space (drivers/vfio/pci/vfio_pci_config.c, Linux 6.1): what
/// the device file's config region shows instead of the device's own registers. The device itself is
/// a <see cref="PciDeviceModel"/>; everything here is what vfio-pci does to it.
/// </summary>
/// <remarks>
/// <list type="bullet">
/// <item>vfio_cap_init: the capability pointer and each next pointer skip the capabilities vfio-pci
/// hides (pci_cap_length is 0 for them, or the id is above PCI_CAP_ID_MAX); the status register's
/// capability-list bit is cleared when none is left. A hidden capability's bytes stay readable.</item>
/// <item>vfio_ecap_init: a hidden extended capability is skipped by its predecessor's next pointer; a
/// hidden first one keeps only its next pointer (id and version read as 0); with none left shown,
/// the header at 0x100 reads 0.</item>
/// <item>vfio_msi_config_write: the low byte of the MSI message control is virtual. It holds what the
/// device had when the device file was opened, then what user space wrote; enabling MSI through
/// VFIO_DEVICE_SET_IRQS does not show in it.</item>
/// </list>
/// These bits (vfio-pci's vconfig) are computed once from the device's capability lists, which are
/// fixed when its model is added to a kernel; reads take the device's bits and lay the virtual ones over them.
/// </remarks>
internal sealed class VfioPciConfig
{
    private readonly PciDeviceModel _device;

    // Per config byte: which bits vfio-pci answers itself (mask) and their values. Fixed after Init.
    private readonly byte[] _virtualMask;
    private readonly byte[] _virtualValue;

    // Guarded by the device's Gate: the MSI control's virtual low byte, and vdev->msi_qmax.
    private byte _msiVirtualControl;
    private int _msiQmax;

    /// <summary>vfio_config_init for the capability lists: the virtual bits, from the device's config space as laid out at seal.</summary>
    public VfioPciConfig(PciDeviceModel device, ReadOnlySpan<byte> config)
    {
        _device = device;
        byte[] view = config.ToArray();
        PresentCapabilities(view);
        if (device.IsExpress)
        {
            PresentExtendedCapabilities(view);
        }
        _virtualMask = new byte[view.Length];
        _virtualValue = view;
        for (int i = 0; i < view.Length; i++)
        {
            _virtualMask[i] = (byte)(view[i] ^ config[i]);
        }
    }

    /// <summary>True for a standard capability vfio-pci does not show (pci_cap_length is 0, or the id is above PCI_CAP_ID_MAX).</summary>
    public static bool IsHidden(byte id) => id is 0x04 or 0x06 or 0x0a or 0x0b or 0x0c or 0x0d or 0x0e or 0x0f or 0 or > 0x13;

    /// <summary>The extended capabilities vfio-pci keeps (pci_ext_cap_length is not 0 for them).</summary>
    public static bool IsShownExtended(ushort id) => id is 0x01 or 0x02 or 0x03 or 0x04 or 0x08 or 0x09 or 0x0b or 0x0d or 0x0e
        or 0x0f or 0x10 or 0x12 or 0x13 or 0x15 or 0x16 or 0x17 or 0x18 or 0x23;

    /// <summary>vfio_config_init at the first open: the MSI control's virtual byte starts as the device's.</summary>
    public void Open()
    {
        LockAssert.Held(_device.Gate);
        if (_device.MsiOffset != 0)
        {
            _msiVirtualControl = (byte)_device.ReadConfigRaw(_device.MsiOffset + 2, 1);
        }
    }

    /// <summary>A read of the config region (1, 2 or 4 bytes): the device's registers with the virtual bits laid over them.</summary>
    public uint Read(int offset, int size)
    {
        LockAssert.Held(_device.Gate);
        uint value = _device.ReadConfigThroughHook(offset, size);
        for (int i = 0; i < size; i++)
        {
            int shift = i * 8;
            uint mask = (uint)_virtualMask[offset + i] << shift;
            value = (value & ~mask) | (((uint)_virtualValue[offset + i] << shift) & mask);
        }
        int control = _device.MsiOffset + 2;
        if (_device.MsiOffset != 0 && control >= offset && control < offset + size)
        {
            int shift = (control - offset) * 8;
            value = (value & ~(0xffu << shift)) | ((uint)_msiVirtualControl << shift);
        }
        return value;
    }

    /// <summary>
    /// A write to the config region. vfio_msi_config_write: a write to the MSI control's low byte lands
    /// in the virtual byte; the kernel then writes it to the device with the enable bit cleared unless
    /// it has MSI on, and the enabled vector count limited to what it allocated. The rest of the
    /// capability is not writable. Other writes reach the device.
    /// </summary>
    public void Write(int offset, int size, uint value)
    {
        LockAssert.Held(_device.Gate);
        int control = _device.MsiOffset + 2;
        if (_device.MsiOffset == 0 || control < offset || control >= offset + size)
        {
            _device.WriteConfigThroughHook(offset, size, value);
            return;
        }
        _msiVirtualControl = (byte)(value >> ((control - offset) * 8));
        ushort hardware = (ushort)_device.ReadConfigThroughHook(control, 2);
        ushort flags = (ushort)((hardware & 0xff00) | _msiVirtualControl);
        if ((hardware & 1) == 0)
        {
            flags &= unchecked((ushort)~1);
        }
        if (((flags & 0x70) >> 4) > _msiQmax)
        {
            flags = (ushort)((flags & ~0x70) | (_msiQmax << 4));
        }
        _device.WriteConfigThroughHook(control, 2, flags);
    }

    /// <summary>
    /// The kernel enabling or disabling MSI or MSI-X in the device (vfio_msi_enable and vfio_msi_disable:
    /// pci_alloc_irq_vectors and pci_free_irq_vectors). Enabling MSI also sets the multiple message
    /// enable field for <paramref name="vectors"/> and remembers that count (msi_qmax) to limit what
    /// user space may enable.
    /// </summary>
    public void SetMessageInterrupts(int irqIndex, bool enabled, int vectors = 1)
    {
        lock (_device.Gate)
        {
            int offset = irqIndex == 1 ? _device.MsiOffset : _device.MsixOffset;
            if (offset == 0)
            {
                return;
            }
            ushort bit = irqIndex == 1 ? (ushort)1 : (ushort)0x8000;
            ushort control = (ushort)_device.ReadConfigRaw(offset + 2, 2);
            control = enabled ? (ushort)(control | bit) : (ushort)(control & ~bit);
            if (irqIndex == 1 && enabled)
            {
                _msiQmax = BitOperations.Log2(BitOperations.RoundUpToPowerOf2((uint)Math.Max(vectors, 1)));
                control = (ushort)((control & ~0x70) | (_msiQmax << 4));
            }
            _device.WriteConfigRaw(offset + 2, 2, control);
        }
    }

    // vfio_cap_init over the device's standard list.
    private static void PresentCapabilities(Span<byte> c)
    {
        var offsets = new List<int>();
        var seen = new HashSet<int>();
        for (int offset = (c[0x06] & 0x10) != 0 ? c[0x34] & ~3 : 0; offset >= 0x40 && seen.Add(offset); offset = c[offset + 1] & ~3)
        {
            offsets.Add(offset);
        }
        int pointer = 0x34;
        bool any = false;
        foreach (int offset in offsets)
        {
            if (IsHidden(c[offset]))
            {
                continue;
            }
            c[pointer] = (byte)offset;
            pointer = offset + 1;
            any = true;
        }
        c[pointer] = 0;
        c[0x06] = any ? (byte)(c[0x06] | 0x10) : (byte)(c[0x06] & ~0x10);
    }

    // vfio_ecap_init over the device's extended list from 0x100.
    private static void PresentExtendedCapabilities(Span<byte> c)
    {
        var list = new List<(int Offset, uint Header)>();
        var seen = new HashSet<int>();
        for (int offset = 0x100; offset >= 0x100 && offset + 4 <= c.Length && seen.Add(offset);)
        {
            uint raw = BinaryPrimitives.ReadUInt32LittleEndian(c[offset..]);
            if (raw == 0)
            {
                break;
            }
            list.Add((offset, raw));
            offset = (int)(raw >> 20) & ~3;
        }
        int previous = -1;
        bool shown = false;
        foreach (var (offset, raw) in list)
        {
            bool hidden = !IsShownExtended((ushort)raw);
            if (hidden && previous >= 0)
            {
                continue; // the device's own header stays; the predecessor's next pointer skips it
            }
            uint header = hidden ? raw & 0xfff0_0000 : raw;
            BinaryPrimitives.WriteUInt32LittleEndian(c[offset..], header);
            if (previous >= 0)
            {
                uint prev = BinaryPrimitives.ReadUInt32LittleEndian(c[previous..]);
                BinaryPrimitives.WriteUInt32LittleEndian(c[previous..], (prev & 0xf_ffff) | ((uint)offset << 20));
            }
            previous = offset;
            shown |= !hidden;
        }
        if (previous >= 0)
        {
            uint last = BinaryPrimitives.ReadUInt32LittleEndian(c[previous..]);
            BinaryPrimitives.WriteUInt32LittleEndian(c[previous..], last & 0xf_ffff);
        }
        if (!shown)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(c[0x100..], 0);
        }
    }
}
