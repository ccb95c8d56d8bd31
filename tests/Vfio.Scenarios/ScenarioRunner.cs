namespace Vfio.Scenarios;

/// <summary>Runs scenarios one by one and prints one result line for each.</summary>
/// <remarks>
/// The output format is read by tests/vm/lib.sh: <c>PASS name</c>, <c>FAIL name: reason</c> or
/// <c>SKIP name: reason</c> per scenario, then <c>SUMMARY passed=N failed=N skipped=N</c>.
/// </remarks>
internal static class ScenarioRunner
{
    /// <summary>Runs every scenario; returns the number that failed.</summary>
    public static async Task<int> RunAsync(IEnumerable<Scenario> scenarios, ScenarioContext context, TextWriter output)
    {
        int passed = 0;
        int failed = 0;
        int skipped = 0;
        foreach (Scenario scenario in scenarios)
        {
            var (outcome, reason) = await RunCoreAsync(scenario, context).ConfigureAwait(false);
            switch (outcome)
            {
                case Outcome.Passed:
                    passed++;
                    output.WriteLine("PASS " + scenario.Name);
                    break;
                case Outcome.Skipped:
                    skipped++;
                    output.WriteLine("SKIP " + scenario.Name + ": " + reason);
                    break;
                default:
                    failed++;
                    output.WriteLine("FAIL " + scenario.Name + ": " + reason);
                    break;
            }
            output.Flush();
        }
        output.WriteLine(FormattableString.Invariant($"SUMMARY passed={passed} failed={failed} skipped={skipped}"));
        output.Flush();
        return failed;
    }

    /// <summary>
    /// Runs one scenario; returns null when it passed, or why it did not (a skip included: where
    /// every scenario must apply, as on the simulated kernel, a skip is a failure).
    /// </summary>
    public static async Task<string?> RunOneAsync(Scenario scenario, ScenarioContext context)
    {
        var (outcome, reason) = await RunCoreAsync(scenario, context).ConfigureAwait(false);
        return outcome switch
        {
            Outcome.Passed => null,
            Outcome.Skipped => "skipped: " + reason,
            _ => reason,
        };
    }

    private enum Outcome
    {
        Passed,
        Failed,
        Skipped,
    }

    private static async Task<(Outcome Outcome, string Reason)> RunCoreAsync(Scenario scenario, ScenarioContext context)
    {
        try
        {
            await scenario.Run(context).ConfigureAwait(false);
            return (Outcome.Passed, string.Empty);
        }
#pragma warning disable CA1031 // A scenario's failure of any kind is reported, never propagated.
        catch (ScenarioSkippedException e)
        {
            return (Outcome.Skipped, OneLine(e.Message));
        }
        catch (ScenarioFailedException e)
        {
            return (Outcome.Failed, OneLine(e.Message));
        }
        catch (Exception e)
        {
            return (Outcome.Failed, OneLine(e.GetType().Name + ": " + e.Message));
        }
#pragma warning restore CA1031
    }

    private static string OneLine(string text) => text.ReplaceLineEndings(" ");
}
