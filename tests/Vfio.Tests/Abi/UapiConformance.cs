using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace Vfio.Tests.Abi;

/// <summary>What one conformance run checked and what it found.</summary>
internal sealed record UapiConformanceReport(
    int Structs,
    int Fields,
    int Constants,
    int Enums,
    IReadOnlyList<string> Problems,
    IReadOnlyList<string> AbsentFromHeader,
    IReadOnlyList<string> PaddingSkipped,
    IReadOnlyList<string> HeaderMacrosNotMirrored)
{
    public string Summary =>
        $"ABI: {Structs} structs, {Fields} fields, {Constants} constants checked " +
        $"({Enums} enum types; {AbsentFromHeader.Count} items absent from this header, newer or removed; " +
        $"{PaddingSkipped.Count} padding fields skipped)";
}

/// <summary>
/// Proves the C# view of <c>&lt;linux/vfio.h&gt;</c> and <c>&lt;linux/iommufd.h&gt;</c> against the headers
/// themselves: writes a C program with a <c>_Static_assert</c> for the size of every struct, the offset
/// and size of every field and the value of every constant and ioctl number, and compiles it with gcc.
/// gcc reports every failed assertion, and each assertion's message names its item and the C# value.
/// <c>&lt;linux/iommufd.h&gt;</c> is included where it exists (Linux 6.2 and later); its items are guarded.
/// </summary>
internal static partial class UapiConformance
{
    private const string MessagePrefix = "ABI ";

    /// <summary>The headers the check includes, the optional one only where it exists.</summary>
    private const string Includes =
        "#include <linux/vfio.h>\n" +
        "#if __has_include(<linux/iommufd.h>)\n" +
        "#include <linux/iommufd.h>\n" +
        "#endif\n";

    /// <summary>
    /// gcc arguments that put an unpacked header tree (<c>…/usr/include</c> of a linux-libc-dev) ahead of
    /// the machine's own, its multiarch <c>asm/</c> folder included.
    /// </summary>
    public static async Task<IReadOnlyList<string>> IncludeArgumentsAsync(string includeFolder, string gcc = "gcc")
    {
        var multiarch = (await Gcc.RunAsync(gcc, ["-print-multiarch"], string.Empty)).StdOut.Trim();
        var arguments = new List<string> { "-isystem", includeFolder };
        if (multiarch.Length > 0 && Directory.Exists(Path.Combine(includeFolder, multiarch)))
        {
            arguments.AddRange(["-isystem", Path.Combine(includeFolder, multiarch)]);
        }
        return arguments;
    }

    public static async Task<UapiConformanceReport> CheckAsync(UapiModel model, string gcc = "gcc", IReadOnlyList<string>? extraArguments = null)
    {
        extraArguments ??= [];
        var macros = await HeaderMacrosAsync(gcc, extraArguments);
        var present = model.Present(macros.Keys.ToHashSet(StringComparer.Ordinal), out var absent);

        var source = Generate(present, out int fields);
        var result = await Gcc.RunAsync(gcc, ["-std=gnu11", "-fsyntax-only", "-x", "c", .. extraArguments, "-"], source);

        // One problem per failing source line, named by the item its assertion checks: an assertion's
        // own message, or for any other error (an identifier C lacks) the error with the item appended.
        var sourceLines = source.Split('\n');
        var problems = new List<string>();
        var reportedLines = new HashSet<int>();
        foreach (Match error in GccError().Matches(result.StdErr))
        {
            int line = int.Parse(error.Groups["line"].Value, CultureInfo.InvariantCulture);
            if (!reportedLines.Add(line))
            {
                continue;
            }
            var text = error.Groups["text"].Value.Trim();
            var failed = FailedAssertion().Match(text);
            var item = line <= sourceLines.Length ? AssertionMessage().Match(sourceLines[line - 1]) : Match.Empty;
            problems.Add(failed.Success ? failed.Groups["item"].Value
                : item.Success ? $"{item.Groups["item"].Value}: {text}"
                : text);
        }
        if (result.ExitCode != 0 && problems.Count == 0)
        {
            problems.Add($"gcc exited with {result.ExitCode}: {result.StdErr.Trim()}");
        }

        var mirrored = present.Constants.Select(c => c.Name).ToHashSet(StringComparer.Ordinal);
        var notMirrored = macros
            .Where(m => (m.Key.StartsWith("VFIO_", StringComparison.Ordinal) || m.Key.StartsWith("IOMMU_", StringComparison.Ordinal))
                && !m.Value && !mirrored.Contains(m.Key))
            .Select(m => m.Key)
            .Order(StringComparer.Ordinal)
            .ToList();

        return new UapiConformanceReport(
            present.Structs.Count,
            fields,
            present.Constants.Count,
            present.Enums.Count,
            problems,
            absent,
            present.Structs.SelectMany(s => s.PaddingFields.Select(p => $"{s.Name}.{p}")).ToList(),
            notMirrored);
    }

