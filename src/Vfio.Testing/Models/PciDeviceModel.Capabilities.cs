using System.Buffers.Binary;
using System.Numerics;

namespace Vfio.Testing;

// Config space layout: the header, the built-in capabilities and the ones the model declares.
public partial class PciDeviceModel
{
    private const byte PowerManagementId = 0x01;
    private const byte MsiId = 0x05;
    private const byte PciExpressId = 0x10;
    private const byte MsixId = 0x11;

    private readonly List<PciModelCapability> _declared = [];
    private readonly List<PciModelCapability> _declaredExtended = [];
    private readonly List<(byte Id, int Offset)> _builtInPlacement = [];
    private List<PciModelCapability> _capabilities = [];
    private List<PciModelCapability> _extendedCapabilities = [];
    private byte[]? _config;
    private byte[] _writable = [];
    private byte[] _resetConfig = [];

    /// <summary>
    /// The raw configuration space, for subclasses that emulate registers of their own. Reading it
    /// fixes the model's definition and lays config space out; what a subclass writes here before the
    /// model joins a kernel becomes part of the power-on state that every reset restores.
    /// </summary>
    protected Span<byte> ConfigSpace => Config;

    /// <summary>Config space, laid out at the first look.</summary>
    private byte[] Config
    {
        get
        {
            LayOut();
            return _config!;
        }
    }

