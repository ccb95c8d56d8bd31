using Vfio.Testing;

namespace Vfio.Cli.Tests;

/// <summary><c>vfio list</c>.</summary>
public sealed class ListCommandTests : CliTest
{
    public ListCommandTests()
    {
        Kernel.AddPciDevice("0000:00:03.0", new EduDeviceModel(), 3);
        Kernel.AddPciDevice("0000:00:04.0", new EduDeviceModel(), 4);
        AddNvme("0000:00:04.1", 4);
        AddNvme("0000:00:06.0", 7);
    }

    [Fact]
    public async Task FunctionsAreListedByGroupInAnAlignedTableWithEachGroupsViability()
    {
        var result = await Run("list");

        result.ExitCode.Should().Be(0);
        result.Error.Should().BeEmpty();
        result.Output.Should().Be(string.Join(Environment.NewLine,
            "GROUP  VIABLE                    ADDRESS       IDS        CLASS   DRIVER    OVERRIDE",
            "3      yes                       0000:00:03.0  1234:11e8  00ff00  vfio-pci  -",
            "4      no: 0000:00:04.1 on nvme  0000:00:04.0  1234:11e8  00ff00  vfio-pci  -",
            "                                 0000:00:04.1  1b36:0010  010802  nvme      -",
            "7      no: 0000:00:06.0 on nvme  0000:00:06.0  1b36:0010  010802  nvme      -",
            ""));
    }

    [Fact]
    public async Task JsonHasEveryGroupWithItsDevicesViabilityAndNode()
    {
        var result = await Run("list", "--json");

        result.ExitCode.Should().Be(0);
        var groups = result.Json.GetProperty("groups").EnumerateArray().ToList();
        groups.Select(g => g.GetProperty("id").GetInt32()).Should().Equal(3, 4, 7);
        var four = groups[1];
        four.GetProperty("viable").GetBoolean().Should().BeFalse();
        four.GetProperty("kind").GetString().Should().Be("iommu");
        four.GetProperty("node").GetString().Should().Be(Dev("vfio/4"));
        four.GetProperty("blocking")[0].GetProperty("name").GetString().Should().Be("0000:00:04.1");
        four.GetProperty("blocking")[0].GetProperty("driver").GetString().Should().Be("nvme");
        var nvme = four.GetProperty("devices")[1];
        nvme.GetProperty("address").GetString().Should().Be("0000:00:04.1");
        nvme.GetProperty("vendor").GetString().Should().Be("1b36");
        nvme.GetProperty("class").GetString().Should().Be("010802");
        nvme.GetProperty("driver").GetString().Should().Be("nvme");
        nvme.GetProperty("iommuGroup").GetInt32().Should().Be(4);
        result.Json.GetProperty("ungrouped").GetArrayLength().Should().Be(0);
    }

    [Theory]
    [InlineData(new[] { "--vendor", "1b36" }, new[] { "0000:00:04.1", "0000:00:06.0" })]
    [InlineData(new[] { "--device", "0x11e8" }, new[] { "0000:00:03.0", "0000:00:04.0" })]
    [InlineData(new[] { "--class", "0108" }, new[] { "0000:00:04.1", "0000:00:06.0" })]
    [InlineData(new[] { "--driver", "vfio-pci" }, new[] { "0000:00:03.0", "0000:00:04.0" })]
    [InlineData(new[] { "--driver", "nvme", "--vendor", "1b36", "--class", "01" }, new[] { "0000:00:04.1", "0000:00:06.0" })]
    [InlineData(new[] { "--driver", "none" }, new string[0])]
    public async Task FiltersKeepTheMatchingFunctions(string[] filter, string[] expected)
    {
        var result = await Run(["list", "--json", .. filter]);

        result.ExitCode.Should().Be(0);
        result.Json.GetProperty("groups").EnumerateArray()
            .SelectMany(g => g.GetProperty("devices").EnumerateArray()).Select(d => d.GetProperty("address").GetString())
            .Should().Equal(expected);
    }

    [Fact]
    public async Task NoMatchSaysSo()
    {
        var result = await Run("list", "--vendor", "dead");

        result.ExitCode.Should().Be(0);
        result.Output.Should().Be("No PCI function matches." + Environment.NewLine);
    }

    [Theory]
    [InlineData("--vendor", "xyz")]
    [InlineData("--vendor", "123456")]
    [InlineData("--class", "01x")]
    public async Task AMalformedFilterIsAUsageError(string option, string value)
    {
        var result = await Run("list", option, value);

        result.ExitCode.Should().Be(2);
        result.Error.Should().Contain($"'{value}'");
    }
}
