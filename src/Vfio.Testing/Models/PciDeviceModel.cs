using System.Buffers.Binary;
using System.Numerics;

namespace Vfio.Testing;

/// <summary>The address space a PCI BAR decodes.</summary>
public enum PciBarKind
{
    /// <summary>32-bit memory space.</summary>
    Memory32,

    /// <summary>64-bit memory space; the BAR uses two registers (this index and the next).</summary>
    Memory64,

    /// <summary>I/O port space (never mappable).</summary>
    Io,
}

/// <summary>
/// A simulated PCI function: a configuration space (256 bytes, or 4096 for PCI Express) with the
/// standard header, BAR sizing and a capability list (power management, MSI, MSI-X, PCI Express),
/// BARs whose registers are read and written through <see cref="ReadBar"/> and <see cref="WriteBar"/>
/// (plain memory unless overridden), interrupts and DMA.
/// </summary>
/// <remarks>
/// <para>Define BARs, interrupt counts and identity before the model is added to a kernel with
/// <see cref="SimulatedKernel.AddPciDevice(string, PciDeviceModel, int, string?)"/>; they are fixed from then on.</para>
/// <para>The model is the device alone. What vfio-pci does to it (the device file's regions and
/// interrupts, config space virtualisation, hidden capabilities, enabling it at the first open) is
/// the simulated kernel's: Vfio/VfioPciCore.cs and Vfio/VfioPciConfig.cs.</para>
/// </remarks>
public class PciDeviceModel : DeviceModel
{
    internal const int CommandOffset = 0x04;
    internal const ushort CommandIo = 0x1;
    internal const ushort CommandMemory = 0x2;
    internal const ushort CommandMaster = 0x4;
    internal const ushort CommandIntxDisable = 0x400;
    private const int MaxBackedBar = 64 << 20;

    private readonly Bar?[] _bars = new Bar?[6];
    private readonly byte[]?[] _barMemory = new byte[]?[6];
    private byte[] _config = [];
    private byte[] _writable = [];
    private byte[] _resetConfig = [];
    private VfioPciCore? _vfioPci;
    private int _msiOffset;
    private int _pmOffset;
    private int _msixOffset;
    private bool _sealed;
    private byte _interruptPin = 1;
    private int _msiVectors;
    private int _msixVectors;
    private int _msixBar;
    private ulong _msixTableOffset;
    private ulong? _msixPbaOffset;
    private bool _powerManagement = true;
    private bool _functionLevelReset;
    private readonly List<(byte Id, int Length)> _extraCapabilities = [];
    private readonly List<(ushort Id, byte Version, int Length)> _extendedCapabilities = [];

    /// <summary>Creates a PCI function with the given identity.</summary>
    /// <param name="vendorId">The vendor id (config offset 0x00).</param>
    /// <param name="deviceId">The device id (config offset 0x02).</param>
    /// <param name="classCode">The 24-bit class code: base class, subclass, programming interface (e.g. 0x020000).</param>
    /// <param name="isExpress">True for a PCI Express function: 4 KiB config space, a PCI Express capability and the ERR IRQ.</param>
    public PciDeviceModel(ushort vendorId, ushort deviceId, uint classCode, bool isExpress = false)
    {
        VendorId = vendorId;
        DeviceId = deviceId;
        ClassCode = classCode & 0xff_ffff;
        IsExpress = isExpress;
    }

    /// <summary>The vendor id.</summary>
    public ushort VendorId { get; }

    /// <summary>The device id.</summary>
    public ushort DeviceId { get; }

    /// <summary>The 24-bit class code.</summary>
    public uint ClassCode { get; }

    /// <summary>Whether this is a PCI Express function.</summary>
    public bool IsExpress { get; }

    /// <summary>The subsystem vendor id.</summary>
    public ushort SubsystemVendorId { get; init; }

    /// <summary>The subsystem id.</summary>
    public ushort SubsystemId { get; init; }

    /// <summary>The revision id.</summary>
    public byte Revision { get; init; }

    /// <summary>The INTx pin (1 = INTA, 0 = no INTx). 1 by default.</summary>
    public byte InterruptPin
    {
        get => _interruptPin;
        set
        {
            ThrowIfSealed();
            ArgumentOutOfRangeException.ThrowIfGreaterThan(value, (byte)4);
            _interruptPin = value;
        }
    }

