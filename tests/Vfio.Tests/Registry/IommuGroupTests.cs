using Vfio.Interop;
using Vfio.Testing;
using Vfio.Tests.Simulation;

namespace Vfio.Tests.Registry;

/// <summary>Groups: one open per group, viability, shared by their devices, torn down by the last.</summary>
public class IommuGroupTests() : KernelTest(VfioBackend.Legacy)
{
    [Fact]
    public void ASecondOpenOfTheGroupByAnotherRegistryIsReportedAsBusyNamingTheGroup()
    {
        AddPci();
        var mine = RegisterPci();
        var theirs = RegisterPci(registry: NewRegistry());
        using var open = mine.Open();

        var error = theirs.Invoking(d => d.Open()).Should().Throw<VfioBusyException>().Which;

        error.Errno.Should().Be(Errno.EBUSY);
        error.GroupId.Should().Be(5);
        error.Message.Should().Contain("Group 5 is already open");
        theirs.IsOpen.Should().BeFalse();
        theirs.ReferenceCount.Should().Be(1);
        theirs.Registry.Groups.Should().BeEmpty();
        theirs.Registry.Containers.Should().BeEmpty("the group was refused before a container was opened");
        Kernel.OpenFileCount(SimulatedFileKind.Container).Should().Be(1);
    }

    [Fact]
    public void AGroupNodeOpenedElsewhereMakesTheOpenBusy()
    {
        AddPci();
        var device = RegisterPci();
        using (var held = Seam.Group(Kernel, 5))
        {
            device.Invoking(d => d.Open()).Should().Throw<VfioBusyException>().Which.GroupId.Should().Be(5);
            Kernel.OpenFileCountTotal.Should().Be(1, "only the other holder's group file is open");
        }

        using (device.Open())
        {
            device.IsOpen.Should().BeTrue("the group is free again");
        }
    }

    [Fact]
    public void ANonViableGroupNamesTheDeviceThatBlocksItAndItsDriver()
    {
        AddPci();
        AddPci("0000:00:03.1", driver: "e1000e");
        var device = RegisterPci();

        var error = device.Invoking(d => d.Open()).Should().Throw<VfioGroupNotViableException>().Which;

        error.NotViableGroupId.Should().Be(5);
        error.GroupId.Should().Be(5, "the base exception names the group too");
        error.BlockingDevices.Should().Equal("0000:00:03.1 is bound to e1000e");
        error.Message.Should().Contain("Group 5 is not viable: 0000:00:03.1 is bound to e1000e");
        Registry.Groups.Should().BeEmpty();
        Kernel.OpenFileCountTotal.Should().Be(0);
    }

    [Fact]
    public void AGroupAKernelDriverClaimsAfterTheStatusCheckIsStillReportedAsNotViable()
    {
        // Linux 6.1 refuses GROUP_SET_CONTAINER with EPERM when a device of the group is bound to a
        // DMA-using driver; a driver binding between the status check and the attach hits that path.
        AddPci();
        var sibling = AddPci("0000:00:03.1", driver: null);
        var device = RegisterPci();
        Logs.OnEntry = entry =>
        {
            if (entry.EventId.Name == "ContainerOpened" && sibling.Driver is null)
            {
                sibling.Bind("e1000e");
            }
        };

        var error = device.Invoking(d => d.Open()).Should().Throw<VfioGroupNotViableException>().Which;

        error.BlockingDevices.Should().Equal("0000:00:03.1 is bound to e1000e");
        sibling.Driver.Should().Be("e1000e", "the bind happened between status check and attach");
        Kernel.OpenFileCountTotal.Should().Be(0);
    }

    [Fact]
    public void AnAttachRefusedWithEpermForAnotherReasonIsReportedAsAccessDenied()
    {
        AddPci();
        var device = RegisterPci();
        Kernel.FailNext(SimulatedCall.Ioctl, Errno.EPERM, VfioUapi.VFIO_GROUP_SET_CONTAINER);

        var error = device.Invoking(d => d.Open()).Should().Throw<VfioAccessDeniedException>().Which;

        error.Operation.Should().Be("VFIO_GROUP_SET_CONTAINER");
        error.GroupId.Should().Be(5);
        Kernel.OpenFileCountTotal.Should().Be(0);
    }

