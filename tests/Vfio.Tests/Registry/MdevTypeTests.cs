using MdevLifecycle;
using Vfio.Interop;
using Vfio.Testing;

namespace Vfio.Tests.Registry;

/// <summary>Creating and removing mediated devices through <see cref="MdevType"/>, on the simulated mtty parent.</summary>
public sealed class MdevTypeTests : KernelTest
{
    private readonly SimulatedMdevParent _mtty;

    public MdevTypeTests()
    {
        _mtty = Kernel.AddMttyParent();
        Registry.AddDriver(new MttyDriver());
    }

    private MdevType Type(string id) => Registry.FindMdevParent("mtty").Type(id);

    private string[] Mdevs()
    {
        Kernel.ListDirectory(Kernel.Sys("bus/mdev/devices"), out var names).Should().Be(0);
        return names;
    }

    private sealed class ThrowingMttyDriver() : MdevDriver<MttyDevice>("throwing", "mtty-1")
    {
        protected internal override MttyDevice CreateDevice(MdevDeviceContext context)
        {
            _ = new MttyDevice(context);
            throw new InvalidOperationException("driver preparation failed");
        }
    }

    [Fact]
    public void DiscoveryReadsTheParentAndItsTypes()
    {
        var parent = Registry.DiscoverMdevParents().Should().ContainSingle().Subject;
        parent.Name.Should().Be("mtty");
        parent.Types.Select(t => (t.Id, t.Name, t.DeviceApi, t.Description)).Should().Equal(
            ("mtty-1", "Single port serial", "vfio-pci", null),
            ("mtty-2", "Dual port serial", "vfio-pci", null));
        parent.Type("mtty-1").ReadAvailableInstances().Should().Be(24);
        parent.Type("mtty-2").ReadAvailableInstances().Should().Be(12);
    }

    [Fact]
    public async Task CreateOpensATypedDeviceAndDisposeRemovesIt()
    {
        var type = Type("mtty-2");
        var uuid = Guid.NewGuid();
        await using (var mdev = await type.CreateAsync<MttyDevice>(uuid))
        {
            mdev.Device.Uuid.Should().Be(uuid);
            mdev.Device.TypeId.Should().Be("mtty-2");
            mdev.Device.IsOpen.Should().BeTrue();
            mdev.Device.GroupKind.Should().Be(IommuGroupKind.Emulated);
            Registry.CreatedMdevs.Should().ContainSingle();
            type.ReadAvailableInstances().Should().Be(11);
            Type("mtty-1").ReadAvailableInstances().Should().Be(22, "mtty-1 and mtty-2 share the 24 ports");
            Mdevs().Should().Equal(uuid.ToString());
        }
        Mdevs().Should().BeEmpty();
        type.ReadAvailableInstances().Should().Be(12);
        Registry.Devices.Should().BeEmpty();
        Registry.CreatedMdevs.Should().BeEmpty();
        Logs.Entries.Should().Contain(e => e.EventId.Id == 800).And.Contain(e => e.EventId.Id == 801);
    }

    [Fact]
    public async Task WithoutADriverNothingIsCreated()
    {
        var registry = NewRegistry();
        var type = registry.FindMdevParent("mtty").Type("mtty-1");
        var act = () => type.CreateAsync<MttyDevice>();
        (await act.Should().ThrowAsync<InvalidOperationException>()).WithMessage("*No driver*mtty-1*AddDriver*");
        Mdevs().Should().BeEmpty();
    }

    [Fact]
    public async Task AnExistingUuidFailsWithEexistAndTheOtherMdevStays()
    {
        var uuid = Guid.NewGuid();
        _mtty.Create(uuid, "1");
        var act = () => Type("mtty-1").CreateAsync<MttyDevice>(uuid);
        var error = (await act.Should().ThrowAsync<VfioException>()).Which;
        error.Errno.Should().Be(Errno.EEXIST);
        error.Message.Should().Contain(uuid.ToString()).And.Contain("exists already");
        Mdevs().Should().Equal(uuid.ToString());
    }

    [Fact]
    public async Task NoInstanceLeftSaysSoAndCreatesNothing()
    {
        for (int i = 0; i < 12; i++)
        {
            _mtty.Create(Guid.NewGuid(), "2");
        }
        var act = () => Type("mtty-1").CreateAsync<MttyDevice>();
        var error = (await act.Should().ThrowAsync<VfioException>()).Which;
        error.Errno.Should().Be(Errno.ENOSPC);
        error.Message.Should().Contain("No instance of mtty-1 is left on mtty (available_instances: 0)");
        Mdevs().Should().HaveCount(12);
        Registry.Devices.Should().BeEmpty();
    }

