namespace Vfio.Testing;

// vfio-pci's permission tables (vfio_pci_init_perm_bits and init_pci_cap_msi_perm, Linux 6.1): for
// each capability, which bits user space reads from vfio-pci's copy (virt) rather than the device,
// which bits it may write (write), and the read and write functions that apply.
internal sealed partial class VfioPciConfig
{
    // Standard capability ids and lengths (pci_cap_length: 0 hides, 0xff is computed).
    private const int CapMax = 0x14; // PCI_CAP_ID_MAX (enhanced allocation), not itself known
    private const int ExtCapMax61 = 0x2e; // PCI_EXT_CAP_ID_MAX in 6.1 (DOE)
    private const byte Variable = 0xff;

    private static readonly byte[] CapLength = Table(CapMax + 1,
        (0x00, 64), (0x01, 8), (0x02, 12), (0x03, 8), (0x05, Variable), (0x07, Variable), (0x08, Variable), (0x09, Variable),
        (0x10, Variable), (0x11, 12), (0x12, Variable), (0x13, 6));

    private static readonly ushort[] ExtCapLength = ExtTable(ExtCapMax61 + 1,
        (0x01, 0x2c), (0x02, Variable), (0x03, 12), (0x04, 0x10), (0x08, Variable), (0x09, Variable), (0x0b, Variable),
        (0x0d, Variable), (0x0e, 8), (0x0f, 8), (0x10, 0x40), (0x12, 40), (0x13, 16), (0x15, Variable), (0x16, Variable),
        (0x17, Variable), (0x18, 8));

    private enum ReadKind
    {
        Default,
        Direct,
        Raw,
        Basic,
    }

    private enum WriteKind
    {
        None,
        Default,
        Raw,
        Basic,
        PowerManagement,
        Express,
        AdvancedFeatures,
        Msi,
    }

    /// <summary>struct perm_bits: per byte of a capability, its virtual and writable bits, and the functions that apply.</summary>
    private sealed class Permissions(int size, ReadKind read, WriteKind write)
    {
        public byte[] Virt { get; } = new byte[(size + 3) & ~3];

        public byte[] Write { get; } = new byte[(size + 3) & ~3];

        public ReadKind Read { get; } = read;

        public WriteKind WriteFn { get; } = write;

        public Permissions Set(int offset, int size, uint virt, uint write)
        {
            Put(Virt, offset, size, virt);
            Put(Write, offset, size, write);
            return this;
        }
    }

    private const uint AllVirt = 0xffff_ffff;
    private const uint AllWrite = 0xffff_ffff;

    // Read-only, straight from the device but for the capability header (direct_ro_perms, and the default for a capability with no table).
    private static readonly Permissions DirectReadOnly = new(0, ReadKind.Direct, WriteKind.None);

    // Bytes no capability claims: read and written raw (unassigned_perms; some devices hide registers there).
    private static readonly Permissions Unassigned = new(0, ReadKind.Raw, WriteKind.Raw);

    // A vendor-specific capability, standard or extended: read as the device has it, written straight through.
    private static readonly Permissions VendorSpecific = new(0, ReadKind.Direct, WriteKind.Raw);

    private static readonly Permissions BasicHeader = new Permissions(64, ReadKind.Basic, WriteKind.Basic)
        .Set(0x00, 2, AllVirt, 0) // vendor id: virtualized for SR-IOV functions
        .Set(0x02, 2, AllVirt, 0) // device id
        .Set(0x04, 2, PciDeviceModel.CommandIntxDisable, AllWrite) // INTx disable emulated
        .Set(0x06, 2, 0x0010, 0) // the capability list bit; the rest of status reads through, nothing is written
        .Set(0x0c, 1, 0, AllWrite) // cache line size
        .Set(0x0d, 1, 0, AllWrite) // latency timer
        .Set(0x0f, 1, 0, AllWrite) // BIST
        .Set(0x10, 4, AllVirt, AllWrite).Set(0x14, 4, AllVirt, AllWrite).Set(0x18, 4, AllVirt, AllWrite)
        .Set(0x1c, 4, AllVirt, AllWrite).Set(0x20, 4, AllVirt, AllWrite).Set(0x24, 4, AllVirt, AllWrite)
        .Set(0x30, 4, AllVirt, AllWrite) // every BAR and the ROM BAR are virtual
        .Set(0x34, 1, AllVirt, 0) // the capability pointer
        .Set(0x3c, 1, AllVirt, AllWrite) // interrupt line
        .Set(0x3d, 1, AllVirt, 0); // interrupt pin, to hide INTx

    private const ushort PmeSupportMask = 0xf800;
    private const ushort PmeEnable = 0x0100;
    private const ushort PmeStatus = 0x8000;

    private static readonly Permissions PowerManagement = new Permissions(8, ReadKind.Default, WriteKind.PowerManagement)
        .Set(0x01, 1, AllVirt, 0)
        .Set(0x02, 2, PmeSupportMask, 0)
        .Set(0x04, 4, PmeEnable | PmeStatus, ~(uint)(PmeEnable | PmeStatus | PciDeviceModel.PmStateMask));

