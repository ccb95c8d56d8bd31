using Vfio.Interop;
using Vfio.Testing;
using static Vfio.Interop.Interop;

namespace Vfio.Tests.Simulation;

// The machine around VFIO: the IOMMU, the modules, the device nodes' owners and modes, the process's limits.
public sealed partial class SimulatedKernelTests
{
    private bool SysExists(string relative) => _kernel.Stat(_kernel.Sys(relative), out _) == 0;

    [Fact]
    public void TheIommuStateShowsInSysfsAsLinuxShowsIt()
    {
        var kernel = new SimulatedKernel();
        kernel.Stat(kernel.Sys("class/iommu/dmar0"), out _).Should().Be(0);
        kernel.Stat(kernel.Sys("firmware/acpi/tables/DMAR"), out _).Should().Be(0);

        kernel.Iommu = SimulatedIommuState.Off;
        kernel.Stat(kernel.Sys("class/iommu/dmar0"), out _).Should().Be(-Errno.ENOENT);
        kernel.Stat(kernel.Sys("firmware/acpi/tables/DMAR"), out _).Should().Be(0);

        kernel.Iommu = SimulatedIommuState.Absent;
        kernel.Stat(kernel.Sys("firmware/acpi/tables/DMAR"), out _).Should().Be(-Errno.ENOENT);
    }

    [Fact]
    public void TheIommuCannotGoWhileDevicesHaveIommuGroupsNorSuchDevicesComeWithoutIt()
    {
        var turnOff = () => _kernel.Iommu = SimulatedIommuState.Off;
        turnOff.Should().Throw<InvalidOperationException>();

        var kernel = new SimulatedKernel { Iommu = SimulatedIommuState.Absent };
        var add = () => kernel.AddPciDevice("0000:00:03.0", 0x1234, 0x11e8, 0x00ff00, 5);
        add.Should().Throw<InvalidOperationException>().Which.Message.Should().Contain("NoIommu");
    }

    [Fact]
    public void VfioPciRefusesABridgeAndTheDeviceStaysUnbound()
    {
        var port = _kernel.AddPciDevice("0000:00:1c.0", new PciDeviceModel(0x8086, 0x7ab8, 0x060400), 9, driver: null);
        Seam.WriteText(_kernel, port.SysfsPath + "/driver_override", "vfio-pci").Should().BeGreaterThan(0);

        Seam.WriteText(_kernel, _kernel.Sys("bus/pci/drivers_probe"), "0000:00:1c.0").Should().BeGreaterThan(0, "drivers_probe ignores a failed probe");

        port.Driver.Should().BeNull();
    }

    [Fact]
    public void VfioPciRefusesANoIommuDeviceUnlessTheUnsafeModeIsOnWhichTheModuleParameterShows()
    {
        var device = _kernel.AddPciDevice("0000:00:05.0", new PciDeviceModel(0x1af4, 0x1000, 0x020000), 0, SimulatedGroupKind.NoIommu, driver: null);
        string parameter = _kernel.Sys("module/vfio/parameters/enable_unsafe_noiommu_mode");
        Seam.ReadText(_kernel, parameter).Should().Be("N\n");

        var bind = () => device.Bind("vfio-pci");
        bind.Should().Throw<InvalidOperationException>().Which.Message.Should().Contain("EINVAL");

        Seam.WriteText(_kernel, parameter, "Y").Should().Be(1);
        _kernel.UnsafeNoIommuMode.Should().BeTrue();
        device.Bind("vfio-pci");
        device.Driver.Should().Be("vfio-pci");
    }

    [Fact]
    public void UnloadingVfioPciRemovesItsDriverAndIsRefusedWhileADeviceIsBound()
    {
        var unload = () => _kernel.VfioPciLoaded = false;
        unload.Should().Throw<InvalidOperationException>();

        _kernel.FindDevice("0000:00:03.0").Should().BeOfType<SimulatedPciDevice>().Which.Unbind();
        _kernel.VfioPciLoaded = false;

        SysExists("bus/pci/drivers/vfio-pci").Should().BeFalse();
        SysExists("module/vfio_pci").Should().BeFalse();
        _kernel.VfioPciLoaded = true;
        SysExists("bus/pci/drivers/vfio-pci/bind").Should().BeTrue();
    }

