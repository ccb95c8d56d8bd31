#!/usr/bin/env bash
# Packs Vfio, Vfio.Testing and Vfio.Cli, then builds and tests, outside this repository and from
# those packages alone, what a driver author writes: a driver (derived from PciVfioDevice) and a
# device model of their own device (derived from PciDeviceModel: a declared vendor-specific
# capability, a BAR, MSI-X, DMA, and completions scheduled on the kernel's device clock), with xunit
# tests that run the driver against the model on the simulated kernel. The driver and model are the
# copy engine of docs/device-models.md (samples/CopyEngine), copied as they are: proof that the
# guide's example compiles and runs on the public API. Then it installs the vfio tool from the same
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
