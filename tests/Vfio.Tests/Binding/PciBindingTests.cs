using Vfio.Interop;
using Vfio.Testing;
using Vfio.Tests.Simulation;

namespace Vfio.Tests.Binding;

/// <summary>Binding PCI functions to vfio-pci and giving them back, on the simulated kernel.</summary>
public sealed class PciBindingTests : KernelTest
{
    private const string Nvme = "0000:00:06.0";

    private static readonly PciAddress NvmeAddress = PciAddress.Parse(Nvme);

    private SimulatedPciDevice AddNvme(string address = Nvme, int group = 7, string? driver = "nvme") =>
        Kernel.AddPciDevice(address, new PciDeviceModel(0x1b36, 0x0010, 0x010802), group, driver);

    private bool NodeExists(string relative) => Kernel.Stat(Kernel.Dev(relative), out _) == 0;

    /// <summary>Each function's driver and driver_override: what a bind must leave as it found when it fails.</summary>
    private static (string? Driver, string? Override)[] State(params SimulatedPciDevice[] devices) =>
        [.. devices.Select(d => (d.Driver, d.DriverOverride))];

    [Fact]
    public async Task BindingMovesAFunctionFromItsHostDriverToVfioPciAndRestoringGivesItBack()
    {
        var nvme = AddNvme();

        var binding = await PciBinding.BindAsync(Kernel, [NvmeAddress]);

        nvme.Driver.Should().Be("vfio-pci");
        nvme.DriverOverride.Should().Be("vfio-pci");
        binding.Functions.Should().Equal(new PciBoundFunction(NvmeAddress, 7, "nvme", null));
        binding.Nodes.Should().Equal(Kernel.Dev("vfio/7"), Kernel.Dev("vfio/devices/vfio0"));
        NodeExists("vfio/7").Should().BeTrue();

        var after = await binding.RestoreAsync();

        after.Should().ContainSingle().Which.Driver.Should().Be("nvme");
        nvme.Driver.Should().Be("nvme");
        nvme.DriverOverride.Should().BeNull();
        NodeExists("vfio/7").Should().BeFalse("the group node goes with its last vfio device");
    }

    [Fact]
    public async Task DisposingTheBindingRestoresTheOriginalDriverUnlessItIsKept()
    {
        var nvme = AddNvme();
        var other = AddNvme("0000:00:07.0", 8);

        await using (await PciBinding.BindAsync(Kernel, [NvmeAddress]))
        {
            nvme.Driver.Should().Be("vfio-pci");
        }
        nvme.Driver.Should().Be("nvme");

        await using (var kept = await PciBinding.BindAsync(Kernel, [PciAddress.Parse("0000:00:07.0")]))
        {
            kept.Keep();
        }
        other.Driver.Should().Be("vfio-pci");
    }

    [Fact]
    public async Task AFunctionAlreadyOnVfioIsLeftAsItIsAndNeverRestored()
    {
        var edu = AddPci("0000:00:03.0", 5);

        var binding = await PciBinding.BindAsync(Kernel, [PciAddress.Parse("0000:00:03.0")]);
        await binding.RestoreAsync();

        binding.Functions.Should().ContainSingle().Which.Changed.Should().BeFalse();
        edu.Driver.Should().Be("vfio-pci");
    }

    [Fact]
    public async Task AGroupWhoseOtherMemberIsOnAHostDriverIsRefusedNamingItAndNothingChanges()
    {
        var edu = AddPci("0000:00:04.0", 4, driver: null);
        var nvme = AddNvme("0000:00:04.1", 4);
        var before = State(edu, nvme);

        var bind = () => PciBinding.BindAsync(Kernel, [PciAddress.Parse("0000:00:04.0")]);

        var refused = (await bind.Should().ThrowAsync<VfioGroupNotViableException>()).Which;
        refused.Message.Should().Contain("0000:00:04.1 is bound to nvme").And.Contain("--group");
        refused.NotViableGroupId.Should().Be(4);
        refused.BlockingDevices.Should().Equal("0000:00:04.1 is bound to nvme");
        State(edu, nvme).Should().Equal(before);
    }

