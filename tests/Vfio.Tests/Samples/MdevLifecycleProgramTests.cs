using MdevLifecycle;

namespace Vfio.Tests.Samples;

/// <summary>The MdevLifecycle sample's program on the simulated kernel, as <c>dotnet run</c> runs it.</summary>
public class MdevLifecycleProgramTests
{
    [Fact]
    public async Task EveryStepPassesOnTheSimulatedKernel()
    {
        using var output = new StringWriter();
        int exit = await MdevLifecycleProgram.RunAsync([], output);
        string text = output.ToString();
        exit.Should().Be(0, text);
        text.Should().Contain("[  ok] discover").And.Contain("mtty-2 \"Dual port serial\" vfio-pci (12 available)")
            .And.Contain("available_instances 12 -> 11")
            .And.Contain("port 1: \"mdev ok!\" back")
            .And.Contain("available_instances back to 12")
            .And.Contain("All 7 steps passed");
    }

    [Fact]
    public async Task AnUnknownTypeFailsTheDiscoverStep()
    {
        using var output = new StringWriter();
        int exit = await MdevLifecycleProgram.RunAsync(["--type", "mtty-7"], output);
        exit.Should().Be(1);
        output.ToString().Should().Contain("[FAIL] discover").And.Contain("offers no type mtty-7");
    }
}
