namespace Vfio;

/// <summary>
/// The MSI capability's control register as the device file presents it. vfio-pci virtualizes MSI:
/// the kernel enables it and programs address and data when interrupts are wired with
/// <see cref="VfioDevice.EnableInterrupts"/>; writing these bits directly has no effect on the device.
/// </summary>
/// <param name="Offset">Where the capability starts in config space.</param>
/// <param name="Control">The message control register (capability offset 2).</param>
public sealed record MsiCapability(int Offset, ushort Control)
{
    /// <summary>MSI is enabled.</summary>
    public bool Enabled => (Control & 0x0001) != 0;

    /// <summary>How many vectors the function asks for (1, 2, 4, 8, 16 or 32).</summary>
    public int MultipleMessageCapable => 1 << ((Control >> 1) & 0x7);

    /// <summary>How many vectors are enabled (1, 2, 4, 8, 16 or 32).</summary>
    public int MultipleMessageEnable => 1 << ((Control >> 4) & 0x7);

    /// <summary>The function can send 64-bit message addresses.</summary>
    public bool Is64Bit => (Control & 0x0080) != 0;

    /// <summary>The capability has mask and pending bits per vector.</summary>
    public bool PerVectorMasking => (Control & 0x0100) != 0;

    /// <summary>The capability's length in bytes: 10 or 14 (32- or 64-bit), plus 10 with per-vector masking.</summary>
    public int Length => (Is64Bit ? 14 : 10) + (PerVectorMasking ? 10 : 0);
}

/// <summary>
/// The MSI-X capability as the device file presents it. vfio-pci virtualizes the enable and
/// function-mask bits: the kernel sets them when vectors are wired with <see cref="VfioDevice.EnableInterrupts"/>.
/// </summary>
/// <param name="Offset">Where the capability starts in config space.</param>
/// <param name="Control">The message control register (capability offset 2).</param>
/// <param name="Table">The table offset and BAR indicator register (capability offset 4).</param>
/// <param name="PendingBitArray">The PBA offset and BAR indicator register (capability offset 8).</param>
public sealed record MsixCapability(int Offset, ushort Control, uint Table, uint PendingBitArray)
{
    /// <summary>The number of table entries (vectors), 1 to 2048.</summary>
    public int TableSize => (Control & 0x07ff) + 1;

    /// <summary>MSI-X is enabled.</summary>
    public bool Enabled => (Control & 0x8000) != 0;

    /// <summary>All vectors are masked at function level.</summary>
    public bool FunctionMasked => (Control & 0x4000) != 0;

    /// <summary>The BAR holding the table.</summary>
    public int TableBar => (int)(Table & 0x7);

    /// <summary>The table's offset in its BAR.</summary>
    public uint TableOffset => Table & ~0x7u;

    /// <summary>The BAR holding the pending bit array.</summary>
    public int PendingBitArrayBar => (int)(PendingBitArray & 0x7);

    /// <summary>The pending bit array's offset in its BAR.</summary>
    public uint PendingBitArrayOffset => PendingBitArray & ~0x7u;
}

/// <summary>What a PCI Express function is (the device/port type field of its capability).</summary>
public enum PciExpressPortType
{
    /// <summary>PCI Express endpoint.</summary>
    Endpoint = 0x0,

    /// <summary>Legacy PCI Express endpoint.</summary>
    LegacyEndpoint = 0x1,

    /// <summary>Root port of a root complex.</summary>
    RootPort = 0x4,

    /// <summary>Upstream port of a switch.</summary>
    UpstreamSwitchPort = 0x5,

    /// <summary>Downstream port of a switch.</summary>
    DownstreamSwitchPort = 0x6,

    /// <summary>PCI Express to PCI/PCI-X bridge.</summary>
    PciExpressToPciBridge = 0x7,

    /// <summary>PCI/PCI-X to PCI Express bridge.</summary>
    PciToPciExpressBridge = 0x8,

    /// <summary>Root complex integrated endpoint.</summary>
    RootComplexIntegratedEndpoint = 0x9,

    /// <summary>Root complex event collector.</summary>
    RootComplexEventCollector = 0xa,
}

