using MigrationSample;

namespace Vfio.Tests.Samples;

/// <summary>The migration sample's round trip, as <c>dotnet run --project samples/Migration</c> runs it.</summary>
public class MigrationProgramTests
{
    [Fact]
    public async Task TheRoundTripRestoresTheSourceStateOnTheDestination()
    {
        using var output = new StringWriter();
        int exit = await MigrationProgram.RunAsync(output);
        string report = output.ToString();
        exit.Should().Be(0, report);
        report.Should().Contain("RUNNING -> RUNNING_P2P -> STOP -> STOP_COPY")
            .And.Contain("destination state equals source state")
            .And.Contain("RESUMING -> STOP -> RUNNING_P2P -> RUNNING")
            .And.NotContain("FAIL");
        report.Split('\n', StringSplitOptions.RemoveEmptyEntries).Should().HaveCount(7);
    }
}