    [Fact]
    public async Task BindingTheWholeGroupMovesEveryMemberAndRestoringGivesEachItsOwnDriverBack()
    {
        var edu = AddPci("0000:00:04.0", 4, driver: null);
        var nvme = AddNvme("0000:00:04.1", 4);

        var binding = await PciBinding.BindAsync(Kernel, [PciAddress.Parse("0000:00:04.0")], new PciBindOptions { WholeGroup = true });

        binding.Functions.Select(f => (f.Address.ToString(), f.OriginalDriver)).Should().Equal(("0000:00:04.0", null), ("0000:00:04.1", "nvme"));
        edu.Driver.Should().Be("vfio-pci");
        nvme.Driver.Should().Be("vfio-pci");
        IommuGroupInfo.Read(Kernel, 4).IsViable.Should().BeTrue();

        await binding.RestoreAsync();

        nvme.Driver.Should().Be("nvme");
        edu.Driver.Should().BeNull("it had no driver, and the probe finds none for it");
        (edu.DriverOverride, nvme.DriverOverride).Should().Be((null, null));
    }

    [Fact]
    public async Task TheWholeGroupLeavesABridgeOnThePortDriverWhichDoesNotBlockIt()
    {
        var port = Kernel.AddPciDevice("0000:00:1c.0", new PciDeviceModel(0x8086, 0x7ab8, 0x060400), 9, "pcieport");
        var nvme = AddNvme("0000:01:00.0", 9);

        await using var binding = await PciBinding.BindAsync(Kernel, [PciAddress.Parse("0000:01:00.0")], new PciBindOptions { WholeGroup = true });

        binding.Functions.Select(f => f.Address.ToString()).Should().Equal("0000:01:00.0");
        port.Driver.Should().Be("pcieport");
        nvme.Driver.Should().Be("vfio-pci");
        IommuGroupInfo.Read(Kernel, 9).IsViable.Should().BeTrue();
    }

    [Fact]
    public async Task ABridgeIsRefused()
    {
        Kernel.AddPciDevice("0000:00:1c.0", new PciDeviceModel(0x8086, 0x7ab8, 0x060400), 9, "pcieport");

        var bind = () => PciBinding.BindAsync(Kernel, [PciAddress.Parse("0000:00:1c.0")]);

        (await bind.Should().ThrowAsync<VfioNotSupportedException>()).Which.Message.Should().Contain("0000:00:1c.0").And.Contain("bridge");
        Kernel.FindDevice("0000:00:1c.0")!.Driver.Should().Be("pcieport");
    }

    [Fact]
    public async Task AGroupWithABridgeOnAHostDriverCannotBecomeViableAndIsRefused()
    {
        Kernel.AddPciDevice("0000:00:1e.0", new PciDeviceModel(0x8086, 0x244e, 0x060401), 10, "shpchp");
        var nvme = AddNvme("0000:02:00.0", 10);

        var bind = () => PciBinding.BindAsync(Kernel, [PciAddress.Parse("0000:02:00.0")], new PciBindOptions { WholeGroup = true });

        (await bind.Should().ThrowAsync<VfioGroupNotViableException>()).Which.Message.Should().Contain("the bridge 0000:00:1e.0 is bound to shpchp");
        nvme.Driver.Should().Be("nvme");
    }

    [Fact]
    public async Task AFunctionWhoseDriverHasNoUnbindFileIsRefusedAsOneTheKernelWillNotRelease()
    {
        var ahci = Kernel.AddPciDevice("0000:00:1f.2", new PciDeviceModel(0x8086, 0x2922, 0x010601), 11, "ahci");
        Kernel.SuppressBindAttributes("ahci");

        var bind = () => PciBinding.BindAsync(Kernel, [PciAddress.Parse("0000:00:1f.2")]);

        (await bind.Should().ThrowAsync<VfioBusyException>()).Which.Message.Should().Contain("will not release").And.Contain("ahci");
        (ahci.Driver, ahci.DriverOverride).Should().Be(("ahci", null));
    }