    /// <summary>
    /// Adds a standard capability with no behaviour: its body reads as zeros (a vendor-specific one's
    /// length byte excepted) and nothing in it is writable.
    /// </summary>
    /// <remarks>
    /// The device file, as vfio-pci presents it, does not show a capability vfio-pci does not
    /// virtualize (slot id, hot swap, debug port, CompactPCI CRC, hot-plug controller, bridge subsystem
    /// id, AGP 8x, secure device, enhanced allocation and any id above 0x14), nor one whose length it
    /// reads as 0 (a vendor-specific one whose length byte is 0): the list skips it, though its bytes
    /// stay where they are.
    /// </remarks>
    /// <param name="id">The capability id.</param>
    /// <param name="length">Its length in bytes, at least 2 (the header).</param>
    /// <returns>The capability, whose offset is known once config space is laid out.</returns>
    public PciModelCapability AddCapability(byte id, int length)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(length, 2);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(length, 0xc0);
        var body = new byte[length - 2];
        if (id == VendorSpecificId && body.Length > 0)
        {
            body[0] = (byte)length;
        }
        return AddCapability(id, body);
    }

    /// <summary>
    /// Adds a standard capability with its contents: <paramref name="body"/> is everything after the
    /// id and next pointer (so capability offset 2 is <c>body[0]</c>); <paramref name="writable"/>, as
    /// long as the body or empty, sets the bits software may change. The device keeps them as written
    /// (whether a write reaches the device at all is vfio-pci's decision: it passes writes to a
    /// vendor-specific capability through, and drops writes to most other capabilities' read-only
    /// fields; see docs/device-models.md). Override <see cref="ReadConfig"/> and
    /// <see cref="WriteConfig"/> for registers with behaviour, using <see cref="PciModelCapability.Contains"/>.
    /// </summary>
    /// <param name="id">The capability id.</param>
    /// <param name="body">The bytes after the header (at most 190).</param>
    /// <param name="writable">Which bits of the body are writable; empty for none.</param>
    /// <param name="offset">Where to put it (dword aligned, from 0x40); null for the first free place.</param>
    /// <returns>The capability.</returns>
    public PciModelCapability AddCapability(byte id, ReadOnlySpan<byte> body, ReadOnlySpan<byte> writable = default, int? offset = null)
    {
        ThrowIfLaidOut();
        ArgumentOutOfRangeException.ThrowIfGreaterThan(body.Length, 0xc0 - 2);
        CheckWritable(body, writable);
        if (offset is { } at && (at < 0x40 || at % 4 != 0 || at + 2 + body.Length > 0x100))
        {
            throw new ArgumentOutOfRangeException(nameof(offset), offset, "A capability sits dword aligned between 0x40 and the end of the first 256 bytes.");
        }
        var capability = new PciModelCapability(this, id, extended: false, 0, body.ToArray(), Mask(body, writable), offset);
        _declared.Add(capability);
        return capability;
    }

    /// <summary>
    /// Adds a vendor-specific capability (id 0x09) whose length byte (capability offset 2) is filled in:
    /// <paramref name="data"/> is what follows it (capability offset 3 on), as a virtio-pci capability's
    /// cfg_type, bar, offset and length. vfio-pci shows the capability as the device has it and passes
    /// writes to it through to the device.
    /// </summary>
    /// <param name="data">The bytes after the length byte.</param>
    /// <param name="writable">Which bits of <paramref name="data"/> are writable; empty for none.</param>
    /// <param name="offset">Where to put it (dword aligned, from 0x40); null for the first free place.</param>
    /// <returns>The capability.</returns>
    public PciModelCapability AddVendorCapability(ReadOnlySpan<byte> data, ReadOnlySpan<byte> writable = default, int? offset = null)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(data.Length, 0xc0 - 3);
        CheckWritable(data, writable);
        var body = new byte[data.Length + 1];
        body[0] = (byte)(data.Length + 3);
        data.CopyTo(body.AsSpan(1));
        var mask = new byte[body.Length];
        writable.CopyTo(mask.AsSpan(1));
        return AddCapability(VendorSpecificId, body, mask, offset);
    }

    /// <summary>
    /// Adds an extended capability (PCI Express functions only) with no behaviour; the extended list
    /// starts at 0x100 in the order added.
    /// </summary>
    /// <remarks>
    /// The device file, as vfio-pci presents it, hides the ones vfio-pci does not virtualize (it knows
    /// AER, VC, serial number, power budgeting, MFVC, vendor specific, ACS, ARI, ATS, SR-IOV,
    /// multicast, PRI, resizable BAR, DPA, TPH and LTR, and from Linux 6.x designated vendor-specific;
    /// the simulation follows 6.1): the list skips a hidden one, and a hidden first one becomes a
    /// header with id 0 that only links to the next.
    /// </remarks>
    /// <param name="id">The extended capability id.</param>
    /// <param name="version">Its version (0 to 15).</param>
    /// <param name="length">Its length in bytes, a multiple of 4, at least 4 (the header).</param>
    /// <returns>The capability.</returns>
    public PciModelCapability AddExtendedCapability(ushort id, byte version, int length)
    {
        if (length < 4 || length % 4 != 0 || length > 0xf00)
        {
            throw new ArgumentOutOfRangeException(nameof(length), length, "An extended capability is a multiple of 4 bytes long, at least 4.");
        }
        var body = new byte[length - 4];
        if (id == VendorSpecificExtendedId && body.Length >= 4)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(body, (uint)length << 20); // the VSEC header's length field
        }
        return AddExtendedCapability(id, version, body);
    }

    /// <summary>
    /// Adds an extended capability (PCI Express functions only) with its contents:
    /// <paramref name="body"/> is everything after the 4-byte header; <paramref name="writable"/> sets
    /// the bits software may change (empty: none).
    /// </summary>
    /// <param name="id">The extended capability id.</param>
    /// <param name="version">Its version (0 to 15).</param>
    /// <param name="body">The bytes after the header; the capability's length (4 plus this) is a multiple of 4.</param>
    /// <param name="writable">Which bits of the body are writable; empty for none.</param>
    /// <param name="offset">Where to put it (dword aligned, from 0x100); null for the first free place.</param>
    /// <returns>The capability.</returns>
    public PciModelCapability AddExtendedCapability(ushort id, byte version, ReadOnlySpan<byte> body, ReadOnlySpan<byte> writable = default, int? offset = null)
    {
        ThrowIfLaidOut();
        if (!IsExpress)
        {
            throw new InvalidOperationException("Only a PCI Express function has extended capabilities.");
        }
        ArgumentOutOfRangeException.ThrowIfGreaterThan(id, (ushort)0xffff);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(version, (byte)15);
        if (body.Length % 4 != 0 || body.Length > 0xf00 - 4)
        {
            throw new ArgumentOutOfRangeException(nameof(body), body.Length, "An extended capability is a multiple of 4 bytes long.");
        }
        CheckWritable(body, writable);
        if (offset is { } at && (at < 0x100 || at % 4 != 0 || at + 4 + body.Length > 0x1000))
        {
            throw new ArgumentOutOfRangeException(nameof(offset), offset, "An extended capability sits dword aligned from 0x100 to the end of config space.");
        }
        var capability = new PciModelCapability(this, id, extended: true, version, body.ToArray(), Mask(body, writable), offset);
        _declaredExtended.Add(capability);
        return capability;
    }

    /// <summary>
    /// Puts a built-in capability (power management 0x01, MSI 0x05, PCI Express 0x10, MSI-X 0x11) at
    /// <paramref name="offset"/> instead of the first free place, as a real device or QEMU lays it out.
    /// The placed ones come first in the list, in the order placed; then the other built-in ones (power
    /// management, MSI, MSI-X, PCI Express), then the declared ones.
    /// </summary>
    /// <param name="id">The built-in capability's id.</param>
    /// <param name="offset">Its offset (dword aligned, from 0x40).</param>
    public void PlaceCapability(byte id, int offset)
    {
        ThrowIfLaidOut();
        if (id is not (PowerManagementId or MsiId or PciExpressId or MsixId))
        {
            throw new ArgumentOutOfRangeException(nameof(id), id, "Only the built-in capabilities (0x01, 0x05, 0x10, 0x11) are placed this way; give a declared one its offset when adding it.");
        }
        if (offset < 0x40 || offset % 4 != 0 || offset >= 0x100)
        {
            throw new ArgumentOutOfRangeException(nameof(offset), offset, "A capability sits dword aligned between 0x40 and 0xff.");
        }
        _builtInPlacement.RemoveAll(p => p.Id == id);
        _builtInPlacement.Add((id, offset));
    }

    /// <summary>The first capability with <paramref name="id"/> in the standard list, built in or declared; null when there is none. Lays config space out.</summary>
    /// <param name="id">The capability id.</param>
    public PciModelCapability? FindCapability(byte id)
    {
        LayOut();
        return _capabilities.FirstOrDefault(c => c.Id == id);
    }

    /// <summary>The first extended capability with <paramref name="id"/>; null when there is none. Lays config space out.</summary>
    /// <param name="id">The extended capability id.</param>
    public PciModelCapability? FindExtendedCapability(ushort id)
    {
        LayOut();
        return _extendedCapabilities.FirstOrDefault(c => c.Id == id);
    }

    private const byte VendorSpecificId = 0x09;
    private const ushort VendorSpecificExtendedId = 0x0b;

    /// <summary>Where the MSI capability is (0: none).</summary>
    internal int MsiOffset => _config is null ? 0 : FindCapability(MsiId)?.PlacedOffset ?? 0;

    /// <summary>Where the MSI-X capability is (0: none).</summary>
    internal int MsixOffset => _config is null ? 0 : FindCapability(MsixId)?.PlacedOffset ?? 0;

    internal int OffsetOf(PciModelCapability capability)
    {
        LayOut();
        return capability.PlacedOffset;
    }

    private bool IsLaidOut => _config is not null;

    private void ThrowIfLaidOut()
    {
        if (IsLaidOut)
        {
            throw new InvalidOperationException("The model's definition is fixed once config space is laid out (by adding the model to a kernel, or by reading ConfigSpace or a capability's offset); define BARs, interrupts and capabilities before.");
        }
    }

    private static void CheckWritable(ReadOnlySpan<byte> body, ReadOnlySpan<byte> writable)
    {
        if (!writable.IsEmpty && writable.Length != body.Length)
        {
            throw new ArgumentException("The writable mask is as long as the body, or empty.", nameof(writable));
        }
    }

    private static byte[] Mask(ReadOnlySpan<byte> body, ReadOnlySpan<byte> writable) => writable.IsEmpty ? new byte[body.Length] : writable.ToArray();

    /// <summary>Lays config space out from the definition, once: the header, BARs, capabilities.</summary>
    /// <remarks>
    /// Register accesses call this every time, so it allocates nothing once laid out: the layout's
    /// lambdas live in <see cref="LayOutOnce"/>, whose closure is made only when it runs.
    /// </remarks>
    private void LayOut()
    {
        if (_config is null)
        {
            LayOutOnce();
        }
    }

    private void LayOutOnce()
    {
        var config = new byte[ConfigSpaceSize];
        _writable = new byte[ConfigSpaceSize];
        var c = config.AsSpan();
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
            BinaryPrimitives.WriteUInt32LittleEndian(c[(0x10 + (4 * i))..], (uint)next | BarFlags(bar));
            next += bar.Size;
        }
        if (MsixVectors > 0)
        {
            ulong needed = Math.Max(PbaOffset + PbaSize, MsixTableOffset + ((ulong)MsixVectors * 16));
            if (BarSize(MsixBar) < needed || _bars[MsixBar]!.Kind == PciBarKind.Io)
            {
                throw new InvalidOperationException($"BAR {MsixBar} must be a memory BAR of at least {needed} bytes for the MSI-X table and PBA.");
            }
        }

        // Capabilities: power management, MSI, MSI-X, PCI Express, then the declared ones, linked in that order.
        var list = new List<PciModelCapability>();
        if (HasPowerManagement)
        {
            list.Add(BuiltIn(PowerManagementId, PowerManagementBody()));
        }
        if (MsiVectors > 0)
        {
            list.Add(BuiltIn(MsiId, MsiBody()));
        }
        if (MsixVectors > 0)
        {
            list.Add(BuiltIn(MsixId, MsixBody()));
        }
        if (IsExpress)
        {
            list.Add(BuiltIn(PciExpressId, ExpressBody()));
        }
        // Placed built-ins lead the list, in the order placed.
        var placed = _builtInPlacement.Select(p => list.FirstOrDefault(c => c.Id == p.Id)).OfType<PciModelCapability>().ToList();
        list = [.. placed, .. list.Except(placed), .. _declared];
        Place(list, 0x40, 0x100, alignment: 16, "the 192 bytes of config space after the header");
        for (int i = 0; i < list.Count; i++)
        {
            var capability = list[i];
            int at = capability.PlacedOffset;
            c[at] = (byte)capability.Id;
            c[at + 1] = (byte)(i == list.Count - 1 ? 0 : list[i + 1].PlacedOffset);
            capability.Body.CopyTo(c[(at + 2)..]);
            capability.Writable.CopyTo(_writable.AsSpan(at + 2));
        }
        c[0x34] = (byte)(list.Count > 0 ? list[0].PlacedOffset : 0);
        c[0x06] = list.Count > 0 ? (byte)(c[0x06] | 0x10) : (byte)(c[0x06] & ~0x10);
        _capabilities = list;

        var extended = new List<PciModelCapability>(_declaredExtended);
        if (IsExpress && extended.Count > 0)
        {
            Place(extended, 0x100, ConfigSpaceSize, alignment: 8, "4 KiB of config space");
            if (extended[0].PlacedOffset != 0x100)
            {
                throw new InvalidOperationException($"The first extended capability ({extended[0]}) sits at 0x100, where the list starts, not at 0x{extended[0].PlacedOffset:x}.");
            }
            for (int i = 0; i < extended.Count; i++)
            {
                var capability = extended[i];
                int at = capability.PlacedOffset;
                int next = i == extended.Count - 1 ? 0 : extended[i + 1].PlacedOffset;
                BinaryPrimitives.WriteUInt32LittleEndian(c[at..], (uint)capability.Id | ((uint)capability.Version << 16) | ((uint)next << 20));
                capability.Body.CopyTo(c[(at + 4)..]);
                capability.Writable.CopyTo(_writable.AsSpan(at + 4));
            }
        }
        _extendedCapabilities = extended;
        _config = config;
    }

    /// <summary>
    /// Gives each capability an offset: the ones asked for where asked (they must not overlap), the
    /// others the first free place at the alignment, in order.
    /// </summary>
    private static void Place(List<PciModelCapability> list, int start, int end, int alignment, string room)
    {
        var used = new bool[end];
        foreach (var capability in list.Where(c => c.RequestedOffset is not null))
        {
            int at = capability.RequestedOffset!.Value;
            if (at + capability.Length > end || used.AsSpan(at, capability.Length).Contains(true))
            {
                throw new InvalidOperationException($"The {capability} at 0x{at:x} overlaps another capability or runs past {room}.");
            }
            used.AsSpan(at, capability.Length).Fill(true);
            capability.PlacedOffset = at;
        }
        foreach (var capability in list.Where(c => c.RequestedOffset is null))
        {
            int at = start;
            while (at + capability.Length <= end && used.AsSpan(at, capability.Length).Contains(true))
            {
                at += alignment;
            }
            if (at + capability.Length > end)
            {
                throw new InvalidOperationException($"The capabilities do not fit in {room}.");
            }
            used.AsSpan(at, capability.Length).Fill(true);
            capability.PlacedOffset = at;
        }
    }

    private PciModelCapability BuiltIn(byte id, (byte[] Body, byte[] Writable) contents) =>
        new(this, id, extended: false, 0, contents.Body, contents.Writable, _builtInPlacement.FindIndex(p => p.Id == id) is int i and >= 0 ? _builtInPlacement[i].Offset : null);

    // Power management: PMC version 3 (PM 1.2), no PME; control/status with the power state writable.
    private (byte[], byte[]) PowerManagementBody()
    {
        var body = new byte[6];
        var writable = new byte[6];
        BinaryPrimitives.WriteUInt16LittleEndian(body, 0x0003);
        BinaryPrimitives.WriteUInt16LittleEndian(body.AsSpan(2), (ushort)(PowerManagementNoSoftReset ? PmNoSoftReset : 0));
        BinaryPrimitives.WriteUInt16LittleEndian(writable.AsSpan(2), PmStateMask);
        return (body, writable);
    }

    // MSI: 64-bit, the vectors asked for, no per-vector masking (14 bytes, as QEMU's msi_init makes it).
    private (byte[], byte[]) MsiBody()
    {
        var body = new byte[12];
        var writable = new byte[12];
        ushort mmc = (ushort)(BitOperations.Log2((uint)MsiVectors) << 1);
        BinaryPrimitives.WriteUInt16LittleEndian(body, (ushort)(0x80 | mmc));
        BinaryPrimitives.WriteUInt16LittleEndian(writable, 0x71);
        BinaryPrimitives.WriteUInt32LittleEndian(writable.AsSpan(2), 0xffff_fffc);
        BinaryPrimitives.WriteUInt32LittleEndian(writable.AsSpan(6), 0xffff_ffff);
        BinaryPrimitives.WriteUInt16LittleEndian(writable.AsSpan(10), 0xffff);
        return (body, writable);
    }

    // MSI-X: table size, table and PBA locations; enable and function mask writable.
    private (byte[], byte[]) MsixBody()
    {
        var body = new byte[10];
        var writable = new byte[10];
        BinaryPrimitives.WriteUInt16LittleEndian(body, (ushort)(MsixVectors - 1));
        BinaryPrimitives.WriteUInt32LittleEndian(body.AsSpan(2), (uint)MsixTableOffset | (uint)MsixBar);
        BinaryPrimitives.WriteUInt32LittleEndian(body.AsSpan(6), (uint)PbaOffset | (uint)MsixBar);
        BinaryPrimitives.WriteUInt16LittleEndian(writable, 0xc000);
        return (body, writable);
    }

    // PCI Express: version 2, 128-byte payload, role-based error reporting, FLR if set; device
    // control writable; link 2.5 GT/s x1 supported and negotiated, as QEMU's functions report.
    private (byte[], byte[]) ExpressBody()
    {
        var body = new byte[0x3a];
        var writable = new byte[0x3a];
        BinaryPrimitives.WriteUInt16LittleEndian(body, (ushort)(0x0002 | ((int)ExpressPortType << 4)));
        BinaryPrimitives.WriteUInt32LittleEndian(body.AsSpan(2), (1u << 15) | (FunctionLevelReset ? ExpressDevCapFlr : 0));
        BinaryPrimitives.WriteUInt16LittleEndian(writable.AsSpan(6), 0x7fff);
        BinaryPrimitives.WriteUInt32LittleEndian(body.AsSpan(0xa), 0x11);
        BinaryPrimitives.WriteUInt16LittleEndian(body.AsSpan(0x10), 0x11);
        return (body, writable);
    }

    /// <summary>For the built-in models of QEMU's devices: which bits of a register software may change, as QEMU's wmask has them. Lays config space out.</summary>
    internal void SetWritable(int offset, int size, uint mask)
    {
        LayOut();
        Writable(offset, size, mask);
    }

    private void Writable(int offset, int size, uint mask)
    {
        for (int i = 0; i < size; i++)
        {
            _writable[offset + i] = (byte)(mask >> (8 * i));
        }
    }

    // ---- What the kernel reads of the function's capabilities (pci_find_capability and its users) ----

    internal const ushort PmStateMask = 0x0003;
    internal const ushort PmNoSoftReset = 0x0008;
    internal const uint ExpressDevCapFlr = 1u << 28;

    /// <summary>pci_find_capability over the device's own list as it is now; 0 when absent. The Gate is held or the model is not shared yet.</summary>
    internal int FindCapabilityRaw(byte id)
    {
        var c = Config;
        if ((c[0x06] & 0x10) == 0)
        {
            return 0;
        }
        int offset = c[0x34] & ~3;
        for (int loops = 48; offset >= 0x40 && loops-- > 0; offset = c[offset + 1] & ~3)
        {
            if (c[offset] == id)
            {
                return offset;
            }
        }
        return 0;
    }

    /// <summary>The function's power state from its PM control register (D0 without the capability). The Gate is held.</summary>
    internal PciPowerState PowerStateLocked
    {
        get
        {
            int pm = FindCapabilityRaw(PowerManagementId);
            return pm == 0 ? PciPowerState.D0 : (PciPowerState)(Config[pm + 4] & PmStateMask);
        }
    }
}
