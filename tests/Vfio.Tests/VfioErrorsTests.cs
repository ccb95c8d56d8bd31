using Vfio.Interop;

namespace Vfio.Tests;

public class VfioErrorsTests
{
    public static TheoryData<int, Type, string> Mapping => new()
    {
        { Errno.ENOENT, typeof(VfioNotFoundException), "ENOENT" },
        { Errno.ENODEV, typeof(VfioNotFoundException), "ENODEV" },
        { Errno.EACCES, typeof(VfioAccessDeniedException), "EACCES" },
        { Errno.EPERM, typeof(VfioAccessDeniedException), "EPERM" },
        { Errno.EBUSY, typeof(VfioBusyException), "EBUSY" },
        { Errno.ENOTTY, typeof(VfioNotSupportedException), "ENOTTY" },
        { Errno.EOPNOTSUPP, typeof(VfioNotSupportedException), "EOPNOTSUPP" },
        { Errno.EINVAL, typeof(VfioException), "EINVAL" },
        { Errno.EEXIST, typeof(VfioException), "EEXIST" },
        { Errno.EFAULT, typeof(VfioException), "EFAULT" },
        { Errno.ENOSPC, typeof(VfioException), "ENOSPC" },
        { Errno.EIO, typeof(VfioException), "EIO" },
    };

    [Theory]
    [MemberData(nameof(Mapping))]
    public void EachErrnoMapsToItsExceptionType(int errno, Type expected, string name)
    {
        var e = VfioErrors.Create(errno, "VFIO_GROUP_GET_DEVICE_FD", new ErrorTarget(GroupId: 7, Device: "0000:00:03.0"));

        e.Should().BeOfType(expected);
        e.Errno.Should().Be(errno);
        e.ErrorName.Should().Be(name);
        e.Operation.Should().Be("VFIO_GROUP_GET_DEVICE_FD");
        e.GroupId.Should().Be(7);
        e.Device.Should().Be("0000:00:03.0");
        e.Message.Should().Contain("VFIO_GROUP_GET_DEVICE_FD").And.Contain("group 7").And.Contain("0000:00:03.0").And.Contain(name);
    }

    [Fact]
    public void CheckPassesNonNegativeResultsThrough()
    {
        VfioErrors.Check(0, "op").Should().Be(0);
        VfioErrors.Check(3, "op").Should().Be(3);
        VfioErrors.Check(4096L, "op").Should().Be(4096L);
    }

    [Fact]
    public void CheckThrowsForANegativeErrno()
    {
        var act = () => VfioErrors.Check(-Errno.EBUSY, "open /dev/vfio/7", ErrorTarget.Group(7));

        act.Should().Throw<VfioBusyException>().Which.GroupId.Should().Be(7);
    }

    [Fact]
    public void PermissionErrorsSayWhatToDo()
    {
        var e = VfioErrors.Create(Errno.EACCES, "open /dev/vfio/3", ErrorTarget.Group(3));

        e.Message.Should().Contain("root").And.Contain("/dev/vfio");
    }

    [Fact]
    public void ACallerHintReplacesTheDefault()
    {
        var e = VfioErrors.Create(Errno.EINVAL, "VFIO_GROUP_SET_CONTAINER", ErrorTarget.Group(3), "group 3 is not viable");

        e.Message.Should().EndWith("group 3 is not viable");
    }

    [Fact]
    public void RegionIndexIsCarried()
    {
        var e = VfioErrors.Create(Errno.EINVAL, "VFIO_DEVICE_GET_REGION_INFO", new ErrorTarget(Device: "0000:00:03.0", RegionIndex: 2));

        e.RegionIndex.Should().Be(2);
        e.Message.Should().Contain("region 2");
    }
}
