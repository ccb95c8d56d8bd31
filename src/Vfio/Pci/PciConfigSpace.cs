using System.Buffers.Binary;

namespace Vfio;

/// <summary>
/// A copy of a function's configuration space, read in one go through the device file, and the
/// capability walks over it. The walks follow Linux's (drivers/pci/pci.c): the standard list is
/// followed for at most 48 entries and ends at a pointer below 0x40 or an id of 0xff; the extended
/// list starts at 0x100, is followed for at most 480 entries and ends at a pointer below 0x100.
/// A chain that comes back to an entry already seen is cut there, so a broken device cannot make
/// the walk loop.
/// </summary>
internal sealed class PciConfigSpace(byte[] bytes)
{
    /// <summary>Linux's PCI_FIND_CAP_TTL.</summary>
    public const int MaxCapabilities = 48;

    /// <summary>Linux's extended walk limit, (4096 - 256) / 8.</summary>
    public const int MaxExtendedCapabilities = (4096 - 256) / 8;

    private const int StandardHeaderSize = 0x40;
    private const int ExtendedStart = 0x100;

    public int Size => bytes.Length;

    public byte Read8(int offset) => offset < bytes.Length ? bytes[offset] : (byte)0;

    public ushort Read16(int offset) => offset + 2 <= bytes.Length ? BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(offset)) : (ushort)0;

    public uint Read32(int offset) => offset + 4 <= bytes.Length ? BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(offset)) : 0;

    public PciConfigHeader Header => new(Read16(PciConfig.VendorId), Read16(PciConfig.DeviceId), (PciCommand)Read16(PciConfig.Command),
        Read16(PciConfig.Status), Read8(PciConfig.RevisionId), Read32(PciConfig.RevisionId) >> 8, Read8(PciConfig.HeaderType),
        Read16(PciConfig.SubsystemVendorId), Read16(PciConfig.SubsystemId), Read8(PciConfig.CapabilitiesPointer), Read8(PciConfig.InterruptPin));

    /// <summary>The standard capability list; <paramref name="brokenAt"/> is the offset where a loop or the entry limit cut it, else -1.</summary>
    public List<PciCapability> Capabilities(out int brokenAt)
    {
        brokenAt = -1;
        var list = new List<PciCapability>();
        if ((Read16(PciConfig.Status) & PciConfig.StatusCapabilityList) == 0)
        {
            return list;
        }
        var seen = new HashSet<int>();
        int position = Read8(PciConfig.CapabilitiesPointer);
        for (int ttl = MaxCapabilities; ; ttl--)
        {
            if (position < StandardHeaderSize)
            {
                return list;
            }
            position &= ~3;
            byte id = Read8(position);
            if (id == 0xff)
            {
                return list;
            }
            if (ttl == 0 || !seen.Add(position))
            {
                brokenAt = position;
                return list;
            }
            list.Add(new PciCapability((PciCapabilityId)id, position));
            position = Read8(position + 1);
        }
    }

    /// <summary>
    /// The extended capability list. An entry with id 0 is skipped but followed: vfio-pci puts one
    /// at 0x100 when it hides the first capability. <paramref name="brokenAt"/> as for <see cref="Capabilities"/>.
    /// </summary>
    public List<PciExtendedCapability> ExtendedCapabilities(out int brokenAt)
    {
        brokenAt = -1;
        var list = new List<PciExtendedCapability>();
        if (bytes.Length <= ExtendedStart)
        {
            return list;
        }
        var seen = new HashSet<int>();
        int position = ExtendedStart;
        for (int ttl = MaxExtendedCapabilities; ; ttl--)
        {
            uint header = Read32(position);
            if (header is 0 or 0xffff_ffff)
            {
                return list;
            }
            if (ttl == 0 || !seen.Add(position))
            {
                brokenAt = position;
                return list;
            }
            ushort id = (ushort)header;
            if (id != 0)
            {
                list.Add(new PciExtendedCapability((PciExtendedCapabilityId)id, (int)((header >> 16) & 0xf), position));
            }
            position = (int)((header >> 20) & 0xffc);
            if (position < ExtendedStart)
            {
                return list;
            }
        }
    }

    public MsiCapability Msi(int offset) => new(offset, Read16(offset + 2));

    public MsixCapability Msix(int offset) => new(offset, Read16(offset + 2), Read32(offset + 4), Read32(offset + 8));

    public PciExpressCapability PciExpress(int offset)
    {
        ushort flags = Read16(offset + 2);
        var type = (PciExpressPortType)((flags >> 4) & 0xf);
        // pcie_cap_has_lnkctl: a version 2 capability always has the link registers; version 1 only for link-owning types.
        bool hasLink = (flags & 0xf) > 1 || type is PciExpressPortType.Endpoint or PciExpressPortType.LegacyEndpoint or PciExpressPortType.RootPort
            or PciExpressPortType.UpstreamSwitchPort or PciExpressPortType.DownstreamSwitchPort or PciExpressPortType.PciExpressToPciBridge
            or PciExpressPortType.PciToPciExpressBridge;
        return new PciExpressCapability(offset, flags, Read32(offset + 4), Read16(offset + 8), Read16(offset + 0xa),
            hasLink ? Read32(offset + 0xc) : 0, hasLink ? Read16(offset + 0x12) : (ushort)0);
    }

    public PowerManagementCapability PowerManagement(int offset) => new(offset, Read16(offset + 2), Read16(offset + 4));
}
