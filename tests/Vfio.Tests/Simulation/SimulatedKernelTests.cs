using Vfio.Interop;
using Vfio.Testing;
using static Vfio.Interop.Interop;

namespace Vfio.Tests.Simulation;

public sealed unsafe partial class SimulatedKernelTests : IDisposable
{
    private readonly SimulatedKernel _kernel = new();

    public SimulatedKernelTests()
    {
        _kernel.AddPciDevice("0000:00:03.0", 0x1234, 0x11e8, 0x00ff00, iommuGroup: 5);
    }

    public void Dispose() => _kernel.AssertNoLeaks();

    [Fact]
    public void DescriptorsStartAtThreeAndReuseTheLowestFreeNumber()
    {
        using var a = Seam.Container(_kernel);
        var b = Seam.Container(_kernel);
        using var c = Seam.Container(_kernel);
        a.Value.Should().Be(3);
        b.Value.Should().Be(4);
        b.Dispose();
        using var d = Seam.Container(_kernel);
        d.Value.Should().Be(4);
    }

    [Fact]
    public void ContainerAnswersApiVersionAndExtensions()
    {
        using var container = Seam.Container(_kernel);
        _kernel.Ioctl(container, VfioUapi.VFIO_GET_API_VERSION, 0).Should().Be(VfioUapi.VFIO_API_VERSION);
        _kernel.Ioctl(container, VfioUapi.VFIO_CHECK_EXTENSION, VfioUapi.VFIO_TYPE1v2_IOMMU).Should().Be(1);
        _kernel.Ioctl(container, VfioUapi.VFIO_CHECK_EXTENSION, VfioUapi.VFIO_TYPE1_IOMMU).Should().Be(1);
        _kernel.Ioctl(container, VfioUapi.VFIO_CHECK_EXTENSION, VfioUapi.VFIO_NOIOMMU_IOMMU).Should().Be(0);
        _kernel.Ioctl(container, VfioUapi.VFIO_CHECK_EXTENSION, VfioUapi.VFIO_SPAPR_TCE_IOMMU).Should().Be(0);
    }

    [Fact]
    public void SetIommuBeforeAnyGroupJoinedIsInvalid()
    {
        using var container = Seam.Container(_kernel);
        _kernel.Ioctl(container, VfioUapi.VFIO_SET_IOMMU, VfioUapi.VFIO_TYPE1v2_IOMMU).Should().Be(-Errno.EINVAL);
    }

    [Fact]
    public void SetIommuWithAnUnsupportedTypeFailsAndASecondSetIsInvalid()
    {
        using var container = Seam.Container(_kernel);
        using var group = Seam.Group(_kernel, 5);
        Seam.SetContainer(_kernel, group, container).Should().Be(0);
        _kernel.Ioctl(container, VfioUapi.VFIO_SET_IOMMU, VfioUapi.VFIO_SPAPR_TCE_IOMMU).Should().Be(-Errno.ENODEV);
        _kernel.Ioctl(container, VfioUapi.VFIO_SET_IOMMU, VfioUapi.VFIO_TYPE1v2_IOMMU).Should().Be(0);
        _kernel.Ioctl(container, VfioUapi.VFIO_SET_IOMMU, VfioUapi.VFIO_TYPE1v2_IOMMU).Should().Be(-Errno.EINVAL);
    }

    [Fact]
    public void UnknownContainerIoctlIsInvalidWithoutAnIommuAndNotATtyWithOne()
    {
        using var container = Seam.Container(_kernel);
        nuint unknown = Ioc._IO(VfioUapi.VFIO_TYPE, VfioUapi.VFIO_BASE + 60);
        _kernel.Ioctl(container, unknown, 0).Should().Be(-Errno.EINVAL);
        using var group = Seam.Group(_kernel, 5);
        Seam.SetContainer(_kernel, group, container).Should().Be(0);
        _kernel.Ioctl(container, VfioUapi.VFIO_SET_IOMMU, VfioUapi.VFIO_TYPE1v2_IOMMU).Should().Be(0);
        _kernel.Ioctl(container, unknown, 0).Should().Be(-Errno.ENOTTY);
    }

