using System.Text;
using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio;

/// <summary>Reads and writes sysfs through the kernel seam, under the kernel's sysfs root.</summary>
internal sealed class SysfsReader(VfioKernel kernel)
{
    /// <summary>The text of a sysfs attribute without its trailing newline, or null when it does not exist.</summary>
    public string? ReadText(string relative)
    {
        string path = kernel.Sys(relative);
        int rc = kernel.Open(path, Flags.O_RDONLY, out var fd);
        if (rc == -Errno.ENOENT)
        {
            return null;
        }
        VfioErrors.Check(rc, "open " + path);
        using (fd)
        {
            Span<byte> buffer = stackalloc byte[4096];
            long n = VfioErrors.Check(kernel.Read(fd, buffer), "read " + path);
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

    /// <summary>The last component of a link's target (a group number, a driver name), or null when there is no link.</summary>
    public string? ReadLinkName(string relative)
    {
        string path = kernel.Sys(relative);
        int rc = kernel.ReadLink(path, out var target);
        if (rc == -Errno.ENOENT)
        {
            return null;
        }
        VfioErrors.Check(rc, "readlink " + path);
        int slash = target.LastIndexOf('/');
        return slash < 0 ? target : target[(slash + 1)..];
    }

    /// <summary>The entries of a sysfs folder, or none when it does not exist.</summary>
    public string[] List(string relative)
    {
        string path = kernel.Sys(relative);
        int rc = kernel.ListDirectory(path, out var names);
        if (rc == -Errno.ENOENT)
        {
            return [];
        }
        VfioErrors.Check(rc, "list " + path);
        return names;
    }

    /// <summary>Whether a sysfs node exists (a folder, an attribute or a link's target).</summary>
    public bool Exists(string relative) => kernel.ListDirectory(kernel.Sys(relative), out _) != -Errno.ENOENT;

    /// <summary>A hexadecimal attribute such as <c>vendor</c> (<c>0x1234</c>), or null when absent.</summary>
    public uint? ReadHex(string relative)
    {
        string? text = ReadText(relative);
        if (text is null)
        {
            return null;
        }
        ReadOnlySpan<char> digits = text.AsSpan().Trim();
        if (digits.StartsWith("0x", StringComparison.OrdinalIgnoreCase))
        {
            digits = digits[2..];
        }
        return uint.Parse(digits, System.Globalization.NumberStyles.HexNumber, System.Globalization.CultureInfo.InvariantCulture);
    }
}
