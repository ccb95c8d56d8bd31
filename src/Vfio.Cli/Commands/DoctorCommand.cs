using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using Vfio.Cli.Output;

namespace Vfio.Cli.Commands;

/// <summary><c>vfio doctor</c>: what VFIO needs on this machine, what is missing and what to do.</summary>
internal static class DoctorCommand
{
    public static Command Create(Cli cli)
    {
        var dmaSize = new Option<ulong?>("--dma-size")
        {
            Description = "The DMA memory your driver maps (e.g. 512M, 2G): checked against the locked-memory limit and the free hugepages",
            CustomParser = ParseSize,
        };
        var command = new Command("doctor", "Check the IOMMU, the vfio modules and interfaces, the locked-memory limit, hugepages, node permissions and the groups of bound devices; exit code 1 when something is an error")
        {
            dmaSize,
        };
        command.SetAction(cli.Action((parse, json, _) =>
        {
            var report = VfioDiagnostics.Run(cli.Kernel, new VfioDiagnosticsOptions { DmaBytes = parse.GetValue(dmaSize) });
            if (json)
            {
                cli.WriteJson(new DoctorDocument(Schema.Version, Severity(report.Worst), report.IommuEnabled, Backends(report.Backends),
                    report.MemoryLockLimit, report.MemoryLockExempt,
                    [.. report.HugePages.Select(p => new HugePagePoolJson(p.PageSize, p.Total, p.Free))],
                    [.. report.Findings.Select(f => new FindingJson(f.Check, Severity(f.Severity), f.Found, f.Action))]), CliJson.Default.DoctorDocument);
            }
            else
            {
                int width = report.Findings.Max(f => f.Check.Length);
                foreach (var finding in report.Findings)
                {
                    cli.Output.WriteLine($"[{Severity(finding.Severity),-7}] {finding.Check.PadRight(width)}  {finding.Found}");
                    if (finding.Action is { } action)
                    {
                        cli.Output.WriteLine($"{new string(' ', 10 + width + 2)}-> {action}");
                    }
                }
                int errors = report.Findings.Count(f => f.Severity == DiagnosticSeverity.Error);
                int warnings = report.Findings.Count(f => f.Severity == DiagnosticSeverity.Warning);
                cli.Output.WriteLine(errors == 0 && warnings == 0
                    ? "VFIO is ready."
                    : string.Create(CultureInfo.InvariantCulture, $"{errors} error(s), {warnings} warning(s)."));
            }
            return Task.FromResult(report.Worst == DiagnosticSeverity.Error ? Cli.Failure : Cli.Ok);
        }));
        return command;
    }

    private static string Severity(DiagnosticSeverity severity) => severity switch
    {
        DiagnosticSeverity.Ok => "ok",
        DiagnosticSeverity.Info => "info",
        DiagnosticSeverity.Warning => "warning",
        _ => "error",
    };

    private static List<string> Backends(VfioBackends backends)
    {
        var names = new List<string>();
        if (backends.HasFlag(VfioBackends.LegacyContainer))
        {
            names.Add("container");
        }
        if (backends.HasFlag(VfioBackends.Iommufd))
        {
            names.Add("iommufd");
        }
        if (backends.HasFlag(VfioBackends.UnsafeNoIommu))
        {
            names.Add("noiommu");
        }
        return names;
    }

    /// <summary>"4096", "64K", "512M", "2G" (binary units).</summary>
    private static ulong? ParseSize(ArgumentResult result)
    {
        string text = result.Tokens.Count > 0 ? result.Tokens[0].Value.Trim() : string.Empty;
        int shift = text.Length == 0 ? 0 : char.ToUpperInvariant(text[^1]) switch
        {
            'K' => 10,
            'M' => 20,
            'G' => 30,
            'T' => 40,
            _ => 0,
        };
        string digits = shift == 0 ? text : text[..^1];
        if (!ulong.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out ulong value) || value == 0 || value > (ulong.MaxValue >> shift))
        {
            result.AddError($"'{text}' is not a size such as 4096, 64K, 512M or 2G.");
            return null;
        }
        return value << shift;
    }
}
