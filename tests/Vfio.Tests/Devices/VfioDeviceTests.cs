using Vfio.Interop;
using Vfio.Testing;

namespace Vfio.Tests.Devices;

/// <summary>Open and close of a registered device against the simulated kernel, and what lives on an open device.</summary>
public class VfioDeviceTests : KernelTest
{
    /// <summary>BAR0: register 0 is an id, register 8 raises MSI vector (value) when written; one MSI vector.</summary>
    private sealed class RegisterModel : PciDeviceModel
    {
        public RegisterModel()
            : base(0x1234, 0x11e8, 0x00ff00)
        {
            DefineBar(0, 0x1000);
            MsiVectors = 1;
        }

        protected override ulong ReadBar(int bar, ulong offset, int size) =>
            bar == 0 && offset == 0 ? 0x010000edu : base.ReadBar(bar, offset, size);

        protected override void WriteBar(int bar, ulong offset, int size, ulong value)
        {
            if (bar == 0 && offset == 8)
            {
                SignalInterrupt((int)value);
                return;
            }
            base.WriteBar(bar, offset, size, value);
        }
    }

    private (SimulatedPciDevice Sim, RecordingPciDevice Device) RegisteredWithModel()
    {
        var sim = AddPci(model: new RegisterModel());
        return (sim, RegisterPci());
    }

    [Fact]
    public void OpenOpensTheGroupTheContainerAndTheDeviceFile()
    {
        AddPci();
        var device = RegisterPci();

        using (var reference = device.Open())
        {
            reference.HoldsOpen.Should().BeTrue();
            device.IsOpen.Should().BeTrue();
            device.FirstOpens.Should().Be(1);
            device.Group.Should().NotBeNull();
            device.Group!.Container.Should().NotBeNull();
            device.Group.Container!.IommuTypeName.Should().Be("type1v2");
            device.Info.Should().NotBeNull();
            Kernel.OpenFileCount(SimulatedFileKind.Container).Should().Be(1);
            Kernel.OpenFileCount(SimulatedFileKind.Group).Should().Be(1);
            Kernel.OpenFileCount(SimulatedFileKind.Device).Should().Be(1);
            Kernel.FindDevice("0000:00:03.0")!.IsOpen.Should().BeTrue();
        }

        device.LastCloses.Should().Be(1);
        device.IsOpen.Should().BeFalse();
        device.Group.Should().BeNull();
        Kernel.OpenFileCountTotal.Should().Be(0);
        Registry.Groups.Should().BeEmpty();
        Registry.Containers.Should().BeEmpty();
    }

    [Fact]
    public void EveryOpenReferenceKeepsTheDeviceOpenUntilTheLastIsDisposed()
    {
        AddPci();
        var device = RegisterPci();

        var first = device.Open();
        var second = device.Open();
        device.ReferenceCount.Should().Be(3, "the registration and two opens");
        first.Dispose();

        device.IsOpen.Should().BeTrue();
        device.LastCloses.Should().Be(0);
        Kernel.OpenFileCount(SimulatedFileKind.Device).Should().Be(1);

        second.Dispose();
        device.FirstOpens.Should().Be(1, "the second open found the device open");
        device.LastCloses.Should().Be(1);
        device.ReferenceCount.Should().Be(1);
        Kernel.OpenFileCountTotal.Should().Be(0);
    }

