using System.Text.Json.Nodes;
using System.Text.Json;
using Vfio.Testing;

namespace Vfio.Cli.Tests;

/// <summary><c>vfio bind</c> and <c>vfio unbind</c>, and the records that join them.</summary>
public sealed class BindCommandsTests : CliTest
{
    private readonly SimulatedPciDevice _nvme;

    public BindCommandsTests()
    {
        _nvme = AddNvme();
    }

    private string RecordPath => Path.Combine(Bindings, "0000:00:06.0.json");

    [Fact]
    public async Task BindMovesTheFunctionToVfioPciAndKeepsARecordOfItsDriver()
    {
        var result = await Run("bind", "0000:00:06.0");

        result.ExitCode.Should().Be(0);
        result.Error.Should().BeEmpty();
        _nvme.Driver.Should().Be("vfio-pci");
        result.Output.Should().Be(string.Join(Environment.NewLine,
            "ADDRESS       WAS   NOW       GROUP",
            "0000:00:06.0  nvme  vfio-pci  7",
            $"Nodes: {Dev("vfio/7")}, {Dev("vfio/devices/vfio0")}",
            "Give them back with: vfio unbind --restore 0000:00:06.0",
            ""));
        var record = JsonDocument.Parse(File.ReadAllText(RecordPath)).RootElement;
        record.GetProperty("address").GetString().Should().Be("0000:00:06.0");
        record.GetProperty("originalDriver").GetString().Should().Be("nvme");
        record.GetProperty("group").GetInt32().Should().Be(7);
    }

    [Fact]
    public async Task BindWithJsonDescribesEachFunctionAndTheNodes()
    {
        var result = await Run("bind", "0000:00:06.0", "--uid", "1000", "--gid", "100", "--json");

        result.ExitCode.Should().Be(0);
        var device = result.Json.GetProperty("devices")[0];
        device.GetProperty("address").GetString().Should().Be("0000:00:06.0");
        device.GetProperty("group").GetInt32().Should().Be(7);
        device.GetProperty("originalDriver").GetString().Should().Be("nvme");
        device.GetProperty("changed").GetBoolean().Should().BeTrue();
        device.GetProperty("driver").GetString().Should().Be("vfio-pci");
        device.GetProperty("record").GetString().Should().Be(RecordPath);
        result.Json.GetProperty("nodes")[0].GetString().Should().Be(Dev("vfio/7"));
        Kernel.ProcessUserId = 1000;
        Kernel.ProcessGroupId = 100;
        var permissions = VfioDiagnostics.Run(Kernel).Findings.Single(f => f.Check == "permissions");
        permissions.Found.Should().NotContain(Dev("vfio/7")).And.NotContain(Dev("vfio/devices/vfio0"), "the nodes are the user's now")
            .And.Contain(Dev("iommu") + " (crw-rw---- 0:0)", "iommufd's node stays root's");
    }

    [Fact]
    public async Task UnbindRestoreGivesTheFunctionBackToTheRecordedDriverAndDropsTheRecord()
    {
        (await Run("bind", "0000:00:06.0")).ExitCode.Should().Be(0);

        var result = await Run("unbind", "--restore", "0000:00:06.0");

        result.ExitCode.Should().Be(0);
        _nvme.Driver.Should().Be("nvme");
        _nvme.DriverOverride.Should().BeNull();
        result.Output.Should().Contain("0000:00:06.0  nvme  restored to its original driver nvme");
        File.Exists(RecordPath).Should().BeFalse();
    }

    [Fact]
    public async Task ALaterProcessRestoresFromTheRecordEvenAfterAPlainUnbind()
    {
        (await Run("bind", "0000:00:06.0")).ExitCode.Should().Be(0);
        var unbind = await Run("unbind", "0000:00:06.0", "--json");
        unbind.ExitCode.Should().Be(0);
        unbind.Json.GetProperty("devices")[0].GetProperty("driver").ValueKind.Should().Be(JsonValueKind.Null);
        _nvme.Driver.Should().BeNull();
        File.Exists(RecordPath).Should().BeTrue("a plain unbind keeps the record for a later restore");

        var restore = await Run("unbind", "--restore", "0000:00:06.0", "--json");

        restore.ExitCode.Should().Be(0);
        var device = restore.Json.GetProperty("devices")[0];
        device.GetProperty("driver").GetString().Should().Be("nvme");
        device.GetProperty("restored").GetBoolean().Should().BeTrue();
        device.GetProperty("recorded").GetBoolean().Should().BeTrue();
        device.GetProperty("originalDriver").GetString().Should().Be("nvme");
        device.GetProperty("error").ValueKind.Should().Be(JsonValueKind.Null);
    }

