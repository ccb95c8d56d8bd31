namespace Vfio.Tests.Abi;

/// <summary>
/// The uAPI headers of the newer kernel the iommufd backend targets (a Debian linux-libc-dev 7.x,
/// unpacked by <c>tests/abi/fetch-uapi-headers.sh</c>): the folder <c>VFIO_UAPI_HEADERS</c> names, or
/// else the newest one in the script's cache. The unit tests never download them.
/// </summary>
internal static class NewerUapiHeaders
{
    /// <summary>Set by CI: a missing header folder fails the check instead of skipping it.</summary>
    public const string RequiredVariable = "VFIO_UAPI_HEADERS_REQUIRED";

    public const string FolderVariable = "VFIO_UAPI_HEADERS";

    public const string FetchHint = "run tests/abi/fetch-uapi-headers.sh (it needs the network once, then caches them)";

    public static bool Required => Environment.GetEnvironmentVariable(RequiredVariable) == "1";

    /// <summary>The include folder (the one holding <c>linux/iommufd.h</c>), or null with the reason.</summary>
    public static string? Find(out string reason)
    {
        if (Environment.GetEnvironmentVariable(FolderVariable) is { Length: > 0 } named)
        {
            reason = File.Exists(Path.Combine(named, "linux", "iommufd.h"))
                ? string.Empty
                : $"{FolderVariable}={named} has no linux/iommufd.h";
            return reason.Length == 0 ? named : null;
        }
        var root = CacheRoot();
        var newest = Directory.Exists(root)
            ? Directory.GetDirectories(root)
                .Select(d => Path.Combine(d, "usr", "include"))
                .Where(d => File.Exists(Path.Combine(d, "linux", "iommufd.h")))
                .OrderBy(d => Version(d), VersionComparer.Instance)
                .LastOrDefault()
            : null;
        reason = newest is null ? $"no newer kernel's uAPI headers in {root} and {FolderVariable} is unset: {FetchHint}" : string.Empty;
        return newest;
    }

    /// <summary>The package version the folder was unpacked from (its cache folder's name), or the folder itself.</summary>
    public static string Version(string includeFolder)
    {
        var usr = Directory.GetParent(includeFolder);
        return usr?.Name == "usr" && usr.Parent is { } version ? version.Name : includeFolder;
    }

    private static string CacheRoot()
    {
        if (Environment.GetEnvironmentVariable("VFIO_UAPI_CACHE") is { Length: > 0 } cache)
        {
            return cache;
        }
        var xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } x
            ? x
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        return Path.Combine(xdg, "vfio-dotnet", "headers");
    }

    /// <summary>Orders Debian versions as <c>sort -V</c> does for these names: by their numeric parts.</summary>
    private sealed class VersionComparer : IComparer<string>
    {
        public static readonly VersionComparer Instance = new();

        public int Compare(string? x, string? y)
        {
            var a = Numbers(x);
            var b = Numbers(y);
            for (int i = 0; i < Math.Min(a.Length, b.Length); i++)
            {
                if (a[i] != b[i])
                {
                    return a[i].CompareTo(b[i]);
                }
            }
            return a.Length.CompareTo(b.Length);
        }

        private static long[] Numbers(string? s) =>
            System.Text.RegularExpressions.Regex.Matches(s ?? string.Empty, "[0-9]+")
                .Select(m => long.TryParse(m.Value, out var v) ? v : long.MaxValue)
                .ToArray();
    }
}

/// <summary>
/// A fact that needs the newer kernel's uAPI headers: skipped, with the reason, where they are missing,
/// unless <c>VFIO_UAPI_HEADERS_REQUIRED=1</c> (as CI sets it), where it runs and fails.
/// </summary>
[AttributeUsage(AttributeTargets.Method, AllowMultiple = false)]
public sealed class NewerUapiHeadersFactAttribute : FactAttribute
{
    public NewerUapiHeadersFactAttribute()
    {
        if (NewerUapiHeaders.Find(out var reason) is null && !NewerUapiHeaders.Required)
        {
            Skip = reason;
        }
    }
}
