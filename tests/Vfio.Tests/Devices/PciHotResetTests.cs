using Vfio.Testing;

namespace Vfio.Tests.Devices;

/// <summary>
/// <see cref="PciVfioDevice.GetHotResetDependencies"/> and <see cref="PciVfioDevice.HotReset"/> on a
/// bus behind a bridge whose two functions are in different groups (as functions with ACS are).
/// </summary>
public abstract class PciHotResetTests : KernelTest
{
    /// <summary>The tests on the legacy backend (a kernel that behaves as Linux 6.1).</summary>
    public sealed class Legacy() : PciHotResetTests(VfioBackend.Legacy);

    /// <summary>The tests on the iommufd backend (a kernel that behaves as Linux 7.2).</summary>
    public sealed class Iommufd() : PciHotResetTests(VfioBackend.Iommufd);

    private const string First = "0000:02:00.0";
    private const string Second = "0000:02:00.1";
    private readonly ResetCountingModel _firstModel = new();
    private readonly ResetCountingModel _secondModel = new();

    protected PciHotResetTests(VfioBackend backend)
        : base(backend)
    {
        Kernel.AddPciBridge("0000:00:1c.0", secondaryBus: 2);
        AddPci(First, group: 7, model: _firstModel);
        AddPci(Second, group: 8, model: _secondModel);
    }

    private sealed class ResetCountingModel : PciDeviceModel
    {
        public ResetCountingModel()
            : base(0x1234, 0x11e8, 0x00ff00)
        {
            DefineBar(0, 0x1000);
        }

        public int Resets { get; private set; }

        /// <summary>Runs inside the reset, while the kernel resets the function.</summary>
        public Action? DuringReset { get; set; }

        protected override void OnReset()
        {
            DuringReset?.Invoke();
            base.OnReset();
            Resets++;
        }
    }

    [Fact]
    public void DependenciesListEveryFunctionOnTheBridgedBusWithItsGroup()
    {
        var device = RegisterPci(First);
        using var open = device.Open();

        var dependencies = device.GetHotResetDependencies();

        dependencies.Select(d => (d.Address, d.GroupId)).Should().Equal((PciAddress.Parse(First), 7), (PciAddress.Parse(Second), 8));
        if (Backend == VfioBackend.Legacy)
        {
            dependencies.Should().OnlyContain(d => d.IommufdDeviceId == null, "the group form carries groups, not ids");
        }
        else
        {
            dependencies[0].IommufdDeviceId.Should().BeGreaterThan(0u, "the open device is bound to the registry's iommufd")
                .And.NotBe(NotOwned);
            dependencies[1].IommufdDeviceId.Should().Be(NotOwned, "no device of group 8 is bound to the registry's iommufd");
        }
    }

    // VFIO_PCI_DEVID_NOT_OWNED as the kernel writes it into the u32.
    private const uint NotOwned = uint.MaxValue;

    [Fact]
    public void DependenciesGrowPastTheFirstBufferWhenTheKernelSaysEnospc()
    {
        string[] more = [.. Enumerable.Range(2, 9).Select(i => $"0000:02:{i / 8:x2}.{i % 8}")];
        foreach (string address in more)
        {
            AddPci(address, group: 8);
        }
        var device = RegisterPci(First);
        using var open = device.Open();

        device.GetHotResetDependencies().Select(d => d.Address.ToString()).Should().Equal([First, Second, .. more]);
    }

    [Fact]
    public void AFunctionOnTheRootBusCannotBeHotReset()
    {
        AddPci("0000:00:03.0", group: 3);
        var device = RegisterPci("0000:00:03.0");
        using var open = device.Open();

        var reset = () => device.HotReset();

        reset.Should().Throw<VfioNotSupportedException>().Where(e => e.Errno == Errno.ENODEV && e.Message.Contains("root bus", StringComparison.Ordinal));
    }

    [Fact]
    public void HotResetNamesTheFunctionAndGroupThisRegistryDoesNotOwn()
    {
        var device = RegisterPci(First);
        RegisterPci(Second);
        using var open = device.Open();

        var reset = () => device.HotReset();

        var error = reset.Should().Throw<VfioHotResetNotOwnedException>().Which;
        error.UnownedGroups.Should().Equal(8);
        error.UnownedDevices.Should().Equal(Backend == VfioBackend.Legacy
            ? "0000:02:00.1 (group 8): group 8 is not open in this registry"
            : "0000:02:00.1 (group 8): neither it nor a device of group 8 is open through this registry's iommufd");
        error.Message.Should().Contain("Open a device of group 8 through this registry");
        _firstModel.Resets.Should().Be(1, "only the first open reset it");
        if (Backend == VfioBackend.Legacy)
        {
            device.Group!.OpenDeviceCount.Should().Be(1, "the groups held for the reset are released");
        }
    }

    [Fact]
    public void HotResetResetsEveryFunctionOnceEveryGroupIsOwnedAndKeepsConfigSpace()
    {
        var device = RegisterPci(First);
        var sibling = RegisterPci(Second);
        using var open = device.Open();
        using var other = sibling.Open();
        device.EnableCommand();
        ushort command = device.ReadConfig16(PciConfig.Command);
        int firstBefore = _firstModel.Resets;
        int secondBefore = _secondModel.Resets;

        device.HotReset();

        _firstModel.Resets.Should().Be(firstBefore + 1);
        _secondModel.Resets.Should().Be(secondBefore + 1);
        device.ReadConfig16(PciConfig.Command).Should().Be(command, "the kernel restores config space after the reset");
        device.Backend.Should().Be(Backend);
        if (Backend == VfioBackend.Legacy)
        {
            device.Group!.OpenDeviceCount.Should().Be(1);
            sibling.Group!.OpenDeviceCount.Should().Be(1);
        }
        else
        {
            Registry.IommufdAddressSpace!.Devices.Should().BeEquivalentTo([device, sibling], "the reset leaves both bound and attached");
        }
    }