    [Theory]
    [InlineData("originalDriver", "../../../module/vfio/parameters")]
    [InlineData("originalOverride", "nvme/../../..")]
    [InlineData("address", "0000:00:07.0")]
    public async Task ARecordWhoseNamesAreNotNamesIsRefusedAndNothingIsWritten(string field, string value)
    {
        (await Run("bind", "0000:00:06.0")).ExitCode.Should().Be(0);
        var record = JsonNode.Parse(File.ReadAllText(RecordPath))!;
        record[field] = value;
        File.WriteAllText(RecordPath, record.ToJsonString());

        var result = await Run("unbind", "--restore", "0000:00:06.0", "--json");

        result.ExitCode.Should().NotBe(0);
        var device = result.Json.GetProperty("devices")[0];
        device.GetProperty("error").GetString().Should().Contain(RecordPath).And.Contain(value);
        _nvme.Driver.Should().Be("vfio-pci", "nothing was unbound for a record that cannot be trusted");
        File.Exists(RecordPath).Should().BeTrue("the record stays for the administrator to look at");
    }

    [Fact]
    public async Task RestoringWithoutARecordLetsTheKernelProbeAndSaysSo()
    {
        _nvme.Unbind();
        _nvme.Bind("vfio-pci");

        var result = await Run("unbind", "--restore", "0000:00:06.0");

        result.ExitCode.Should().Be(0);
        result.Output.Should().Contain("no record of its original driver");
        _nvme.Driver.Should().Be("nvme");
    }

    [Fact]
    public async Task BindingAFunctionOfAGroupWithAHostDriverIsRefusedUnlessTheWholeGroupIsBound()
    {
        var edu = Kernel.AddPciDevice("0000:00:04.0", new EduDeviceModel(), 4, driver: null);
        var shared = AddNvme("0000:00:04.1", 4);

        var refused = await Run("bind", "0000:00:04.0");

        refused.ExitCode.Should().Be(1);
        refused.Error.Should().Contain("0000:00:04.1 is bound to nvme").And.Contain("--group");
        (edu.Driver, shared.Driver).Should().Be((null, "nvme"));

        var group = await Run("bind", "--group", "0000:00:04.0", "--json");

        group.ExitCode.Should().Be(0);
        group.Json.GetProperty("devices").EnumerateArray().Select(d => d.GetProperty("address").GetString()).Should().Equal("0000:00:04.0", "0000:00:04.1");
        (edu.Driver, shared.Driver).Should().Be(("vfio-pci", "vfio-pci"));

        var back = await Run("unbind", "--restore", "--group", "0000:00:04.0");

        back.ExitCode.Should().Be(0);
        (edu.Driver, shared.Driver).Should().Be((null, "nvme"));
    }

    [Fact]
    public async Task RestoringOneFunctionOfAGroupStillOnVfioWarnsThatTheGroupIsNoLongerViable()
    {
        Kernel.AddPciDevice("0000:00:04.0", new EduDeviceModel(), 4, driver: null);
        AddNvme("0000:00:04.1", 4);
        (await Run("bind", "--group", "0000:00:04.0")).ExitCode.Should().Be(0);

        var result = await Run("unbind", "--restore", "0000:00:04.1", "--json");

        result.ExitCode.Should().Be(0);
        result.Json.GetProperty("warnings")[0].GetString().Should().Contain("group 4").And.Contain("0000:00:04.1 is on nvme");
    }

    [Fact]
    public async Task BindingAFunctionAlreadyOnVfioChangesNothingAndKeepsItsRecord()
    {
        (await Run("bind", "0000:00:06.0")).ExitCode.Should().Be(0);
        string before = File.ReadAllText(RecordPath);

        var again = await Run("bind", "0000:00:06.0");

        again.ExitCode.Should().Be(0);
        again.Output.Should().Contain("0000:00:06.0  (already)  vfio-pci  7").And.NotContain("Give them back");
        File.ReadAllText(RecordPath).Should().Be(before);
    }

    [Fact]
    public async Task AnAddressSysfsDoesNotHaveFailsNamingIt()
    {
        var result = await Run("bind", "0000:00:09.0");

        result.ExitCode.Should().Be(1);
        result.Error.Should().Contain("No PCI function 0000:00:09.0");
    }

