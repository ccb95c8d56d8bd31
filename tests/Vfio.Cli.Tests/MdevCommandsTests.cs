namespace Vfio.Cli.Tests;

/// <summary><c>vfio mdev list|create|remove</c>, on the simulated mtty parent.</summary>
public sealed class MdevCommandsTests : CliTest
{
    private const string Uuid = "8a3e2b2c-4d3a-4b6f-9c1d-1d2e3f4a5b6c";

    public MdevCommandsTests()
    {
        Kernel.AddMttyParent();
    }

    [Fact]
    public async Task ListShowsTheParentsTypesWithInstancesLeftAndTheDevices()
    {
        var result = await Run("mdev", "list");

        result.ExitCode.Should().Be(0);
        result.Output.Should().MatchRegex(@"mtty\s+mtty-1\s+Single port serial\s+vfio-pci\s+24");
        result.Output.Should().MatchRegex(@"mtty\s+mtty-2\s+Dual port serial\s+vfio-pci\s+12");
        result.Output.Should().Contain("No mdevs.");
    }

    [Fact]
    public async Task CreateLeavesTheDeviceWhichListShowsAndRemoveTakesAway()
    {
        var created = await Run("mdev", "create", "mtty", "mtty-2", "--uuid", Uuid, "--json");

        created.ExitCode.Should().Be(0);
        created.Json.GetProperty("uuid").GetString().Should().Be(Uuid);
        created.Json.GetProperty("action").GetString().Should().Be("created");

        var list = await Run("mdev", "list", "--json");
        var device = list.Json.GetProperty("devices").EnumerateArray().Should().ContainSingle().Subject;
        device.GetProperty("uuid").GetString().Should().Be(Uuid);
        device.GetProperty("type").GetString().Should().Be("mtty-2");
        device.GetProperty("parent").GetString().Should().Be("mtty");
        list.Json.GetProperty("parents")[0].GetProperty("types")[1].GetProperty("availableInstances").GetInt32().Should().Be(11);

        var removed = await Run("mdev", "remove", Uuid);

        removed.ExitCode.Should().Be(0);
        removed.Output.Should().Be($"Removed mdev {Uuid} (mtty-2 on mtty).{Environment.NewLine}");
        (await Run("mdev", "list", "--json")).Json.GetProperty("devices").GetArrayLength().Should().Be(0);
    }

    [Fact]
    public async Task AnUnknownParentOrTypeFailsListingWhatThereIs()
    {
        var parent = await Run("mdev", "create", "nope", "mtty-1");
        parent.ExitCode.Should().Be(1);
        parent.Error.Should().Contain("No mdev parent nope").And.Contain("mtty");

        var type = await Run("mdev", "create", "mtty", "mtty-9");
        type.ExitCode.Should().Be(1);
        type.Error.Should().Contain("offers no type mtty-9").And.Contain("mtty-1, mtty-2");
    }

    [Fact]
    public async Task RemovingAnMdevThatIsNotThereFailsAndAMalformedUuidIsAUsageError()
    {
        var missing = await Run("mdev", "remove", Uuid);
        missing.ExitCode.Should().Be(1);
        missing.Error.Should().Contain("No mdev " + Uuid);

        var malformed = await Run("mdev", "remove", "not-a-uuid");
        malformed.ExitCode.Should().Be(2);
    }
}
