using Microsoft.Extensions.Logging;
using Vfio.Interop;
using Vfio.Testing;

namespace Vfio.Tests.Registry;

/// <summary>
/// The iommufd backend: when the registry chooses it, how it opens and closes a device through its
/// cdev (bind, one shared IOAS, attach; detach, close, destroy, close the iommufd), and the errors
/// that name the device and say what to do.
/// </summary>
public sealed class IommufdBackendTests() : KernelTest(VfioBackend.Iommufd)
{
    private (int Contexts, int Ioas, int Devices, int PageTables) KernelObjects()
    {
        using (Kernel.Enter())
        {
            var contexts = Kernel.IommufdContextsLocked.ToList();
            var objects = contexts.SelectMany(c => c.Objects).ToList();
            return (contexts.Count, objects.OfType<IoasObject>().Count(), objects.OfType<IommufdDeviceObject>().Count(), objects.OfType<HwptObject>().Count());
        }
    }

    [Fact]
    public void DevicesOfTheRegistryShareOneIommufdAndOneIoas()
    {
        AddPci();
        AddPci("0000:00:04.0", group: 6);
        var first = RegisterPci();
        var second = RegisterPci("0000:00:04.0");

        using (first.Open())
        using (second.Open())
        {
            first.Backend.Should().Be(VfioBackend.Iommufd);
            second.Backend.Should().Be(VfioBackend.Iommufd);
            var ioas = Registry.IommufdAddressSpace!;
            first.AddressSpace.Should().BeSameAs(ioas);
            second.AddressSpace.Should().BeSameAs(ioas);
            ioas.Devices.Should().Equal(first, second);
            ioas.Backend.Should().Be(VfioBackend.Iommufd);
            KernelObjects().Should().Be((1, 1, 2, 1), "one context, one IOAS, two bound devices sharing the automatic page table");
            Kernel.OpenFileCount(SimulatedFileKind.Iommufd).Should().Be(1);
            Kernel.OpenFileCount(SimulatedFileKind.Group).Should().Be(0);
            Kernel.OpenFileCount(SimulatedFileKind.Container).Should().Be(0);
        }

        Registry.IommufdAddressSpace.Should().BeNull();
        KernelObjects().Should().Be((0, 0, 0, 0));
    }

    [Fact]
    public void TheIoasStaysUntilItsLastDeviceCloses()
    {
        AddPci();
        AddPci("0000:00:04.0", group: 6);
        var first = RegisterPci();
        var second = RegisterPci("0000:00:04.0");
        var open = first.Open();
        var other = second.Open();
        using var buffer = second.AllocateDmaBuffer(0x1000);
        var ioas = Registry.IommufdAddressSpace!;

        open.Dispose();

        Registry.IommufdAddressSpace.Should().BeSameAs(ioas);
        ioas.Devices.Should().Equal(second);
        KernelObjects().Should().Be((1, 1, 1, 1));
        buffer.IsMapped.Should().BeTrue("the buffer is the other device's");
        Kernel.DmaMappingCount.Should().Be(1);

        other.Dispose();

        buffer.IsMapped.Should().BeFalse();
        Registry.IommufdAddressSpace.Should().BeNull();
        Kernel.OpenFileCountTotal.Should().Be(0);
    }

