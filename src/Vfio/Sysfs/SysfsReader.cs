using System.Globalization;
using System.Text;
using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio;

/// <summary>
/// Reads and writes sysfs through the kernel seam, under the kernel's sysfs root. Every error names
/// the path and, when the caller says so, the object read (a device, a group): the one place where a
/// sysfs read fails.
/// </summary>
internal sealed class SysfsReader(VfioKernel kernel)
{
    /// <summary>The text of a sysfs attribute without its trailing newline, or null when it does not exist.</summary>
    public string? ReadText(string relative, ErrorTarget target = default)
    {
        string path = kernel.Sys(relative);
        int rc = kernel.Open(path, Flags.O_RDONLY, out var fd);
        if (rc == -Errno.ENOENT)
        {
            return null;
        }
        VfioErrors.Check(rc, "open " + path, target);
        using (fd)
        {
            Span<byte> buffer = stackalloc byte[4096];
            long n = VfioErrors.Check(kernel.Read(fd, buffer), "read " + path, target);
            return Encoding.UTF8.GetString(buffer[..(int)n]).TrimEnd('\n');
        }
    }

    /// <summary>Writes a sysfs attribute (driver_override, bind, drivers_probe, create, remove).</summary>
    public void WriteText(string relative, string value, ErrorTarget target = default)
    {
        string path = kernel.Sys(relative);
        VfioErrors.Check(kernel.Open(path, Flags.O_WRONLY, out var fd), "open " + path, target);
        using (fd)
        {
            VfioErrors.Check(kernel.Write(fd, Encoding.UTF8.GetBytes(value)), "write '" + value + "' to " + path, target);
        }
    }

    /// <summary>A link's target as the kernel wrote it (<c>../../../devices/pci0000:00/0000:00:03.0</c>), or null when there is no link.</summary>
    public string? ReadLink(string relative, ErrorTarget target = default)
    {
        string path = kernel.Sys(relative);
        int rc = kernel.ReadLink(path, out var link);
        if (rc == -Errno.ENOENT)
        {
            return null;
        }
        VfioErrors.Check(rc, "readlink " + path, target);
        return link;
    }

    /// <summary>The last component of a link's target (a group number, a driver name), or null when there is no link.</summary>
    public string? ReadLinkName(string relative, ErrorTarget target = default)
    {
        string? link = ReadLink(relative, target);
        if (link is null)
        {
            return null;
        }
        int slash = link.LastIndexOf('/');
        return slash < 0 ? link : link[(slash + 1)..];
    }

    /// <summary>
    /// The name a link points to when it is a valid name of <paramref name="kind"/>, or null when there is
    /// no link; a link to anything else (a broken or forged tree) is an error naming what it points to.
    /// </summary>
    public string? ReadLinkName(string relative, KernelNameKind kind, string what, ErrorTarget target = default)
    {
        string? name = ReadLinkName(relative, target);
        if (name is not null && !KernelNames.IsValid(kind, name))
        {
            throw Malformed(relative, "points to '" + KernelNames.Printable(name) + "', not " + what, target);
        }
        return name;
    }

    /// <summary>The entries of a sysfs folder, or none when it does not exist.</summary>
    public string[] List(string relative, ErrorTarget target = default)
    {
        string path = kernel.Sys(relative);
        int rc = kernel.ListDirectory(path, out var names);
        if (rc == -Errno.ENOENT)
        {
            return [];
        }
        VfioErrors.Check(rc, "list " + path, target);
        return names;
    }

    /// <summary>The entries of a sysfs folder that are valid names of <paramref name="kind"/>; the others are no objects of that kind and are left out.</summary>
    public IEnumerable<string> List(string relative, KernelNameKind kind, ErrorTarget target = default) =>
        List(relative, target).Where(name => KernelNames.IsValid(kind, name));

    /// <summary>Whether a sysfs node exists (a folder, an attribute or a link's target).</summary>
    public bool Exists(string relative) => kernel.ListDirectory(kernel.Sys(relative), out _) != -Errno.ENOENT;

    /// <summary>
    /// A hexadecimal attribute such as <c>vendor</c> (<c>0x1234</c>) of at most <paramref name="bits"/>
    /// bits, or null when absent. Anything else (a NUL, a wider value, no digits) is an error that says
    /// what was read: a value is never cut to fit.
    /// </summary>
    public uint? ReadHex(string relative, int bits, ErrorTarget target = default)
    {
        string? text = ReadText(relative, target);
        if (text is null)
        {
            return null;
        }
        ReadOnlySpan<char> digits = text.AsSpan().Trim();
        if (digits.StartsWith("0x", StringComparison.OrdinalIgnoreCase))
        {
            digits = digits[2..];
        }
        if (digits.Length == 0 || !uint.TryParse(digits, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out uint value)
            || (bits < 32 && value >> bits != 0))
        {
            throw Malformed(relative, string.Create(CultureInfo.InvariantCulture, $"reads '{KernelNames.Printable(text)}', not a {bits}-bit hexadecimal number"), target);
        }
        return value;
    }

    /// <summary>A decimal count such as <c>available_instances</c>, or null when absent; anything else is an error that says what was read.</summary>
    public int? ReadCount(string relative, ErrorTarget target = default)
    {
        string? text = ReadText(relative, target);
        if (text is null)
        {
            return null;
        }
        if (!int.TryParse(text.AsSpan().Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out int value))
        {
            throw Malformed(relative, "reads '" + KernelNames.Printable(text) + "', not a count", target);
        }
        return value;
    }

    /// <summary>The error for a sysfs node whose content is not what the kernel writes there.</summary>
    public VfioException Malformed(string relative, string what, ErrorTarget target)
    {
        string path = kernel.Sys(relative);
        return new VfioException(
            $"{path}{(target == default ? "" : " (" + target + ")")} {what}: sysfs does not read as the kernel writes it (a broken driver, or a sysfs tree that is not the kernel's).",
            "read " + path, 0, target);
    }
}
