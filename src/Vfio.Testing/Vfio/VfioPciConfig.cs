using System.Numerics;

namespace Vfio.Testing;

/// <summary>
/// vfio-pci's view of a function's config space (drivers/vfio/pci/vfio_pci_config.c, Linux 6.1; 7.x
/// differs only in also showing designated vendor-specific extended capabilities): what the device
/// file's config region shows and does instead of the device's own registers. The device itself is a
/// <see cref="PciDeviceModel"/>; everything here is what vfio-pci does to it.
/// </summary>
/// <remarks>
/// <para>At each first open (vfio_config_init) vfio-pci maps config space byte by byte to the
/// capability that holds it and copies it (vconfig): the header; each capability of the standard
/// list it knows, for the length it knows or computes (a vendor-specific one's from its length byte;
/// a hidden one's bytes and the bytes no capability claims stay unmapped); the extended list. The
/// capability pointer and next pointers skip the hidden capabilities; a hidden first extended
/// capability keeps only its next pointer. PME support and the PME bits of power management are
/// cleared in the copy.</para>
/// <para>Every access is cut at dword and capability boundaries and goes through the permission table
/// of what it touches (VfioPciConfig.Permissions.cs): virtual bits come from the copy, the others
/// from the device; only writable bits are written, virtual ones to the copy. Unmapped bytes and
/// vendor-specific capabilities are written straight through; most other capabilities are read
/// only. Special cases: BARs are entirely virtual and answer sizing from the copy; the command
/// register's INTx disable is emulated (it masks INTx), and the memory and I/O bits are remembered;
/// the MSI control's low byte is virtual (enabling MSI through VFIO_DEVICE_SET_IRQS does not show
/// in it); a power state written to the PM control register is taken by vfio-pci (D3hot stops BAR
/// access); the FLR bit of PCI Express device control, and of Advanced Features control, resets the
/// function and reads 0; max payload and max read request are virtual (the device's read request
/// size follows, never below its payload size); MSI-X control is read only.</para>
/// </remarks>
internal sealed partial class VfioPciConfig
{
    private const int UnassignedMap = -1; // PCI_CAP_ID_INVALID
    private const int ExtendedMap = 0x100; // map value of an extended capability: this plus its id
    private const int CommandOffset = PciDeviceModel.CommandOffset;

    private readonly PciDeviceModel _device;

    // Built by Open, guarded by the device's Gate: pci_config_map, vconfig, the MSI table, rbar, bardirty.
    private int[] _map = [];
    private byte[] _vconfig = [];
    private Permissions? _msiPermissions;
    private readonly uint[] _rbar = new uint[7];
    private bool _barDirty;
    private bool _virqDisabled;
    private int _msiQmax;

    public VfioPciConfig(PciDeviceModel device)
    {
        _device = device;
    }

    /// <summary>__vfio_pci_memory_enabled's command half: memory decoding as vfio-pci's copy of the command register has it. The Gate is held.</summary>
    public bool MemoryEnabledLocked
    {
        get
        {
            LockAssert.Held(_device.Gate);
            return _vconfig.Length > 0 && (Get(_vconfig, CommandOffset, 2) & PciDeviceModel.CommandMemory) != 0;
        }
    }

    /// <summary>vfio_config_init at the first open. The Gate is held.</summary>
    public void Open()
    {
        LockAssert.Held(_device.Gate);
        int size = _device.ConfigSpaceSize;
        _map = new int[size];
        Array.Fill(_map, UnassignedMap);
        Array.Fill(_map, 0, 0, 64);
        _vconfig = new byte[size];
        _msiPermissions = null;
        _virqDisabled = false;
        Fill(0, 64);
        _barDirty = true;
        for (int i = 0; i < 6; i++)
        {
            _rbar[i] = Get(_vconfig, 0x10 + (4 * i), 4);
        }
        _rbar[6] = Get(_vconfig, 0x30, 4);
        bool extended = InitCapabilities();
        if (extended)
        {
            InitExtendedCapabilities();
        }
    }