    // VPD: address and data virtual (vfio-pci runs the VPD transaction with the device itself; not modelled).
    private static readonly Permissions VitalProductData = new Permissions(8, ReadKind.Default, WriteKind.Default)
        .Set(0x01, 1, AllVirt, 0)
        .Set(0x02, 2, AllVirt, AllWrite)
        .Set(0x04, 4, AllVirt, AllWrite);

    private static readonly Permissions PciX = new Permissions(24, ReadKind.Default, WriteKind.Default)
        .Set(0x01, 1, AllVirt, 0)
        .Set(0x02, 2, 0, AllWrite)
        .Set(0x08, 4, 0, AllWrite);

    private const ushort DevCtlFlr = 0x8000;
    private const ushort DevCtlPayload = 0x00e0;
    private const ushort DevCtlReadRequest = 0x7000;
    private const ushort DevCtlPhantom = 0x0200;

    private static readonly Permissions Express = new Permissions(0x32, ReadKind.Default, WriteKind.Express)
        .Set(0x01, 1, AllVirt, 0)
        .Set(0x08, 2, DevCtlFlr | DevCtlPayload | DevCtlReadRequest, unchecked((ushort)~DevCtlPhantom))
        .Set(0x28, 2, 0, unchecked((ushort)~0x0020)); // device control 2, but ARI

    private const byte AfControlFlr = 0x01;

    private static readonly Permissions AdvancedFeatures = new Permissions(6, ReadKind.Default, WriteKind.AdvancedFeatures)
        .Set(0x01, 1, AllVirt, 0)
        .Set(0x04, 1, AfControlFlr, AfControlFlr);

    private static readonly Permissions ErrorReporting = new Permissions(0x2c, ReadKind.Default, WriteKind.Default)
        .Set(0x00, 4, AllVirt, 0) // the header, with its next pointer
        .Set(0x04, 4, 0, 0x03ff_f031).Set(0x08, 4, 0, 0x03ff_f031).Set(0x0c, 4, 0, 0x03ff_f031) // uncorrectable status, mask, severity
        .Set(0x10, 4, 0, 0x0000_f1c1).Set(0x14, 4, 0, 0x0000_f1c1) // correctable status, mask
        .Set(0x18, 4, 0, 0x0000_0140); // ECRC generation and check enable

    private static readonly Permissions PowerBudgeting = new Permissions(0x10, ReadKind.Default, WriteKind.Default)
        .Set(0x00, 4, AllVirt, 0)
        .Set(0x08, 1, 0, AllWrite); // the data select register

    /// <summary>cap_perms: the table of a standard capability.</summary>
    private static Permissions StandardPermissions(int id) => id switch
    {
        0x00 => BasicHeader,
        0x01 => PowerManagement,
        0x03 => VitalProductData,
        0x07 => PciX,
        0x09 => VendorSpecific,
        0x10 => Express,
        0x13 => AdvancedFeatures,
        _ => DirectReadOnly,
    };

    /// <summary>ecap_perms: the table of an extended capability.</summary>
    private static Permissions ExtendedPermissions(int id) => id switch
    {
        0x01 => ErrorReporting,
        0x04 => PowerBudgeting,
        0x0b => VendorSpecific,
        _ => DirectReadOnly,
    };

    /// <summary>init_pci_cap_msi_perm for one function's MSI capability of <paramref name="length"/> bytes.</summary>
    private static Permissions MsiPermissions(int length, ushort flags)
    {
        var p = new Permissions(length, ReadKind.Default, WriteKind.Msi)
            .Set(0x01, 1, AllVirt, 0)
            .Set(0x02, 1, AllVirt, AllWrite) // the low byte of message control
            .Set(0x04, 4, AllVirt, AllWrite);
        bool maskable = (flags & 0x0100) != 0;
        if ((flags & 0x0080) != 0)
        {
            p.Set(0x08, 4, AllVirt, AllWrite).Set(0x0c, 2, AllVirt, AllWrite);
            if (maskable)
            {
                p.Set(0x10, 4, 0, AllWrite).Set(0x14, 4, 0, AllWrite);
            }
        }
        else
        {
            p.Set(0x08, 2, AllVirt, AllWrite);
            if (maskable)
            {
                p.Set(0x0c, 4, 0, AllWrite).Set(0x10, 4, 0, AllWrite);
            }
        }
        return p;
    }

    private static byte[] Table(int size, params (int Id, byte Length)[] entries)
    {
        var table = new byte[size];
        foreach (var (id, length) in entries)
        {
            table[id] = length;
        }
        return table;
    }

    private static ushort[] ExtTable(int size, params (int Id, ushort Length)[] entries)
    {
        var table = new ushort[size];
        foreach (var (id, length) in entries)
        {
            table[id] = length;
        }
        return table;
    }

    /// <summary>Little-endian bytes of <paramref name="bytes"/> at <paramref name="at"/> as a value (bytes past the end read 0).</summary>
    private static uint Get(byte[] bytes, int at, int count)
    {
        uint value = 0;
        for (int i = count - 1; i >= 0; i--)
        {
            value = (value << 8) | (at + i < bytes.Length ? bytes[at + i] : 0u);
        }
        return value;
    }

    private static void Put(byte[] bytes, int at, int count, uint value)
    {
        for (int i = 0; i < count && at + i < bytes.Length; i++)
        {
            bytes[at + i] = (byte)(value >> (8 * i));
        }
    }
}