    [Fact]
    public void ASecondOpenOfAGroupIsBusyUntilTheFirstCloses()
    {
        var first = Seam.Group(_kernel, 5);
        Seam.TryOpen(_kernel, _kernel.Dev("vfio/5"), out _).Should().Be(-Errno.EBUSY);
        first.Dispose();
        using var again = Seam.Group(_kernel, 5);
    }

    [Fact]
    public void AnUnknownGroupDoesNotExist()
    {
        Seam.TryOpen(_kernel, _kernel.Dev("vfio/9"), out _).Should().Be(-Errno.ENOENT);
        Seam.TryOpen(_kernel, "/dev/vfio/5", out _).Should().Be(-Errno.ENOENT);
    }

    [Fact]
    public void GroupStatusReportsViableAndContainerSet()
    {
        using var container = Seam.Container(_kernel);
        using var group = Seam.Group(_kernel, 5);
        Seam.GroupStatus(_kernel, group, out uint flags).Should().Be(0);
        flags.Should().Be(VfioUapi.VFIO_GROUP_FLAGS_VIABLE);
        Seam.SetContainer(_kernel, group, container).Should().Be(0);
        Seam.GroupStatus(_kernel, group, out flags).Should().Be(0);
        flags.Should().Be(VfioUapi.VFIO_GROUP_FLAGS_VIABLE | VfioUapi.VFIO_GROUP_FLAGS_CONTAINER_SET);
    }

    [Fact]
    public void GroupStatusWithAShortArgszIsInvalid()
    {
        using var group = Seam.Group(_kernel, 5);
        var status = new vfio_group_status { argsz = 4 };
        _kernel.Ioctl(group, VfioUapi.VFIO_GROUP_GET_STATUS, &status).Should().Be(-Errno.EINVAL);
    }

    [Fact]
    public void AGroupWithADeviceOnAHostDriverIsNotViableAndCannotJoinAContainer()
    {
        _kernel.AddPciDevice("0000:00:03.1", 0x8086, 0x10d3, 0x020000, iommuGroup: 5, driver: "e1000e");
        using var container = Seam.Container(_kernel);
        using var group = Seam.Group(_kernel, 5);
        Seam.GroupStatus(_kernel, group, out uint flags).Should().Be(0);
        flags.Should().Be(0);
        Seam.SetContainer(_kernel, group, container).Should().Be(-Errno.EPERM);
    }

    [Fact]
    public void SetContainerChecksTheDescriptorAndThatNoneIsSetYet()
    {
        using var container = Seam.Container(_kernel);
        using var group = Seam.Group(_kernel, 5);
        using var eventFd = Seam.EventFd(_kernel);
        Seam.SetContainer(_kernel, group, -1).Should().Be(-Errno.EINVAL);
        Seam.SetContainer(_kernel, group, 99).Should().Be(-Errno.EBADF);
        Seam.SetContainer(_kernel, group, eventFd).Should().Be(-Errno.EINVAL);
        Seam.SetContainer(_kernel, group, container).Should().Be(0);
        Seam.SetContainer(_kernel, group, container).Should().Be(-Errno.EINVAL);
    }

    [Fact]
    public void UnsetContainerIsInvalidWhenNotSetAndBusyWhileADeviceIsOpen()
    {
        using var container = Seam.Container(_kernel);
        using var group = Seam.Group(_kernel, 5);
        _kernel.Ioctl(group, VfioUapi.VFIO_GROUP_UNSET_CONTAINER, 0).Should().Be(-Errno.EINVAL);
        Seam.SetContainer(_kernel, group, container).Should().Be(0);
        _kernel.Ioctl(container, VfioUapi.VFIO_SET_IOMMU, VfioUapi.VFIO_TYPE1v2_IOMMU).Should().Be(0);
        Seam.GetDeviceFd(_kernel, group, "0000:00:03.0", out var device).Should().BeGreaterThan(0);
        _kernel.Ioctl(group, VfioUapi.VFIO_GROUP_UNSET_CONTAINER, 0).Should().Be(-Errno.EBUSY);
        device.Dispose();
        _kernel.Ioctl(group, VfioUapi.VFIO_GROUP_UNSET_CONTAINER, 0).Should().Be(0);
        _kernel.Ioctl(container, VfioUapi.VFIO_SET_IOMMU, VfioUapi.VFIO_TYPE1v2_IOMMU).Should().Be(-Errno.EINVAL, "the last group leaving unset the IOMMU");
    }

