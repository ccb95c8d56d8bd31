using Vfio.Interop;
using Vfio.Testing;

namespace Vfio.Tests.Simulation;

public sealed class FailureInjectionTests : IDisposable
{
    private readonly SimulatedKernel _kernel = new();

    public FailureInjectionTests()
    {
        _kernel.AddPciDevice("0000:00:03.0", 0x1234, 0x11e8, 0x00ff00, iommuGroup: 5);
    }

    public void Dispose() => _kernel.AssertNoLeaks();

    [Fact]
    public void TheKthCallFailsAndDoesNothingElse()
    {
        long before = _kernel.CallCount;
        _kernel.FailCall(2, Errno.EIO);
        using var container = Seam.Container(_kernel);
        Seam.TryOpen(_kernel, _kernel.Dev("vfio/5"), out _).Should().Be(-Errno.EIO);
        using var group = Seam.Group(_kernel, 5);
        _kernel.CallCount.Should().Be(before + 3);
    }

    [Fact]
    public void TheNextCallOfAKindFails()
    {
        _kernel.FailNext(SimulatedCall.EventFd, Errno.EMFILE);
        _kernel.EventFd(0, 0, out _).Should().Be(-Errno.EMFILE);
        using var e = Seam.EventFd(_kernel);
    }

    [Fact]
    public unsafe void AnIoctlCanBeFailedByRequestNumber()
    {
        using var container = Seam.Container(_kernel);
        using var group = Seam.Group(_kernel, 5);
        _kernel.FailNext(SimulatedCall.Ioctl, Errno.ENOMEM, VfioUapi.VFIO_GROUP_SET_CONTAINER);
        Seam.GroupStatus(_kernel, group, out _).Should().Be(0);
        Seam.SetContainer(_kernel, group, container).Should().Be(-Errno.ENOMEM);
        Seam.GroupStatus(_kernel, group, out uint flags).Should().Be(0);
        (flags & VfioUapi.VFIO_GROUP_FLAGS_CONTAINER_SET).Should().Be(0, "the failed call did nothing");
        Seam.SetContainer(_kernel, group, container).Should().Be(0);
    }

    [Fact]
    public void FailingEachCallOfTheOpenPathLeavesNothingOpen()
    {
        // Count the calls of a successful open path, then fail each one in turn.
        long start = _kernel.CallCount;
        Seam.OpenDevice(_kernel, 5, "0000:00:03.0").Dispose();
        long calls = _kernel.CallCount - start - 3; // the three closes
        for (long k = 1; k <= calls; k++)
        {
            _kernel.FailCall(k, Errno.EIO);
            var opened = new List<SafeFd>();
            bool failed = false;
            try
            {
                failed |= Seam.TryOpen(_kernel, _kernel.Dev("vfio/vfio"), out var container) < 0;
                if (!failed)
                {
                    opened.Add(container);
                    failed |= Seam.TryOpen(_kernel, _kernel.Dev("vfio/5"), out var group) < 0;
                    if (!failed)
                    {
                        opened.Add(group);
                        failed |= Seam.SetContainer(_kernel, group, container) < 0
                            || _kernel.Ioctl(container, VfioUapi.VFIO_SET_IOMMU, VfioUapi.VFIO_TYPE1v2_IOMMU) < 0;
                        if (!failed && Seam.GetDeviceFd(_kernel, group, "0000:00:03.0", out var device) >= 0)
                        {
                            opened.Insert(0, device);
                        }
                        else
                        {
                            failed = true;
                        }
                    }
                }
            }
            finally
            {
                _kernel.ClearFailures();
                foreach (var fd in opened)
                {
                    fd.Dispose();
                }
            }
            failed.Should().BeTrue("call {0} of the open path failed", k);
            _kernel.AssertNoLeaks();
        }
    }
}