    [Fact]
    public void FailingEachKernelCallOfTheOpenPathLeavesNothingBehind()
    {
        AddPci();
        var device = RegisterPci();
        long before = Kernel.CallCount;
        device.Open().Dispose();
        Kernel.AssertNoLeaks();
        long openAndClose = Kernel.CallCount - before;
        before = Kernel.CallCount;
        var probe = device.Open();
        long calls = Kernel.CallCount - before;
        probe.Dispose();
        calls.Should().BeGreaterThan(5, "the open path opens a group and a container, sets the IOMMU and gets the device file");
        calls.Should().BeLessThan(openAndClose);

        var operations = new List<string>();
        for (long k = 1; k <= calls; k++)
        {
            Kernel.FailCall(k, Errno.EIO);

            var error = device.Invoking(d => d.Open()).Should().Throw<VfioException>($"call {k} of the open path fails").Which;

            operations.Add(error.Operation);
            error.Errno.Should().Be(Errno.EIO);
            Kernel.AssertNoLeaks();
            Registry.Groups.Should().BeEmpty();
            Registry.Containers.Should().BeEmpty();
            device.IsOpen.Should().BeFalse();
            device.ReferenceCount.Should().Be(1, "the failed open released its reference");
            device.FirstOpens.Should().Be(2, "the hook never ran for a failed open");
        }

        using (device.Open())
        {
            device.IsOpen.Should().BeTrue();
        }
        device.FirstOpens.Should().Be(3);
        operations.Should().ContainInOrder("VFIO_GROUP_GET_STATUS", "VFIO_GROUP_SET_CONTAINER", "VFIO_SET_IOMMU", "VFIO_GROUP_GET_DEVICE_FD");
    }

    [Fact]
    public void AFirstOpenHookThatThrowsFailsTheOpenAndLeavesNothing()
    {
        AddPci();
        var device = RegisterPci();
        device.FailFirstOpen = new InvalidOperationException("the device did not come up");

        device.Invoking(d => d.Open()).Should().Throw<InvalidOperationException>().WithMessage("the device did not come up");

        device.IsOpen.Should().BeFalse();
        device.ReferenceCount.Should().Be(1);
        device.Set.OpenCount.Should().Be(0);
        Kernel.OpenFileCountTotal.Should().Be(0);
        Registry.Groups.Should().BeEmpty();

        device.FailFirstOpen = null;
        using (device.Open())
        {
            device.FirstOpens.Should().Be(1);
        }
    }

    [Fact]
    public async Task UnregisterWaitsForAnOpenReferenceAndTheLastDisposeClosesEverything()
    {
        AddPci();
        var device = RegisterPci();
        var open = device.Open();
        var asked = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        device.WhenReleaseRequested = _ => asked.TrySetResult();

        var unregister = Registry.UnregisterAsync(device);
        await asked.Task.WaitAsync(Guard);

        unregister.IsCompleted.Should().BeFalse();
        device.IsOpen.Should().BeTrue();
        Kernel.OpenFileCount(SimulatedFileKind.Device).Should().Be(1);

        open.Dispose();
        await unregister.WaitAsync(Guard);

        device.LastCloses.Should().Be(1);
        device.State.Should().Be(VfioDeviceState.Unregistered);
        Kernel.OpenFileCountTotal.Should().Be(0);
    }

    [Fact]
    public void ARegionIsReadAndWrittenThroughItsTrappedMapping()
    {
        var (sim, device) = RegisteredWithModel();
        using var open = device.Open();

        using var bar0 = device.OpenRegion(0);
        bar0.IsMapped.Should().BeTrue();
        bar0.Read32(0).Should().Be(0x010000edu);
        bar0.Write32(0x10, 0xdeadbeef);

        bar0.Read32(0x10).Should().Be(0xdeadbeef);
        ((RegisterModel)sim.Model).ReadConfigRegister(0, 2).Should().Be(0x1234, "config space is the model's");
        device.ReadConfig16(PciConfig.VendorId).Should().Be(0x1234);
    }

    [Fact]
    public async Task AnInterruptRaisedByTheModelCompletesTheWait()
    {
        var (sim, device) = RegisteredWithModel();
        using var open = device.Open();
        using var interrupts = device.EnableInterrupts(PciIrq.Msi);

        var wait = interrupts.WaitAsync(0).AsTask();
        wait.IsCompleted.Should().BeFalse("nothing was raised yet");
        sim.Model.RaiseInterrupt(PciIrq.Msi, 0).Should().BeTrue("the driver registered an eventfd");

        (await wait.WaitAsync(Guard)).Should().BeGreaterThan(0);

        using var bar0 = device.OpenRegion(0);
        var second = interrupts.WaitAsync(0).AsTask();
        bar0.Write32(8, 0);
        (await second.WaitAsync(Guard)).Should().BeGreaterThan(0, "the register write made the model signal");
    }