    [Fact]
    public void ClosingDetachesClosesTheCdevUnmapsAllDestroysTheIoasAndClosesTheIommufdInThatOrder()
    {
        AddPci();
        var device = RegisterPci();
        device.Open().Dispose();
        long before = Kernel.CallCount;
        var open = device.Open();
        long openCalls = Kernel.CallCount - before;
        before = Kernel.CallCount;
        open.Dispose();
        long closeCalls = Kernel.CallCount - before;

        // Each call of the close path fails in turn: teardown goes on, logs what failed, and leaves nothing.
        var failed = new List<string>();
        for (long k = 1; k <= closeCalls; k++)
        {
            open = device.Open();
            Logs.Clear();
            Kernel.FailCall(k, Errno.EIO);
            open.Dispose();
            Kernel.ClearFailures();
            Kernel.AssertNoLeaks();
            failed.AddRange(Logs.Entries.Where(e => e.Level == LogLevel.Warning).Select(e => e.Exception).OfType<VfioException>().Select(e => e.Operation));
        }

        openCalls.Should().BeGreaterThan(5);
        failed.Should().ContainInOrder("VFIO_DEVICE_DETACH_IOMMUFD_PT", "IOMMU_IOAS_UNMAP (all)", "IOMMU_DESTROY");
        Registry.IommufdAddressSpace.Should().BeNull();
    }

    [Fact]
    public void OnLinux61TheRegistryUsesTheLegacyBackendAndForcingIommufdNamesTheMissingDevIommu()
    {
        Kernel.LinuxVersion = new Version(6, 1);
        AddPci();
        var auto = RegisterPci();
        using (auto.Open())
        {
            auto.Backend.Should().Be(VfioBackend.Legacy);
            Registry.Backend.Should().Be(VfioBackend.Legacy);
        }
        var forced = NewRegistry(backend: VfioBackend.Iommufd);
        var device = RegisterPci(registry: forced);

        var error = device.Invoking(d => d.Open()).Should().Throw<VfioNotSupportedException>().Which;

        error.Message.Should().Contain("0000:00:03.0").And.Contain(Kernel.Dev("iommu")).And.Contain("CONFIG_IOMMUFD").And.Contain("VfioBackend.Legacy");
        forced.Backend.Should().Be(VfioBackend.Iommufd);
        Kernel.OpenFileCountTotal.Should().Be(0);
    }

    [Fact]
    public void AKernelWithIommufdButNoCdevOpensThroughTheGroupAndForcingIommufdNamesTheMissingCdev()
    {
        Kernel.LinuxVersion = new Version(6, 2);
        AddPci();
        var auto = RegisterPci();
        using (auto.Open())
        {
            Registry.Backend.Should().Be(VfioBackend.Iommufd, "/dev/iommu exists");
            auto.Backend.Should().Be(VfioBackend.Legacy, "the device has no cdev");
            Logs.Named("BackendChosen").Single()["Why"].Should().Be(
                $"its sysfs names vfio0, but there is no {Kernel.Dev("vfio/devices")}/vfio0: the kernel has no VFIO device cdev (CONFIG_VFIO_DEVICE_CDEV, Linux 6.6 and later, which needs CONFIG_IOMMUFD)");
        }
        var forced = NewRegistry(backend: VfioBackend.Iommufd);
        var device = RegisterPci(registry: forced);

        device.Invoking(d => d.Open()).Should().Throw<VfioNotSupportedException>()
            .Which.Message.Should().Contain("0000:00:03.0").And.Contain("CONFIG_VFIO_DEVICE_CDEV");
    }

    [Fact]
    public void ForcingTheLegacyBackendUsesTheGroupWhereTheCdevExists()
    {
        AddPci();
        var registry = NewRegistry(backend: VfioBackend.Legacy);
        var device = RegisterPci(registry: registry);

        using (device.Open())
        {
            registry.Backend.Should().Be(VfioBackend.Legacy);
            device.Backend.Should().Be(VfioBackend.Legacy);
            device.Group.Should().NotBeNull();
            registry.IommufdAddressSpace.Should().BeNull();
            Kernel.OpenFileCount(SimulatedFileKind.Iommufd).Should().Be(0);
        }
    }

