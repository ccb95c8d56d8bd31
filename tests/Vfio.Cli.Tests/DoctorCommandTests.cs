using Vfio.Testing;

namespace Vfio.Cli.Tests;

/// <summary><c>vfio doctor</c>.</summary>
public sealed class DoctorCommandTests : CliTest
{
    [Fact]
    public async Task AReadyMachineExitsZeroAndSaysSo()
    {
        Kernel.AddPciDevice("0000:00:03.0", new EduDeviceModel(), 3);

        var result = await Run("doctor");

        result.ExitCode.Should().Be(0);
        result.Output.Should().Contain("[ok     ] iommu").And.Contain("[ok     ] group.3").And.EndWith("VFIO is ready." + Environment.NewLine);
    }

    [Theory]
    [InlineData(false, "(vfio's own", "vfio, vfio-pci and vfio_iommu_type1 are loaded.")]
    [InlineData(true, "served by iommufd's compatibility container", "vfio_iommu_type1 is not needed")]
    public async Task TheContainerLineSaysWhichContainerServesTheNode(bool iommufd, string container, string modules)
    {
        Kernel.IommufdServesContainer = iommufd;
        Kernel.AddPciDevice("0000:00:03.0", new EduDeviceModel(), 3);

        var result = await Run("doctor");

        result.ExitCode.Should().Be(0, result.Output);
        result.Output.Should().MatchRegex(@"\[ok *\] backend\.container .*" + System.Text.RegularExpressions.Regex.Escape(container))
            .And.MatchRegex(@"\[ok *\] modules .*" + System.Text.RegularExpressions.Regex.Escape(modules));
    }

    [Fact]
    public async Task AMachineWithoutIommuExitsOneWithWhatToDo()
    {
        Kernel.Iommu = SimulatedIommuState.Off;

        var result = await Run("doctor");

        result.ExitCode.Should().Be(1);
        result.Output.Should().Contain("[error  ] iommu").And.Contain("-> Add intel_iommu=on").And.Contain("1 error(s)");
    }

    [Fact]
    public async Task JsonHasTheFindingsAndTheFacts()
    {
        Kernel.MemoryLockLimit = 8 << 20;

        var result = await Run("doctor", "--dma-size", "1G", "--json");

        result.ExitCode.Should().Be(1);
        var json = result.Json;
        json.GetProperty("version").GetInt32().Should().Be(1);
        json.GetProperty("worst").GetString().Should().Be("error");
        json.GetProperty("iommuEnabled").GetBoolean().Should().BeTrue();
        json.GetProperty("backends").EnumerateArray().Select(b => b.GetString()).Should().Equal(["container"], "iommufd counts once a bound device shows its cdev");
        json.GetProperty("memlockLimit").GetUInt64().Should().Be(8UL << 20);
        json.GetProperty("hugePages")[0].GetProperty("pageSize").GetUInt64().Should().Be(2UL << 20);
        var memlock = json.GetProperty("findings").EnumerateArray().Single(f => f.GetProperty("check").GetString() == "memlock");
        memlock.GetProperty("severity").GetString().Should().Be("error");
        memlock.GetProperty("found").GetString().Should().Contain("8 MiB").And.Contain("1 GiB");
        memlock.GetProperty("action").GetString().Should().Contain("ulimit -l");
    }

    [Theory]
    [InlineData("lots")]
    [InlineData("0")]
    [InlineData("99999999999G")]
    public async Task AMalformedDmaSizeIsAUsageError(string size)
    {
        var result = await Run("doctor", "--dma-size", size);

        result.ExitCode.Should().Be(2);
        result.Error.Should().Contain($"'{size}' is not a size");
    }
}
