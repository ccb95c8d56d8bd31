using Vfio.Scenarios;
using Vfio.Testing;

namespace Vfio.Tests.Simulation;

/// <summary>
/// The result lines the VM suites read (tests/vm/lib.sh): PASS, FAIL and SKIP per scenario, then the
/// SUMMARY with all three counts; a skip never counts as a pass.
/// </summary>
public sealed class ScenarioRunnerTests
{
    private static ScenarioContext Context(ScenarioMode mode) =>
        new(new SimulatedKernel(), "0000:00:03.0", 3) { Mode = mode };

    private static readonly Scenario Passes = new("passes", _ => { });
    private static readonly Scenario Fails = new("fails", _ => throw new ScenarioFailedException("it did not hold"));
    private static readonly Scenario SkipsInCompat = new("skips_in_compat", context => context.SkipIn(ScenarioMode.LegacyCompat, "no such thing there"));

    [Fact]
    public async Task ASkippedScenarioPrintsItsReasonAndCountsApart()
    {
        using var output = new StringWriter();
        int failed = await ScenarioRunner.RunAsync([Passes, Fails, SkipsInCompat], Context(ScenarioMode.LegacyCompat), output);
        failed.Should().Be(1);
        output.ToString().ReplaceLineEndings("\n").Should().Be(
            "PASS passes\n"
            + "FAIL fails: it did not hold\n"
            + "SKIP skips_in_compat: not in mode legacy-compat: no such thing there\n"
            + "SUMMARY passed=1 failed=1 skipped=1\n");
    }

    [Fact]
    public async Task AScenarioThatSkipsInAnotherModeRunsInThisOne()
    {
        using var output = new StringWriter();
        await ScenarioRunner.RunAsync([SkipsInCompat], Context(ScenarioMode.Legacy), output);
        output.ToString().ReplaceLineEndings("\n").Should().Be("PASS skips_in_compat\nSUMMARY passed=1 failed=0 skipped=0\n");
    }

    [Fact]
    public async Task RunOneReportsASkipAsNotPassed()
    {
        string? result = await ScenarioRunner.RunOneAsync(SkipsInCompat, Context(ScenarioMode.LegacyCompat));
        result.Should().Be("skipped: not in mode legacy-compat: no such thing there");
    }

    [Theory]
    [InlineData("legacy", (int)ScenarioMode.Legacy)]
    [InlineData("legacy-compat", (int)ScenarioMode.LegacyCompat)]
    [InlineData("iommufd", (int)ScenarioMode.Iommufd)]
    public void ModeNamesReadAndWriteAsTheSuitesSpellThem(string name, int mode)
    {
        ScenarioModes.Parse(name).Should().Be((ScenarioMode)mode);
        ((ScenarioMode)mode).Name().Should().Be(name);
    }

    [Fact]
    public void AnUnknownModeNameReadsAsNone() => ScenarioModes.Parse("compat").Should().BeNull();
}
