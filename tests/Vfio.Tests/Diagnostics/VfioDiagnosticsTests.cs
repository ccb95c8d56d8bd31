using Vfio.Testing;

namespace Vfio.Tests.Diagnostics;

/// <summary>What <see cref="VfioDiagnostics"/> finds on simulated machines, each made wrong in one way.</summary>
public sealed class VfioDiagnosticsTests
{
    private readonly SimulatedKernel _kernel = new();

    private VfioDiagnosticReport Run(ulong? dmaBytes = null) => VfioDiagnostics.Run(_kernel, new VfioDiagnosticsOptions { DmaBytes = dmaBytes });

    private DiagnosticFinding Finding(string check, ulong? dmaBytes = null) => Run(dmaBytes).Findings.Should().ContainSingle(f => f.Check == check).Subject;

    [Fact]
    public void AMachineReadyForVfioHasNoErrorOrWarning()
    {
        _kernel.AddPciDevice("0000:00:03.0", 0x1234, 0x11e8, 0x00ff00, 5);
        _kernel.HugePages = 4;

        var report = Run(dmaBytes: 4 << 20);

        report.Findings.Should().OnlyContain(f => f.Severity == DiagnosticSeverity.Ok || f.Severity == DiagnosticSeverity.Info);
        report.Worst.Should().BeOneOf(DiagnosticSeverity.Ok, DiagnosticSeverity.Info);
        report.IommuEnabled.Should().BeTrue();
        report.Backends.Should().Be(VfioBackends.LegacyContainer | VfioBackends.Iommufd);
        report.MemoryLockLimit.Should().BeNull();
        report.HugePages.Should().Equal(new HugePagePool(2 << 20, 4, 4), new HugePagePool(1 << 30, 0, 0));
        report.Findings.Select(f => f.Check).Should().Equal("iommu", "modules", "backend.container", "backend.iommufd", "backend.noiommu",
            "memlock", "hugepages", "permissions", "group.5");
        Finding("group.5").Found.Should().Contain("viable").And.Contain(_kernel.Dev("vfio/5"));
        Finding("modules").Found.Should().Be("vfio, vfio-pci and vfio_iommu_type1 are loaded.");
        Finding("backend.container").Found.Should().Contain("vfio's own");
    }

    [Fact]
    public void WhereIommufdServesTheContainerTheDoctorSaysSoAndAsksForNoType1()
    {
        _kernel.IommufdServesContainer = true;
        _kernel.AddPciDevice("0000:00:03.0", 0x1234, 0x11e8, 0x00ff00, 5);

        var report = Run();

        report.Findings.Should().NotContain(f => f.Severity == DiagnosticSeverity.Error || f.Severity == DiagnosticSeverity.Warning);
        report.Backends.Should().Be(VfioBackends.LegacyContainer | VfioBackends.Iommufd);
        var modules = Finding("modules");
        modules.Severity.Should().Be(DiagnosticSeverity.Ok);
        modules.Found.Should().Contain("vfio_iommu_type1 is not needed").And.Contain(_kernel.Sys("module/vfio_iommu_type1"));
        var container = Finding("backend.container");
        container.Severity.Should().Be(DiagnosticSeverity.Ok);
        container.Found.Should().Contain(_kernel.Dev("vfio/vfio")).And.Contain("iommufd's compatibility container").And.NotContain("(vfio's own");
        Finding("backend.iommufd").Found.Should().Contain("device cdevs (/dev/vfio/devices/vfioN): yes");
    }

    [Fact]
    public void VfiosOwnContainerWithoutType1LoadedIsAnErrorNamingIt()
    {
        // vfio's container (which does not answer iommufd's IOMMU_OPTION) while vfio_iommu_type1 is not
        // loaded, on a kernel with iommufd as well: the container is still vfio's, and it needs type1.
        using (_kernel.Enter())
        {
            _kernel.Sysfs.Remove("module/vfio_iommu_type1");
        }

        var finding = Finding("modules");

        finding.Severity.Should().Be(DiagnosticSeverity.Error);
        finding.Found.Should().Contain("vfio_iommu_type1");
        Finding("backend.container").Found.Should().Contain("vfio's own");
    }

