using Vfio.Interop;

namespace Vfio.Tests;

public class IocTests
{
    [Fact]
    public void VfioGetApiVersionIsTheKernelsNumber() =>
        VfioUapi.VFIO_GET_API_VERSION.Should().Be((nuint)0x3B64);

    [Fact]
    public void IoEncodesNoDirectionAndNoSize() =>
        Ioc._IO(';', 100 + 17).Should().Be((nuint)0x3B75); // VFIO_DEVICE_FEATURE

    [Fact]
    public void IorMatchesEviocgversion() =>
        Ioc._IOR('E', 0x01, sizeof(int)).Should().Be((nuint)0x80044501); // <linux/input.h> EVIOCGVERSION

    [Fact]
    public void IowMatchesFsIocSetflags() =>
        Ioc._IOW('f', 2, sizeof(long)).Should().Be((nuint)0x40086602); // <linux/fs.h> FS_IOC_SETFLAGS, 64-bit

    [Fact]
    public void IowrMatchesDrmIoctlVersion() =>
        Ioc._IOWR('d', 0x00, 64).Should().Be((nuint)0xC0406400); // <drm/drm.h> DRM_IOCTL_VERSION, 64-bit struct drm_version
}
