using Vfio.Scenarios;
using Vfio.Testing;
using Xunit.Abstractions;

namespace Vfio.Tests.Simulation;

/// <summary>
/// The scenario suite that runs in the VM against the real kernel, run here against the simulated
/// kernel with the same machine: an edu function alone in group 3, and an edu function sharing its
/// slot (and so group 4) with an NVMe controller bound to the host's nvme driver, and two edu
/// functions of one slot behind a PCIe root port (bus 1, group 6), and an NVMe controller alone in
/// group 5 for the NVMe sample, ivshmem-plain (group 7; BAR2: 1 MiB of shared memory), a modern
/// virtio-rng (group 8) and an edu function alone behind a second root port (bus 2, group 9).
/// </summary>
/// <remarks>
/// Each scenario runs as the VM runs it on each kind of kernel: on one that behaves as Debian's 6.1
/// (no iommufd; mode legacy), on one that behaves as the 7.2 kernel built from source, with both
/// APIs, in mode legacy (the library made to use its legacy backend) and in mode iommufd, and on one
/// that behaves as its vfio-compat build (/dev/vfio/vfio served by iommufd) in modes legacy-compat and iommufd.
/// </remarks>
public sealed class ScenarioTests(ITestOutputHelper output)
{
    public static TheoryData<string> Names => [.. ScenarioCatalog.All.Select(s => s.Name)];

    /// <summary>The scenarios that apply to a kernel without iommufd (the others skip there, as on Debian's kernels).</summary>
    /// <summary>The scenarios that apply in mode iommufd (the others skip there, as in the VM).</summary>
    public static TheoryData<string> IommufdModeNames => [.. ScenarioCatalog.All.Except(ScenarioCatalog.NeedContainer).Select(s => s.Name)];

    /// <summary>The scenarios that apply where iommufd's compatibility container serves /dev/vfio/vfio, in mode legacy-compat and in mode iommufd.</summary>
    public static TheoryData<string> CompatKernelNames => [.. ScenarioCatalog.All.Except(ScenarioCatalog.NotOnIommufdCompat).Select(s => s.Name)];

    public static TheoryData<string> CompatKernelIommufdModeNames =>
        [.. ScenarioCatalog.All.Except(ScenarioCatalog.NotOnIommufdCompat).Except(ScenarioCatalog.NeedContainer).Select(s => s.Name)];

    public static TheoryData<string> LegacyKernelNames => [.. ScenarioCatalog.All.Except(ScenarioCatalog.NeedIommufd).Select(s => s.Name)];

    /// <summary>The simulated counterpart of the VM's machine (tests/vm/run-vm-tests.sh), as Linux <paramref name="version"/> in <paramref name="mode"/>.</summary>
    internal static (SimulatedKernel Kernel, ScenarioContext Context) Machine(Version? version = null, ScenarioMode mode = ScenarioMode.Legacy, bool iommufdServesContainer = false)
    {
        var kernel = new SimulatedKernel { LinuxVersion = version ?? new Version(6, 1), IommufdServesContainer = iommufdServesContainer };
        kernel.AddPciDevice("0000:00:03.0", new EduDeviceModel(), iommuGroup: 3);
        kernel.AddPciDevice("0000:00:04.0", new EduDeviceModel(), iommuGroup: 4);
        kernel.AddPciDevice("0000:00:04.1", new PciDeviceModel(0x1b36, 0x0010, 0x010802, isExpress: true), iommuGroup: 4, driver: "nvme");
        // In the VM (Debian 6.1, q35) acpiphp drives the root port's slot, and acpiphp cannot reset a
        // slot: the two functions share their bus's reset scope and device set, as here.
        kernel.AddPciBridge("0000:00:05.0", secondaryBus: 1);
        kernel.AddPciDevice("0000:01:00.0", new EduDeviceModel(), iommuGroup: 6);
        kernel.AddPciDevice("0000:01:00.1", new EduDeviceModel(), iommuGroup: 6);
        kernel.AddPciDevice("0000:00:06.0", new NvmeDeviceModel(), iommuGroup: 5);
        kernel.AddPciDevice("0000:00:07.0", new IvshmemPlainModel(), iommuGroup: 7);
        kernel.AddPciDevice("0000:00:08.0", new VirtioRngModel(), iommuGroup: 8);
        kernel.AddPciBridge("0000:00:09.0", secondaryBus: 2);
        kernel.AddPciDevice("0000:02:00.0", new EduDeviceModel(), iommuGroup: 9);
        var context = new ScenarioContext(kernel, "0000:00:03.0", 3)
        {
            NotViableDeviceAddress = "0000:00:04.0",
            NotViableGroupId = 4,
            HotResetDevices = ["0000:01:00.0", "0000:01:00.1"],
            HotResetGroupId = 6,
            KernelVersion = kernel.LinuxVersion,
            Mode = mode,
            SharedMemoryDeviceAddress = "0000:00:07.0",
        };
        return (kernel, context);
    }

