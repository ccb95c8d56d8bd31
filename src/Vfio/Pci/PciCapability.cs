namespace Vfio;

/// <summary>A standard PCI capability's id (the first byte of its entry in the list that starts at 0x34).</summary>
public enum PciCapabilityId : byte
{
    /// <summary>Power management (0x01).</summary>
    PowerManagement = 0x01,

    /// <summary>Accelerated graphics port (0x02).</summary>
    Agp = 0x02,

    /// <summary>Vital product data (0x03).</summary>
    VitalProductData = 0x03,

    /// <summary>Slot identification, bridges only (0x04).</summary>
    SlotId = 0x04,

    /// <summary>Message signalled interrupts (0x05).</summary>
    Msi = 0x05,

    /// <summary>CompactPCI hot swap (0x06).</summary>
    HotSwap = 0x06,

    /// <summary>PCI-X (0x07).</summary>
    PciX = 0x07,

    /// <summary>HyperTransport (0x08).</summary>
    HyperTransport = 0x08,

    /// <summary>Vendor specific (0x09).</summary>
    VendorSpecific = 0x09,

    /// <summary>Debug port (0x0a).</summary>
    DebugPort = 0x0a,

    /// <summary>CompactPCI central resource control (0x0b).</summary>
    CompactPciCrc = 0x0b,

    /// <summary>PCI standard hot-plug controller (0x0c).</summary>
    HotPlug = 0x0c,

    /// <summary>Bridge subsystem vendor id (0x0d).</summary>
    SubsystemVendorId = 0x0d,

    /// <summary>AGP 8x (0x0e).</summary>
    Agp3 = 0x0e,

    /// <summary>Secure device (0x0f).</summary>
    SecureDevice = 0x0f,

    /// <summary>PCI Express (0x10).</summary>
    PciExpress = 0x10,

    /// <summary>MSI-X (0x11).</summary>
    MsiX = 0x11,

    /// <summary>SATA data/index configuration (0x12).</summary>
    Sata = 0x12,

    /// <summary>Advanced features: function level reset for conventional PCI (0x13).</summary>
    AdvancedFeatures = 0x13,

    /// <summary>Enhanced allocation (0x14).</summary>
    EnhancedAllocation = 0x14,
}

/// <summary>A PCI Express extended capability's id (the low 16 bits of its header, in the list that starts at 0x100).</summary>
public enum PciExtendedCapabilityId : ushort
{
    /// <summary>Advanced error reporting (0x0001).</summary>
    AdvancedErrorReporting = 0x0001,

    /// <summary>Virtual channel (0x0002).</summary>
    VirtualChannel = 0x0002,

    /// <summary>Device serial number (0x0003).</summary>
    SerialNumber = 0x0003,

    /// <summary>Power budgeting (0x0004).</summary>
    PowerBudgeting = 0x0004,

    /// <summary>Multi-function virtual channel (0x0008).</summary>
    MultiFunctionVirtualChannel = 0x0008,

    /// <summary>Virtual channel, when MFVC is also present (0x0009).</summary>
    VirtualChannel9 = 0x0009,

    /// <summary>Vendor specific (0x000b).</summary>
    VendorSpecific = 0x000b,

    /// <summary>Access control services (0x000d).</summary>
    AccessControlServices = 0x000d,

    /// <summary>Alternative routing-id interpretation (0x000e).</summary>
    AlternativeRoutingId = 0x000e,

    /// <summary>Address translation services (0x000f).</summary>
    AddressTranslationServices = 0x000f,

    /// <summary>Single root I/O virtualization (0x0010).</summary>
    SingleRootIov = 0x0010,

    /// <summary>Multicast (0x0012).</summary>
    Multicast = 0x0012,

    /// <summary>Page request interface (0x0013).</summary>
    PageRequest = 0x0013,

    /// <summary>Resizable BAR (0x0015).</summary>
    ResizableBar = 0x0015,

    /// <summary>Dynamic power allocation (0x0016).</summary>
    DynamicPowerAllocation = 0x0016,

    /// <summary>TLP processing hints (0x0017).</summary>
    TlpProcessingHints = 0x0017,

