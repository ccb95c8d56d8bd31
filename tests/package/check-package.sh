#!/usr/bin/env bash
# Packs Vfio, Vfio.Testing and Vfio.Cli, then builds and tests, outside this repository and from
# those packages alone, what a driver author writes: a driver (derived from PciVfioDevice) and a
# device model of their own device (derived from PciDeviceModel: a declared vendor-specific
# capability, a BAR, MSI-X, DMA, and completions scheduled on the kernel's device clock), with xunit
# tests that run the driver against the model on the simulated kernel. The driver and model are the
# copy engine of docs/device-models.md (samples/CopyEngine), copied as they are: proof that the
# guide's example compiles and runs on the public API. A second model migrates: a counter derived
# from MigratableDeviceModel, moved from one function to another by its driver. Then it installs the vfio tool from the same
# feed and runs it, as a user does.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

version_of() { sed -n "s/.*Include=\"$1\" Version=\"\([^\"]*\)\".*/\1/p" "$repo/Directory.Packages.props"; }

dotnet pack "$repo/Vfio.sln" -c Release -o "$work/feed" -p:Version=0.1.0-check >/dev/null
mkdir -p "$work/consumer"
cp "$repo/samples/CopyEngine/CopyEngineModel.cs" "$repo/samples/CopyEngine/CopyEngineDevice.cs" "$work/consumer/"
# The local feed first; the machine's configured sources (a mirror, or nuget.org) for the rest.
cat > "$work/consumer/nuget.config" <<XML
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources>
    <add key="local" value="$work/feed" />
  </packageSources>
</configuration>
XML
cat > "$work/consumer/Consumer.csproj" <<XML
<Project Sdk="Microsoft.NET.Sdk">
  <PropertyGroup>
    <TargetFramework>net10.0</TargetFramework>
    <Nullable>enable</Nullable>
    <TreatWarningsAsErrors>true</TreatWarningsAsErrors>
    <ImplicitUsings>enable</ImplicitUsings>
    <IsTestProject>true</IsTestProject>
  </PropertyGroup>
  <ItemGroup>
    <PackageReference Include="Vfio" Version="0.1.0-check" />
    <PackageReference Include="Vfio.Testing" Version="0.1.0-check" />
    <PackageReference Include="Microsoft.NET.Test.Sdk" Version="$(version_of Microsoft.NET.Test.Sdk)" />
    <PackageReference Include="xunit" Version="$(version_of xunit)" />
    <PackageReference Include="xunit.runner.visualstudio" Version="$(version_of xunit.runner.visualstudio)" />
  </ItemGroup>
</Project>
XML
cat > "$work/consumer/CopyEngineTests.cs" <<'CS'
using CopyEngine;
using Vfio;
using Vfio.Testing;
using Xunit;

public class CopyEngineTests
{
    private static async Task<(SimulatedKernel, CopyEngineModel, VfioRegistry, CopyEngineDevice)> StartAsync(DeviceWorkMode mode)
    {
        var kernel = new SimulatedKernel { DeviceWork = mode };
        var model = new CopyEngineModel();
        kernel.AddPciDevice("0000:00:05.0", model, iommuGroup: 5);
        var registry = new VfioRegistry(kernel);
        registry.AddDriver(new CopyEngineDriver());
        var probe = await registry.ProbeAsync();
        return (kernel, model, registry, (CopyEngineDevice)Assert.Single(probe.Registered));
    }

    [Fact]
    public async Task TheDriverWaitsForTheDevicesCompletion()
    {
        var (kernel, model, registry, engine) = await StartAsync(DeviceWorkMode.Manual);
        await using (registry)
        {
            using (engine.Open())
            {
                Assert.Equal(new Version(2, 1), engine.Firmware);
                Assert.True(model.Firmware.Offset >= 0x40);
                using var source = engine.AllocateDmaBuffer(4096, DmaAccess.DeviceReads);
                using var destination = engine.AllocateDmaBuffer(4096, DmaAccess.DeviceWrites);
                source.Span.Fill(0x5a);
                Task copy = engine.CopyAsync(source, destination, 4096);
                Assert.False(copy.IsCompleted);
                Assert.Equal(1, kernel.AdvanceDeviceTime(CopyEngineModel.CopyTime));
                await copy.WaitAsync(TimeSpan.FromSeconds(30));
                Assert.All(destination.Span.ToArray(), b => Assert.Equal(0x5a, b));
            }
        }
        kernel.AssertNoLeaks();
    }

    [Fact]
    public async Task ACopyCompletesInTheBackgroundAndTheDeviceIsResetByFlr()
    {
        var (kernel, model, registry, engine) = await StartAsync(DeviceWorkMode.Background);
        await using (registry)
        {
            using (engine.Open())
            {
                Assert.True(engine.Info!.CanReset);
                using var source = engine.AllocateDmaBuffer(4096, DmaAccess.DeviceReads);
                using var destination = engine.AllocateDmaBuffer(4096, DmaAccess.DeviceWrites);
                new Random(1).NextBytes(source.Span);
                await engine.CopyAsync(source, destination, 4096).WaitAsync(TimeSpan.FromSeconds(30));
                Assert.Equal(source.Span.ToArray(), destination.Span.ToArray());
            }
        }
        await model.WhenIdleAsync();
        Assert.Equal(["flr"], ((SimulatedPciDevice)kernel.FindDevice("0000:00:05.0")).ResetMethods);
        Assert.Empty(kernel.DmaFaults);
        kernel.AssertNoLeaks();
    }
}
CS
# A migratable device of one's own: the model derives from MigratableDeviceModel outside the
# repository, its driver migrates it through the library's migration API.
cat > "$work/consumer/Counter.cs" <<'CS'
using System.Buffers.Binary;
using Vfio;
using Vfio.Testing;