    [Theory]
    [MemberData(nameof(LegacyKernelNames))]
    public Task ScenarioPassesOnTheSimulatedKernel(string name) => RunAsync(name, Machine());

    [Theory]
    [MemberData(nameof(Names))]
    public Task ScenarioPassesOnASimulated72KernelInModeLegacy(string name) => RunAsync(name, Machine(new Version(7, 2), ScenarioMode.Legacy));

    [Theory]
    [MemberData(nameof(IommufdModeNames))]
    public Task ScenarioPassesOnASimulated72KernelInModeIommufd(string name) => RunAsync(name, Machine(new Version(7, 2), ScenarioMode.Iommufd));

    [Theory]
    [MemberData(nameof(CompatKernelNames))]
    public Task ScenarioPassesOnASimulated72CompatKernelInModeLegacyCompat(string name) =>
        RunAsync(name, Machine(new Version(7, 2), ScenarioMode.LegacyCompat, iommufdServesContainer: true));

    [Theory]
    [MemberData(nameof(CompatKernelIommufdModeNames))]
    public Task ScenarioPassesOnASimulated72CompatKernelInModeIommufd(string name) =>
        RunAsync(name, Machine(new Version(7, 2), ScenarioMode.Iommufd, iommufdServesContainer: true));

    private async Task RunAsync(string name, (SimulatedKernel Kernel, ScenarioContext Context) machine)
    {
        var (kernel, context) = machine;
        using var log = new StringWriter();
        context = context with { Log = log };
        string? failure = await ScenarioRunner.RunOneAsync(ScenarioCatalog.Named(name), context);
        output.WriteLine(log.ToString());
        failure.Should().BeNull();
        kernel.AssertNoLeaks();
        kernel.DmaFaults.Should().BeEmpty();
    }

    public static TheoryData<string> MdevNames => [.. ScenarioCatalog.Mdev.Select(s => s.Name)];

    /// <summary>The mdev scenarios on the simulated counterpart of the mdev VM (tests/vm/run-mdev-tests.sh): the mtty parent.</summary>
    [Theory]
    [MemberData(nameof(MdevNames))]
    public async Task MdevScenarioPassesOnTheSimulatedKernel(string name)
    {
        var kernel = new SimulatedKernel();
        kernel.AddMttyParent();
        using var log = new StringWriter();
        // The simulated mtty migrates as Linux 6.7 and later's does.
        var context = new ScenarioContext(kernel, string.Empty, -1) { Log = log, KernelVersion = new Version(7, 3) };
        string? failure = await ScenarioRunner.RunOneAsync(ScenarioCatalog.Named(name), context);
        output.WriteLine(log.ToString());
        failure.Should().BeNull();
        kernel.AssertNoLeaks();
        kernel.ListDirectory(kernel.Sys("bus/mdev/devices"), out var mdevs).Should().Be(0);
        mdevs.Should().BeEmpty("every scenario removes the mdevs it made");
    }

    public static TheoryData<string> NoIommuNames => [.. ScenarioCatalog.NoIommu.Select(s => s.Name)];

