using System.Text.RegularExpressions;
using CopyEngine;
using Vfio.Testing;

namespace Vfio.Tests.Samples;

/// <summary>The device model guide's example (docs/device-models.md): the copy engine's model and driver, and the guide showing them as they are.</summary>
public sealed partial class CopyEngineDeviceTests : IAsyncDisposable
{
    private readonly SimulatedKernel _kernel = new();
    private readonly CopyEngineModel _model = new();
    private readonly VfioRegistry _registry;

    public CopyEngineDeviceTests()
    {
        _kernel.AddPciDevice("0000:00:05.0", _model, iommuGroup: 5);
        _registry = new VfioRegistry(_kernel);
        _registry.AddDriver(new CopyEngineDriver());
    }

    public async ValueTask DisposeAsync()
    {
        await _registry.DisposeAsync();
        _kernel.DeviceWork = DeviceWorkMode.Background;
        await _model.WhenIdleAsync().WaitAsync(TimeSpan.FromSeconds(30));
        _kernel.AssertNoLeaks();
    }

    private async Task<CopyEngineDevice> ProbeAsync() => (CopyEngineDevice)(await _registry.ProbeAsync()).Registered.Single();

    [GeneratedRegex(@"<!-- example: (?<path>[^ ]+) -->\s*```csharp\n(?<code>.*?)```", RegexOptions.Singleline)]
    private static partial Regex Example();

    [Fact]
    public void TheGuideShowsTheSampleWordForWord()
    {
        string guide = Path.Combine(AppContext.BaseDirectory, "Guide");
        string text = File.ReadAllText(Path.Combine(guide, "docs/device-models.md")).ReplaceLineEndings("\n");
        var examples = Example().Matches(text);

        examples.Should().HaveCount(2);
        foreach (Match example in examples)
        {
            string source = File.ReadAllText(Path.Combine(guide, example.Groups["path"].Value)).ReplaceLineEndings("\n");
            var marked = Regex.Match(source, @"// <(?<tag>guide-\w+)>\n(?<code>.*?)// </\k<tag>>\n", RegexOptions.Singleline);
            marked.Success.Should().BeTrue("{0} marks the code the guide shows", example.Groups["path"].Value);
            example.Groups["code"].Value.Should().Be(marked.Groups["code"].Value, "the guide shows {0} as it is", example.Groups["path"].Value);
        }
    }

    [Fact]
    public async Task ACopyCompletesByItsInterruptInTheBackground()
    {
        var engine = await ProbeAsync();
        using (engine.Open())
        {
            using var source = engine.AllocateDmaBuffer(8192, DmaAccess.DeviceReads);
            using var destination = engine.AllocateDmaBuffer(8192, DmaAccess.DeviceWrites);
            new Random(3).NextBytes(source.Span);

            await engine.CopyAsync(source, destination, 8192).WaitAsync(TimeSpan.FromSeconds(30));

            destination.Span.ToArray().Should().Equal(source.Span.ToArray());
        }
        _kernel.DmaFaults.Should().BeEmpty();
    }

    /// <summary>The guide's test, word for word in spirit: the driver's wait ends only when the device clock lets the copy happen.</summary>
    [Fact]
    public async Task TheDriverWaitsUntilTheDeviceClockLetsTheCopyHappen()
    {
        _kernel.DeviceWork = DeviceWorkMode.Manual;
        var engine = await ProbeAsync();
        using (engine.Open())
        {
            using var source = engine.AllocateDmaBuffer(4096, DmaAccess.DeviceReads);
            using var destination = engine.AllocateDmaBuffer(4096, DmaAccess.DeviceWrites);
            source.Span.Fill(0x5a);

            Task copy = engine.CopyAsync(source, destination, 4096);
            _kernel.AdvanceDeviceTime(CopyEngineModel.CopyTime / 2).Should().Be(0);
            copy.IsCompleted.Should().BeFalse("the device has not copied yet");
            destination.Span.ToArray().Should().OnlyContain(b => b == 0);

            _kernel.AdvanceDeviceTime(CopyEngineModel.CopyTime / 2).Should().Be(1);
            await copy.WaitAsync(TimeSpan.FromSeconds(30));
            destination.Span.ToArray().Should().OnlyContain(b => b == 0x5a);
        }
    }

    [Fact]
    public async Task ACopyToMemoryTheDeviceMayNotWriteFailsAndTheFaultIsRecorded()
    {
        var engine = await ProbeAsync();
        using (engine.Open())
        {
            using var source = engine.AllocateDmaBuffer(4096, DmaAccess.DeviceReads);
            using var readOnly = engine.AllocateDmaBuffer(4096, DmaAccess.DeviceReads);

            var copy = () => engine.CopyAsync(source, readOnly, 4096).WaitAsync(TimeSpan.FromSeconds(30));

            await copy.Should().ThrowAsync<IOException>().WithMessage("*could not reach a buffer*");
        }
        _kernel.DmaFaults.Should().ContainSingle();
    }

    [Fact]
    public async Task TheVendorCapabilityCarriesTheFirmwareVersionAndItsWritableByte()
    {
        var engine = await ProbeAsync();
        using (engine.Open())
        {
            engine.Firmware.Should().Be(new Version(2, 1));
            int at = _model.Firmware.Offset;
            engine.WriteConfig8(at + 5, 128);
            engine.WriteConfig8(at + 3, 9);
            engine.ReadConfig8(at + 5).Should().Be(128, "vfio-pci writes a vendor capability through, and the byte is writable");
            engine.Firmware.Should().Be(new Version(2, 1), "the version bytes are read only");
        }
    }

    [Fact]
    public async Task TheEngineHasFlrSoItReportsResetAndIsResetAtEveryOpen()
    {
        var engine = await ProbeAsync();
        ((SimulatedPciDevice)_kernel.FindDevice("0000:00:05.0")).ResetMethods.Should().Equal("flr");
        using (engine.Open())
        {
            engine.Info!.CanReset.Should().BeTrue();
            using var region = engine.OpenRegion(0);
            region.Write32(0x18, 77);
            engine.Reset();
            region.Read32(0x18).Should().Be(0u);
            region.Write32(0x18, 77);
        }
        using (engine.Open())
        {
            using var region = engine.OpenRegion(0);
            region.Read32(0x18).Should().Be(0u, "the close and the open reset it");
            region.Read32(0x00).Should().Be(CopyEngineModel.Identification);
        }
    }
}