    /// <summary>Latency tolerance reporting (0x0018).</summary>
    LatencyToleranceReporting = 0x0018,

    /// <summary>Secondary PCI Express (0x0019).</summary>
    SecondaryPciExpress = 0x0019,

    /// <summary>Process address space id (0x001b).</summary>
    ProcessAddressSpaceId = 0x001b,

    /// <summary>Downstream port containment (0x001d).</summary>
    DownstreamPortContainment = 0x001d,

    /// <summary>L1 PM substates (0x001e).</summary>
    L1PmSubstates = 0x001e,

    /// <summary>Precision time measurement (0x001f).</summary>
    PrecisionTimeMeasurement = 0x001f,

    /// <summary>Designated vendor specific (0x0023).</summary>
    DesignatedVendorSpecific = 0x0023,
}

/// <summary>An entry of the standard capability list, as the device file presents it.</summary>
/// <param name="Id">The capability's id (values outside <see cref="PciCapabilityId"/>'s names are possible).</param>
/// <param name="Offset">Where the capability starts in config space.</param>
public readonly record struct PciCapability(PciCapabilityId Id, int Offset);

/// <summary>An entry of the extended capability list (config space from 0x100, PCI Express only).</summary>
/// <param name="Id">The capability's id (values outside <see cref="PciExtendedCapabilityId"/>'s names are possible).</param>
/// <param name="Version">The capability's version (4 bits).</param>
/// <param name="Offset">Where the capability starts in config space.</param>
public readonly record struct PciExtendedCapability(PciExtendedCapabilityId Id, int Version, int Offset);

/// <summary>Bits of the command register (config offset 0x04).</summary>
[Flags]
public enum PciCommand : ushort
{
    /// <summary>No bit.</summary>
    None = 0,

    /// <summary>I/O space decoding.</summary>
    IoSpace = 1 << 0,

    /// <summary>Memory space decoding: the BARs answer (vfio-pci refuses BAR reads and writes without it).</summary>
    MemorySpace = 1 << 1,

    /// <summary>Bus mastering: the device may DMA and send MSIs.</summary>
    BusMaster = 1 << 2,

    /// <summary>Memory write and invalidate.</summary>
    MemoryWriteInvalidate = 1 << 4,

    /// <summary>Parity error response.</summary>
    ParityErrorResponse = 1 << 6,

    /// <summary>SERR# enable.</summary>
    SerrEnable = 1 << 8,

    /// <summary>INTx emulation disabled.</summary>
    InterruptDisable = 1 << 10,
}

/// <summary>The standard configuration header (type 0) as the device file presents it.</summary>
/// <param name="VendorId">Vendor id (0x00).</param>
/// <param name="DeviceId">Device id (0x02).</param>
/// <param name="Command">Command register (0x04).</param>
/// <param name="Status">Status register (0x06).</param>
/// <param name="RevisionId">Revision id (0x08).</param>
/// <param name="ClassCode">24-bit class code (0x09): base class, subclass, programming interface.</param>
/// <param name="HeaderType">Header type (0x0e), bit 7 set for a multi-function device.</param>
/// <param name="SubsystemVendorId">Subsystem vendor id (0x2c).</param>
/// <param name="SubsystemId">Subsystem id (0x2e).</param>
/// <param name="CapabilitiesPointer">Offset of the first capability (0x34), 0 when there is none.</param>
/// <param name="InterruptPin">Interrupt pin (0x3d): 0 none, 1 INTA to 4 INTD.</param>
public sealed record PciConfigHeader(ushort VendorId, ushort DeviceId, PciCommand Command, ushort Status, byte RevisionId,
    uint ClassCode, byte HeaderType, ushort SubsystemVendorId, ushort SubsystemId, byte CapabilitiesPointer, byte InterruptPin)
{
    /// <summary>The status register says there is a capability list.</summary>
    public bool HasCapabilityList => (Status & PciConfig.StatusCapabilityList) != 0;

    /// <summary>The function is part of a multi-function device.</summary>
    public bool IsMultiFunction => (HeaderType & 0x80) != 0;
}