    /// <summary>
    /// The no-IOMMU scenarios on the simulated counterpart of the VM's noiommu mode: no IOMMU, vfio in
    /// unsafe no-IOMMU mode, the edu device bound to vfio-pci in no-IOMMU group 0.
    /// </summary>
    [Theory]
    [MemberData(nameof(NoIommuNames))]
    public async Task NoIommuScenarioPassesOnTheSimulatedKernel(string name)
    {
        var kernel = new SimulatedKernel { Iommu = SimulatedIommuState.Absent, UnsafeNoIommuMode = true };
        kernel.AddPciDevice("0000:00:03.0", new EduDeviceModel(), 0, SimulatedGroupKind.NoIommu, "vfio-pci");
        using var log = new StringWriter();
        var context = new ScenarioContext(kernel, "0000:00:03.0", 0) { Log = log, Mode = ScenarioMode.NoIommu };
        string? failure = await ScenarioRunner.RunOneAsync(ScenarioCatalog.Named(name), context);
        output.WriteLine(log.ToString());
        failure.Should().BeNull();
        kernel.AssertNoLeaks();
        kernel.DmaFaults.Should().BeEmpty();
    }

    public static TheoryData<string> PlatformNames => [.. ScenarioCatalog.Platform.Select(s => s.Name)];

    /// <summary>
    /// The platform scenarios on the simulated counterpart of the platform VM (tests/vm/run-platform-tests.sh):
    /// no IOMMU, vfio in no-IOMMU mode, vfio-platform with reset_required=0 holding a virtio-mmio entropy device.
    /// </summary>
    [Theory]
    [MemberData(nameof(PlatformNames))]
    public async Task PlatformScenarioPassesOnTheSimulatedKernel(string name)
    {
        var kernel = new SimulatedKernel { Iommu = SimulatedIommuState.Absent, UnsafeNoIommuMode = true, PlatformResetRequired = false };
        kernel.AddPlatformDevice("LNRO0005:00", new VirtioMmioRngModel(), 0, SimulatedGroupKind.NoIommu, "vfio-platform");
        using var log = new StringWriter();
        var context = new ScenarioContext(kernel, "LNRO0005:00", 0) { Log = log, Mode = ScenarioMode.NoIommu };
        string? failure = await ScenarioRunner.RunOneAsync(ScenarioCatalog.Named(name), context);
        output.WriteLine(log.ToString());
        failure.Should().BeNull();
        kernel.AssertNoLeaks();
        kernel.DmaFaults.Should().BeEmpty();
    }

    [Fact]
    public async Task TheIommufdScenariosSkipOnAKernelWithoutIommufdSayingWhy()
    {
        var (kernel, context) = Machine();
        using var output = new StringWriter();

        int failed = await ScenarioRunner.RunAsync(ScenarioCatalog.NeedIommufd, context, output);

        failed.Should().Be(0);
        output.ToString().Should().Contain($"SUMMARY passed=0 failed=0 skipped={ScenarioCatalog.NeedIommufd.Count}")
            .And.Contain("SKIP iommufd_ioas_iova_ranges: the kernel has no /dev/iommu (CONFIG_IOMMUFD) and no VFIO device cdev (CONFIG_VFIO_DEVICE_CDEV)");
        kernel.AssertNoLeaks();
    }

    [Fact]
    public async Task TheScenariosOfType1sLimitAndDirtyTrackingSkipOnIommufdsCompatibilityContainerSayingWhy()
    {
        var (kernel, context) = Machine(new Version(7, 2), ScenarioMode.Iommufd, iommufdServesContainer: true);
        using var output = new StringWriter();

        int failed = await ScenarioRunner.RunAsync(ScenarioCatalog.NotOnIommufdCompat, context, output);

        failed.Should().Be(0);
        ScenarioCatalog.NotOnIommufdCompat.Should().HaveCount(3, "each name of the list is a scenario");
        output.ToString().Should().Contain($"SUMMARY passed=0 failed=0 skipped={ScenarioCatalog.NotOnIommufdCompat.Count}")
            .And.Contain("SKIP dirty_type1_needs_type1v2: not on iommufd's compatibility container");
        kernel.AssertNoLeaks();
    }

    [Fact]
    public void EveryScenarioHasAUniqueName() =>
        ScenarioCatalog.All.Concat(ScenarioCatalog.Mdev).Concat(ScenarioCatalog.NoIommu).Concat(ScenarioCatalog.Platform).Select(s => s.Name).Should().OnlyHaveUniqueItems();
}