    [Fact]
    public void DeviceFdBeforeTheContainerAndIommuAreSetIsInvalid()
    {
        using var container = Seam.Container(_kernel);
        using var group = Seam.Group(_kernel, 5);
        Seam.GetDeviceFd(_kernel, group, "0000:00:03.0", out _).Should().Be(-Errno.EINVAL);
        Seam.SetContainer(_kernel, group, container).Should().Be(0);
        Seam.GetDeviceFd(_kernel, group, "0000:00:03.0", out _).Should().Be(-Errno.EINVAL);
    }

    [Fact]
    public void AnUnknownDeviceNameIsNoDevice()
    {
        using var group = Seam.Group(_kernel, 5);
        Seam.GetDeviceFd(_kernel, group, "0000:00:04.0", out _).Should().Be(-Errno.ENODEV);
    }

    [Fact]
    public void ClosingTheGroupFirstKeepsItOpenUntilItsDevicesClose()
    {
        var opened = Seam.OpenDevice(_kernel, 5, "0000:00:03.0");
        opened.Group.Dispose();
        Seam.TryOpen(_kernel, _kernel.Dev("vfio/5"), out _).Should().Be(-Errno.EBUSY, "the device holds the group file");
        opened.Device.Dispose();
        using (Seam.Group(_kernel, 5))
        {
        }
        opened.Container.Dispose();
    }

    [Fact]
    public void NoIommuGroupsCannotMixWithIommuGroups()
    {
        _kernel.UnsafeNoIommuMode = true;
        _kernel.AddPciDevice("0000:00:05.0", new PciDeviceModel(0x1af4, 0x1000, 0x020000), 7, SimulatedGroupKind.NoIommu, "vfio-pci");
        using var container = Seam.Container(_kernel);
        using var group = Seam.Group(_kernel, 5);
        using var noIommu = Seam.Open(_kernel, _kernel.Dev("vfio/noiommu-7"));
        Seam.SetContainer(_kernel, group, container).Should().Be(0);
        Seam.SetContainer(_kernel, noIommu, container).Should().Be(-Errno.EPERM);
    }

    [Fact]
    public void NoIommuContainersUseTheNoIommuDriver()
    {
        _kernel.UnsafeNoIommuMode = true;
        _kernel.AddPciDevice("0000:00:05.0", new PciDeviceModel(0x1af4, 0x1000, 0x020000), 7, SimulatedGroupKind.NoIommu, "vfio-pci");
        using var container = Seam.Container(_kernel);
        using var group = Seam.Open(_kernel, _kernel.Dev("vfio/noiommu-7"));
        Seam.SetContainer(_kernel, group, container).Should().Be(0);
        _kernel.Ioctl(container, VfioUapi.VFIO_CHECK_EXTENSION, VfioUapi.VFIO_TYPE1v2_IOMMU).Should().Be(0);
        _kernel.Ioctl(container, VfioUapi.VFIO_SET_IOMMU, VfioUapi.VFIO_TYPE1v2_IOMMU).Should().Be(-Errno.ENODEV);
        _kernel.Ioctl(container, VfioUapi.VFIO_SET_IOMMU, VfioUapi.VFIO_NOIOMMU_IOMMU).Should().Be(0);
        Seam.GetDeviceFd(_kernel, group, "0000:00:05.0", out var device).Should().BeGreaterThan(0);
        device.Dispose();
    }

    [Fact]
    public void DevVfioListsTheContainerNodeGroupsWithVfioDevicesAndTheCdevFolder()
    {
        _kernel.AddPciDevice("0000:00:04.0", 0x8086, 0x10d3, 0x020000, iommuGroup: 6, driver: "e1000e");
        _kernel.ListDirectory(_kernel.Dev("vfio"), out var names).Should().Be(0);
        names.Should().Equal("5", "devices", "vfio");
    }