    [Fact]
    public async Task UnbindingAFunctionInUseIsRefusedWithoutWait()
    {
        (await Run("bind", "0000:00:06.0")).ExitCode.Should().Be(0);
        await using var registry = new VfioRegistry(Kernel);
        var device = new PlainDevice(registry.FindPci(PciAddress.Parse("0000:00:06.0")));
        registry.Register(device);
        using (device.Open())
        {
            var result = await Run("unbind", "--restore", "0000:00:06.0", "--json");

            result.ExitCode.Should().Be(1);
            var entry = result.Json.GetProperty("devices")[0];
            entry.GetProperty("error").GetString().Should().Contain("is in use").And.Contain("--wait");
            entry.GetProperty("driver").GetString().Should().Be("vfio-pci");
            File.Exists(RecordPath).Should().BeTrue("a failed restore keeps the record");
        }
        await registry.UnregisterAsync(device);
        device.Dispose();
    }

    [Fact]
    public async Task UnbindWithWaitShowsProgressWhileTheKernelAsksTheHolderAndFinishesWhenItLetsGo()
    {
        (await Run("bind", "0000:00:06.0")).ExitCode.Should().Be(0);
        Kernel.ReleaseRequestInterval = TimeSpan.FromSeconds(1.5); // the kernel asks again after 1.5 s; the tool reports every second
        await using var registry = new VfioRegistry(Kernel);
        var device = new ReleasingDevice(registry.FindPci(PciAddress.Parse("0000:00:06.0")));
        registry.Register(device);
        device.Opened = device.Open();
        // The holder lets go once the tool has shown its progress, however late a loaded machine runs it.
        var error = new WatchedWriter("vfio: waiting for the process holding 0000:00:06.0");
        device.ReleaseAfter = error.Seen;

        var result = await Run(error, "unbind", "--restore", "--wait", "0000:00:06.0");

        result.ExitCode.Should().Be(0, result.Error);
        result.Error.Should().Contain("vfio: waiting for the process holding 0000:00:06.0 to release it");
        _nvme.Driver.Should().Be("nvme");
        await registry.UnregisterAsync(device);
        device.Dispose();
    }

    [Theory]
    [InlineData("--uid", "-1")]
    [InlineData("--gid", "x")]
    [InlineData("--timeout", "0")]
    public async Task InvalidOptionValuesAreUsageErrors(string option, string value)
    {
        var result = await Run("bind", "0000:00:06.0", option, value);

        result.ExitCode.Should().Be(2);
        _nvme.Driver.Should().Be("nvme");
    }

    [Fact]
    public async Task WhenTheRecordCannotBeKeptNothingIsBound()
    {
        File.WriteAllText(Path.Combine(Path.GetTempPath(), "vfio-cli-not-a-folder"), "");
        try
        {
            using var output = new StringWriter();
            using var error = new StringWriter();
            int code = await VfioCommandLine.RunAsync(["bind", "0000:00:06.0"], Kernel, output, error, Path.Combine(Path.GetTempPath(), "vfio-cli-not-a-folder", "bindings"));

            code.Should().Be(1);
            error.ToString().Should().Contain("Cannot keep binding records");
            _nvme.Driver.Should().Be("nvme");
        }
        finally
        {
            File.Delete(Path.Combine(Path.GetTempPath(), "vfio-cli-not-a-folder"));
        }
    }

    private sealed class PlainDevice(PciDeviceContext context) : PciVfioDevice(context);

    /// <summary>A driver that closes its device at the kernel's second request for it, off the notifier's thread.</summary>
    private sealed class ReleasingDevice(PciDeviceContext context) : PciVfioDevice(context)
    {
        public DeviceReference Opened { get; set; }

        public Task ReleaseAfter { get; set; } = Task.CompletedTask;

        protected override void OnReleaseRequested(int count)
        {
            if (count >= 1)
            {
                _ = ReleaseAfter.ContinueWith(_ => Opened.Dispose(), TaskScheduler.Default);
            }
        }
    }

    /// <summary>Error output whose <see cref="Seen"/> completes once <paramref name="text"/> has been written.</summary>
    private sealed class WatchedWriter(string text) : StringWriter
    {
        private readonly TaskCompletionSource _seen = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Task Seen => _seen.Task;

        public override void Write(char value)
        {
            base.Write(value);
            Check();
        }

        public override void Write(string? value)
        {
            base.Write(value);
            Check();
        }

        public override void Write(char[] buffer, int index, int count)
        {
            base.Write(buffer, index, count);
            Check();
        }

        private void Check()
        {
            if (!_seen.Task.IsCompleted && ToString().Contains(text, StringComparison.Ordinal))
            {
                _seen.TrySetResult();
            }
        }
    }
}
