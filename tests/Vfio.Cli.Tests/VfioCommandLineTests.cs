namespace Vfio.Cli.Tests;

/// <summary>The command line as a whole: usage errors, help, the error document of --json.</summary>
public sealed class VfioCommandLineTests : CliTest
{
    [Fact]
    public async Task NoCommandIsAUsageError()
    {
        var result = await Run();

        result.ExitCode.Should().Be(2);
        result.Error.Should().Contain("Try 'vfio --help'");
        result.Output.Should().BeEmpty();
    }

    [Fact]
    public async Task AnUnknownOptionIsAUsageErrorThatPointsToTheCommandsHelp()
    {
        var result = await Run("bind", "0000:00:06.0", "--frobnicate");

        result.ExitCode.Should().Be(2);
        result.Error.Should().Contain("--frobnicate").And.Contain("vfio bind --help");
    }

    [Theory]
    [InlineData("bind", "0000:00:zz.0")]
    [InlineData("unbind", "06.0")]
    [InlineData("show", "0000:00:32.0")]
    public async Task AMalformedAddressIsAUsageErrorNamingIt(string command, string address)
    {
        var result = await Run(command, address);

        result.ExitCode.Should().Be(2);
        result.Error.Should().Contain($"'{address}' is not a PCI address");
    }

    [Fact]
    public async Task HelpListsEveryCommandAndSucceeds()
    {
        var result = await Run("--help");

        result.ExitCode.Should().Be(0);
        result.Output.Should().Contain("list").And.Contain("bind").And.Contain("unbind").And.Contain("show").And.Contain("doctor").And.Contain("mdev");
    }

    [Fact]
    public async Task AFailureWithJsonPrintsTheErrorDocumentAndTheMessage()
    {
        var result = await Run("show", "0000:00:09.0", "--json");

        result.ExitCode.Should().Be(1);
        result.Error.Should().StartWith("vfio: No PCI function 0000:00:09.0");
        var error = result.Json.GetProperty("error");
        result.Json.GetProperty("version").GetInt32().Should().Be(1);
        error.GetProperty("message").GetString().Should().Contain("0000:00:09.0");
        error.GetProperty("exitCode").GetInt32().Should().Be(1);
    }
}