    [Fact]
    public void AssertNoLeaksListsWhatIsStillOpen()
    {
        var container = Seam.Container(_kernel);
        var eventFd = Seam.EventFd(_kernel);
        var memory = Seam.Anonymous(_kernel, 4096);
        _kernel.OpenFileCountTotal.Should().Be(2);
        _kernel.EventFdCount.Should().Be(1);
        _kernel.MappingCount.Should().Be(1);
        var act = () => _kernel.AssertNoLeaks();
        act.Should().Throw<SimulatedLeakException>()
            .WithMessage("*fd 3: Container*vfio/vfio*fd 4: EventFd*mapping*anonymous memory*");
        container.Dispose();
        eventFd.Dispose();
        memory.Dispose();
    }

    [Fact]
    public void DmaMappingsAreAccountedAndDroppedWhenTheLastGroupLeaves()
    {
        var opened = Seam.OpenDevice(_kernel, 5, "0000:00:03.0");
        var memory = Seam.Anonymous(_kernel, 8192);
        Seam.Map(_kernel, opened.Container, (ulong)memory.Address, 0x10000, 8192).Should().Be(0);
        _kernel.DmaMappingCount.Should().Be(1);
        memory.Dispose();
        _kernel.MappingCount.Should().Be(0, "the pinned memory outlives its mapping, but the mapping is gone");
        opened.Dispose();
        _kernel.DmaMappingCount.Should().Be(0);
    }

    [Fact]
    public void ManyThreadsOpeningAndClosingLeaveNothingBehind()
    {
        Parallel.For(0, 64, _ =>
        {
            for (int i = 0; i < 50; i++)
            {
                using var container = Seam.Container(_kernel);
                if (Seam.TryOpen(_kernel, _kernel.Dev("vfio/5"), out var group) == 0)
                {
                    using (group)
                    {
                        Seam.SetContainer(_kernel, group, container).Should().Be(0);
                    }
                }
                using var e = Seam.EventFd(_kernel);
            }
        });
        _kernel.OpenFileCountTotal.Should().Be(0);
    }

    [Fact]
    public void BridgesAreRootPortsAndDoNotNest()
    {
        _kernel.AddPciBridge("0000:00:1c.0", secondaryBus: 1);

        var nested = () => _kernel.AddPciBridge("0000:01:00.0", secondaryBus: 2);
        var twice = () => _kernel.AddPciBridge("0000:00:1c.1", secondaryBus: 1);
        var below = () => _kernel.AddPciBridge("0000:03:00.0", secondaryBus: 2);

        nested.Should().Throw<InvalidOperationException>().WithMessage("*bus 01 is behind 0000:00:1c.0*");
        twice.Should().Throw<InvalidOperationException>();
        below.Should().Throw<ArgumentException>();
    }

    [Fact]
    public void AFunctionBehindABridgeHasItsFolderInTheBridgesAndTheBridgeComesFirst()
    {
        _kernel.AddPciBridge("0000:00:1c.0", secondaryBus: 1, hotplugSlot: true);
        var behind = _kernel.AddPciDevice("0000:01:00.0", 0x1234, 0x11e8, 0x00ff00, iommuGroup: 7);
        var root = _kernel.AddPciDevice("0000:00:07.0", 0x1234, 0x11e8, 0x00ff00, iommuGroup: 8);
        var late = () => _kernel.AddPciBridge("0000:00:1d.0", secondaryBus: 0);
        _kernel.AddPciDevice("0000:02:00.0", 0x1234, 0x11e8, 0x00ff00, iommuGroup: 9);
        var after = () => _kernel.AddPciBridge("0000:00:1d.0", secondaryBus: 2);

        _kernel.ReadLink(_kernel.Sys("bus/pci/devices/0000:01:00.0"), out string link).Should().Be(0);
        link.Should().Be("../../../devices/pci0000:00/0000:00:1c.0/0000:01:00.0");
        behind.SysfsPath.Should().EndWith("/devices/pci0000:00/0000:00:1c.0/0000:01:00.0");
        root.SysfsPath.Should().EndWith("/devices/pci0000:00/0000:00:07.0");
        Seam.ReadText(_kernel, _kernel.Sys("bus/pci/slots/1/address")).Should().Be("0000:01:00\n");
        _kernel.ReadLink(_kernel.Sys("bus/pci/slots/1/module"), out string module).Should().Be(0);
        module.Should().EndWith("module/pciehp");
        late.Should().Throw<ArgumentOutOfRangeException>();
        after.Should().Throw<InvalidOperationException>().WithMessage("*before the functions behind it*0000:02:00.0*");
    }

