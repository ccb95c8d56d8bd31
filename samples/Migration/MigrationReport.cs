using System.Globalization;
using Vfio;

namespace MigrationSample;

/// <summary>The sample's report lines: "[  ok] step        what happened".</summary>
public static class MigrationReport
{
    /// <summary>A state as the kernel's headers name it (STOP_COPY, RUNNING_P2P).</summary>
    /// <param name="state">The state.</param>
    public static string Name(VfioMigrationState state) => state switch
    {
        VfioMigrationState.StopCopy => "STOP_COPY",
        VfioMigrationState.RunningP2P => "RUNNING_P2P",
        VfioMigrationState.PreCopy => "PRE_COPY",
        VfioMigrationState.PreCopyP2P => "PRE_COPY_P2P",
        _ => state.ToString().ToUpperInvariant(),
    };

    /// <summary>Writes one step's line.</summary>
    /// <param name="output">Where it goes.</param>
    /// <param name="step">The step's name.</param>
    /// <param name="what">What happened.</param>
    /// <param name="ok">False for a step that failed.</param>
    public static Task Line(TextWriter output, string step, string what, bool ok = true) =>
        output.WriteLineAsync(string.Create(CultureInfo.InvariantCulture, $"[{(ok ? "  ok" : "FAIL")}] {step,-11} {what}"));
}