    [Fact]
    public async Task WithoutVfioPciLoadedTheBindIsRefusedSayingWhatToLoad()
    {
        var nvme = AddNvme();
        Kernel.VfioPciLoaded = false;

        var bind = () => PciBinding.BindAsync(Kernel, [NvmeAddress]);

        (await bind.Should().ThrowAsync<VfioNotFoundException>()).Which.Message.Should().Contain("modprobe vfio-pci");
        nvme.Driver.Should().Be("nvme");
    }

    [Fact]
    public async Task AnAddressSysfsDoesNotHaveIsNamed()
    {
        var bind = () => PciBinding.BindAsync(Kernel, [PciAddress.Parse("0000:00:09.0")]);

        (await bind.Should().ThrowAsync<VfioNotFoundException>()).Which.Message.Should().Contain("0000:00:09.0");
    }

    [Fact]
    public async Task WhenVfioPciRefusesTheFunctionTheBindIsUndoneAndTheHostDriverHasItAgain()
    {
        // vfio-pci refuses a device without an IOMMU group while the no-IOMMU mode is off.
        var nvme = Kernel.AddPciDevice(Nvme, new PciDeviceModel(0x1b36, 0x0010, 0x010802), 7, SimulatedGroupKind.NoIommu, "nvme");

        var bind = () => PciBinding.BindAsync(Kernel, [NvmeAddress]);

        (await bind.Should().ThrowAsync<VfioException>()).Which.Message.Should().Contain("vfio-pci did not take 0000:00:06.0");
        (nvme.Driver, nvme.DriverOverride).Should().Be(("nvme", null));
    }

    [Fact]
    public async Task AFailureAtAnyCallOfABindLeavesEveryFunctionAsItWas()
    {
        for (int call = 1; ; call++)
        {
            var kernel = new SimulatedKernel();
            var edu = kernel.AddPciDevice("0000:00:04.0", new PciDeviceModel(0x1234, 0x11e8, 0x00ff00), 4, driver: null);
            var nvme = kernel.AddPciDevice("0000:00:04.1", new PciDeviceModel(0x1b36, 0x0010, 0x010802), 4, "nvme");
            var before = (edu.Driver, edu.DriverOverride, nvme.Driver, nvme.DriverOverride);
            long start = kernel.CallCount;
            kernel.FailCall(call, Errno.EIO);

            PciBinding? binding = null;
            try
            {
                binding = await PciBinding.BindAsync(kernel, [PciAddress.Parse("0000:00:04.0")], new PciBindOptions { WholeGroup = true });
            }
            catch (VfioException)
            {
                kernel.ClearFailures();
                (edu.Driver, edu.DriverOverride, nvme.Driver, nvme.DriverOverride).Should().Be(before, "a bind failing at call {0} undoes what it did", call);
                kernel.AssertNoLeaks();
                continue;
            }
            kernel.ClearFailures();
            await binding.RestoreAsync();
            (edu.Driver, edu.DriverOverride, nvme.Driver, nvme.DriverOverride).Should().Be(before);
            kernel.AssertNoLeaks();
            if (kernel.CallCount - start < call)
            {
                call.Should().BeGreaterThan(10, "a bind of two functions takes many calls, each of which was failed once");
                break; // the failure was never reached: every call of the bind has been failed once
            }
        }
    }

    [Fact]
    public async Task TheNodeIsGivenToTheRequestedOwner()
    {
        AddNvme();

        await using var binding = await PciBinding.BindAsync(Kernel, [NvmeAddress], new PciBindOptions { NodeUserId = 1000, NodeGroupId = 100 });

        Kernel.Stat(Kernel.Dev("vfio/7"), out var status).Should().Be(0);
        (status.UserId, status.GroupId, status.Permissions).Should().Be((1000u, 100u, 0x180u));
    }