    [Fact]
    public void AnAnonymousMappingLargerThanTheMachinesMemoryIsRefusedWithEnomem()
    {
        _kernel.MemoryBytes = 1UL << 30;

        ulong twoGiB = 2UL << 30;
        ulong oneTiB = 1UL << 40;

        _kernel.Mmap(null, (nuint)twoGiB, Flags.PROT_READ | Flags.PROT_WRITE, Flags.MAP_PRIVATE, 0, out _).Should().Be(-Errno.ENOMEM);
        _kernel.Mmap(null, (nuint)oneTiB, Flags.PROT_READ | Flags.PROT_WRITE, Flags.MAP_PRIVATE | Flags.MAP_POPULATE, 0, out _).Should().Be(-Errno.ENOMEM);
        _kernel.Mmap(null, 0x1000, Flags.PROT_READ | Flags.PROT_WRITE, Flags.MAP_PRIVATE, 0, out var small).Should().Be(0);
        small.Dispose();
        _kernel.MappingCount.Should().Be(0);
    }

    /// <summary>A function with a 16 KiB mappable BAR0 in group 8, opened through the seam, and BAR0 mapped.</summary>
    private (Opened Opened, PciDeviceModel Model, SafeMapping Bar0) MappedBar0()
    {
        var model = new PciDeviceModel(0x1234, 0x11e8, 0x00ff00);
        model.DefineBar(0, 0x4000);
        _kernel.AddPciDevice("0000:00:06.0", model, 8, "vfio-pci");
        var opened = Seam.OpenDevice(_kernel, 8, "0000:00:06.0");
        var info = Seam.RegionInfo(_kernel, opened.Device, 0);
        _kernel.Mmap(opened.Device, 0x4000, Flags.PROT_READ | Flags.PROT_WRITE, Flags.MAP_SHARED, (long)info.offset, out var bar0).Should().Be(0);
        return (opened, model, bar0);
    }

    private void WriteCommand(Opened opened, ushort command)
    {
        var info = Seam.RegionInfo(_kernel, opened.Device, VfioUapi.VFIO_PCI_CONFIG_REGION_INDEX);
        _kernel.PWrite(opened.Device, BitConverter.GetBytes(command), (long)info.offset + 4).Should().Be(2);
    }

    [Fact]
    public void AMappedBarTouchedWithMemorySpaceOffFaultsAsOnLinuxAndPreadSaysEio()
    {
        var (opened, model, bar0) = MappedBar0();
        bar0.WriteTrapped(0x10, 4, 0x12345678);
        ushort command = model.Command;

        WriteCommand(opened, (ushort)(command & ~PciConfig.CommandMemory));

        bar0.Invoking(b => b.ReadTrapped(0x10, 4)).Should().Throw<SimulatedFaultException>()
            .Which.Signal.Should().Be("SIGBUS");
        bar0.Invoking(b => b.WriteTrapped(0x10, 4, 0)).Should().Throw<SimulatedFaultException>();
        var bytes = new byte[4];
        _kernel.PRead(opened.Device, bytes, (long)Seam.RegionInfo(_kernel, opened.Device, 0).offset + 0x10).Should().Be(-Errno.EIO);
        WriteCommand(opened, command);
        bar0.ReadTrapped(0x10, 4).Should().Be(0x12345678, "the mapping faults back in once memory space is on");
        bar0.Dispose();
        opened.Dispose();
    }