    [Fact]
    public async Task AParentGoneSinceDiscoverySaysSo()
    {
        var type = Type("mtty-1");
        _mtty.Remove();
        var act = () => type.CreateAsync<MttyDevice>();
        (await act.Should().ThrowAsync<VfioNotFoundException>()).WithMessage("*parent mtty is gone*");
        Mdevs().Should().BeEmpty();
    }

    [Fact]
    public async Task AnUnknownTypeListsTheTypesOffered()
    {
        var act = () => Registry.FindMdevParent("mtty").CreateAsync<MttyDevice>("mtty-9");
        (await act.Should().ThrowAsync<VfioNotFoundException>()).WithMessage("*offers no type mtty-9*mtty-1, mtty-2*");
        Registry.Invoking(r => r.FindMdevParent("gvt")).Should().Throw<VfioNotFoundException>().WithMessage("*No mdev parent gvt*mtty*");
    }

    [Fact]
    public async Task ADeniedCreateAttributeCreatesNothing()
    {
        var type = Type("mtty-1");
        Kernel.DenyAccess(Kernel.Sys("devices/virtual/mtty/mtty/mdev_supported_types/mtty-1/create"));
        var act = () => type.CreateAsync<MttyDevice>();
        (await act.Should().ThrowAsync<VfioAccessDeniedException>()).WithMessage("*create mdev*mtty-1*");
        Mdevs().Should().BeEmpty();
    }

    [Fact]
    public async Task AFirstOpenRefusedWithEbusyRemovesTheMdev()
    {
        var type = Type("mtty-1");
        Kernel.FailNext(SimulatedCall.Ioctl, Errno.EBUSY, VfioUapi.VFIO_GROUP_GET_DEVICE_FD);
        var act = () => type.CreateAsync<MttyDevice>();
        (await act.Should().ThrowAsync<VfioBusyException>()).Which.Operation.Should().Contain("VFIO_GROUP_GET_DEVICE_FD");
        Mdevs().Should().BeEmpty();
        type.ReadAvailableInstances().Should().Be(24);
        Registry.Devices.Should().BeEmpty();
        Registry.Groups.Should().BeEmpty();
        Registry.CreatedMdevs.Should().BeEmpty();
        Logs.Entries.Should().Contain(e => e.EventId.Id == 802);
    }

    [Fact]
    public async Task AGroupThatCannotBeOpenedRemovesTheMdev()
    {
        var type = Type("mtty-1");
        var uuid = Guid.NewGuid();
        var first = await type.CreateAsync<MttyDevice>(uuid);
        int group = first.Device.GroupId;
        await first.DisposeAsync();
        Kernel.DenyAccess(Kernel.DevRoot + "/vfio/" + group);
        var act = () => type.CreateAsync<MttyDevice>();
        (await act.Should().ThrowAsync<VfioAccessDeniedException>()).WithMessage("*vfio/" + group + "*");
        Mdevs().Should().BeEmpty();
        Registry.Devices.Should().BeEmpty();
    }

    [Fact]
    public async Task ASysfsReadFailingAfterTheCreateRemovesTheMdev()
    {
        var type = Type("mtty-1");
        var uuid = Guid.NewGuid();
        Kernel.FailNext(SimulatedCall.ReadLink, Errno.EIO); // reading the new device's mdev_type link
        var act = () => type.CreateAsync<MttyDevice>(uuid);
        var error = (await act.Should().ThrowAsync<VfioException>()).Which;
        error.Errno.Should().Be(Errno.EIO);
        error.Device.Should().Be(uuid.ToString(), "the error names the mdev whose sysfs could not be read");
        Mdevs().Should().BeEmpty();
        type.ReadAvailableInstances().Should().Be(24);
    }

    [Fact]
    public async Task ADriverThatThrowsLeavesNoMdev()
    {
        var registry = NewRegistry();
        registry.AddDriver(new ThrowingMttyDriver());
        var act = () => registry.FindMdevParent("mtty").Type("mtty-1").CreateAsync<MttyDevice>();
        await act.Should().ThrowAsync<InvalidOperationException>().WithMessage("driver preparation failed");
        Mdevs().Should().BeEmpty();
    }