    /// <summary>The MSI vectors the function asks for (0, or a power of two up to 32); 0 means no MSI capability.</summary>
    public int MsiVectors
    {
        get => _msiVectors;
        set
        {
            ThrowIfSealed();
            if (value < 0 || value > 32 || (value != 0 && !BitOperations.IsPow2(value)))
            {
                throw new ArgumentOutOfRangeException(nameof(value), value, "MSI supports 1, 2, 4, 8, 16 or 32 vectors.");
            }
            _msiVectors = value;
        }
    }

    /// <summary>The MSI-X table size (0 to 2048); 0 means no MSI-X capability. The table lives in <see cref="MsixBar"/>.</summary>
    public int MsixVectors
    {
        get => _msixVectors;
        set
        {
            ThrowIfSealed();
            ArgumentOutOfRangeException.ThrowIfNegative(value);
            ArgumentOutOfRangeException.ThrowIfGreaterThan(value, 2048);
            _msixVectors = value;
        }
    }

    /// <summary>The BAR holding the MSI-X table (at <see cref="MsixTableOffset"/>) and pending bit array (after the table, 8-byte aligned, unless <see cref="MsixPbaOffset"/> says otherwise).</summary>
    public int MsixBar
    {
        get => _msixBar;
        set
        {
            ThrowIfSealed();
            ArgumentOutOfRangeException.ThrowIfNegative(value);
            ArgumentOutOfRangeException.ThrowIfGreaterThan(value, 5);
            _msixBar = value;
        }
    }

    /// <summary>Where the MSI-X table starts in <see cref="MsixBar"/> (8-byte aligned); 0 by default.</summary>
    public ulong MsixTableOffset
    {
        get => _msixTableOffset;
        set
        {
            ThrowIfSealed();
            if ((value & 7) != 0 || value > uint.MaxValue)
            {
                throw new ArgumentOutOfRangeException(nameof(value), value, "The MSI-X table offset is 8-byte aligned and fits 32 bits.");
            }
            _msixTableOffset = value;
        }
    }

    /// <summary>Where the MSI-X pending bit array starts in <see cref="MsixBar"/> (8-byte aligned); right after the table when null.</summary>
    public ulong? MsixPbaOffset
    {
        get => _msixPbaOffset;
        set
        {
            ThrowIfSealed();
            if (value is { } v && ((v & 7) != 0 || v > uint.MaxValue))
            {
                throw new ArgumentOutOfRangeException(nameof(value), value, "The MSI-X PBA offset is 8-byte aligned and fits 32 bits.");
            }
            _msixPbaOffset = value;
        }
    }

    /// <summary>
    /// Whether the function has a power management capability (true by default). Without it the
    /// kernel has no D3hot-to-D0 reset for the function, as for QEMU's edu device.
    /// </summary>
    public bool HasPowerManagement
    {
        get => _powerManagement;
        set
        {
            ThrowIfSealed();
            _powerManagement = value;
        }
    }

    /// <summary>Whether the PCI Express capability advertises function level reset (device capabilities bit 28). False by default.</summary>
    public bool FunctionLevelReset
    {
        get => _functionLevelReset;
        set
        {
            ThrowIfSealed();
            _functionLevelReset = value;
        }
    }

    /// <summary>
    /// Adds a standard capability with no behaviour (its body reads as zeros) after the built-in ones
    /// (power management, MSI, MSI-X, PCI Express). The device file, as vfio-pci presents it, does not
    /// show a capability vfio-pci does not virtualize (slot id, hot swap, debug port, CompactPCI CRC,
    /// hot-plug controller, bridge subsystem id, AGP 8x, secure device, enhanced allocation and any id
    /// above 0x14): the list skips it, though its bytes stay where they are.
    /// </summary>
    /// <param name="id">The capability id.</param>
    /// <param name="length">Its length in bytes, at least 2 (the header).</param>
    public void AddCapability(byte id, int length)
    {
        ThrowIfSealed();
        ArgumentOutOfRangeException.ThrowIfLessThan(length, 2);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(length, 0xc0);
        _extraCapabilities.Add((id, length));
    }