    [Fact]
    public void AMappedBarOfAFunctionInD3FaultsAsOnLinux()
    {
        var (opened, model, bar0) = MappedBar0();
        int pm = 0x40; // the model's first capability: power management
        var info = Seam.RegionInfo(_kernel, opened.Device, VfioUapi.VFIO_PCI_CONFIG_REGION_INDEX);
        model.ReadConfigRegister(pm, 1).Should().Be(0x01u, "power management comes first");

        _kernel.PWrite(opened.Device, BitConverter.GetBytes((ushort)3), (long)info.offset + pm + 4).Should().Be(2);

        model.PowerState.Should().Be(PciPowerState.D3Hot);
        bar0.Invoking(b => b.ReadTrapped(0, 4)).Should().Throw<SimulatedFaultException>().Which.Signal.Should().Be("SIGBUS");
        _kernel.PWrite(opened.Device, BitConverter.GetBytes((ushort)0), (long)info.offset + pm + 4).Should().Be(2);
        bar0.ReadTrapped(0, 4).Should().Be(0);
        bar0.Dispose();
        opened.Dispose();
    }

    [Fact]
    public void MapFixedReplacesAMappedBarInPlaceAndReleasesTheDeviceFile()
    {
        var (opened, _, bar0) = MappedBar0();
        _kernel.MemFd("ones", out var memfd).Should().Be(0);
        var ones = Enumerable.Repeat((byte)0xff, 0x4000).ToArray();
        _kernel.PWrite(memfd, ones, 0).Should().Be(0x4000);

        _kernel.MmapFixed(bar0.Address, 0x4000, Flags.PROT_READ | Flags.PROT_WRITE, Flags.MAP_PRIVATE, memfd, 0).Should().Be(0);
        memfd.Dispose();

        bar0.ReadTrapped(0x10, 4).Should().Be(0xffffffffUL);
        bar0.WriteTrapped(0x10, 4, 7);
        bar0.ReadTrapped(0x10, 4).Should().Be(7UL, "a private mapping keeps what this process writes, and the device never sees it");
        _kernel.MappingCount.Should().Be(1);
        opened.Dispose();
        _kernel.OpenFileCount(SimulatedFileKind.Device).Should().Be(0, "the replaced mapping no longer holds the device file");
        bar0.Dispose();
        _kernel.MappingCount.Should().Be(0);
    }

    [Fact]
    public void MapFixedOfTheDeviceFileMapsTheBarBackAndMunmapOfPartSplitsTheMapping()
    {
        var (opened, model, bar0) = MappedBar0();
        bar0.WriteTrapped(0x2000, 4, 0xabcd);
        _kernel.MemFd("ones", out var memfd).Should().Be(0);
        _kernel.PWrite(memfd, Enumerable.Repeat((byte)0xff, 0x2000).ToArray(), 0).Should().Be(0x2000);
        _kernel.MmapFixed(bar0.Address + 0x2000, 0x2000, Flags.PROT_READ | Flags.PROT_WRITE, Flags.MAP_PRIVATE, memfd, 0).Should().Be(0);
        memfd.Dispose();
        _kernel.MappingCount.Should().Be(2, "the BAR's first half and the all-ones second half");
        bar0.ReadTrapped(0x2000, 4).Should().Be(0xffffffffUL);

        long offset = (long)Seam.RegionInfo(_kernel, opened.Device, 0).offset;
        _kernel.MmapFixed(bar0.Address + 0x2000, 0x2000, Flags.PROT_READ | Flags.PROT_WRITE, Flags.MAP_SHARED, opened.Device, offset + 0x2000).Should().Be(0);

        bar0.ReadTrapped(0x2000, 4).Should().Be(0xabcdUL, "the device's register is reachable again");
        _kernel.Munmap(bar0.Address, 0x1000).Should().Be(0);
        _kernel.MappingCount.Should().Be(2);
        bar0.Invoking(b => b.ReadTrapped(0, 4)).Should().Throw<SimulatedFaultException>().Which.Signal.Should().Be("SIGSEGV");
        _ = model;
        bar0.Dispose();
        opened.Dispose();
        _kernel.MappingCount.Should().Be(0);
    }
}