/// <summary>The PCI Express capability's registers as the device file presents them.</summary>
/// <param name="Offset">Where the capability starts in config space.</param>
/// <param name="Flags">The capabilities register (capability offset 2): version, device/port type.</param>
/// <param name="DeviceCapabilities">Device capabilities (offset 4).</param>
/// <param name="DeviceControl">Device control (offset 8).</param>
/// <param name="DeviceStatus">Device status (offset 0xa).</param>
/// <param name="LinkCapabilities">Link capabilities (offset 0xc); 0 where the function has no link registers.</param>
/// <param name="LinkStatus">Link status (offset 0x12); 0 where the function has no link registers.</param>
public sealed record PciExpressCapability(int Offset, ushort Flags, uint DeviceCapabilities, ushort DeviceControl, ushort DeviceStatus,
    uint LinkCapabilities, ushort LinkStatus)
{
    /// <summary>The capability's version (1 or 2).</summary>
    public int Version => Flags & 0xf;

    /// <summary>What the function is.</summary>
    public PciExpressPortType PortType => (PciExpressPortType)((Flags >> 4) & 0xf);

    /// <summary>The function supports function level reset (device capabilities bit 28).</summary>
    public bool SupportsFunctionLevelReset => (DeviceCapabilities & (1u << 28)) != 0;

    /// <summary>The largest TLP payload the function supports, in bytes (128 to 4096).</summary>
    public int MaxPayloadSizeSupported => 128 << (int)(DeviceCapabilities & 0x7);

    /// <summary>The link's current speed as the link status encodes it (1: 2.5 GT/s, 2: 5 GT/s, 3: 8 GT/s, ...; 0 unknown).</summary>
    public int LinkSpeed => LinkStatus & 0xf;

    /// <summary>The link's negotiated width in lanes (0 unknown).</summary>
    public int LinkWidth => (LinkStatus >> 4) & 0x3f;

    /// <summary>The largest speed the link supports, encoded as <see cref="LinkSpeed"/>.</summary>
    public int MaxLinkSpeed => (int)(LinkCapabilities & 0xf);

    /// <summary>The largest width the link supports, in lanes.</summary>
    public int MaxLinkWidth => (int)((LinkCapabilities >> 4) & 0x3f);
}

/// <summary>A PCI power state.</summary>
public enum PciPowerState
{
    /// <summary>Fully on.</summary>
    D0 = 0,

    /// <summary>Light sleep (optional).</summary>
    D1 = 1,

    /// <summary>Deeper sleep (optional).</summary>
    D2 = 2,

    /// <summary>Off, still powered (configuration space answers).</summary>
    D3Hot = 3,
}

/// <summary>The power management capability's registers as the device file presents them.</summary>
/// <param name="Offset">Where the capability starts in config space.</param>
/// <param name="Capabilities">Power management capabilities (capability offset 2).</param>
/// <param name="ControlStatus">Power management control/status (offset 4).</param>
public sealed record PowerManagementCapability(int Offset, ushort Capabilities, ushort ControlStatus)
{
    /// <summary>The capability's version (3 for PCI PM 1.2).</summary>
    public int Version => Capabilities & 0x7;

    /// <summary>The function supports D1.</summary>
    public bool SupportsD1 => (Capabilities & 0x0200) != 0;

    /// <summary>The function supports D2.</summary>
    public bool SupportsD2 => (Capabilities & 0x0400) != 0;

    /// <summary>The current power state.</summary>
    public PciPowerState PowerState => (PciPowerState)(ControlStatus & 0x3);

    /// <summary>
    /// The function keeps its state across D3hot to D0 (no soft reset); when clear, a D3hot to D0
    /// transition resets it, which the kernel can use as a reset method.
    /// </summary>
    public bool NoSoftReset => (ControlStatus & 0x0008) != 0;

    /// <summary>PME generation is enabled.</summary>
    public bool PmeEnabled => (ControlStatus & 0x0100) != 0;

    /// <summary>The function has signalled a power management event.</summary>
    public bool PmeStatus => (ControlStatus & 0x8000) != 0;
}