    [Fact]
    public void HotResetOfAnotherRegistrysGroupIsRefusedAsNotOwned()
    {
        var registry = NewRegistry();
        var device = RegisterPci(First);
        var elsewhere = RegisterPci(Second, registry);
        using var open = device.Open();
        using var theirs = elsewhere.Open();

        var reset = () => device.HotReset();

        reset.Should().Throw<VfioHotResetNotOwnedException>().Which.UnownedGroups.Should().Equal(8);
        _secondModel.Resets.Should().Be(1);
    }

    [Fact]
    public void HotResetNamesAFunctionOfAnOwnedGroupThatIsBoundToAHostDriver()
    {
        AddPci("0000:02:01.0", group: 8, driver: null);
        var device = RegisterPci(First);
        var sibling = RegisterPci(Second);
        using var open = device.Open();
        using var other = sibling.Open();

        var reset = () => device.HotReset();

        reset.Should().Throw<VfioHotResetNotOwnedException>().Which.UnownedDevices
            .Should().Equal("0000:02:01.0 (group 8): it is bound to no driver");
    }

    [Fact]
    public async Task HotResetsRacingOpensAndClosesOfTheScopeNeitherDeadlockNorFail()
    {
        AddPci("0000:02:01.0", group: 7);
        var device = RegisterPci(First);
        var sibling = RegisterPci("0000:02:01.0");
        RegisterPci(Second);
        using var open = device.Open();
        using var secondGroup = Registry.TryFind<RecordingPciDevice>(Second, out var second) ? second.Open() : throw new InvalidOperationException();
        int before = _firstModel.Resets;

        var resets = Task.Run(() =>
        {
            for (int i = 0; i < 100; i++)
            {
                device.HotReset();
            }
        });
        var opens = Task.Run(() =>
        {
            for (int i = 0; i < 100; i++)
            {
                using var reference = sibling.Open();
            }
        });
        await Task.WhenAll(resets, opens).WaitAsync(Guard);

        _firstModel.Resets.Should().Be(before + 100);
        sibling.FirstOpens.Should().Be(100);
        if (Backend == VfioBackend.Legacy)
        {
            device.Group!.OpenDeviceCount.Should().Be(1, "every group held for a reset was released");
        }
    }

    [Fact]
    public void TheSimulatedKernelRefusesAHotResetThatDoesNotProveEveryFunctionOwnedWithEinval()
    {
        var device = RegisterPci(First);
        using var open = device.Open();

        // Through the group: a file of its own group only. Through the cdev: the empty array, with no
        // device of group 8 bound to the iommufd.
        int rc = RawHotReset(device, Backend == VfioBackend.Legacy ? [(int)device.Group!.Fd.DangerousGetHandle()] : []);

        rc.Should().Be(-Errno.EINVAL);
        _secondModel.Resets.Should().Be(0);
    }

    [Fact]
    public void TheSimulatedKernelRefusesABadFileWithEbadfThroughTheGroupAndAnyFileThroughTheCdev()
    {
        var device = RegisterPci(First);
        using var open = device.Open();

        RawHotReset(device, [999]).Should().Be(Backend == VfioBackend.Legacy ? -Errno.EBADF : -Errno.EINVAL);
    }

    [Fact]
    public void TheSimulatedKernelRefusesTheEmptyArrayFromADeviceOpenedThroughItsGroupAndTakesItThroughTheCdev()
    {
        var device = RegisterPci(First);
        var sibling = RegisterPci(Second);
        using var open = device.Open();
        using var other = sibling.Open();
        int before = _secondModel.Resets;

        int rc = RawHotReset(device, []);

        rc.Should().Be(Backend == VfioBackend.Legacy ? -Errno.EINVAL : 0);
        _secondModel.Resets.Should().Be(Backend == VfioBackend.Legacy ? before : before + 1);
    }

    private static unsafe int RawHotReset(PciVfioDevice device, int[] fds)
    {
        var buffer = new byte[12 + (4 * fds.Length)];
        System.Runtime.InteropServices.MemoryMarshal.Write(buffer, new Vfio.Interop.vfio_pci_hot_reset { argsz = (uint)buffer.Length, count = (uint)fds.Length });
        fds.CopyTo(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, int>(buffer.AsSpan(12)));
        fixed (byte* p = buffer)
        {
            return device.Kernel.Ioctl(device.DeviceFd, Vfio.Interop.VfioUapi.VFIO_DEVICE_PCI_HOT_RESET, p);
        }
    }

    [Fact]
    public void TheMappedRegionsOfEveryFunctionItResetsReadAllOnesWhileItRunsAndAreMappedBackAfter()
    {
        var first = RegisterPci(First);
        var second = RegisterPci(Second);
        using var openFirst = first.Open();
        using var openSecond = second.Open();
        using var firstBar = first.OpenRegion(0);
        using var secondBar = second.OpenRegion(0);
        firstBar.Write32(0, 1);
        secondBar.Write32(0, 2);
        var during = new List<uint>();
        _firstModel.DuringReset = () =>
        {
            during.AddRange([firstBar.Read32(0), secondBar.Read32(0)]);
            _firstModel.DuringReset = null; // the close resets the function too
        };

        first.HotReset();

        during.Should().Equal([0xffffffff, 0xffffffff], "while the bus resets, neither function's memory answers");
        firstBar.IsSuspended.Should().BeFalse();
        secondBar.IsSuspended.Should().BeFalse();
        firstBar.Read32(0).Should().Be(0, "the reset cleared the register, and the mapping reaches the device again");
        secondBar.Read32(0).Should().Be(0);
    }
}