    [Fact]
    public async Task OnlyRootMayGiveTheNodeAwayAndTheBindIsThenUndone()
    {
        var nvme = AddNvme();
        Kernel.ProcessUserId = 1000;

        var bind = () => PciBinding.BindAsync(Kernel, [NvmeAddress], new PciBindOptions { NodeUserId = 1000 });

        (await bind.Should().ThrowAsync<VfioAccessDeniedException>()).Which.Message.Should().Contain("chown " + Kernel.Dev("vfio/7"));
        nvme.Driver.Should().Be("nvme");
    }

    [Fact]
    public async Task TheDeviceCdevIsAmongTheNodesAndGetsTheOwnerToo()
    {
        AddNvme();

        await using var binding = await PciBinding.BindAsync(Kernel, [NvmeAddress], new PciBindOptions { NodeUserId = 1000 });

        binding.Nodes.Should().Equal(Kernel.Dev("vfio/7"), Kernel.Dev("vfio/devices/vfio0"));
        Kernel.Stat(Kernel.Dev("vfio/devices/vfio0"), out var status).Should().Be(0);
        status.UserId.Should().Be(1000);
    }

    [Fact]
    public async Task WithoutDeviceCdevsTheGroupNodeIsTheOnlyNode()
    {
        AddNvme();
        Kernel.DeviceCdevEnabled = false;

        await using var binding = await PciBinding.BindAsync(Kernel, [NvmeAddress]);

        binding.Nodes.Should().Equal(Kernel.Dev("vfio/7"));
    }

    [Fact]
    public async Task ANodeThatNeverAppearsIsWaitedForBoundedWithProgressThenEverythingIsUndone()
    {
        var nvme = AddNvme();
        for (int i = 0; i < 10_000; i++)
        {
            Kernel.FailNext(SimulatedCall.Stat, Errno.ENOENT); // as if devtmpfs never made the node
        }
        var waits = new List<PciBindingWait>();

        var bind = () => PciBinding.BindAsync(Kernel, [NvmeAddress],
            new PciBindOptions { NodeTimeout = TimeSpan.FromMilliseconds(300), ProgressInterval = TimeSpan.FromMilliseconds(50) },
            new SynchronousProgress<PciBindingWait>(waits.Add));

        (await bind.Should().ThrowAsync<VfioNotFoundException>()).Which.Message.Should().Contain(Kernel.Dev("vfio/7") + " did not appear");
        Kernel.ClearFailures();
        waits.Should().NotBeEmpty().And.OnlyContain(w => w.What == Kernel.Dev("vfio/7") + " to appear" && w.Limit == TimeSpan.FromMilliseconds(300));
        (nvme.Driver, nvme.DriverOverride).Should().Be(("nvme", null));
    }

    [Fact]
    public async Task CancellingTheWaitForTheNodeUndoesTheBind()
    {
        var nvme = AddNvme();
        for (int i = 0; i < 10_000; i++)
        {
            Kernel.FailNext(SimulatedCall.Stat, Errno.ENOENT);
        }
        using var cancel = new CancellationTokenSource();

        var bind = () => PciBinding.BindAsync(Kernel, [NvmeAddress], new PciBindOptions { ProgressInterval = TimeSpan.FromMilliseconds(20) },
            new SynchronousProgress<PciBindingWait>(_ => cancel.Cancel()), cancel.Token);

        await bind.Should().ThrowAsync<OperationCanceledException>();
        Kernel.ClearFailures();
        (nvme.Driver, nvme.DriverOverride).Should().Be(("nvme", null));
    }

    [Fact]
    public async Task UnbindLeavesTheFunctionWithoutADriverAndClearsTheOverride()
    {
        var nvme = AddNvme();
        (await PciBinding.BindAsync(Kernel, [NvmeAddress])).Keep();

        var after = await PciBinding.UnbindAsync(Kernel, [NvmeAddress]);

        after.Should().ContainSingle().Which.Driver.Should().BeNull();
        (nvme.Driver, nvme.DriverOverride).Should().Be((null, null));
    }

