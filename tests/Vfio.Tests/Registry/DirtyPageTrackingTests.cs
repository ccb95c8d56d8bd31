using Vfio.Interop;

namespace Vfio.Tests.Registry;

/// <summary>
/// Dirty page tracking of a container's type1 IOMMU: reads over several buffers are made one kernel
/// call per buffer, from its own start, since type1 gets a call over several mappings wrong.
/// </summary>
public sealed class DirtyPageTrackingTests() : KernelTest(VfioBackend.Legacy)
{
    private const ulong Page = 4096;
    private const ulong Base = 0x800000;

    // An open device with buffers at Base + the page offsets and lengths given, its container tracking dirty pages.
    private (DirtyPageTracking Tracking, IDisposable Resources) Tracked(params (ulong AtPage, ulong Pages)[] buffers)
    {
        AddPci();
        var device = RegisterPci();
        var resources = new List<IDisposable> { device.Open() };
        resources.AddRange(buffers.Select(b => device.AllocateDmaBuffer(b.Pages * Page, iova: Base + (b.AtPage * Page))));
        var tracking = device.Group!.Container!.StartDirtyPageTracking();
        resources.Add(tracking);
        return (tracking, new Resources(resources));
    }

    private sealed class Resources(List<IDisposable> held) : IDisposable
    {
        public void Dispose()
        {
            for (int i = held.Count - 1; i >= 0; i--)
            {
                held[i].Dispose();
            }
        }
    }

    [Fact]
    public void ARangeOverBuffersOffABitmapWordReadsOnlyTheirPagesAtEveryRead()
    {
        var (tracking, resources) = Tracked((0, 8), (16, 4));
        using var _ = resources;

        // One GET_BITMAP over both gives 0xf00ff, then 0xf00ff00ff (pages 20-23 and 32-35 of no buffer).
        for (int read = 1; read <= 3; read++)
        {
            var bits = tracking.Read(Base, 40 * Page);

            bits.Words.ToArray().Should().Equal([0xf00ffUL], $"read {read} reports pages 0-7 and 16-19 only");
            bits.DirtyPageCount.Should().Be(12);
            bits.IsDirty(Base + (20 * Page)).Should().BeFalse();
        }
    }

    [Fact]
    public void ReadAsksTheKernelOncePerBufferEachFromItsOwnStart()
    {
        var (tracking, resources) = Tracked((0, 8), (16, 4), (100, 1));
        using var _ = resources;
        long before = Kernel.CallCount;

        var bits = tracking.Read(Base, 128 * Page);

        (Kernel.CallCount - before).Should().Be(3);
        bits.DirtyPages().Should().Equal([
            .. Enumerable.Range(0, 8).Select(p => Base + ((ulong)p * Page)),
            .. Enumerable.Range(16, 4).Select(p => Base + ((ulong)p * Page)),
            Base + (100 * Page)]);
        Kernel.FailNext(Testing.SimulatedCall.Ioctl, Errno.EFAULT, VfioUapi.VFIO_IOMMU_DIRTY_PAGES);
        tracking.Invoking(t => t.Read(Base, 128 * Page)).Should().Throw<VfioException>()
            .Which.Operation.Should().Be($"VFIO_IOMMU_DIRTY_PAGES GET_BITMAP 0x{Base:x}+0x{8 * Page:x}", "the failing call is the first buffer's, over it alone");
    }

    [Fact]
    public void ARangeThatWouldCutABufferIsRefusedWithEinvalNamingItBeforeAnyKernelCall()
    {
        var (tracking, resources) = Tracked((0, 4));
        using var _ = resources;
        long before = Kernel.CallCount;

        var error = tracking.Invoking(t => t.Read(Base + Page, 8 * Page)).Should().Throw<VfioException>().Which;

        error.Errno.Should().Be(Errno.EINVAL);
        error.Message.Should().Contain("whole mappings").And.Contain($"0x{Base:x}+0x{4 * Page:x}");
        Kernel.CallCount.Should().Be(before);
    }

    [Fact]
    public void ARangeThatWouldCutItsLastBufferReadsNoneOfTheBuffersBeforeIt()
    {
        var (tracking, resources) = Tracked((0, 4), (8, 4));
        using var _ = resources;
        long before = Kernel.CallCount;

        tracking.Invoking(t => t.Read(Base, 10 * Page)).Should().Throw<VfioException>()
            .Which.Message.Should().Contain($"0x{Base + (8 * Page):x}+0x{4 * Page:x}");

        Kernel.CallCount.Should().Be(before, "a read clears what it reports: the first buffer's dirty pages must still be there");
        tracking.Read(Base, 4 * Page).DirtyPageCount.Should().Be(4);
    }

    [Fact]
    public void OnIommufdsCompatibilityContainerStartingSaysWhyAndWhatToUseInstead()
    {
        Kernel.IommufdServesContainer = true;
        AddPci();
        var device = RegisterPci();
        using var open = device.Open();
        var container = device.Group!.Container!;

        var error = container.Invoking(c => c.StartDirtyPageTracking()).Should().Throw<VfioNotSupportedException>().Which;

        error.Errno.Should().Be(Errno.ENOTTY);
        error.Operation.Should().Be("VFIO_IOMMU_DIRTY_PAGES START");
        error.Message.Should().Contain("iommufd's compatibility container").And.Contain("CONFIG_IOMMUFD_VFIO_CONTAINER")
            .And.Contain("VfioDevice.StartDmaLogging");
        // What the library says is what the kernel would answer.
        Kernel.Ioctl(container.Fd, VfioUapi.VFIO_IOMMU_DIRTY_PAGES, 0).Should().Be(-Errno.ENOTTY);
    }
}
