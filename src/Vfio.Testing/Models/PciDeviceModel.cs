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
/// standard header, BAR sizing and a capability list (power management, MSI, MSI-X, PCI Express, and
/// any capability the model declares with its bytes), BARs whose registers are read and written
/// through <see cref="ReadBar"/> and <see cref="WriteBar"/> (plain memory unless overridden), an
/// MSI-X table and pending bit array, interrupts and DMA.
/// </summary>
/// <remarks>
/// <para>Define BARs, interrupts, identity and capabilities first. The definition is fixed, and config
/// space laid out, when the model is added to a kernel with
/// <see cref="SimulatedKernel.AddPciDevice(string, PciDeviceModel, int, string?)"/>, or earlier when the
/// model looks at its layout (<see cref="ConfigSpace"/>, <see cref="PciModelCapability.Offset"/>,
/// <see cref="FindCapability(byte)"/>). Config space as it is when the model joins a kernel is its
/// power-on state, which every reset of the device restores.</para>
/// <para>The model is the device alone. What vfio-pci does to it (the device file's regions and
/// interrupts, config space virtualisation, hidden capabilities, enabling it at the first open, when
/// the device is reset) is the simulated kernel's: Vfio/VfioPciCore.cs and Vfio/VfioPciConfig.cs, and
/// docs/device-models.md for model authors.</para>
/// </remarks>
public partial class PciDeviceModel : DeviceModel
{
    internal const int CommandOffset = 0x04;
    internal const ushort CommandIo = 0x1;
    internal const ushort CommandMemory = 0x2;
    internal const ushort CommandMaster = 0x4;
    internal const ushort CommandIntxDisable = 0x400;
    private const int MaxBackedBar = 64 << 20;

