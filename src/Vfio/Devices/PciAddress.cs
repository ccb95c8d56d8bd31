using System.Globalization;

namespace Vfio;

/// <summary>A PCI function's address, <c>domain:bus:slot.function</c> (<c>0000:00:03.0</c>).</summary>
/// <param name="Domain">The PCI segment.</param>
/// <param name="Bus">The bus number.</param>
/// <param name="Slot">The device (slot) number, 0-31.</param>
/// <param name="Function">The function number, 0-7.</param>
public readonly record struct PciAddress(ushort Domain, byte Bus, byte Slot, byte Function) : ISpanParsable<PciAddress>
{
    /// <summary>The slot this function is in, <c>0000:00:03</c>: functions of one slot share a reset domain.</summary>
    public string SlotName => string.Create(CultureInfo.InvariantCulture, $"{Domain:x4}:{Bus:x2}:{Slot:x2}");

    /// <inheritdoc/>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"{Domain:x4}:{Bus:x2}:{Slot:x2}.{Function:x1}");

    /// <summary>Parses <c>0000:00:03.0</c> (or <c>00:03.0</c>, domain 0).</summary>
    public static PciAddress Parse(string s) => Parse(s, null);

    /// <inheritdoc/>
    public static PciAddress Parse(string s, IFormatProvider? provider) => Parse(s.AsSpan(), provider);

    /// <inheritdoc/>
    public static PciAddress Parse(ReadOnlySpan<char> s, IFormatProvider? provider) =>
        TryParse(s, provider, out var address) ? address : throw new FormatException($"'{s}' is not a PCI address such as 0000:00:03.0.");

    /// <inheritdoc/>
    public static bool TryParse(string? s, IFormatProvider? provider, out PciAddress result) => TryParse(s.AsSpan(), provider, out result);

    /// <inheritdoc/>
    public static bool TryParse(ReadOnlySpan<char> s, IFormatProvider? provider, out PciAddress result)
    {
        result = default;
        int dot = s.LastIndexOf('.');
        if (dot < 0)
        {
            return false;
        }
        var head = s[..dot];
        int lastColon = head.LastIndexOf(':');
        if (lastColon < 0)
        {
            return false;
        }
        var slotText = head[(lastColon + 1)..];
        var rest = head[..lastColon];
        int firstColon = rest.LastIndexOf(':');
        var busText = firstColon < 0 ? rest : rest[(firstColon + 1)..];
        var domainText = firstColon < 0 ? "0".AsSpan() : rest[..firstColon];
        const NumberStyles Hex = NumberStyles.AllowHexSpecifier;
        if (!ushort.TryParse(domainText, Hex, CultureInfo.InvariantCulture, out ushort domain)
            || !byte.TryParse(busText, Hex, CultureInfo.InvariantCulture, out byte bus)
            || !byte.TryParse(slotText, Hex, CultureInfo.InvariantCulture, out byte slot) || slot > 31
            || !byte.TryParse(s[(dot + 1)..], Hex, CultureInfo.InvariantCulture, out byte function) || function > 7)
        {
            return false;
        }
        result = new PciAddress(domain, bus, slot, function);
        return true;
    }
}
