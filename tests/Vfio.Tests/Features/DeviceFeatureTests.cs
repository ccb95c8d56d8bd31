using Vfio.Interop;
using Vfio.Testing;

namespace Vfio.Tests.Features;

/// <summary>VFIO_DEVICE_FEATURE: the core's header checks and vfio_check_feature, through the library and the simulated kernel.</summary>
public abstract class DeviceFeatureTests(VfioBackend backend) : KernelTest(backend)
{
    /// <summary>The tests on the legacy backend (a kernel that behaves as Linux 6.1).</summary>
    public sealed class Legacy() : DeviceFeatureTests(VfioBackend.Legacy);

    /// <summary>The tests on the iommufd backend (a kernel that behaves as Linux 7.2).</summary>
    public sealed class Iommufd() : DeviceFeatureTests(VfioBackend.Iommufd);

    private const uint Get = VfioUapi.VFIO_DEVICE_FEATURE_GET;
    private const uint Set = VfioUapi.VFIO_DEVICE_FEATURE_SET;
    private const uint Probe = VfioUapi.VFIO_DEVICE_FEATURE_PROBE;

    private RecordingPciDevice Migratable(bool logging = false)
    {
        AddPci(model: new MigratableDeviceModel { SupportsDmaLogging = logging });
        return RegisterPci();
    }

    [Theory]
    [InlineData(Probe, 0)]
    [InlineData(Probe | Get, 0)]
    [InlineData(Probe | Set, -Errno.EINVAL)]
    [InlineData(Get | Set, -Errno.EINVAL)]
    [InlineData(Probe | Get | Set, -Errno.EINVAL)]
    [InlineData(0u, -Errno.EINVAL)]
    [InlineData(1u << 19 | Get, -Errno.EINVAL)]
    public void TheMigrationFeatureChecksItsFlagsAsTheKernelDoes(uint flags, int expected)
    {
        var device = Migratable();
        using var open = device.Open();
        var data = new byte[8];
        device.FeatureCore(VfioFeature.Migration, flags, data).Should().Be(expected);
    }

    [Fact]
    public void AGetWithTooLittleDataIsEinvalButAProbeNeedsNone()
    {
        var device = Migratable();
        using var open = device.Open();
        device.FeatureCore(VfioFeature.MigrationDeviceState, Get, new byte[4]).Should().Be(-Errno.EINVAL);
        device.FeatureCore(VfioFeature.MigrationDeviceState, Probe | Get | Set, []).Should().Be(0);
        device.ProbeFeature(VfioFeature.MigrationDeviceState, VfioFeatureAccess.Get | VfioFeatureAccess.Set).Should().BeTrue();
        device.ProbeFeature(VfioFeature.Migration, VfioFeatureAccess.Set).Should().BeFalse("MIGRATION is GET only");
    }

    [Fact]
    public void AnUnsupportedDirectionIsReportedAsNotSupportedNotAsAnErrno()
    {
        var device = Migratable();
        using var open = device.Open();
        var act = () => device.SetFeature(VfioFeature.Migration, new byte[8]);
        act.Should().Throw<VfioNotSupportedException>().WithMessage("Feature MIGRATION is not supported by this device*for SET*");
    }

    [Fact]
    public void MigDataSizeIsUnknownToLinux61()
    {
        var device = Migratable();
        using var open = device.Open();
        device.ProbeFeature(VfioFeature.MigrationDataSize).Should().BeFalse();
        var act = () => device.GetFeature(VfioFeature.MigrationDataSize, new byte[8]);
        act.Should().Throw<VfioNotSupportedException>().Which.Errno.Should().Be(Errno.ENOTTY);
    }

    [Fact]
    public void LowPowerCanBeEnteredOnceAndExitedAnyTime()
    {
        AddPci();
        var device = RegisterPci();
        using var open = device.Open();
        device.ProbeFeature(VfioFeature.LowPowerEntry, VfioFeatureAccess.Set).Should().BeTrue();
        device.ProbeFeature(VfioFeature.LowPowerEntry, VfioFeatureAccess.Get).Should().BeFalse();
        device.EnterLowPower();
        var twice = () => device.EnterLowPower();
        twice.Should().Throw<VfioException>().Which.Errno.Should().Be(Errno.EINVAL);
        device.ExitLowPower();
        device.ExitLowPower();
        using (var wakeup = device.EnterLowPowerWithWakeup())
        {
            wakeup.HasWoken.Should().BeFalse();
            device.ExitLowPower();
        }
        device.EnterLowPower();
    }

    [Fact]
    public void DmaLoggingIsNotSupportedByPlainVfioPci()
    {
        AddPci();
        var device = RegisterPci();
        using var open = device.Open();
        device.ProbeFeature(VfioFeature.DmaLoggingStart, VfioFeatureAccess.Set).Should().BeFalse();
        var act = () => device.StartDmaLogging([new DmaLogRange(0x1000, 0x1000)]);
        act.Should().Throw<VfioNotSupportedException>().WithMessage("*DMA_LOGGING_START*");
    }

    [Fact]
    public void DmaLoggingReportsThePagesTheDeviceWroteAndClearsThem()
    {
        var device = Migratable(logging: true);
        var model = (MigratableDeviceModel)Kernel.FindDevice("0000:00:03.0")!.Model;
        using var open = device.Open();
        using var buffer = device.AllocateDmaBuffer(4 * 4096);
        device.WriteConfig16(4, (ushort)(device.ReadConfig16(4) | 0x4)); // bus master
        using var log = device.StartDmaLogging([new DmaLogRange(buffer.Iova, 4 * 4096)]);
        log.PageSize.Should().Be(4096);
        var again = () => device.StartDmaLogging([new DmaLogRange(buffer.Iova, 4096)]);
        again.Should().Throw<VfioException>().Which.Errno.Should().Be(Errno.EINVAL);

        model.WriteMemory(buffer.Iova + 2 * 4096 + 10, [1, 2, 3]).Should().BeTrue();
        log.Report(buffer.Iova, 4 * 4096).Should().Equal(0b100UL);
        log.Report(buffer.Iova, 4 * 4096)[0].Should().Be(0UL, "a report clears what it read");

        var overlap = () => device.StartDmaLogging([new DmaLogRange(0x10000, 0x2000), new DmaLogRange(0x11000, 0x1000)]);
        overlap.Should().Throw<VfioException>();
    }
}