    /// <summary>
    /// Adds an extended capability (PCI Express functions only) with no behaviour; the extended list
    /// starts at 0x100 in the order added. The device file, as vfio-pci presents it, hides the ones vfio-pci
    /// does not virtualize (it knows AER, VC, serial number, power budgeting, MFVC, vendor specific,
    /// ACS, ARI, ATS, SR-IOV, multicast, PRI, resizable BAR, DPA, TPH, LTR and DVSEC): the list skips
    /// a hidden one, and a hidden first one becomes a header with id 0 that only links to the next.
    /// </summary>
    /// <param name="id">The extended capability id.</param>
    /// <param name="version">Its version (0 to 15).</param>
    /// <param name="length">Its length in bytes, a multiple of 4, at least 4 (the header).</param>
    public void AddExtendedCapability(ushort id, byte version, int length)
    {
        ThrowIfSealed();
        if (!IsExpress)
        {
            throw new InvalidOperationException("Only a PCI Express function has extended capabilities.");
        }
        ArgumentOutOfRangeException.ThrowIfGreaterThan(version, (byte)15);
        if (length < 4 || length % 4 != 0 || length > 0xf00)
        {
            throw new ArgumentOutOfRangeException(nameof(length), length, "An extended capability is a multiple of 4 bytes long, at least 4.");
        }
        _extendedCapabilities.Add((id, version, length));
    }

    /// <summary>The configuration space size: 4096 for PCI Express, 256 otherwise.</summary>
    public int ConfigSpaceSize => IsExpress ? 4096 : 256;

    /// <summary>The command register.</summary>
    public ushort Command => (ushort)ReadConfigRegister(CommandOffset, 2);

    /// <summary>Whether memory decoding is on (command bit 1); region reads and writes of memory BARs fail with EIO otherwise.</summary>
    public bool MemorySpaceEnabled => (Command & CommandMemory) != 0;

    /// <summary>The power state in the power management capability's PMCSR: 0 (D0) to 3 (D3hot); 0 without the capability.</summary>
    public int PowerState => _pmOffset == 0 ? 0 : (int)(ReadConfigRegister(_pmOffset + 4, 2) & 3);

    /// <summary>Whether vfio-pci lets a mapped access reach the BARs now (<see cref="VfioPciCore.MemoryEnabledLocked"/>).</summary>
    internal override bool MappedMemoryReachable
    {
        get
        {
            lock (Gate)
            {
                return VfioPci.MemoryEnabledLocked();
            }
        }
    }

    /// <summary>PMCSR's offset in config space (the power management capability + 4), 0 without the capability.</summary>
    internal int PmcsrOffset => _pmOffset == 0 ? 0 : _pmOffset + 4;

    /// <summary>Whether I/O decoding is on (command bit 0).</summary>
    public bool IoSpaceEnabled => (Command & CommandIo) != 0;

    /// <summary>Whether the function may master the bus (command bit 2); DMA faults otherwise.</summary>
    public bool BusMasterEnabled => (Command & CommandMaster) != 0;

    /// <summary>Whether MSI is enabled (the kernel enables it when the driver sets MSI triggers).</summary>
    public bool MsiEnabled => _msiOffset != 0 && (ReadConfigRegister(_msiOffset + 2, 2) & 1) != 0;

    /// <summary>Whether MSI-X is enabled (the kernel enables it when the driver sets MSI-X triggers).</summary>
    public bool MsixEnabled => _msixOffset != 0 && (ReadConfigRegister(_msixOffset + 2, 2) & 0x8000) != 0;

    /// <summary>Declares BAR <paramref name="index"/>.</summary>
    /// <param name="index">The BAR number, 0 to 5 (a 64-bit BAR also takes the next one).</param>
    /// <param name="size">Its size: a power of two, at least 16 bytes (4 for I/O).</param>
    /// <param name="kind">The address space it decodes.</param>
    /// <param name="prefetchable">Whether the memory is prefetchable.</param>
    /// <param name="mappable">Whether user space may mmap it (VFIO_REGION_INFO_FLAG_MMAP); memory BARs only.</param>
    public void DefineBar(int index, ulong size, PciBarKind kind = PciBarKind.Memory32, bool prefetchable = false, bool mappable = true)
    {
        ThrowIfSealed();
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(index, kind == PciBarKind.Memory64 ? 4 : 5);
        ulong min = kind == PciBarKind.Io ? 4UL : 16UL;
        if (size < min || !BitOperations.IsPow2(size) || (kind == PciBarKind.Memory32 && size > 1UL << 31) || (kind == PciBarKind.Io && size > 256))
        {
            throw new ArgumentOutOfRangeException(nameof(size), size, "A BAR's size is a power of two that its kind can decode.");
        }
        if (_bars[index] is not null || (kind == PciBarKind.Memory64 && _bars[index + 1] is not null) || (index > 0 && _bars[index - 1] is { Kind: PciBarKind.Memory64 }))
        {
            throw new InvalidOperationException($"BAR {index} is already defined.");
        }
        _bars[index] = new Bar(size, kind, prefetchable, mappable && kind != PciBarKind.Io);
    }

