using Vfio.Testing;

namespace Vfio.Tests.Devices;

/// <summary>
/// <see cref="PciVfioDevice.GetHotResetDependencies"/> and <see cref="PciVfioDevice.HotReset"/> on a
/// bus behind a bridge whose two functions are in different groups (as functions with ACS are).
/// </summary>
public sealed class PciHotResetTests : KernelTest
{
    private const string First = "0000:02:00.0";
    private const string Second = "0000:02:00.1";
    private readonly ResetCountingModel _firstModel = new();
    private readonly ResetCountingModel _secondModel = new();

    public PciHotResetTests()
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

        device.GetHotResetDependencies().Should().Equal(
            new PciHotResetDependency(PciAddress.Parse(First), 7),
            new PciHotResetDependency(PciAddress.Parse(Second), 8));
    }

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
        error.UnownedDevices.Should().Equal("0000:02:00.1 (group 8): group 8 is not open in this registry");
        error.Message.Should().Contain("Open a device of group 8 through this registry");
        _firstModel.Resets.Should().Be(1, "only the first open reset it");
        device.Group!.OpenDeviceCount.Should().Be(1, "the groups held for the reset are released");
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
        device.Group!.OpenDeviceCount.Should().Be(1);
        sibling.Group!.OpenDeviceCount.Should().Be(1);
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
        device.Group!.OpenDeviceCount.Should().Be(1, "every group held for a reset was released");
    }

    [Fact]
    public void TheSimulatedKernelRefusesAHotResetMissingAGroupWithEinval()
    {
        var device = RegisterPci(First);
        using var open = device.Open();

        int rc = RawHotReset(device, [(int)device.Group!.Fd.DangerousGetHandle()]);

        rc.Should().Be(-Errno.EINVAL);
        _secondModel.Resets.Should().Be(0);
    }

    [Fact]
    public void TheSimulatedKernelRefusesABadFileWithEbadf()
    {
        var device = RegisterPci(First);
        using var open = device.Open();

        RawHotReset(device, [999]).Should().Be(-Errno.EBADF);
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
