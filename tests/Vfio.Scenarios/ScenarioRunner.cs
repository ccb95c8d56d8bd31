namespace Vfio.Scenarios;

/// <summary>Runs scenarios one by one and prints one result line for each.</summary>
/// <remarks>
/// The output format is read by tests/vm/run-vm-tests.sh: <c>PASS name</c> or
/// <c>FAIL name: reason</c> per scenario, then <c>SUMMARY passed=N failed=N</c>.
/// </remarks>
internal static class ScenarioRunner
{
    /// <summary>Runs every scenario; returns the number that failed.</summary>
    public static async Task<int> RunAsync(IEnumerable<Scenario> scenarios, ScenarioContext context, TextWriter output)
    {
        int passed = 0;
        int failed = 0;
        foreach (Scenario scenario in scenarios)
        {
            string? error = await RunOneAsync(scenario, context).ConfigureAwait(false);
            if (error is null)
            {
                passed++;
                output.WriteLine("PASS " + scenario.Name);
            }
            else
            {
                failed++;
                output.WriteLine("FAIL " + scenario.Name + ": " + error);
            }
            output.Flush();
        }
        output.WriteLine(FormattableString.Invariant($"SUMMARY passed={passed} failed={failed}"));
        output.Flush();
        return failed;
    }

    /// <summary>Runs one scenario; returns null when it passed, or why it failed.</summary>
    public static async Task<string?> RunOneAsync(Scenario scenario, ScenarioContext context)
    {
        try
        {
            await scenario.Run(context).ConfigureAwait(false);
            return null;
        }
#pragma warning disable CA1031 // A scenario's failure of any kind is reported, never propagated.
        catch (ScenarioFailedException e)
        {
            return OneLine(e.Message);
        }
        catch (Exception e)
        {
            return OneLine(e.GetType().Name + ": " + e.Message);
        }
#pragma warning restore CA1031
    }

    private static string OneLine(string text) => text.ReplaceLineEndings(" ");
}