    private readonly Bar?[] _bars = new Bar?[6];
    private readonly byte[]?[] _barMemory = new byte[]?[6];
    private VfioPciCore? _vfioPci;
    private byte _interruptPin = 1;
    private int _msiVectors;
    private int _msixVectors;
    private int _msixBar;
    private ulong _msixTableOffset;
    private ulong? _msixPbaOffset;
    private bool _powerManagement = true;
    private bool _noSoftReset;
    private bool _functionLevelReset;
    private PciExpressPortType _expressPortType = PciExpressPortType.Endpoint;

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
            ThrowIfLaidOut();
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
            ThrowIfLaidOut();
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
            ThrowIfLaidOut();
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
            ThrowIfLaidOut();
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
            ThrowIfLaidOut();
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
            ThrowIfLaidOut();
            if (value is { } v && ((v & 7) != 0 || v > uint.MaxValue))
            {
                throw new ArgumentOutOfRangeException(nameof(value), value, "The MSI-X PBA offset is 8-byte aligned and fits 32 bits.");
            }
            _msixPbaOffset = value;
        }
    }

    /// <summary>
    /// Whether the function has a power management capability (true by default). With it, and with
    /// <see cref="PowerManagementNoSoftReset"/> clear, the kernel can reset the function by taking it
    /// to D3hot and back (its "pm" reset method). Without it the kernel has no such reset, as for
    /// QEMU's edu device.
    /// </summary>
    public bool HasPowerManagement
    {
        get => _powerManagement;
        set
        {
            ThrowIfLaidOut();
            _powerManagement = value;
        }
    }

    /// <summary>
    /// The power management capability's No_Soft_Reset bit (control/status bit 3): the function keeps
    /// its state when it returns from D3hot to D0, so the kernel cannot use that transition as a reset.
    /// False by default; QEMU's NVMe controller sets it.
    /// </summary>
    public bool PowerManagementNoSoftReset
    {
        get => _noSoftReset;
        set
        {
            ThrowIfLaidOut();
            _noSoftReset = value;
        }
    }

    /// <summary>Whether the PCI Express capability advertises function level reset (device capabilities bit 28). False by default.</summary>
    public bool FunctionLevelReset
    {
        get => _functionLevelReset;
        set
        {
            ThrowIfLaidOut();
            _functionLevelReset = value;
        }
    }

    /// <summary>
    /// What the PCI Express capability says the function is: an endpoint by default; a root complex
    /// integrated endpoint for a function on a root bus, as QEMU makes a PCI Express device plugged
    /// into q35's root bus (then vfio-pci shows the capability without its link registers).
    /// </summary>
    public PciExpressPortType ExpressPortType
    {
        get => _expressPortType;
        set
        {
            ThrowIfLaidOut();
            _expressPortType = value;
        }
    }

    /// <summary>The configuration space size: 4096 for PCI Express, 256 otherwise.</summary>
    public int ConfigSpaceSize => IsExpress ? 4096 : 256;

    /// <summary>The command register.</summary>
    public ushort Command => (ushort)ReadConfigRegister(CommandOffset, 2);

    /// <summary>Whether memory decoding is on (command bit 1); region reads and writes of memory BARs fail with EIO otherwise.</summary>
    public bool MemorySpaceEnabled => (Command & CommandMemory) != 0;

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

    /// <summary>Whether I/O decoding is on (command bit 0).</summary>
    public bool IoSpaceEnabled => (Command & CommandIo) != 0;

    /// <summary>Whether the function may master the bus (command bit 2); DMA faults otherwise.</summary>
    public bool BusMasterEnabled => (Command & CommandMaster) != 0;

    /// <summary>Whether MSI is enabled (the kernel enables it when the driver sets MSI triggers).</summary>
    public bool MsiEnabled => MsiOffset != 0 && (ReadConfigRegister(MsiOffset + 2, 2) & 1) != 0;

    /// <summary>Whether MSI-X is enabled (the kernel enables it when the driver sets MSI-X triggers).</summary>
    public bool MsixEnabled => MsixOffset != 0 && (ReadConfigRegister(MsixOffset + 2, 2) & 0x8000) != 0;

    /// <summary>The power state the function is in (power management control bits 1:0; D0 without the capability).</summary>
    public PciPowerState PowerState
    {
        get
        {
            lock (Gate)
            {
                return PowerStateLocked;
            }
        }
    }

    /// <summary>Declares BAR <paramref name="index"/>.</summary>
    /// <param name="index">The BAR number, 0 to 5 (a 64-bit BAR also takes the next one).</param>
    /// <param name="size">Its size: a power of two, at least 16 bytes (4 for I/O).</param>
    /// <param name="kind">The address space it decodes.</param>
    /// <param name="prefetchable">Whether the memory is prefetchable.</param>
    /// <param name="mappable">Whether user space may mmap it (VFIO_REGION_INFO_FLAG_MMAP); memory BARs only.</param>
    public void DefineBar(int index, ulong size, PciBarKind kind = PciBarKind.Memory32, bool prefetchable = false, bool mappable = true)
    {
        ThrowIfLaidOut();
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
        ThrowIfLaidOut();
        ArgumentNullException.ThrowIfNull(areas);
        var bar = _bars[index] ?? throw new InvalidOperationException($"BAR {index} is not defined.");
        bar.Sparse = [.. areas];
    }

    /// <summary>The size of BAR <paramref name="index"/>, 0 when it is not implemented.</summary>
    /// <param name="index">The BAR number.</param>
    public ulong BarSize(int index) => _bars[index]?.Size ?? 0;

    /// <summary>Reads the configuration space as the device sees it (no hooks, no vfio-pci view), for tests.</summary>
    /// <param name="offset">The byte offset.</param>
    /// <param name="size">1, 2 or 4.</param>
    public uint ReadConfigRegister(int offset, int size)
    {
        LayOut();
        lock (Gate)
        {
            return ReadConfigRaw(offset, size);
        }
    }

    /// <summary>
    /// Raises interrupt <paramref name="vector"/> the way the function is set up to signal: MSI-X when
    /// enabled, else MSI when enabled, else INTx. An INTx the kernel holds back (masked, or disabled in
    /// the command register) stays pending until it is let through, as a level-triggered line does.
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
        return RaiseInterrupt(0, 0);
    }

    /// <summary>Reads a BAR register. By default BARs are plain memory (bytes never written read as zero).</summary>
    /// <remarks>The MSI-X table and pending bit array are the model's own registers: accesses to them never reach this hook.</remarks>
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

    /// <summary>Reads configuration space (1, 2 or 4 bytes, naturally aligned, within one dword).</summary>
    /// <param name="offset">The byte offset.</param>
    /// <param name="size">1, 2 or 4.</param>
    protected virtual uint ReadConfig(int offset, int size) => (uint)ReadStore(Config, (ulong)offset, size);

    /// <summary>
    /// Writes configuration space: only writable bits change (command, cache line, latency timer,
    /// interrupt line, MSI/MSI-X control, address and data, power state, and the bits the model's
    /// declared capabilities made writable), and BARs answer sizing.
    /// </summary>
    /// <param name="offset">The byte offset.</param>
    /// <param name="size">1, 2 or 4.</param>
    /// <param name="value">The value.</param>
    protected virtual void WriteConfig(int offset, int size, uint value)
    {
        int dword = offset & ~3;
        int shift = (offset & 3) * 8;
        uint sizeMask = size == 4 ? uint.MaxValue : ((1u << (size * 8)) - 1) << shift;
        uint old = BinaryPrimitives.ReadUInt32LittleEndian(Config.AsSpan(dword));
        uint merged = (old & ~sizeMask) | ((value << shift) & sizeMask);
        if (dword >= 0x10 && dword < 0x28)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(Config.AsSpan(dword), SizedBar((dword - 0x10) / 4, merged));
            return;
        }
        uint writable = BinaryPrimitives.ReadUInt32LittleEndian(_writable.AsSpan(dword)) & sizeMask;
        BinaryPrimitives.WriteUInt32LittleEndian(Config.AsSpan(dword), (old & ~writable) | (merged & writable));
    }

    /// <summary>
    /// Puts the device back in its power-on state: config space as it was when the model joined the
    /// kernel, BAR memory zeroed, every MSI-X vector masked. Override it to reset the registers of your
    /// own device (call the base), or to keep state a reset does not clear on your hardware.
    /// </summary>
    protected override void OnReset()
    {
        _resetConfig.CopyTo(Config, 0);
        Array.Clear(_barMemory);
        ResetMsixTable();
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
            uint low = bar.Kind == PciBarKind.Io ? 0x3u : 0xfu;
            return (value & ~(uint)(bar.Size - 1) & ~low) | BarFlags(bar);
        }
        if (index > 0 && _bars[index - 1] is { Kind: PciBarKind.Memory64 } lower)
        {
            return value & ~(uint)((lower.Size - 1) >> 32);
        }
        return 0;
    }

    /// <summary>A BAR's low flag bits: I/O space, or memory with its type and prefetchable bit.</summary>
    internal static uint BarFlags(Bar bar) => bar.Kind switch
    {
        PciBarKind.Io => 1u,
        PciBarKind.Memory64 => 0x4u | (bar.Prefetchable ? 0x8u : 0),
        _ => bar.Prefetchable ? 0x8u : 0,
    };

    /// <summary>vfio-pci's handling of this function, once the model is in a kernel.</summary>
    internal VfioPciCore VfioPci => _vfioPci ?? throw new InvalidOperationException("The model is not in a kernel yet.");

    internal Bar? BarAt(int index) => _bars[index];

    /// <summary>The function's config registers as they are, past every hook: for the kernel's own accesses. The Gate is held.</summary>
    internal uint ReadConfigRaw(int offset, int size)
    {
        LockAssert.Held(Gate);
        return (uint)ReadStore(Config, (ulong)offset, size);
    }

    /// <summary>The kernel's own writes to the function's config registers (the PCI core's enable, MSI set-up), past the writable masks. The Gate is held.</summary>
    internal void WriteConfigRaw(int offset, int size, uint value)
    {
        LockAssert.Held(Gate);
        WriteStore(Config, (ulong)offset, size, value);
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

    /// <summary>pci_save_state's copy of config space. The Gate is held.</summary>
    internal byte[] SaveConfigLocked()
    {
        LockAssert.Held(Gate);
        return (byte[])Config.Clone();
    }

    /// <summary>pci_restore_state: config space back as saved. The Gate is held.</summary>
    internal void RestoreConfigLocked(byte[] saved)
    {
        LockAssert.Held(Gate);
        saved.CopyTo(Config, 0);
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

    /// <summary>vfio-pci's reset_works: a function reset worked when the device was opened.</summary>
    internal override bool ResetWorks => VfioPci.ResetWorks;

    internal override void ResetKeepingConfig() => VfioPci.ResetKeepingConfig();

    internal override void Seal()
    {
        if (Device is not null || _vfioPci is not null)
        {
            throw new InvalidOperationException("The model is already in use by a kernel.");
        }
        LayOut();
        _resetConfig = (byte[])Config.Clone();
        ResetMsixTable();
        _vfioPci = new VfioPciCore(this, new VfioPciConfig(this));
    }

    private protected override ulong ReadRegisterLocked(int region, ulong offset, int size)
    {
        LockAssert.Held(Gate);
        return TryReadMsix(region, offset, size, out ulong value) ? value : ReadBar(region, offset, size);
    }

    private protected override void WriteRegisterLocked(int region, ulong offset, int size, ulong value)
    {
        LockAssert.Held(Gate);
        if (!TryWriteMsix(region, offset, size, value))
        {
            WriteBar(region, offset, size, value);
        }
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
