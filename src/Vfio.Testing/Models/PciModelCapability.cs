namespace Vfio.Testing;

/// <summary>
/// A capability in a <see cref="PciDeviceModel"/>'s configuration space: one the model declared
/// (<see cref="PciDeviceModel.AddCapability(byte, ReadOnlySpan{byte}, ReadOnlySpan{byte}, int?)"/> and its
/// siblings) or one it has built in (power management, MSI, MSI-X, PCI Express; see
/// <see cref="PciDeviceModel.FindCapability(byte)"/>).
/// </summary>
/// <remarks>
/// Its bytes are the capability's power-on contents: the model starts with them and every reset of
/// the device restores them, unless the model changed config space before it joined a kernel (see
/// <see cref="PciDeviceModel.ConfigSpace"/>). Software may change only the bits its writable mask sets.
/// </remarks>
public sealed class PciModelCapability
{
    private readonly PciDeviceModel _owner;

    internal PciModelCapability(PciDeviceModel owner, int id, bool extended, byte version, byte[] body, byte[] writable, int? offset)
    {
        _owner = owner;
        Id = id;
        IsExtended = extended;
        Version = version;
        Body = body;
        Writable = writable;
        RequestedOffset = offset;
    }

    /// <summary>The capability id (a standard id for a standard capability, an extended id for an extended one).</summary>
    public int Id { get; }

    /// <summary>True for a PCI Express extended capability (at 0x100 and above).</summary>
    public bool IsExtended { get; }

    /// <summary>The extended capability's version (0 for a standard capability).</summary>
    public byte Version { get; }

    /// <summary>Its length in bytes, header included (2 bytes for a standard capability, 4 for an extended one).</summary>
    public int Length => HeaderLength + Body.Length;

    /// <summary>
    /// Where the capability is in config space. Reading it fixes the model's definition (BARs,
    /// interrupts, capabilities) and lays config space out, as adding the model to a kernel does.
    /// </summary>
    public int Offset => _owner.OffsetOf(this);

    /// <summary>True when config byte <paramref name="offset"/> lies in this capability.</summary>
    /// <param name="offset">A config space offset.</param>
    public bool Contains(int offset) => offset >= Offset && offset < Offset + Length;

    internal int HeaderLength => IsExtended ? 4 : 2;

    /// <summary>The bytes after the header, as declared.</summary>
    internal byte[] Body { get; }

    /// <summary>The writable bits of <see cref="Body"/> (same length).</summary>
    internal byte[] Writable { get; }

    /// <summary>Where the model asked for it; null for the first free place.</summary>
    internal int? RequestedOffset { get; set; }

    /// <summary>Where it was laid out; set by the model's layout.</summary>
    internal int PlacedOffset { get; set; }

    /// <inheritdoc/>
    public override string ToString() => IsExtended
        ? FormattableString.Invariant($"extended capability 0x{Id:x4} v{Version}")
        : FormattableString.Invariant($"capability 0x{Id:x2}");
}
