using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Runtime.CompilerServices;

namespace Vfio;

/// <summary>The kinds of name that become part of a sysfs or <c>/dev</c> path.</summary>
internal enum KernelNameKind
{
    /// <summary>A PCI function's address as the kernel spells it: <c>0000:00:03.0</c>, lower-case hex.</summary>
    PciAddress,

    /// <summary>A device's name on its bus or class (a platform device, an mdev parent): one path component.</summary>
    Device,

    /// <summary>A kernel driver's name (<c>vfio-pci</c>, <c>nvme</c>): one path component.</summary>
    Driver,

    /// <summary>An mdev type's id, its folder under <c>mdev_supported_types</c> (<c>mtty-2</c>): one path component.</summary>
    MdevType,

    /// <summary>An mdev's UUID as the kernel spells it: 8-4-4-4-12 lower-case hex digits.</summary>
    Uuid,

    /// <summary>An IOMMU group number: decimal digits, no sign, no leading zero.</summary>
    GroupId,

    /// <summary>A VFIO device cdev's name (<c>vfio0</c>), under <c>/dev/vfio/devices</c> and a device's <c>vfio-dev</c> folder.</summary>
    Cdev,
}

/// <summary>
/// The one place where a name is checked against its syntax before it becomes part of a sysfs or
/// <c>/dev</c> path. A name that comes from a caller, from sysfs itself or from a file the tool wrote
/// is joined to a folder only through <see cref="Join"/>: <c>../../bus/pci</c> never names an mdev parent,
/// <c>mtty/mdev_supported_types</c> never reaches a folder below one.
/// </summary>
internal static class KernelNames
{
    // NAME_MAX: no sysfs or /dev component is longer.
    private const int MaxLength = 255;

    /// <summary>True when <paramref name="name"/> is a valid name of its kind, spelled as the kernel spells it.</summary>
    public static bool IsValid(KernelNameKind kind, [NotNullWhen(true)] string? name)
    {
        if (string.IsNullOrEmpty(name) || name.Length > MaxLength)
        {
            return false;
        }
        return kind switch
        {
            KernelNameKind.PciAddress => Vfio.PciAddress.TryParse(name, CultureInfo.InvariantCulture, out var address) && address.ToString() == name,
            KernelNameKind.Uuid => Guid.TryParseExact(name, "D", out var uuid) && uuid.ToString("D", CultureInfo.InvariantCulture) == name,
            KernelNameKind.GroupId => IsDecimal(name),
            KernelNameKind.Cdev => name.StartsWith("vfio", StringComparison.Ordinal) && IsDecimal(name[4..]),
            _ => IsComponent(name),
        };
    }

    /// <summary>Returns <paramref name="name"/> when it is valid; throws an <see cref="ArgumentException"/> that says what is wrong otherwise.</summary>
    /// <exception cref="ArgumentException">The name is not of its kind's syntax.</exception>
    public static string Check(KernelNameKind kind, [NotNull] string? name, [CallerArgumentExpression(nameof(name))] string? parameter = null)
    {
        ArgumentNullException.ThrowIfNull(name, parameter);
        if (!IsValid(kind, name))
        {
            throw new ArgumentException(Describe(kind, name), parameter);
        }
        return name;
    }

    /// <summary>
    /// Joins a name to a folder of a sysfs or <c>/dev</c> path, after checking it: the only way a name
    /// that is not a constant enters such a path.
    /// </summary>
    /// <exception cref="ArgumentException">The name is not of its kind's syntax.</exception>
    public static string Join(string folder, KernelNameKind kind, string name) => folder + "/" + Check(kind, name, nameof(name));

    /// <summary>Says why <paramref name="name"/> is not a valid name of its kind.</summary>
    public static string Describe(KernelNameKind kind, string? name)
    {
        string shown = name is null ? "null" : "'" + Printable(name) + "'";
        string what = kind switch
        {
            KernelNameKind.PciAddress => "a PCI address as the kernel spells it, such as 0000:00:03.0",
            KernelNameKind.Uuid => "an mdev UUID as the kernel spells it, such as 83b8f4f2-509f-382f-3c1e-e6bfe0fa1001",
            KernelNameKind.GroupId => "an IOMMU group number such as 7",
            KernelNameKind.Cdev => "a VFIO device cdev name such as vfio0",
            KernelNameKind.Driver => "a kernel driver name such as vfio-pci: one path component, without '/', spaces or control characters, not '.' or '..'",
            KernelNameKind.MdevType => "an mdev type id such as mtty-2: one path component, without '/', spaces or control characters, not '.' or '..'",
            _ => "a device name such as mtty or fe000000.dma: one path component, without '/', spaces or control characters, not '.' or '..'",
        };
        return $"{shown} is not {what}.";
    }

    /// <summary>A name as an error message may show it: control characters (a NUL read from a broken attribute) as \xNN.</summary>
    public static string Printable(string text)
    {
        const int MaxShown = 64;
        var shown = new System.Text.StringBuilder(Math.Min(text.Length, MaxShown) + 8);
        foreach (char c in text.Length > MaxShown ? text[..MaxShown] : text)
        {
            if (char.IsControl(c))
            {
                shown.Append(CultureInfo.InvariantCulture, $"\\x{(int)c:x2}");
            }
            else
            {
                shown.Append(c);
            }
        }
        if (text.Length > MaxShown)
        {
            shown.Append("...");
        }
        return shown.ToString();
    }

    // Printable ASCII without '/': what device, driver and type names are made of. "." and ".." are
    // not names but steps of a path.
    private static bool IsComponent(string name)
    {
        if (name is "." or "..")
        {
            return false;
        }
        foreach (char c in name)
        {
            if (c <= ' ' || c >= 0x7f || c == '/')
            {
                return false;
            }
        }
        return true;
    }

    private static bool IsDecimal(string text) =>
        text.Length is > 0 and <= 9 && (text == "0" || text[0] != '0') && text.All(char.IsAsciiDigit);
}
