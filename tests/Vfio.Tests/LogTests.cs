using Microsoft.Extensions.Logging;
using Vfio.Testing;

namespace Vfio.Tests;

/// <summary>The library's source-generated log messages: lifecycle points with structured fields, silence on hot paths.</summary>
public class LogTests : KernelTest
{
    private sealed class Driver() : PciDriver<RecordingPciDevice>("edu", PciMatch.Id(0x1234, 0x11e8))
    {
        protected internal override RecordingPciDevice CreateDevice(PciDeviceContext context) => new(context);
    }

    [Fact]
    public async Task ProbeRegisterAndUnregisterLogTheDeviceAndGroupAsFields()
    {
        AddPci();
        Registry.AddDriver(new Driver());

        var device = (await Registry.ProbeAsync()).Registered.Single();
        await Registry.UnregisterAsync(device);
        device.Dispose();

        foreach (string name in new[] { "Registered", "Probed", "Unregistering", "Unregistered" })
        {
            var entry = Logs.Named(name).Should().ContainSingle(name).Subject;
            entry.Level.Should().Be(LogLevel.Information);
            entry.Category.Should().Be(typeof(VfioRegistry).FullName);
            entry["Device"].Should().Be("0000:00:03.0");
            entry["GroupId"].Should().Be(5);
        }
        Logs.Named("Probed").Single()["Driver"].Should().Be("edu");
        Logs.Named("Registered").Single()["DeviceSet"].Should().Be("device:0000:00:03.0");
    }

    [Fact]
    public async Task ReleaseRequestsAreLoggedWithTheirCount()
    {
        AddPci();
        var device = RegisterPci();
        device.TryGet(out var held).Should().BeTrue();
        var asked = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        device.WhenReleaseRequested = count =>
        {
            if (count == 1)
            {
                asked.TrySetResult();
            }
        };

        var unregister = Registry.UnregisterAsync(device);
        await asked.Task.WaitAsync(Guard);
        held.Dispose();
        await unregister.WaitAsync(Guard);

        var requests = Logs.Named("ReleaseRequested");
        requests.Count.Should().BeGreaterThanOrEqualTo(2);
        requests.Select(r => r["Count"]).Should().StartWith([0, 1]);
        requests[0]["Device"].Should().Be("0000:00:03.0");
        requests[0]["References"].Should().Be(1);
    }

    [Fact]
    public void GroupAndContainerEventsAreLoggedAtDebugWithTheGroupId()
    {
        AddPci();
        var device = RegisterPci();

        device.Open().Dispose();

        foreach (string name in new[] { "GroupOpened", "GroupAttached", "GroupDetached", "GroupClosed" })
        {
            var entry = Logs.Named(name).Should().ContainSingle(name).Subject;
            entry.Level.Should().Be(LogLevel.Debug);
            entry["GroupId"].Should().Be(5);
        }
        Logs.Named("ContainerOpened").Should().ContainSingle().Which.Level.Should().Be(LogLevel.Debug);
        Logs.Named("ContainerClosed").Should().ContainSingle().Which.Level.Should().Be(LogLevel.Debug);
    }

    [Fact]
    public void HotPathsLogNothing()
    {
        var model = new PciDeviceModel(0x1234, 0x11e8, 0x00ff00);
        model.DefineBar(0, 0x1000);
        AddPci(model: model);
        var device = RegisterPci();
        using var open = device.Open();
        using var region = device.OpenRegion(0);
        device.TryGet(out var warm).Should().BeTrue();
        warm.Dispose();
        Logs.Clear();

        for (ulong i = 0; i < 64; i++)
        {
            region.Write32(i * 4, (uint)i);
            region.Read32(i * 4).Should().Be((uint)i);
            device.ReadConfig16(PciConfig.VendorId);
            device.TryGet(out var reference).Should().BeTrue();
            reference.Dispose();
        }
        using (device.Open())
        {
            device.IsOpen.Should().BeTrue();
        }

        Logs.Entries.Should().BeEmpty("register access, references and nested opens are hot paths");
    }

    [Fact]
    public void NothingAboveDebugIsLoggedWhileOpeningAndClosing()
    {
        AddPci();
        var device = RegisterPci();
        Logs.Clear();

        device.Open().Dispose();

        Logs.Entries.Should().NotBeEmpty();
        Logs.Entries.Should().OnlyContain(e => e.Level <= LogLevel.Debug);
    }
}