    [Fact]
    public void TheLastDeviceLeavingTearsTheGroupDown()
    {
        AddPci();
        AddPci("0000:00:03.1");
        var first = RegisterPci();
        var second = RegisterPci("0000:00:03.1");

        var firstOpen = first.Open();
        var secondOpen = second.Open();
        var group = Registry.Groups.Should().ContainSingle().Which;
        first.Group.Should().BeSameAs(group);
        second.Group.Should().BeSameAs(group);
        group.OpenDeviceCount.Should().Be(2);
        group.Devices.Should().BeEquivalentTo([first, second]);

        firstOpen.Dispose();
        Registry.Groups.Should().ContainSingle().Which.Should().BeSameAs(group);
        group.OpenDeviceCount.Should().Be(1);
        group.Container.Should().NotBeNull();
        Kernel.OpenFileCount(SimulatedFileKind.Group).Should().Be(1);
        Kernel.OpenFileCount(SimulatedFileKind.Container).Should().Be(1);
        Kernel.OpenFileCount(SimulatedFileKind.Device).Should().Be(1);

        secondOpen.Dispose();
        Registry.Groups.Should().BeEmpty();
        Registry.Containers.Should().BeEmpty();
        group.Container.Should().BeNull("the container was unset");
        Kernel.OpenFileCountTotal.Should().Be(0);
        Logs.Named("GroupDetached").Should().ContainSingle().Which["GroupId"].Should().Be(5);
    }

    [Fact]
    public async Task DevicesOfOneGroupInTwoSetsOpenedAtOnceShareOneOpenOfTheGroupFile()
    {
        // Two slots, one group: the devices' set locks differ, so only the group's gate keeps the
        // second open from opening the group file again (which the kernel refuses with EBUSY).
        AddPci();
        AddPci("0000:00:04.0");
        var first = RegisterPci();
        var second = RegisterPci("0000:00:04.0");
        Task<DeviceReference>? secondOpening = null;
        using var secondStarted = new ManualResetEventSlim();
        Logs.OnEntry = entry =>
        {
            if (entry.EventId.Name == "ContainerOpened" && secondOpening is null)
            {
                // The first open is attaching its group: the second starts now.
                secondOpening = Task.Run(() =>
                {
                    secondStarted.Set();
                    return second.Open();
                });
                secondStarted.Wait(Guard);
            }
        };

        using var firstOpen = first.Open();
        using var secondOpen = await secondOpening!.WaitAsync(Guard);

        var group = Registry.Groups.Should().ContainSingle().Which;
        group.OpenDeviceCount.Should().Be(2);
        second.Group.Should().BeSameAs(group);
        Kernel.OpenFileCount(SimulatedFileKind.Group).Should().Be(1);
        Logs.Named("GroupOpened").Should().ContainSingle();
    }

    [Fact]
    public void TheRegistryAnswersWhileAGroupIsBeingAttached()
    {
        // The group table is locked for bookkeeping only, never across the open and attach syscalls.
        AddPci();
        var device = RegisterPci();
        bool? answered = null;
        Logs.OnEntry = entry =>
        {
            if (entry.EventId.Name == "ContainerOpened")
            {
                answered = Task.Run(() => Registry.Groups.Count + Registry.Containers.Count).Wait(Guard);
            }
        };

        using var open = device.Open();

        answered.Should().BeTrue("another thread reads the registry's groups and containers while the first group attaches");
    }

    [Fact]
    public void AHotResetPinIsNotCountedAsAnOpenDevice()
    {
        AddPci();
        var device = RegisterPci();
        using var open = device.Open();
        var group = device.Group!;

        Registry.LegacyBackend.TryPinGroup(5, out var pinned).Should().BeTrue();
        pinned.Should().BeSameAs(group);
        group.OpenDeviceCount.Should().Be(1);
        group.PinCount.Should().Be(1);

        Registry.LegacyBackend.ReleaseGroup(group, pinned: true);
        group.PinCount.Should().Be(0);
        Registry.Groups.Should().ContainSingle("the open device still holds the group");
        Registry.LegacyBackend.TryPinGroup(6, out _).Should().BeFalse("group 6 is not open");
    }