    /// <summary>Limits mmap of BAR <paramref name="index"/> to these areas and reports them in a sparse mmap capability.</summary>
    /// <param name="index">A BAR defined before.</param>
    /// <param name="areas">The mappable areas, page aligned.</param>
    public void DefineSparseMmap(int index, params SparseMmapArea[] areas)
    {
        ThrowIfSealed();
        ArgumentNullException.ThrowIfNull(areas);
        var bar = _bars[index] ?? throw new InvalidOperationException($"BAR {index} is not defined.");
        bar.Sparse = [.. areas];
    }

    /// <summary>The size of BAR <paramref name="index"/>, 0 when it is not implemented.</summary>
    /// <param name="index">The BAR number.</param>
    public ulong BarSize(int index) => _bars[index]?.Size ?? 0;

    /// <summary>Reads the configuration space as the device sees it (no hooks), for tests.</summary>
    /// <param name="offset">The byte offset.</param>
    /// <param name="size">1, 2 or 4.</param>
    public uint ReadConfigRegister(int offset, int size)
    {
        lock (Gate)
        {
            return ReadConfigRaw(offset, size);
        }
    }

    /// <summary>
    /// Raises interrupt <paramref name="vector"/> the way the function is set up to signal: MSI-X when
    /// enabled, else MSI when enabled, else INTx unless the command register disables it.
    /// </summary>
    /// <param name="vector">The MSI or MSI-X vector (ignored for INTx).</param>
    public bool SignalInterrupt(int vector = 0)
    {
        if (MsixEnabled)
        {
            return RaiseInterrupt(2, vector);
        }
        if (MsiEnabled)
        {
            return RaiseInterrupt(1, vector);
        }
        return (Command & CommandIntxDisable) == 0 && RaiseInterrupt(0, 0);
    }

    /// <summary>The raw configuration space, for subclasses that emulate registers of their own.</summary>
    protected Span<byte> ConfigSpace => _config;

    /// <summary>Reads a BAR register. By default BARs are plain memory (bytes never written read as zero).</summary>
    /// <param name="bar">The BAR number.</param>
    /// <param name="offset">The offset in the BAR.</param>
    /// <param name="size">1, 2, 4 or 8 bytes.</param>
    protected virtual ulong ReadBar(int bar, ulong offset, int size) => ReadStore(BarMemory(bar), offset, size);

    /// <summary>Writes a BAR register. By default BARs are plain memory.</summary>
    /// <param name="bar">The BAR number.</param>
    /// <param name="offset">The offset in the BAR.</param>
    /// <param name="size">1, 2, 4 or 8 bytes.</param>
    /// <param name="value">The value, in its low <paramref name="size"/> bytes.</param>
    protected virtual void WriteBar(int bar, ulong offset, int size, ulong value) => WriteStore(BarMemory(bar), offset, size, value);

    /// <summary>Reads configuration space (1, 2 or 4 bytes, naturally aligned).</summary>
    /// <param name="offset">The byte offset.</param>
    /// <param name="size">1, 2 or 4.</param>
    protected virtual uint ReadConfig(int offset, int size) => (uint)ReadStore(_config, (ulong)offset, size);

