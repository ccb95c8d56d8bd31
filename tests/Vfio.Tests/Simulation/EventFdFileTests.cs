using System.Buffers.Binary;
using Vfio.Interop;
using Vfio.Testing;
using static Vfio.Interop.Interop;

namespace Vfio.Tests.Simulation;

public sealed class EventFdFileTests : IDisposable
{
    private readonly SimulatedKernel _kernel = new();

    public void Dispose() => _kernel.AssertNoLeaks();

    private static byte[] Value(ulong v)
    {
        var bytes = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, v);
        return bytes;
    }

    [Fact]
    public void WritesAddAndAReadTakesTheWholeCount()
    {
        using var e = Seam.EventFd(_kernel, Flags.EFD_NONBLOCK);
        _kernel.Write(e, Value(2)).Should().Be(8);
        _kernel.Write(e, Value(3)).Should().Be(8);
        Seam.ReadCounter(_kernel, e).Should().Be(5);
        Seam.ReadCounter(_kernel, e).Should().Be(unchecked((ulong)-Errno.EAGAIN));
    }

    [Fact]
    public void ShortBuffersAndTheMaximumValueAreInvalid()
    {
        using var e = Seam.EventFd(_kernel, Flags.EFD_NONBLOCK);
        _kernel.Read(e, new byte[4]).Should().Be(-Errno.EINVAL);
        _kernel.Write(e, Value(ulong.MaxValue)).Should().Be(-Errno.EINVAL);
    }

    [Fact]
    public async Task ABlockingReadWaitsForAWrite()
    {
        using var e = Seam.EventFd(_kernel);
        var reader = Task.Run(() => Seam.ReadCounter(_kernel, e));
        _kernel.Write(e, Value(7)).Should().Be(8);
        (await reader).Should().Be(7);
    }

    [Fact]
    public void PollWithZeroTimeoutReturnsAtOnce()
    {
        using var e = Seam.EventFd(_kernel);
        var fds = new[] { new PollFd { fd = e.Value, events = Flags.POLLIN } };
        _kernel.Poll(fds, 0).Should().Be(0);
        fds[0].revents.Should().Be(0);
    }

    [Fact]
    public async Task PollWithoutTimeoutIsWokenByAWrite()
    {
        using var a = Seam.EventFd(_kernel);
        using var b = Seam.EventFd(_kernel);
        var fds = new[] { new PollFd { fd = a.Value, events = Flags.POLLIN }, new PollFd { fd = b.Value, events = Flags.POLLIN } };
        var poller = Task.Run(() => (_kernel.Poll(fds, -1), fds[1].revents, fds[0].revents));
        _kernel.Write(b, Value(1)).Should().Be(8);
        var (ready, bEvents, aEvents) = await poller;
        ready.Should().Be(1);
        bEvents.Should().Be(Flags.POLLIN);
        aEvents.Should().Be(0);
    }

    [Fact]
    public void PollReportsAnUnknownDescriptorAsInvalid()
    {
        var fds = new[] { new PollFd { fd = 42, events = Flags.POLLIN } };
        _kernel.Poll(fds, -1).Should().Be(1);
        fds[0].revents.Should().Be(Flags.POLLNVAL);
    }

    [Fact]
    public void PollTimesOutWhenNothingHappens()
    {
        using var e = Seam.EventFd(_kernel);
        var fds = new[] { new PollFd { fd = e.Value, events = Flags.POLLIN } };
        _kernel.Poll(fds, 1).Should().Be(0);
    }
}
