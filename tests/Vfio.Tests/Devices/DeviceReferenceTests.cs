namespace Vfio.Tests.Devices;

/// <summary>References on a device: copies share one reference, and releasing it twice is caught.</summary>
public class DeviceReferenceTests : KernelTest
{
    [Fact]
    public void ReleasingACopyOfAReleasedOpenReferenceStealsNothingAndIsLogged()
    {
        AddPci();
        var device = RegisterPci();
        var a = device.Open();
        var b = device.Open();
        var copy = a;

        a.Dispose();
        copy.Dispose();

        device.IsOpen.Should().BeTrue("b still holds the device open");
        device.ReferenceCount.Should().Be(2, "the registration and b");
        Logs.Named("DeviceReferenceReleasedTwice").Should().ContainSingle()
            .Which.Message.Should().Contain(device.Name);
        b.Dispose();
        device.IsOpen.Should().BeFalse();
        device.ReferenceCount.Should().Be(1);
    }

    [Fact]
    public void ReleasingACopyOfAReleasedReferenceStealsNothing()
    {
        AddPci();
        var device = RegisterPci();
        device.TryGet(out var a).Should().BeTrue();
        device.TryGet(out var b).Should().BeTrue();
        var copy = a;

        a.Dispose();
        copy.Dispose();

        device.ReferenceCount.Should().Be(2, "the registration and b");
        copy.IsHeld.Should().BeFalse("a copy sees that the reference it shares was released");
        b.IsHeld.Should().BeTrue();
        Logs.Named("DeviceReferenceReleasedTwice").Should().ContainSingle();
        b.Dispose();
        device.ReferenceCount.Should().Be(1);
    }

    [Fact]
    public void DisposingTheSameVariableTwiceIsQuiet()
    {
        AddPci();
        var device = RegisterPci();
        var open = device.Open();

        open.Dispose();
        open.Dispose();

        device.IsOpen.Should().BeFalse();
        device.ReferenceCount.Should().Be(1);
        Logs.Named("DeviceReferenceReleasedTwice").Should().BeEmpty("a using block around an explicit Dispose is ordinary");
    }

    [Fact]
    public void CopiesOfOneReferenceAreEqualAndTwoReferencesAreNot()
    {
        AddPci();
        var device = RegisterPci();
        device.TryGet(out var a).Should().BeTrue();
        device.TryGet(out var b).Should().BeTrue();
        var copy = a;

        (copy == a).Should().BeTrue();
        (a == b).Should().BeFalse("each get is its own reference");
        default(DeviceReference).Should().Be(default(DeviceReference));
        a.Dispose();
        b.Dispose();
    }

    [Fact]
    public void CopiesReleasedTwiceOnManyThreadsReleaseEachReferenceExactlyOnce()
    {
        AddPci();
        var device = RegisterPci();
        using var race = new Race(seed: 1010, Guard, 200, 200);

        for (int round = 0; round < 300; round++)
        {
            device.TryGet(out var reference).Should().BeTrue();
            var copy = reference;
            race.Round(reference.Dispose, copy.Dispose);
            device.ReferenceCount.Should().Be(1, $"round {round} released its one reference once");
        }
        Logs.Named("DeviceReferenceReleasedTwice").Should().HaveCount(300);
    }
}
