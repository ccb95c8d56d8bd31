#!/usr/bin/env bash
# Packs Vfio, Vfio.Testing and Vfio.Cli, then builds and runs a driver project outside this
# repository that references the first two as packages, derives a device from PciVfioDevice and
# drives it on the simulated kernel, and installs the vfio tool from the same feed and runs it:
# proof that the packages work as a driver author and a user consume them.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

dotnet pack "$repo/Vfio.sln" -c Release -o "$work/feed" -p:Version=0.1.0-check >/dev/null
mkdir -p "$work/consumer"
cat > "$work/consumer/nuget.config" <<XML
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources>
    <add key="local" value="$work/feed" />
  </packageSources>
</configuration>
XML
cat > "$work/consumer/Consumer.csproj" <<'XML'
<Project Sdk="Microsoft.NET.Sdk">
  <PropertyGroup>
    <OutputType>Exe</OutputType>
    <TargetFramework>net10.0</TargetFramework>
    <Nullable>enable</Nullable>
    <TreatWarningsAsErrors>true</TreatWarningsAsErrors>
    <ImplicitUsings>enable</ImplicitUsings>
  </PropertyGroup>
  <ItemGroup>
    <PackageReference Include="Vfio" Version="0.1.0-check" />
    <PackageReference Include="Vfio.Testing" Version="0.1.0-check" />
  </ItemGroup>
</Project>
XML
cat > "$work/consumer/Program.cs" <<'CS'
using Vfio;
using Vfio.Testing;

var kernel = new SimulatedKernel();
kernel.AddPciDevice("0000:00:05.0", 0x1234, 0x11e8, 0x00ff00, 9);
await using (var registry = new VfioRegistry(kernel))
{
    registry.AddDriver(new MyDriver());
    var probe = await registry.ProbeAsync();
    var device = (MyDevice)probe.Registered.Single();
    using (device.Open())
    {
        Console.WriteLine($"vendor {device.ReadConfig16(PciConfig.VendorId):x4}, first opens {device.FirstOpens}");
    }
}
kernel.AssertNoLeaks();
Console.WriteLine("package consumer: ok");

sealed class MyDevice(PciDeviceContext context) : PciVfioDevice(context)
{
    public int FirstOpens { get; private set; }

    protected override void OnFirstOpen() => FirstOpens++;
}

sealed class MyDriver() : PciDriver<MyDevice>("mine", PciMatch.Id(0x1234, 0x11e8))
{
    protected override MyDevice CreateDevice(PciDeviceContext context) => new(context);
}
CS
cd "$work/consumer"
# Packages of this check must not be served from the cache of an earlier run.
export NUGET_PACKAGES="$work/packages"
dotnet run -c Release 2>&1 | tail -n 5

# The tool, installed as a user installs it; `vfio list --json` runs on this machine's sysfs.
dotnet tool install --tool-path "$work/tools" --add-source "$work/feed" Vfio.Cli --version 0.1.0-check >/dev/null
"$work/tools/vfio" --version
"$work/tools/vfio" list --json | grep -q '"version": 1'
echo "package tool: ok"