    [Fact]
    public async Task DisposingTheRegistryRemovesOnlyTheMdevsItCreated()
    {
        var foreign = Guid.NewGuid();
        _mtty.Create(foreign, "1");
        var registry = NewRegistry();
        registry.AddDriver(new MttyDriver());
        var created = await registry.FindMdevParent("mtty").CreateAsync<MttyDevice>("mtty-2");
        Mdevs().Should().HaveCount(2);
        await registry.DisposeAsync();
        created.IsRemoved.Should().BeTrue();
        Mdevs().Should().Equal(foreign.ToString());
    }

    [Fact]
    public async Task ARemoveTheKernelRefusesIsReportedAndTheDeviceIsClosed()
    {
        var mdev = await Type("mtty-1").CreateAsync<MttyDevice>();
        // Close (no write), unregister, then the write to remove fails.
        Kernel.FailNext(SimulatedCall.Write, Errno.EBUSY);
        var act = () => mdev.RemoveAsync();
        (await act.Should().ThrowAsync<VfioBusyException>()).WithMessage("*remove mdev " + mdev.Uuid + "*");
        mdev.Device.IsOpen.Should().BeFalse();
        mdev.IsRemoved.Should().BeFalse();
        Mdevs().Should().ContainSingle();
        await mdev.RemoveAsync();
        Mdevs().Should().BeEmpty();
    }

    [Fact]
    public void CreateDeviceLeavesAnUnopenedMdevThatRemoveDeviceRemoves()
    {
        var type = Type("mtty-2");
        var uuid = Guid.Parse("8a3e2b2c-4d3a-4b6f-9c1d-1d2e3f4a5b6c");

        type.CreateDevice(uuid).Should().Be(uuid);

        Mdevs().Should().Equal(uuid.ToString());
        Registry.DiscoverMdev().Should().ContainSingle().Which.TypeId.Should().Be("mtty-2");
        Registry.Devices.Should().BeEmpty("nothing was registered or opened");
        type.ReadAvailableInstances().Should().Be(11);

        type.RemoveDevice(uuid);
        Mdevs().Should().BeEmpty();
        type.RemoveDevice(uuid); // already gone counts as removed
    }

    [Fact]
    public void CreateDeviceWithAUuidThatExistsSaysSo()
    {
        var type = Type("mtty-1");
        var uuid = type.CreateDevice();

        var again = () => type.CreateDevice(uuid);

        again.Should().Throw<VfioException>().Which.Message.Should().Contain("exists already");
        type.RemoveDevice(uuid);
    }

    [Theory]
    [InlineData("lots\n")]
    [InlineData("\0\0")]
    [InlineData("-1\n")]
    [InlineData("99999999999\n")]
    public void AvailableInstancesSysfsCannotGiveSaysWhatItRead(string text)
    {
        var type = Type("mtty-1");
        Kernel.Sysfs.Directory("devices/virtual/mtty/mtty/mdev_supported_types/mtty-1").Attribute("available_instances", () => text);

        var read = () => type.ReadAvailableInstances();

        read.Should().Throw<VfioException>().WithMessage("*mdev_bus/mtty/mdev_supported_types/mtty-1/available_instances*reads*not a count*");
    }

    [Fact]
    public async Task ACreateCancelledBeforeItStartsCreatesNothing()
    {
        var type = Type("mtty-2");

        var act = () => type.CreateAsync<MttyDevice>(cancellationToken: new CancellationToken(true));

        await act.Should().ThrowAsync<OperationCanceledException>();
        Mdevs().Should().BeEmpty();
        Registry.Devices.Should().BeEmpty();
        Registry.Groups.Should().BeEmpty();
    }

    [Fact]
    public async Task ACreateCancelledAfterTheMdevExistsRemovesIt()
    {
        using var cancel = new CancellationTokenSource();
        var registry = NewRegistry();
        registry.AddDriver(new CancellingMttyDriver(cancel));
        var type = registry.FindMdevParent("mtty").Type("mtty-2");

        var act = () => type.CreateAsync<MttyDevice>(cancellationToken: cancel.Token);

        await act.Should().ThrowAsync<OperationCanceledException>();
        Mdevs().Should().BeEmpty();
        registry.Devices.Should().BeEmpty("the device was not registered after the cancellation");
        registry.Groups.Should().BeEmpty("the device was never opened");
    }

    /// <summary>A driver whose construction of the device cancels the creation (as a caller's token would, at that moment).</summary>
    private sealed class CancellingMttyDriver(CancellationTokenSource cancel) : MdevDriver<MttyDevice>("cancelling", "mtty-2")
    {
        protected internal override MttyDevice CreateDevice(MdevDeviceContext context)
        {
            cancel.Cancel();
            return new MttyDevice(context);
        }
    }
}