    /// <summary>vfio_pci_config_rw: one access to the config region, cut into the pieces vfio_config_do_rw takes. The Gate is held.</summary>
    public long Access(int offset, Span<byte> data, bool write)
    {
        LockAssert.Held(_device.Gate);
        int done = 0;
        while (done < data.Length)
        {
            int pos = offset + done;
            int count = Math.Min(data.Length - done, RemainingInDword(pos));
            count = count >= 4 && pos % 4 == 0 ? 4 : count >= 2 && pos % 2 == 0 ? 2 : 1;
            var piece = data.Slice(done, count);
            var (permissions, start) = PermissionsAt(pos);
            if (write)
            {
                uint value = 0;
                for (int i = count - 1; i >= 0; i--)
                {
                    value = (value << 8) | piece[i];
                }
                Write(permissions, pos, count, pos - start, value);
            }
            else
            {
                uint value = Read(permissions, pos, count, pos - start);
                for (int i = 0; i < count; i++)
                {
                    piece[i] = (byte)(value >> (8 * i));
                }
            }
            done += count;
        }
        return done;
    }

    /// <summary>
    /// The kernel enabling or disabling MSI or MSI-X in the device (vfio_msi_enable and vfio_msi_disable:
    /// pci_alloc_irq_vectors and pci_free_irq_vectors). Enabling MSI also sets the multiple message
    /// enable field for <paramref name="vectors"/> and remembers that count (msi_qmax) to limit what
    /// user space may enable; disabling MSI-X masks every vector in the table.
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
            if (irqIndex == 2 && !enabled)
            {
                _device.MaskAllMsixVectorsLocked();
            }
        }
    }

    // ---- vfio_config_init ------------------------------------------------------------------------

    /// <summary>vfio_cap_init over the device's standard list; returns whether extended capabilities follow (vdev->extended_caps).</summary>
    private bool InitCapabilities()
    {
        bool extended = false;
        if ((ReadDevice(0x06, 2) & 0x10) == 0)
        {
            return false;
        }
        int pos = (int)ReadDevice(0x34, 1);
        int prev = 0x34;
        int caps = 0;
        for (int loops = (256 - 64) / 4; pos != 0 && loops-- > 0;)
        {
            int cap = (int)ReadDevice(pos, 1);
            int next = (int)ReadDevice(pos + 1, 1);
            int length = 0;
            if (cap != 0 && cap <= CapMax)
            {
                length = CapLength[cap];
                if (length == Variable)
                {
                    length = CapabilityLength(cap, pos, ref extended);
                }
            }
            if (length == 0)
            {
                _vconfig[prev] = (byte)next; // hidden: the previous pointer skips it
                pos = next;
                continue;
            }
            length = Math.Min(length, 256 - pos);
            Array.Fill(_map, cap, pos, length);
            Fill(pos, length);
            if (cap == 0x01)
            {
                // vfio_update_pm_vconfig_bytes: no PME for user space.
                Put(_vconfig, pos + 2, 2, Get(_vconfig, pos + 2, 2) & ~(uint)PmeSupportMask);
                Put(_vconfig, pos + 4, 2, Get(_vconfig, pos + 4, 2) & ~(uint)(PmeEnable | PmeStatus));
            }
            prev = pos + 1;
            pos = next;
            caps++;
        }
        if (caps == 0)
        {
            Put(_vconfig, 0x06, 2, Get(_vconfig, 0x06, 2) & ~0x10u);
        }
        return extended;
    }

    /// <summary>vfio_cap_len: the length of a capability whose length depends on its contents.</summary>
    private int CapabilityLength(int cap, int pos, ref bool extended)
    {
        switch (cap)
        {
            case 0x05:
                ushort flags = (ushort)ReadDevice(pos + 2, 2);
                int length = 10 + ((flags & 0x0080) != 0 ? 4 : 0) + ((flags & 0x0100) != 0 ? 10 : 0);
                _msiPermissions ??= MsiPermissions(length, flags);
                return length;
            case 0x07:
                bool version = ((ReadDevice(pos + 2, 2) >> 12) & 3) != 0;
                if (version && _device.ConfigSpaceSize > 256)
                {
                    extended = ReadDevice(0x100, 4) != 0;
                }
                return version ? 24 : 8;
            case 0x09:
                return (int)ReadDevice(pos + 2, 1);
            case 0x10:
                if (_device.ConfigSpaceSize > 256)
                {
                    extended = ReadDevice(0x100, 4) != 0;
                }
                ushort express = (ushort)ReadDevice(pos + 2, 2);
                bool integrated = ((express >> 4) & 0xf) == (int)PciExpressPortType.RootComplexIntegratedEndpoint;
                return (express & 0xf) == 1 ? (integrated ? 0xc : 20) : (integrated ? 0x2c : 0x32);
            case 0x08:
                return (ReadDevice(pos + 3, 1) & 0xe0) != 0 ? 24 : 28;
            case 0x12:
                return (ReadDevice(pos + 4, 1) & 0xf) == 0xf ? 16 : 8;
            default:
                return 0;
        }
    }

    /// <summary>vfio_ecap_init over the device's extended list from 0x100.</summary>
    private void InitExtendedCapabilities()
    {
        int size = _device.ConfigSpaceSize;
        int epos = 0x100;
        int prev = -1;
        int ecaps = 0;
        for (int loops = (size - 256) / 4; loops-- > 0 && epos >= 0x100 && epos + 4 <= size;)
        {
            uint header = ReadDevice(epos, 4);
            int ecap = (int)(header & 0xffff);
            int next = (int)(header >> 20) & 0xffc;
            int length = 0;
            bool hidden = false;
            if (ecap <= ExtCapMax61)
            {
                length = ExtCapLength[ecap];
                if (length == Variable)
                {
                    length = ExtendedCapabilityLength(ecap, epos);
                }
            }
            if (length == 0)
            {
                if (prev >= 0)
                {
                    // Not the first: the previous header's next pointer skips it.
                    Put(_vconfig, prev, 4, (Get(_vconfig, prev, 4) & ~(0xffcu << 20)) | ((uint)next << 20));
                    epos = next;
                    continue;
                }
                length = 4; // the first anchors the list: only its next pointer shows
                hidden = true;
            }
            length = Math.Min(length, size - epos);
            Array.Fill(_map, ExtendedMap + ecap, epos, length);
            Fill(epos, length);
            if (hidden)
            {
                Put(_vconfig, epos, 4, Get(_vconfig, epos, 4) & (0xffcu << 20));
            }
            else
            {
                ecaps++;
            }
            prev = epos;
            epos = next;
        }
        if (ecaps == 0)
        {
            Put(_vconfig, 0x100, 4, 0);
        }
    }

    /// <summary>vfio_ext_cap_len: the length of an extended capability whose length depends on its contents.</summary>
    private int ExtendedCapabilityLength(int ecap, int epos)
    {
        switch (ecap)
        {
            case 0x0b:
                return (int)(ReadDevice(epos + 4, 4) >> 20);
            case 0x02 or 0x09 or 0x08:
                uint cap1 = ReadDevice(epos + 4, 4);
                uint cap2 = ReadDevice(epos + 8, 4);
                int phases = (cap2 & 0x8) != 0 ? 128 : (cap2 & 0x4) != 0 ? 64 : (cap2 & 0x2) != 0 ? 32 : 0;
                int length = 0x10 + ((1 + (int)(cap1 & 7)) * 0x0c);
                return phases == 0 ? length : ((length + 15) & ~15) + (phases * 4 / 8);
            case 0x0d:
                byte acs = (byte)ReadDevice(epos + 4, 1);
                if ((acs & 0x20) == 0)
                {
                    return 8;
                }
                byte bits = (byte)ReadDevice(epos + 5, 1);
                return 8 + ((bits != 0 ? (bits + 31) & ~31 : 256) / 8);
            case 0x15:
                return 4 + ((int)((ReadDevice(epos + 8, 1) & 0xe0) >> 5) * 8);
            case 0x16:
                return 16 + (int)(ReadDevice(epos + 4, 1) & 0x1f) + 1;
            case 0x17:
                uint tph = ReadDevice(epos + 4, 4);
                return (tph & 0x600) == 0x200 ? 0xc + ((int)((tph & 0x07ff_0000) >> 16) * 2) + 2 : 0xc;
            default:
                return 0;
        }
    }

    /// <summary>vfio_fill_vconfig_bytes: the device's bytes into the copy.</summary>
    private void Fill(int offset, int length)
    {
        for (int i = 0; i < length; i++)
        {
            _vconfig[offset + i] = (byte)ReadDevice(offset + i, 1);
        }
    }

    // ---- vfio_config_do_rw -----------------------------------------------------------------------

    /// <summary>vfio_pci_cap_remaining_dword: how many bytes from <paramref name="pos"/> to the dword's end belong to the same capability.</summary>
    private int RemainingInDword(int pos)
    {
        int i = 1;
        while ((pos + i) % 4 != 0 && pos + i < _map.Length && _map[pos + i] == _map[pos])
        {
            i++;
        }
        return i;
    }

    /// <summary>The table for the byte at <paramref name="pos"/> and where its capability starts (vfio_find_cap_start).</summary>
    private (Permissions Table, int Start) PermissionsAt(int pos)
    {
        int id = _map[pos];
        if (id == UnassignedMap)
        {
            return (Unassigned, pos);
        }
        if (pos >= 0x100)
        {
            int ecap = id - ExtendedMap;
            return (ecap > ExtCapMax61 ? DirectReadOnly : ExtendedPermissions(ecap), CapabilityStart(pos, 0x100));
        }
        if (id == 0)
        {
            return (BasicHeader, 0);
        }
        var table = id == 0x05 ? _msiPermissions ?? DirectReadOnly : StandardPermissions(id);
        return (table, CapabilityStart(pos, 0x40));
    }

    private int CapabilityStart(int pos, int floor)
    {
        int id = _map[pos];
        while (pos - 1 >= floor && _map[pos - 1] == id)
        {
            pos--;
        }
        return pos;
    }

    private uint Read(Permissions p, int pos, int count, int offset) => p.Read switch
    {
        ReadKind.Raw => ReadDevice(pos, count),
        ReadKind.Direct => ReadDirect(pos, count, offset),
        ReadKind.Basic => ReadBasic(p, pos, count, offset),
        _ => ReadDefault(p, pos, count, offset),
    };

    private void Write(Permissions p, int pos, int count, int offset, uint value)
    {
        switch (p.WriteFn)
        {
            case WriteKind.None:
                return; // dropped
            case WriteKind.Raw:
                WriteDevice(pos, count, value);
                return;
            case WriteKind.Basic:
                WriteBasic(p, pos, count, offset, value);
                return;
            case WriteKind.PowerManagement:
                WriteDefault(p, pos, count, offset, value);
                if (offset == 4)
                {
                    _device.VfioPci.SetPowerStateLocked((PciPowerState)(value & PciDeviceModel.PmStateMask));
                }
                return;
            case WriteKind.Express:
                WriteExpress(p, pos, count, offset, value);
                return;
            case WriteKind.AdvancedFeatures:
                WriteAdvancedFeatures(p, pos, count, offset, value);
                return;
            case WriteKind.Msi:
                WriteMsi(p, pos, count, offset, value);
                return;
            default:
                WriteDefault(p, pos, count, offset, value);
                return;
        }
    }

    /// <summary>vfio_default_config_read: virtual bits from the copy, the rest from the device.</summary>
    private uint ReadDefault(Permissions p, int pos, int count, int offset)
    {
        uint value = Get(_vconfig, pos, count);
        uint virt = Get(p.Virt, offset, count);
        uint all = count == 4 ? uint.MaxValue : (1u << (count * 8)) - 1;
        if (virt != all)
        {
            value = (ReadDevice(pos, count) & ~virt) | (value & virt);
        }
        return value;
    }

    /// <summary>vfio_default_config_write: only writable bits; virtual ones to the copy, the others to the device.</summary>
    private void WriteDefault(Permissions p, int pos, int count, int offset, uint value)
    {
        uint write = Get(p.Write, offset, count);
        if (write == 0)
        {
            return;
        }
        uint virt = Get(p.Virt, offset, count);
        if ((write & virt) != 0)
        {
            uint copy = Get(_vconfig, pos, count);
            Put(_vconfig, pos, count, (copy & ~(write & virt)) | (value & write & virt));
        }
        if ((write & ~virt) != 0)
        {
            uint device = ReadDevice(pos, count);
            WriteDevice(pos, count, (device & ~(write & ~virt)) | (value & write & ~virt));
        }
    }

    /// <summary>vfio_direct_config_read: the device's bytes, but a capability's id-and-next (extended: header) from the copy.</summary>
    private uint ReadDirect(int pos, int count, int offset)
    {
        uint value = ReadDevice(pos, count);
        if (pos >= 0x100)
        {
            if (offset < 4)
            {
                value = Get(_vconfig, pos, count);
            }
        }
        else if (pos >= 0x40)
        {
            if (offset == 0 && count > 1)
            {
                value = (value & ~0xffffu) | Get(_vconfig, pos, 2);
            }
            else if (offset == 1)
            {
                value = (value & ~0xffu) | Get(_vconfig, pos, 1);
            }
        }
        return value;
    }

    /// <summary>vfio_basic_config_read: BARs answer sizing from the copy.</summary>
    private uint ReadBasic(Permissions p, int pos, int count, int offset)
    {
        if (IsBar(offset))
        {
            FixUpBars();
        }
        return ReadDefault(p, pos, count, offset);
    }

    /// <summary>vfio_basic_config_write: the command register's memory and I/O bits, INTx disable emulation, BAR sizing.</summary>
    private void WriteBasic(Permissions p, int pos, int count, int offset, uint value)
    {
        uint newCommand = 0;
        if (offset == CommandOffset)
        {
            uint physical = ReadDevice(CommandOffset, 2);
            uint virtual_ = Get(_vconfig, CommandOffset, 2);
            newCommand = value & 0xffff;
            bool newMem = (newCommand & PciDeviceModel.CommandMemory) != 0;
            bool newIo = (newCommand & PciDeviceModel.CommandIo) != 0;
            // A device that lost its decoding (and BARs) behind vfio-pci's back gets its BARs back before decoding is turned on.
            if ((newMem && (virtual_ & PciDeviceModel.CommandMemory) != 0 && (physical & PciDeviceModel.CommandMemory) == 0)
                || (newIo && (virtual_ & PciDeviceModel.CommandIo) != 0 && (physical & PciDeviceModel.CommandIo) == 0)
                || NeedBarRestore())
            {
                RestoreBars();
            }
        }
        WriteDefault(p, pos, count, offset, value);
        if (offset == CommandOffset)
        {
            const uint Decode = PciDeviceModel.CommandMemory | PciDeviceModel.CommandIo;
            Put(_vconfig, CommandOffset, 2, (Get(_vconfig, CommandOffset, 2) & ~Decode) | (newCommand & Decode));
        }
        if (offset is CommandOffset or CommandOffset + 1)
        {
            bool disabled = (Get(_vconfig, CommandOffset, 2) & PciDeviceModel.CommandIntxDisable) != 0;
            if (disabled != _virqDisabled)
            {
                // vfio_pci_intx_mask / unmask: INTx held back meanwhile, and the device's own bit follows (pci_intx).
                _virqDisabled = disabled;
                uint physical = ReadDevice(CommandOffset, 2);
                _device.WriteConfigRaw(CommandOffset, 2, disabled ? physical | PciDeviceModel.CommandIntxDisable : physical & ~(uint)PciDeviceModel.CommandIntxDisable);
                if (_device.Device is { } function)
                {
                    function.Kernel.SetVirqDisabled(function, disabled);
                }
            }
        }
        if (IsBar(offset))
        {
            _barDirty = true;
        }
    }

    private static bool IsBar(int offset) => (offset >= 0x10 && offset < 0x28) || (offset >= 0x30 && offset < 0x34);

    /// <summary>vfio_bar_fixup: the copy's BARs masked to their sizes with their flags; an unimplemented BAR and the ROM BAR read 0.</summary>
    private void FixUpBars()
    {
        if (!_barDirty)
        {
            return;
        }
        for (int i = 0; i < 6; i++)
        {
            int at = 0x10 + (4 * i);
            if (_device.BarAt(i) is not { } bar)
            {
                Put(_vconfig, at, 4, 0);
                continue;
            }
            ulong mask = ~(bar.Size - 1);
            Put(_vconfig, at, 4, (Get(_vconfig, at, 4) & (uint)mask) | PciDeviceModel.BarFlags(bar));
            if (bar.Kind == PciBarKind.Memory64)
            {
                Put(_vconfig, at + 4, 4, Get(_vconfig, at + 4, 4) & (uint)(mask >> 32));
                i++;
            }
        }
        Put(_vconfig, 0x30, 4, 0); // no expansion ROM
        _barDirty = false;
    }

    /// <summary>vfio_need_bar_restore: the device's BARs differ from what they were at the open.</summary>
    private bool NeedBarRestore()
    {
        for (int i = 0; i < 6; i++)
        {
            if (_rbar[i] != 0 && ReadDevice(0x10 + (4 * i), 4) != _rbar[i])
            {
                return true;
            }
        }
        return false;
    }

    /// <summary>vfio_bar_restore: the BARs as they were at the open, written back to the device.</summary>
    private void RestoreBars()
    {
        for (int i = 0; i < 6; i++)
        {
            WriteDevice(0x10 + (4 * i), 4, _rbar[i]);
        }
        WriteDevice(0x30, 4, _rbar[6]);
    }

    /// <summary>vfio_exp_config_write: FLR through device control resets the function; max read request follows the virtual value, floored at the payload size.</summary>
    private void WriteExpress(Permissions p, int pos, int count, int offset, uint value)
    {
        int control = pos - offset + 8;
        uint readRequest = Get(_vconfig, control, 2) & DevCtlReadRequest;
        WriteDefault(p, pos, count, offset, value);
        uint virtualControl = Get(_vconfig, control, 2);
        if ((virtualControl & DevCtlFlr) != 0)
        {
            Put(_vconfig, control, 2, virtualControl & ~(uint)DevCtlFlr);
            if ((ReadDevice(pos - offset + 4, 4) & PciDeviceModel.ExpressDevCapFlr) != 0)
            {
                TryResetFunction();
            }
        }
        virtualControl = Get(_vconfig, control, 2);
        if ((virtualControl & DevCtlReadRequest) != readRequest)
        {
            // pcie_set_readrq(max(requested, pcie_get_mps)).
            int requested = 128 << (int)((virtualControl & DevCtlReadRequest) >> 12);
            uint device = ReadDevice(control, 2);
            int payload = 128 << (int)((device & DevCtlPayload) >> 5);
            int size = Math.Min(Math.Max(requested, payload), 4096);
            uint encoded = (uint)(BitOperations.Log2((uint)size) - 7) << 12;
            WriteDevice(control, 2, (device & ~(uint)DevCtlReadRequest) | encoded);
        }
    }

    /// <summary>vfio_af_config_write: the FLR bit of Advanced Features control resets the function and reads 0.</summary>
    private void WriteAdvancedFeatures(Permissions p, int pos, int count, int offset, uint value)
    {
        int control = pos - offset + 4;
        WriteDefault(p, pos, count, offset, value);
        if ((_vconfig[control] & AfControlFlr) != 0)
        {
            _vconfig[control] &= unchecked((byte)~AfControlFlr);
            uint cap = ReadDevice(pos - offset + 3, 1);
            if ((cap & 0x03) == 0x03)
            {
                TryResetFunction();
            }
        }
    }

    /// <summary>
    /// vfio_msi_config_write: a write that reaches the message control lands in the copy; the kernel
    /// then writes it to the device with the enable bit cleared unless MSI is vfio-pci's interrupt
    /// type, and the enabled vector count limited to what it allocated.
    /// </summary>
    private void WriteMsi(Permissions p, int pos, int count, int offset, uint value)
    {
        WriteDefault(p, pos, count, offset, value);
        if (offset > 2 || offset + count < 2)
        {
            return;
        }
        int start = pos - offset;
        ushort flags = (ushort)Get(_vconfig, start + 2, 2);
        if (_device.Device is not { } function || function.Kernel.ActiveIrqIndexOf(function) != 1)
        {
            flags &= unchecked((ushort)~1);
        }
        if (((flags & 0x70) >> 4) > _msiQmax)
        {
            flags = (ushort)((flags & ~0x70) | (_msiQmax << 4));
        }
        Put(_vconfig, start + 2, 2, flags);
        WriteDevice(start + 2, 2, flags);
    }

    /// <summary>pci_try_reset_function from a config write (FLR); its result is not reported to the writer.</summary>
    private void TryResetFunction()
    {
        if (_device.Device is SimulatedPciDevice function)
        {
            function.Kernel.TryResetFunction(function);
        }
    }

    private uint ReadDevice(int offset, int count) => _device.ReadConfigThroughHook(offset, count);

    private void WriteDevice(int offset, int count, uint value) => _device.WriteConfigThroughHook(offset, count, value);
}