    [Fact]
    public void TheDeviceFileIsClosedBeforeTheGroupIsReleased()
    {
        // The premise: the kernel refuses to unset a container while a device file of the group is open.
        AddPci();
        using (var opened = Seam.OpenDevice(Kernel, 5, "0000:00:03.0"))
        {
            Kernel.Ioctl(opened.Group, VfioUapi.VFIO_GROUP_UNSET_CONTAINER, 0).Should().Be(-Errno.EBUSY);
        }
        var device = RegisterPci();

        device.Open().Dispose();

        Logs.Named("GroupTeardownFailed").Should().BeEmpty("UNSET_CONTAINER succeeded, so no device file was open");
        Logs.Named("GroupDetached").Should().ContainSingle();
        Logs.Entries.Should().NotContain(e => e.Level >= Microsoft.Extensions.Logging.LogLevel.Warning);
        Kernel.OpenFileCountTotal.Should().Be(0);
    }

    [Fact]
    public void TryGetMemberTakesACountedReferenceThatIsReleasedOnSuccess()
    {
        AddPci();
        var device = RegisterPci();
        using var open = device.Open();
        var group = device.Group!;

        group.TryGetMember(out var member, out var reference).Should().BeTrue();
        using (reference)
        {
            member.Should().BeSameAs(device);
            device.ReferenceCount.Should().Be(3);
        }

        device.ReferenceCount.Should().Be(2);
    }

    [Fact]
    public async Task TryGetMemberReleasesItsReferenceWhenTheOperationFails()
    {
        AddPci();
        var device = RegisterPci();
        var open = device.Open();
        var iommuGroup = device.Group!;

        var act = () =>
        {
            if (iommuGroup.TryGetMember(out var member, out var reference))
            {
                using (reference)
                {
                    member!.Reset();
                }
            }
        };
        Kernel.FailNext(SimulatedCall.Ioctl, Errno.EIO, VfioUapi.VFIO_DEVICE_RESET);

        act.Should().Throw<VfioException>().Which.Operation.Should().Be("VFIO_DEVICE_RESET");
        device.ReferenceCount.Should().Be(2, "the registration and the open remain; the member's reference went");
        open.Dispose();
        await Registry.UnregisterAsync(device).WaitAsync(Guard);
    }

    [Fact]
    public async Task TryGetMemberSkipsADeviceBeingUnregistered()
    {
        AddPci();
        AddPci("0000:00:03.1");
        var leaving = RegisterPci();
        var staying = RegisterPci("0000:00:03.1");
        using var open = staying.Open();
        leaving.TryGet(out var held).Should().BeTrue();
        var asked = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        leaving.WhenReleaseRequested = _ => asked.TrySetResult();
        var unregister = Registry.UnregisterAsync(leaving);
        await asked.Task.WaitAsync(Guard);

        staying.Group!.TryGetMember(out var member, out var reference).Should().BeTrue();
        using (reference)
        {
            member.Should().BeSameAs(staying);
        }

        held.Dispose();
        await unregister.WaitAsync(Guard);
        leaving.ReferenceCount.Should().Be(0);
    }

    [Fact]
    public async Task TryGetMemberFailsWhenNoMemberCanBeTaken()
    {
        AddPci();
        var device = RegisterPci();
        var open = device.Open();
        var group = device.Group!;
        device.TryGet(out var held).Should().BeTrue();
        open.Dispose();
        var asked = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        device.WhenReleaseRequested = _ => asked.TrySetResult();
        var unregister = Registry.UnregisterAsync(device);
        await asked.Task.WaitAsync(Guard);

        group.TryGetMember(out var member, out var reference).Should().BeFalse();
        member.Should().BeNull();
        reference.IsHeld.Should().BeFalse();
        device.ReferenceCount.Should().Be(1, "only the holder's reference; the failed try took none");

        held.Dispose();
        await unregister.WaitAsync(Guard);
    }
}