    [Fact]
    public void DeviceNodesHaveTheModesLinuxGivesThem()
    {
        _kernel.Stat(_kernel.Dev("vfio/vfio"), out var container).Should().Be(0);
        (container.IsCharacterDevice, container.Permissions).Should().Be((true, 0x1b6u));
        _kernel.Stat(_kernel.Dev("vfio/5"), out var group).Should().Be(0);
        (group.IsCharacterDevice, group.Permissions, group.UserId).Should().Be((true, 0x180u, 0u));
        _kernel.Stat(_kernel.Dev("vfio"), out var folder).Should().Be(0);
        folder.IsDirectory.Should().BeTrue();
        _kernel.Stat(_kernel.Dev("iommu"), out var iommu).Should().Be(0);
        iommu.Permissions.Should().Be(0x1b0u);
        _kernel.Stat(_kernel.Dev("vfio/devices/vfio0"), out var cdev).Should().Be(0);
        (cdev.IsCharacterDevice, cdev.Permissions).Should().Be((true, 0x180u));

        _kernel.IommufdEnabled = false;
        _kernel.Stat(_kernel.Dev("iommu"), out _).Should().Be(-Errno.ENOENT);
        _kernel.Stat(_kernel.Dev("vfio/devices/vfio0"), out _).Should().Be(-Errno.ENOENT);
    }

    [Fact]
    public void AccessFollowsTheModeAndOwnerForAnUnprivilegedProcessAndOnlyRootMayChown()
    {
        string node = _kernel.Dev("vfio/5");
        _kernel.ProcessUserId = 1000;
        _kernel.ProcessGroupId = 1000;
        _kernel.Access(node, Flags.R_OK | Flags.W_OK).Should().Be(-Errno.EACCES);
        _kernel.Access(_kernel.Dev("vfio/vfio"), Flags.R_OK | Flags.W_OK).Should().Be(0);
        _kernel.Chown(node, 1000, -1).Should().Be(-Errno.EPERM);

        _kernel.ProcessUserId = 0;
        _kernel.Chown(node, 1000, -1).Should().Be(0);
        _kernel.ProcessUserId = 1000;
        _kernel.Access(node, Flags.R_OK | Flags.W_OK).Should().Be(0);
        _kernel.Stat(node, out var status).Should().Be(0);
        (status.UserId, status.GroupId).Should().Be((1000u, 0u));
    }

    [Fact]
    public void AGroupNodeThatGoesAndComesBackIsRootsAgain()
    {
        string node = _kernel.Dev("vfio/5");
        _kernel.Chown(node, 1000, 1000).Should().Be(0);
        var device = (SimulatedPciDevice)_kernel.FindDevice("0000:00:03.0")!;

        device.Unbind();
        _kernel.Stat(node, out _).Should().Be(-Errno.ENOENT);
        device.Bind("vfio-pci");

        _kernel.Stat(node, out var status).Should().Be(0);
        (status.UserId, status.GroupId).Should().Be((0u, 0u));
    }

    [Fact]
    public void AVfioDeviceEntryHasADevAttributeOnlyWhenTheKernelGivesItACdev()
    {
        var first = (SimulatedPciDevice)_kernel.FindDevice("0000:00:03.0")!;
        Seam.ReadText(_kernel, first.SysfsPath + "/vfio-dev/vfio0/dev").Should().Be("511:0\n");

        _kernel.DeviceCdevEnabled = false;
        first.Unbind();
        first.Bind("vfio-pci");

        _kernel.Stat(first.SysfsPath + "/vfio-dev/vfio0", out _).Should().Be(0, "Linux 6.1 has the vfio-dev entry too");
        _kernel.Stat(first.SysfsPath + "/vfio-dev/vfio0/dev", out _).Should().Be(-Errno.ENOENT);
    }

    [Fact]
    public void TheMemlockLimitTheCapabilityAndTheReleaseAreAnsweredFromTheModel()
    {
        _kernel.GetResourceLimit(Flags.RLIMIT_MEMLOCK, out ulong soft, out _).Should().Be(0);
        soft.Should().Be(ulong.MaxValue);
        _kernel.MemoryLockLimit = 8 << 20;
        _kernel.IpcLockCapability = true;

        _kernel.GetResourceLimit(Flags.RLIMIT_MEMLOCK, out soft, out ulong hard).Should().Be(0);
        (soft, hard).Should().Be((8UL << 20, 8UL << 20));
        _kernel.GetCapabilities(out ulong caps).Should().Be(0);
        caps.Should().Be(1UL << Flags.CAP_IPC_LOCK);
        _kernel.GetKernelRelease(out string release).Should().Be(0);
        release.Should().Be("6.1.0-simulated");
        _kernel.Stat("/lib/modules/6.1.0-simulated", out var tree).Should().Be(0);
        tree.IsDirectory.Should().BeTrue();
    }

    [Fact]
    public void TheOneGigabytePoolIsShownAndStaysEmpty()
    {
        Seam.ReadText(_kernel, _kernel.Sys("kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages")).Should().Be("0\n");
        Seam.WriteText(_kernel, _kernel.Sys("kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages"), "2").Should().Be(-Errno.EACCES);
    }
}