    [Fact]
    public void ANoIommuDeviceUsesTheLegacyBackendBesideDevicesThatUseIommufd()
    {
        Kernel.UnsafeNoIommuMode = true;
        AddPci();
        Kernel.AddPciDevice("0000:00:06.0", new PciDeviceModel(0x1af4, 0x1000, 0x020000), 9, SimulatedGroupKind.NoIommu, "vfio-pci");
        var device = RegisterPci();
        var noIommu = RegisterPci("0000:00:06.0");

        using (device.Open())
        using (noIommu.Open())
        {
            device.Backend.Should().Be(VfioBackend.Iommufd);
            noIommu.Backend.Should().Be(VfioBackend.Legacy);
            noIommu.Group!.Kind.Should().Be(IommuGroupKind.NoIommu);
            Registry.Containers.Should().ContainSingle().Which.IsNoIommu.Should().BeTrue();
            Registry.IommufdAddressSpace!.Devices.Should().Equal(device);
        }

        var forced = NewRegistry(backend: VfioBackend.Iommufd);
        var refused = RegisterPci("0000:00:06.0", forced);
        refused.Invoking(d => d.Open()).Should().Throw<VfioNotSupportedException>()
            .Which.Message.Should().Contain("0000:00:06.0").And.Contain("no-IOMMU");
    }

    [Fact]
    public void AGroupOpenThroughTheLegacyApiMakesTheBindFailNamingTheDeviceAndTheGroup()
    {
        AddPci();
        var legacy = NewRegistry(backend: VfioBackend.Legacy);
        var holder = RegisterPci(registry: legacy);
        var device = RegisterPci();
        using var held = holder.Open();

        var error = device.Invoking(d => d.Open()).Should().Throw<VfioBusyException>().Which;

        error.Operation.Should().Be("VFIO_DEVICE_BIND_IOMMUFD");
        error.Message.Should().Contain("0000:00:03.0").And.Contain("Group 5").And.Contain(Kernel.Dev("vfio/5")).And.Contain("legacy group API");
        Registry.IommufdAddressSpace.Should().BeNull("the IOAS made for the device is destroyed again");
        Kernel.OpenFileCount(SimulatedFileKind.Iommufd).Should().Be(0);
        Kernel.OpenFileCount(SimulatedFileKind.Device).Should().Be(1, "only the holder's");
    }

    [Fact]
    public void ADeviceBoundThroughItsCdevMakesTheLegacyOpenOfItsGroupFailNamingBoth()
    {
        AddPci();
        var device = RegisterPci();
        var legacy = NewRegistry(backend: VfioBackend.Legacy);
        var other = RegisterPci(registry: legacy);
        using var open = device.Open();

        var error = other.Invoking(d => d.Open()).Should().Throw<VfioBusyException>().Which;

        error.GroupId.Should().Be(5);
        error.Message.Should().Contain("Group 5").And.Contain("cdev");
        legacy.Groups.Should().BeEmpty();
    }

    [Fact]
    public void ADeviceBoundToAnotherRegistrysIommufdIsReportedAsOpenElsewhere()
    {
        AddPci();
        var device = RegisterPci();
        var other = RegisterPci(registry: NewRegistry());
        using var open = device.Open();

        var error = other.Invoking(d => d.Open()).Should().Throw<VfioException>().Which;

        error.Errno.Should().Be(Errno.EINVAL);
        error.Message.Should().Contain("0000:00:03.0").And.Contain("already open through another file");
    }

    [Fact]
    public void AnotherDeviceOfTheGroupBoundToAnotherIommufdIsNamedAsTheReasonForEperm()
    {
        AddPci();
        AddPci("0000:00:03.1", group: 5);
        var device = RegisterPci();
        var sibling = RegisterPci("0000:00:03.1", NewRegistry());
        using var open = device.Open();

        var error = sibling.Invoking(d => d.Open()).Should().Throw<VfioAccessDeniedException>().Which;

        error.Operation.Should().Be("VFIO_DEVICE_BIND_IOMMUFD");
        error.Message.Should().Contain("0000:00:03.1").And.Contain("another device of group 5 is bound to another iommufd");
    }