namespace Counter;

/// <summary>A counter: BAR0 0x0 reads the count, a write to 0x4 adds to it while the device runs; its state is the count.</summary>
public sealed class CounterModel : MigratableDeviceModel
{
    private uint _count;
    private bool _running = true;

    public CounterModel()
        : base(0x1234, 0xc0f0, 0x00ff00, VfioMigrationCapabilities.StopCopy | VfioMigrationCapabilities.P2P)
    {
        DefineBar(0, 0x1000);
    }

    public List<VfioMigrationState> Arcs { get; } = [];

    public uint Count
    {
        get
        {
            lock (ModelLock)
            {
                return _count;
            }
        }
    }

    protected override ulong ReadBar(int bar, ulong offset, int size) => offset == 0 ? _count : 0;

    protected override void WriteBar(int bar, ulong offset, int size, ulong value)
    {
        if (offset == 4 && _running)
        {
            _count += (uint)value;
            MarkStateDirty();
        }
    }

    protected override byte[] SaveState() => BitConverter.GetBytes(_count);

    protected override bool LoadState(ReadOnlySpan<byte> state)
    {
        if (state.Length != 4)
        {
            return false;
        }
        _count = BinaryPrimitives.ReadUInt32LittleEndian(state);
        return true;
    }

    protected override void OnMigrationStateChanged(VfioMigrationState previous, VfioMigrationState current)
    {
        Arcs.Add(current);
        _running = current is VfioMigrationState.Running or VfioMigrationState.PreCopy;
    }
}

public sealed class CounterDevice(PciDeviceContext context) : PciVfioDevice(context)
{
    private MmioRegion? _registers;

    protected override void OnFirstOpen()
    {
        EnableCommand(memorySpace: true, busMaster: false);
        _registers = OpenRegion(0);
    }

    protected override void OnLastClose() => _registers?.Dispose();

    public uint Count => Registers.Read32(0);

    public void Add(uint amount) => Registers.Write32(4, amount);

    private MmioRegion Registers => _registers ?? throw new InvalidOperationException("Open the device first.");
}

public sealed class CounterDriver() : PciDriver<CounterDevice>("counter", PciMatch.Id(0x1234, 0xc0f0))
{
    protected override CounterDevice CreateDevice(PciDeviceContext context) => new(context);
}
CS
cat > "$work/consumer/CounterMigrationTests.cs" <<'CS'
using Counter;
using Vfio;
using Vfio.Testing;
using Xunit;

public class CounterMigrationTests
{
    [Fact]
    public async Task TheCounterMigratesAsTheStateItsModelSaves()
    {
        var kernel = new SimulatedKernel();
        var source = new CounterModel();
        var destination = new CounterModel();
        kernel.AddPciDevice("0000:00:06.0", source, iommuGroup: 6);
        kernel.AddPciDevice("0000:00:07.0", destination, iommuGroup: 7);
        await using (var registry = new VfioRegistry(kernel))
        {
            registry.AddDriver(new CounterDriver());
            var devices = (await registry.ProbeAsync()).Registered.Cast<CounterDevice>().OrderBy(d => d.Name).ToArray();
            Assert.Equal(2, devices.Length);
            using (devices[0].Open())
            using (devices[1].Open())
            {
                devices[0].Add(40);
                devices[0].Add(2);
                var migration = devices[0].GetMigration();
                migration.SetState(VfioMigrationState.StopCopy);
                devices[0].Add(1000);
                using var saved = new MemoryStream();
                await migration.SaveAsync(saved);
                var resume = devices[1].GetMigration();
                resume.SetState(VfioMigrationState.Resuming);
                saved.Position = 0;
                await resume.ResumeAsync(saved);
                resume.SetState(VfioMigrationState.Running);

                Assert.Equal(42u, devices[1].Count);
                Assert.Equal(42u, destination.Count);
                Assert.Equal([VfioMigrationState.RunningP2P, VfioMigrationState.Stop, VfioMigrationState.StopCopy], source.Arcs);
                migration.SetState(VfioMigrationState.Running);
            }
        }
        kernel.AssertNoLeaks();
    }
}
CS
cd "$work/consumer"
# Packages of this check must not be served from the cache of an earlier run.
export NUGET_PACKAGES="$work/packages"
if log="$(dotnet test -c Release 2>&1)"; then
  printf '%s\n' "$log" | grep -E '^(Passed|Failed)!' || true
  echo "package consumer: ok"
else
  printf '%s\n' "$log" | tail -n 40
  echo "package consumer: FAILED"
  exit 1
fi

# The tool, installed as a user installs it; `vfio list --json` runs on this machine's sysfs.
dotnet tool install --tool-path "$work/tools" --add-source "$work/feed" Vfio.Cli --version 0.1.0-check >/dev/null
"$work/tools/vfio" --version
"$work/tools/vfio" list --json | grep -q '"version": 1'
echo "package tool: ok"