    /// <summary>
    /// Writes configuration space: only writable bits change (command, cache line, latency timer,
    /// interrupt line, MSI/MSI-X control, address and data, power state), and BARs answer sizing.
    /// </summary>
    /// <param name="offset">The byte offset.</param>
    /// <param name="size">1, 2 or 4.</param>
    /// <param name="value">The value.</param>
    protected virtual void WriteConfig(int offset, int size, uint value)
    {
        int dword = offset & ~3;
        int shift = (offset & 3) * 8;
        uint sizeMask = size == 4 ? uint.MaxValue : ((1u << (size * 8)) - 1) << shift;
        uint old = BinaryPrimitives.ReadUInt32LittleEndian(_config.AsSpan(dword));
        uint merged = (old & ~sizeMask) | ((value << shift) & sizeMask);
        if (dword >= 0x10 && dword < 0x28)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(_config.AsSpan(dword), SizedBar((dword - 0x10) / 4, merged));
            return;
        }
        uint writable = BinaryPrimitives.ReadUInt32LittleEndian(_writable.AsSpan(dword));
        BinaryPrimitives.WriteUInt32LittleEndian(_config.AsSpan(dword), (old & ~writable) | (merged & writable));
    }

    /// <inheritdoc/>
    protected override void OnReset()
    {
        _resetConfig.CopyTo(_config, 0);
        Array.Clear(_barMemory);
    }

    private byte[] BarMemory(int bar)
    {
        ulong size = Math.Min(_bars[bar]?.Size ?? 0, MaxBackedBar);
        return _barMemory[bar] ??= new byte[size];
    }

    private uint SizedBar(int index, uint value)
    {
        if (_bars[index] is { } bar)
        {
            uint flags = bar.Kind switch
            {
                PciBarKind.Io => 1u,
                PciBarKind.Memory64 => 0x4u | (bar.Prefetchable ? 0x8u : 0),
                _ => bar.Prefetchable ? 0x8u : 0,
            };
            uint low = bar.Kind == PciBarKind.Io ? 0x3u : 0xfu;
            return (value & ~(uint)(bar.Size - 1) & ~low) | flags;
        }
        if (index > 0 && _bars[index - 1] is { Kind: PciBarKind.Memory64 } lower)
        {
            return value & ~(uint)((lower.Size - 1) >> 32);
        }
        return 0;
    }

    private void ThrowIfSealed()
    {
        if (_sealed)
        {
            throw new InvalidOperationException("The model is in use by a kernel; define it before adding it.");
        }
    }

    internal override void Seal()
    {
        if (_sealed)
        {
            throw new InvalidOperationException("The model is already in use by a kernel.");
        }
        _sealed = true;
        _config = new byte[ConfigSpaceSize];
        _writable = new byte[ConfigSpaceSize];
        var c = _config.AsSpan();
        BinaryPrimitives.WriteUInt16LittleEndian(c[0x00..], VendorId);
        BinaryPrimitives.WriteUInt16LittleEndian(c[0x02..], DeviceId);
        c[0x08] = Revision;
        c[0x09] = (byte)ClassCode;
        c[0x0a] = (byte)(ClassCode >> 8);
        c[0x0b] = (byte)(ClassCode >> 16);
        BinaryPrimitives.WriteUInt16LittleEndian(c[0x2c..], SubsystemVendorId);
        BinaryPrimitives.WriteUInt16LittleEndian(c[0x2e..], SubsystemId);
        c[0x3d] = InterruptPin;
        Writable(CommandOffset, 2, CommandIo | CommandMemory | CommandMaster | 0x40 | 0x100 | CommandIntxDisable);
        Writable(0x0c, 2, 0xffff);
        Writable(0x3c, 1, 0xff);

        // BARs get addresses as firmware would assign them, each aligned to its size.
        ulong memory = 0xf000_0000;
        ulong io = 0xc000;
        for (int i = 0; i < 6; i++)
        {
            if (_bars[i] is not { } bar)
            {
                continue;
            }
            ref ulong next = ref bar.Kind == PciBarKind.Io ? ref io : ref memory;
            next = (next + bar.Size - 1) & ~(bar.Size - 1);
            uint lowValue = SizedBar(i, (uint)next);
            BinaryPrimitives.WriteUInt32LittleEndian(c[(0x10 + (4 * i))..], lowValue);
            next += bar.Size;
        }
        if (MsixVectors > 0)
        {
            ulong needed = Math.Max(PbaOffset + (ulong)(((MsixVectors + 63) / 64) * 8), MsixTableOffset + ((ulong)MsixVectors * 16));
            if (BarSize(MsixBar) < needed || _bars[MsixBar]!.Kind == PciBarKind.Io)
            {
                throw new InvalidOperationException($"BAR {MsixBar} must be a memory BAR of at least {needed} bytes for the MSI-X table and PBA.");
            }
        }

        // Capabilities: power management, then MSI, MSI-X, PCI Express and any added ones.
        var capabilities = new List<(byte Id, int Size)>();
        if (HasPowerManagement)
        {
            capabilities.Add((0x01, 8));
        }
        if (MsiVectors > 0)
        {
            capabilities.Add((0x05, 16));
        }
        if (MsixVectors > 0)
        {
            capabilities.Add((0x11, 12));
        }
        if (IsExpress)
        {
            capabilities.Add((0x10, 0x3c));
        }
        int builtIn = capabilities.Count;
        capabilities.AddRange(_extraCapabilities);
        var offsets = new int[capabilities.Count];
        int offset = 0x40;
        for (int i = 0; i < capabilities.Count; i++)
        {
            offsets[i] = offset;
            offset = (offset + capabilities[i].Size + 0xf) & ~0xf;
            if (offsets[i] + capabilities[i].Size > 0x100)
            {
                throw new InvalidOperationException("The capabilities do not fit in the 192 bytes of config space after the header.");
            }
        }
        for (int i = 0; i < capabilities.Count; i++)
        {
            var (id, _) = capabilities[i];
            offset = offsets[i];
            c[offset] = id;
            c[offset + 1] = (byte)(i == capabilities.Count - 1 ? 0 : offsets[i + 1]);
            if (i >= builtIn)
            {
                continue;
            }
            switch (id)
            {
                case 0x01:
                    _pmOffset = offset;
                    BinaryPrimitives.WriteUInt16LittleEndian(c[(offset + 2)..], 0x0003);
                    Writable(offset + 4, 2, 0x0003);
                    break;
                case 0x05:
                    _msiOffset = offset;
                    ushort mmc = (ushort)(BitOperations.Log2((uint)MsiVectors) << 1);
                    BinaryPrimitives.WriteUInt16LittleEndian(c[(offset + 2)..], (ushort)(0x80 | mmc));
                    Writable(offset + 2, 2, 0x71);
                    Writable(offset + 4, 4, 0xffff_fffc);
                    Writable(offset + 8, 4, 0xffff_ffff);
                    Writable(offset + 12, 2, 0xffff);
                    break;
                case 0x11:
                    _msixOffset = offset;
                    BinaryPrimitives.WriteUInt16LittleEndian(c[(offset + 2)..], (ushort)(MsixVectors - 1));
                    BinaryPrimitives.WriteUInt32LittleEndian(c[(offset + 4)..], (uint)MsixTableOffset | (uint)MsixBar);
                    BinaryPrimitives.WriteUInt32LittleEndian(c[(offset + 8)..], (uint)PbaOffset | (uint)MsixBar);
                    Writable(offset + 2, 2, 0xc000);
                    break;
                case 0x10:
                    BinaryPrimitives.WriteUInt16LittleEndian(c[(offset + 2)..], 0x0002); // version 2, endpoint
                    // Device capabilities: 128-byte payload, role-based error reporting, FLR if set.
                    BinaryPrimitives.WriteUInt32LittleEndian(c[(offset + 4)..], (1u << 15) | (FunctionLevelReset ? 1u << 28 : 0));
                    Writable(offset + 8, 2, 0xffff); // device control
                    // Link: 2.5 GT/s x1 supported and negotiated, as QEMU's endpoints report.
                    BinaryPrimitives.WriteUInt32LittleEndian(c[(offset + 0xc)..], 0x11);
                    BinaryPrimitives.WriteUInt16LittleEndian(c[(offset + 0x12)..], 0x11);
                    break;
            }
        }
        c[0x34] = (byte)(capabilities.Count > 0 ? offsets[0] : 0);
        c[0x06] = capabilities.Count > 0 ? (byte)(c[0x06] | 0x10) : (byte)(c[0x06] & ~0x10);
        if (IsExpress)
        {
            LayOutExtendedCapabilities(c);
        }
        _resetConfig = (byte[])_config.Clone();
        _vfioPci = new VfioPciCore(this, new VfioPciConfig(this, _config));
    }

    /// <summary>Lays the extended capabilities out from 0x100, each linked to the next, in the order added.</summary>
    private void LayOutExtendedCapabilities(Span<byte> c)
    {
        var list = _extendedCapabilities;
        int offset = 0x100;
        for (int i = 0; i < list.Count; i++)
        {
            var (id, version, length) = list[i];
            if (offset + length > ConfigSpaceSize)
            {
                throw new InvalidOperationException("The extended capabilities do not fit in 4 KiB of config space.");
            }
            int next = i == list.Count - 1 ? 0 : offset + ((length + 7) & ~7);
            BinaryPrimitives.WriteUInt32LittleEndian(c[offset..], id | ((uint)version << 16) | ((uint)next << 20));
            offset = next;
        }
    }

    private ulong PbaOffset => MsixPbaOffset ?? ((MsixTableOffset + ((ulong)MsixVectors * 16) + 7) & ~7UL);

    private void Writable(int offset, int size, uint mask)
    {
        for (int i = 0; i < size; i++)
        {
            _writable[offset + i] = (byte)(mask >> (8 * i));
        }
    }

    /// <summary>Where the MSI capability is (0: none).</summary>
    internal int MsiOffset => _msiOffset;

    /// <summary>Where the MSI-X capability is (0: none).</summary>
    internal int MsixOffset => _msixOffset;

    /// <summary>vfio-pci's handling of this function, once the model is in a kernel.</summary>
    internal VfioPciCore VfioPci => _vfioPci ?? throw new InvalidOperationException("The model is not in a kernel yet.");

    internal Bar? BarAt(int index) => _bars[index];

    /// <summary>The function's config registers as they are, past every hook: for the kernel's own accesses. The Gate is held.</summary>
    internal uint ReadConfigRaw(int offset, int size)
    {
        LockAssert.Held(Gate);
        return (uint)ReadStore(_config, (ulong)offset, size);
    }

    /// <summary>The kernel's own writes to the function's config registers (the PCI core's enable, MSI set-up), past the writable masks. The Gate is held.</summary>
    internal void WriteConfigRaw(int offset, int size, uint value)
    {
        LockAssert.Held(Gate);
        WriteStore(_config, (ulong)offset, size, value);
    }

    /// <summary>A config access through the model's hooks, as a config cycle from the kernel reaches the device. The Gate is held.</summary>
    internal uint ReadConfigThroughHook(int offset, int size)
    {
        LockAssert.Held(Gate);
        return ReadConfig(offset, size);
    }

    /// <inheritdoc cref="ReadConfigThroughHook"/>
    internal void WriteConfigThroughHook(int offset, int size, uint value)
    {
        LockAssert.Held(Gate);
        WriteConfig(offset, size, value);
    }

    /// <summary>pci_dev_save_and_disable's copy of config space. The Gate is held.</summary>
    internal byte[] SaveConfigLocked()
    {
        LockAssert.Held(Gate);
        return (byte[])_config.Clone();
    }

    /// <summary>pci_dev_restore: config space back as saved. The Gate is held.</summary>
    internal void RestoreConfigLocked(byte[] saved)
    {
        LockAssert.Held(Gate);
        saved.CopyTo(_config, 0);
    }

    // The device file's view of the function is vfio-pci's (Vfio/VfioPciCore.cs).

    internal override uint InfoFlags => VfioPciCore.InfoFlags;

    internal override int RegionCount => VfioPciCore.RegionCount;

    internal override int IrqIndexCount => VfioPciCore.IrqIndexCount;

    internal override bool HasRegion(int index) => VfioPciCore.HasRegion(index);

    internal override RegionDescriptor DescribeRegion(int index) => VfioPci.DescribeRegion(index);

    internal override bool DescribeIrq(int index, out uint flags, out int count) => VfioPci.DescribeIrq(index, out flags, out count);

    internal override int RefusePastEnd(int index) => VfioPciCore.RefusePastEnd(index);

    internal override long AccessRegion(int index, ulong offset, Span<byte> data, bool write) => VfioPci.AccessRegion(index, offset, data, write);

    internal override void Enable() => VfioPci.Enable();

    internal override void Disable() => VfioPci.Disable();

    internal override void ResetKeepingConfig() => VfioPci.ResetKeepingConfig();

    private protected override ulong ReadRegisterLocked(int region, ulong offset, int size)
    {
        LockAssert.Held(Gate);
        return ReadBar(region, offset, size);
    }

    private protected override void WriteRegisterLocked(int region, ulong offset, int size, ulong value)
    {
        LockAssert.Held(Gate);
        WriteBar(region, offset, size, value);
    }

    internal sealed class Bar(ulong size, PciBarKind kind, bool prefetchable, bool mappable)
    {
        public ulong Size { get; } = size;

        public PciBarKind Kind { get; } = kind;

        public bool Prefetchable { get; } = prefetchable;

        public bool Mappable { get; } = mappable;

        public SparseMmapArea[]? Sparse { get; set; }
    }
}