    [Fact]
    public void WithoutInterruptRemappingTheBindIsRefusedWithAHint()
    {
        Kernel.IsolatedMsi = false;
        AddPci();
        var device = RegisterPci();

        var error = device.Invoking(d => d.Open()).Should().Throw<VfioAccessDeniedException>().Which;

        error.Errno.Should().Be(Errno.EPERM);
        error.Message.Should().Contain("interrupt remapping").And.Contain("allow_unsafe_interrupts");
        Kernel.OpenFileCountTotal.Should().Be(0);
    }

    [Fact]
    public void ANonViableGroupIsReportedWithTheDeviceThatBlocksIt()
    {
        AddPci();
        AddPci("0000:00:03.1", group: 5, driver: "nvme");
        var device = RegisterPci();

        var error = device.Invoking(d => d.Open()).Should().Throw<VfioGroupNotViableException>().Which;

        error.GroupId.Should().Be(5);
        error.BlockingDevices.Should().Equal("0000:00:03.1 is bound to nvme");
        Kernel.OpenFileCountTotal.Should().Be(0);
    }

    [Fact]
    public void TheHardwareInfoIsTheIntelVtdRegistersTheKernelReports()
    {
        Kernel.VtdCapabilityRegister = 0x00d2_0086_6f1e_0462;
        Kernel.VtdExtendedCapabilityRegister = 0x0000_0000_00f0_101a;
        AddPci();
        var device = RegisterPci();
        using var open = device.Open();

        var info = device.GetIommuHardwareInfo();

        info.Type.Should().Be(IommuHardwareType.IntelVtd);
        info.IntelVtdCapability.Should().Be(0x00d2_0086_6f1e_0462);
        info.IntelVtdExtendedCapability.Should().Be(0x0000_0000_00f0_101a);
        info.Data.Length.Should().Be(24, "struct iommu_hw_info_vtd");
        info.CanTrackDirtyPages.Should().BeFalse("QEMU's intel-iommu, like the simulated one, has no dirty tracking");
        info.Capabilities.Should().Be(1UL << 3, "7.2 reports a device without PCI ATS (IOMMU_HW_CAP_PCI_ATS_NOT_SUPPORTED)");
        info.MaxPasidLog2.Should().Be(0);
    }

    [Fact]
    public void OnLinux66TheHardwareInfoHasNoCapabilities()
    {
        Kernel.LinuxVersion = new Version(6, 6);
        AddPci();
        var device = RegisterPci();
        using var open = device.Open();

        var info = device.GetIommuHardwareInfo();

        info.Type.Should().Be(IommuHardwareType.IntelVtd);
        info.Capabilities.Should().Be(0, "out_capabilities arrived in 6.7");
    }

    [Fact]
    public void AskingALegacyDeviceForTheHardwareInfoSaysItNeedsTheIommufdBackend()
    {
        AddPci();
        var device = RegisterPci(registry: NewRegistry(backend: VfioBackend.Legacy));
        using var open = device.Open();

        device.Invoking(d => d.GetIommuHardwareInfo()).Should().Throw<VfioNotSupportedException>()
            .Which.Message.Should().Contain("legacy backend").And.Contain("IOMMU_GET_HW_INFO");
    }

    [Fact]
    public async Task DevicesOpenedAtOnceShareOneIoas()
    {
        var devices = Enumerable.Range(0, 8).Select(i =>
        {
            string address = $"0000:00:{i + 3:x2}.0";
            AddPci(address, group: 10 + i);
            return RegisterPci(address);
        }).ToList();
        using var start = new ManualResetEventSlim();

        var opens = devices.Select(d => Task.Run(() =>
        {
            start.Wait();
            return d.Open();
        })).ToList();
        start.Set();
        var references = await Task.WhenAll(opens).WaitAsync(Guard);

        Registry.IommufdAddressSpace!.Devices.Should().BeEquivalentTo(devices);
        KernelObjects().Should().Be((1, 1, 8, 1));
        foreach (var reference in references)
        {
            reference.Dispose();
        }
        KernelObjects().Should().Be((0, 0, 0, 0));
    }
}