    [Fact]
    public async Task RestoringWithoutARecordClearsTheOverrideAndLetsTheKernelProbeTheHostDriver()
    {
        var nvme = AddNvme();
        (await PciBinding.BindAsync(Kernel, [NvmeAddress])).Keep();

        var after = await PciBinding.RestoreAsync(Kernel, [new PciBoundFunction(NvmeAddress, 7, null, null)]);

        after.Single().Driver.Should().Be("nvme");
    }

    [Fact]
    public async Task RestoringAFunctionWhoseGroupIsOpenIsRefusedAndItStaysOnVfio()
    {
        var nvme = AddNvme();
        var binding = await PciBinding.BindAsync(Kernel, [NvmeAddress]);
        var device = RegisterPci(Nvme);
        using var open = device.Open();

        var restore = () => binding.RestoreAsync();

        (await restore.Should().ThrowAsync<VfioBusyException>()).Which.Message.Should().Contain("0000:00:06.0 is in use").And.Contain("--wait");
        nvme.Driver.Should().Be("vfio-pci");
    }

    [Fact]
    public async Task WithWaitForReleaseTheKernelAsksTheHolderForTheDeviceAndTheRestoreCompletesWhenItLetsGo()
    {
        var nvme = AddNvme();
        Kernel.ReleaseRequestInterval = TimeSpan.FromMilliseconds(100);
        var binding = await PciBinding.BindAsync(Kernel, [NvmeAddress],
            new PciBindOptions { WaitForRelease = true, ProgressInterval = TimeSpan.FromMilliseconds(10) });
        var device = RegisterPci(Nvme);
        var open = device.Open();
        // The driver lets go at the kernel's second request, so the unbind waits one interval at least;
        // it closes the device off the notifier's own thread, as a driver's release hook should.
        device.WhenReleaseRequested = count =>
        {
            if (count >= 1)
            {
                _ = Task.Run(open.Dispose);
            }
        };
        var waits = new List<PciBindingWait>();

        await binding.RestoreAsync(new SynchronousProgress<PciBindingWait>(waits.Add)).WaitAsync(Guard);

        nvme.Driver.Should().Be("nvme");
        Kernel.ReleaseRequests.Should().BeGreaterThanOrEqualTo(2);
        waits.Should().Contain(w => w.What.StartsWith("the process holding 0000:00:06.0 to release it", StringComparison.Ordinal) && w.Limit == null,
            "the unbind blocked in the kernel until the driver let go");
    }

    [Fact]
    public async Task TheHostDriverCannotTakeTheFunctionBackWhileAProcessKeepsItsGroupAttachedToAContainer()
    {
        var nvme = AddNvme();
        var binding = await PciBinding.BindAsync(Kernel, [NvmeAddress],
            new PciBindOptions { WaitForRelease = true, NodeTimeout = TimeSpan.FromMilliseconds(200), ProgressInterval = TimeSpan.FromMilliseconds(20) });
        // A process that attached the group to a container and never opened the device.
        using var container = Seam.Container(Kernel);
        using var group = Seam.Group(Kernel, 7);
        Seam.SetContainer(Kernel, group, container).Should().Be(0);
        Kernel.Ioctl(container, VfioUapi.VFIO_SET_IOMMU, VfioUapi.VFIO_TYPE1v2_IOMMU).Should().Be(0);
        var waits = new List<PciBindingWait>();

        var restore = () => binding.RestoreAsync(new SynchronousProgress<PciBindingWait>(waits.Add));

        (await restore.Should().ThrowAsync<VfioBusyException>()).Which.Message.Should().Contain("nvme cannot take 0000:00:06.0 back").And.Contain("group 7");
        waits.Should().Contain(w => w.What == "IOMMU group 7 to be released so that nvme can take 0000:00:06.0 back");
        nvme.Driver.Should().BeNull("vfio-pci let go of it, and nvme may not take it while user space owns the group's DMA");
    }

    /// <summary>Reports on the caller's thread, in order (Progress&lt;T&gt; posts to the thread pool).</summary>
    private sealed class SynchronousProgress<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }
}