    [Fact]
    public void ADmaBufferIsMappedBelowTheDevicesDmaMask()
    {
        AddPci();
        var device = Track(new NarrowDmaDevice(Registry.FindPci(PciAddress.Parse("0000:00:03.0"))));
        Registry.Register(device);
        using var open = device.Open();

        using var buffer = device.AllocateDmaBuffer(0x3000);

        buffer.IsMapped.Should().BeTrue();
        (buffer.Iova + buffer.Length - 1).Should().BeLessThanOrEqualTo(NarrowDmaDevice.Mask);
        Kernel.DmaMappingCount.Should().Be(1);
        device.Group!.Container!.TranslateToIova(buffer.HostAddress).Should().Be(buffer.Iova);
    }

    [Fact]
    public void AnOverlappingFixedIovaIsRefused()
    {
        AddPci();
        var device = RegisterPci();
        using var open = device.Open();
        using var first = device.AllocateDmaBuffer(0x2000, iova: 0x100000);

        device.Invoking(d => d.AllocateDmaBuffer(0x1000, iova: 0x101000)).Should().Throw<VfioException>().WithMessage("*overlaps*");

        Kernel.DmaMappingCount.Should().Be(1);
        device.ReferenceCount.Should().Be(3, "registration, open and the first buffer; the refused one released its reference");
        using var beside = device.AllocateDmaBuffer(0x1000, iova: 0x102000);
        beside.Iova.Should().Be(0x102000);
    }

    [Fact]
    public void ClosingTheDeviceRevokesItsBuffersRegionsAndInterrupts()
    {
        var (_, device) = RegisteredWithModel();
        var open = device.Open();
        var region = device.OpenRegion(0);
        var buffer = device.AllocateDmaBuffer(0x1000);
        var interrupts = device.EnableInterrupts(PciIrq.Msi);
        Kernel.MappingCount.Should().BeGreaterThan(0);
        Kernel.EventFdCount.Should().BeGreaterThan(0);

        open.Dispose();

        region.IsLive.Should().BeFalse();
        buffer.IsMapped.Should().BeFalse();
        region.Invoking(r => r.Read32(0)).Should().Throw<ObjectDisposedException>();
        device.ReferenceCount.Should().Be(1, "revoked resources released their references");
        Kernel.DmaMappingCount.Should().Be(0);
        Kernel.MappingCount.Should().Be(1, "the region is unmapped; the buffer's memory stays readable until it is disposed");
        Kernel.EventFdCount.Should().Be(0);
        region.Dispose();
        buffer.Dispose();
        interrupts.Dispose();
        Kernel.MappingCount.Should().Be(0);
    }

    [Fact]
    public async Task UnregisterWaitsForARegionsReferenceAndAsksForItsRelease()
    {
        var (_, device) = RegisteredWithModel();
        var open = device.Open();
        var region = device.OpenRegion(0);
        open.Dispose();
        device.IsOpen.Should().BeFalse();
        region.IsLive.Should().BeFalse("closing revoked it");

        open = device.Open();
        region = device.OpenRegion(0);
        var asked = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        device.WhenReleaseRequested = count => asked.TrySetResult(count);

        var unregister = Registry.UnregisterAsync(device);
        (await asked.Task.WaitAsync(Guard)).Should().Be(0);
        region.Dispose();
        unregister.IsCompleted.Should().BeFalse("the open reference is still held");
        device.ReferenceCount.Should().Be(1);

        open.Dispose();
        await unregister.WaitAsync(Guard);
        device.State.Should().Be(VfioDeviceState.Unregistered);
    }
}