    [Fact]
    public void WhichContainerServesTheNodeIsAskedOfTheKernelNotGuessedFromItsModules()
    {
        // iommufd's container answers IOMMU_OPTION whatever sysfs shows; here type1's folder is back.
        _kernel.IommufdServesContainer = true;
        _kernel.DmaEntryLimit = 100;
        using (_kernel.Enter())
        {
            _kernel.Sysfs.Directory("module/vfio_iommu_type1/parameters");
        }

        Finding("backend.container").Found.Should().Contain("iommufd's compatibility container");
    }

    [Fact]
    public void AContainerQuestionTheKernelFailsLeavesTheDoctorSayingVfiosOwn()
    {
        _kernel.IommufdServesContainer = true;
        _kernel.FailNext(SimulatedCall.Ioctl, Errno.EIO, Vfio.Interop.IommufdUapi.IOMMU_OPTION);

        Finding("backend.container").Found.Should().Contain("vfio's own");
    }

    [Fact]
    public void AnIommuTheFirmwareHasButTheKernelDidNotTurnOnAsksForIntelIommuOn()
    {
        _kernel.Iommu = SimulatedIommuState.Off;

        var finding = Finding("iommu");

        finding.Severity.Should().Be(DiagnosticSeverity.Error);
        finding.Found.Should().Contain("ACPI DMAR");
        finding.Action.Should().Contain("intel_iommu=on");
        Run().IommuEnabled.Should().BeFalse();
    }

    [Fact]
    public void AMachineWithoutAnIommuIsToldToEnableItInFirmwareOrGiveTheVmOne()
    {
        _kernel.Iommu = SimulatedIommuState.Absent;

        var finding = Finding("iommu");

        finding.Severity.Should().Be(DiagnosticSeverity.Error);
        finding.Found.Should().Contain("no ACPI DMAR or IVRS table");
        finding.Action.Should().Contain("VT-d").And.Contain("intel-iommu").And.Contain("enable_unsafe_noiommu_mode");
    }

    [Fact]
    public void WithoutAnIommuTheUnsafeNoIommuModeMakesItAWarningAndIsItselfWarnedOf()
    {
        _kernel.Iommu = SimulatedIommuState.Absent;
        _kernel.UnsafeNoIommuMode = true;

        var report = Run();

        Finding("iommu").Severity.Should().Be(DiagnosticSeverity.Warning);
        var noIommu = Finding("backend.noiommu");
        noIommu.Severity.Should().Be(DiagnosticSeverity.Warning);
        noIommu.Found.Should().Contain("= Y");
        report.Backends.Should().HaveFlag(VfioBackends.UnsafeNoIommu);
    }

    [Fact]
    public void AMissingVfioPciIsAnErrorThatSaysWhatToLoad()
    {
        _kernel.VfioPciLoaded = false;

        var finding = Finding("modules");

        finding.Severity.Should().Be(DiagnosticSeverity.Error);
        finding.Found.Should().Contain("vfio-pci").And.Contain(_kernel.Sys("bus/pci/drivers/vfio-pci")).And.NotContain("vfio_iommu_type1");
        finding.Action.Should().Contain("modprobe vfio-pci");
    }

    [Fact]
    public void AKernelWithoutAModuleTreeIsToldItCannotLoadVfioAtAll()
    {
        _kernel.VfioPciLoaded = false;
        _kernel.HasModuleTree = false;

        var finding = Finding("modules");

        finding.Found.Should().Contain("/lib/modules/6.1.0-simulated is missing");
        finding.Action.Should().Contain("CONFIG_VFIO_PCI");
    }