    /// <summary>The C program of static assertions for <paramref name="model"/>.</summary>
    public static string Generate(UapiModel model, out int fieldCount)
    {
        var c = new StringBuilder();
        c.AppendLine("/* Generated from the C# uAPI view; every assertion names its item. */");
        c.Append(Includes);
        c.AppendLine();
        fieldCount = 0;
        foreach (var s in model.Structs)
        {
            var type = $"struct {s.Name}";
            Assert(c, $"sizeof({type}) == {s.Size}", $"sizeof({type}) is {s.Size} in C#");
            foreach (var f in s.Fields)
            {
                Assert(c, $"__builtin_offsetof({type}, {f.Name}) == {f.Offset}", $"offsetof({type}, {f.Name}) is {f.Offset} in C#");
                Assert(c, $"sizeof((({type} *)0)->{f.Name}) == {f.Size}", $"sizeof({s.Name}.{f.Name}) is {f.Size} in C#");
                fieldCount++;
            }
            if (s.FlexibleArray is { } flex)
            {
                Assert(c, $"__builtin_offsetof({type}, {flex.Name}) == {flex.Offset}",
                    $"offsetof({type}, {flex.Name}[]) is {flex.Offset} in C# (the flexible array must start at sizeof)");
                Assert(c, $"sizeof((({type} *)0)->{flex.Name}[0]) == {flex.ElementSize}",
                    $"sizeof({s.Name}.{flex.Name}[0]) is {flex.ElementSize} in C#");
                fieldCount++;
            }
            c.AppendLine();
        }
        foreach (var e in model.Enums)
        {
            Assert(c, $"sizeof(enum {e.Name}) == {e.Size}", $"sizeof(enum {e.Name}) is {e.Size} in C#");
        }
        foreach (var k in model.Constants)
        {
            Assert(c, $"({k.Name}) == {k.CLiteral}", $"{k.Name} is {Display(k.CLiteral)} in C#");
        }
        return c.ToString();
    }

    private static void Assert(StringBuilder c, string condition, string message) =>
        c.Append("_Static_assert(").Append(condition).Append(", \"").Append(MessagePrefix).Append(message).AppendLine("\");");

    private static string Display(string literal)
    {
        var digits = literal.TrimEnd('u', 'l');
        return ulong.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out var v) && v > 9
            ? $"{v} (0x{v:X})"
            : digits;
    }

    /// <summary>
    /// The macros the header defines, by name, each marked true when function-like. Fails clearly when
    /// gcc or the header is missing.
    /// </summary>
    private static async Task<Dictionary<string, bool>> HeaderMacrosAsync(string gcc, IReadOnlyList<string> extraArguments)
    {
        var result = await Gcc.RunAsync(gcc, ["-dM", "-E", "-x", "c", .. extraArguments, "-"], Includes);
        if (result.ExitCode != 0)
        {
            throw new InvalidOperationException(
                $"gcc could not read <linux/vfio.h> ({result.StdErr.Trim()}): {Gcc.InstallHint}.");
        }
        var macros = new Dictionary<string, bool>(StringComparer.Ordinal);
        foreach (Match m in Define().Matches(result.StdOut))
        {
            macros[m.Groups["name"].Value] = m.Groups["args"].Success;
        }
        if (!macros.ContainsKey("VFIO_API_VERSION"))
        {
            throw new InvalidOperationException($"<linux/vfio.h> as gcc sees it defines no VFIO_API_VERSION: {Gcc.InstallHint}.");
        }
        return macros;
    }

    [GeneratedRegex(@"static assertion failed: ""ABI (?<item>[^""]*)""")]
    private static partial Regex FailedAssertion();

    [GeneratedRegex(@"^<stdin>:(?<line>\d+):\d+: error: (?<text>.*)$", RegexOptions.Multiline)]
    private static partial Regex GccError();

    [GeneratedRegex(@", ""ABI (?<item>[^""]*)""\);$")]
    private static partial Regex AssertionMessage();

    [GeneratedRegex(@"^#define (?<name>\w+)(?<args>\()?", RegexOptions.Multiline)]
    private static partial Regex Define();
}