    [Fact]
    public void ALockedMemoryLimitBelowTheDmaAskedForIsAnError()
    {
        _kernel.MemoryLockLimit = 64 << 10;

        var finding = Finding("memlock", dmaBytes: 1 << 30);

        finding.Severity.Should().Be(DiagnosticSeverity.Error);
        finding.Found.Should().Contain("64 KiB").And.Contain("1 GiB");
        finding.Action.Should().Contain("ulimit -l").And.Contain("LimitMEMLOCK=");
        Run().MemoryLockLimit.Should().Be(64 << 10);
    }

    [Fact]
    public void ALowLimitDoesNotMatterToAProcessWithCapIpcLockWhichIsToldSo()
    {
        _kernel.MemoryLockLimit = 64 << 10;
        _kernel.IpcLockCapability = true;

        var finding = Finding("memlock", dmaBytes: 1 << 30);

        finding.Severity.Should().Be(DiagnosticSeverity.Info);
        finding.Found.Should().Contain("CAP_IPC_LOCK");
        Run().MemoryLockExempt.Should().BeTrue();
    }

    [Fact]
    public void FewerFreeHugepagesThanTheDmaAskedForIsAWarningSayingHowToReserveThem()
    {
        _kernel.HugePages = 1;

        var finding = Finding("hugepages", dmaBytes: 16 << 20);

        finding.Severity.Should().Be(DiagnosticSeverity.Warning);
        finding.Found.Should().Contain("2 MiB: 1 free of 1");
        finding.Action.Should().Contain(_kernel.Sys("kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"));
    }

    [Fact]
    public void AGroupNodeTheProcessCannotOpenIsAWarningWithTheWayToGiveItToTheUser()
    {
        _kernel.AddPciDevice("0000:00:03.0", 0x1234, 0x11e8, 0x00ff00, 5);
        _kernel.ProcessUserId = 1000;
        _kernel.ProcessGroupId = 1000;

        var finding = Finding("permissions");

        finding.Severity.Should().Be(DiagnosticSeverity.Warning);
        finding.Found.Should().Contain(_kernel.Dev("vfio/5") + " (crw------- 0:0)").And.NotContain(_kernel.Dev("vfio/vfio") + " (");
        finding.Action.Should().Contain("--uid");
    }

    [Fact]
    public void ADeviceBoundToVfioInAGroupThatIsNotViableIsAnErrorNamingTheDeviceInTheWay()
    {
        _kernel.AddPciDevice("0000:00:04.0", 0x1234, 0x11e8, 0x00ff00, 4);
        _kernel.AddPciDevice("0000:00:04.1", 0x1b36, 0x0010, 0x010802, 4, "nvme");

        var finding = Finding("group.4");

        finding.Severity.Should().Be(DiagnosticSeverity.Error);
        finding.Found.Should().Contain("not viable").And.Contain("0000:00:04.1 is bound to nvme");
        finding.Action.Should().Contain("vfio bind --group 0000:00:04.0");
    }

    [Fact]
    public void IommufdAndDeviceCdevsAreReportedAsABackend()
    {
        _kernel.AddPciDevice("0000:00:03.0", 0x1234, 0x11e8, 0x00ff00, 5);

        Run().Backends.Should().Be(VfioBackends.LegacyContainer | VfioBackends.Iommufd);
        Finding("backend.iommufd").Found.Should().Contain(_kernel.Dev("iommu")).And.Contain("device cdevs (/dev/vfio/devices/vfioN): yes");
        Finding("permissions").Found.Should().Contain(_kernel.Dev("vfio/devices/vfio0")).And.Contain(_kernel.Dev("iommu"));
    }

    [Fact]
    public void AKernelWithoutIommufdHasOnlyTheLegacyContainer()
    {
        _kernel.IommufdEnabled = false;
        _kernel.AddPciDevice("0000:00:03.0", 0x1234, 0x11e8, 0x00ff00, 5);

        Run().Backends.Should().Be(VfioBackends.LegacyContainer);
        Finding("backend.iommufd").Found.Should().Contain("No iommufd");
    }
}
