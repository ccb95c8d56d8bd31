using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio.Tests.Interop;

/// <summary>The Linux side of the seam, on descriptors every Linux machine has.</summary>
public unsafe class LinuxKernelTests
{
    private const nuint FIONREAD = 0x541B;
    private static readonly VfioKernel Kernel = VfioKernel.Linux;

    [Fact]
    public void OpeningAMissingPathReturnsENOENT()
    {
        int rc = Kernel.Open("/nonexistent/vfio/42", Flags.O_RDWR, out var fd);

        rc.Should().Be(-Errno.ENOENT);
        fd.Should().BeNull();
    }

    [Fact]
    public void AnEventFdCountsWhatIsWrittenAndReadsItBack()
    {
        Kernel.EventFd(0, Flags.EFD_NONBLOCK, out var fd).Should().Be(0);
        using (fd)
        {
            Span<byte> value = stackalloc byte[8];
            BitConverter.TryWriteBytes(value, 3UL);
            Kernel.Write(fd, value).Should().Be(8);
            Kernel.Write(fd, value).Should().Be(8);

            value.Clear();
            Kernel.Read(fd, value).Should().Be(8);
            BitConverter.ToUInt64(value).Should().Be(6);

            Kernel.Read(fd, value).Should().Be(-Errno.EAGAIN);
        }
    }

    [Fact]
    public void PollSeesAnEventFdBecomeReadable()
    {
        Kernel.EventFd(0, Flags.EFD_NONBLOCK, out var fd).Should().Be(0);
        using (fd)
        {
            Span<PollFd> fds = stackalloc PollFd[1];
            fds[0] = new PollFd { fd = fd.Value, events = Flags.POLLIN };
            Kernel.Poll(fds, 0).Should().Be(0);

            Span<byte> one = stackalloc byte[8];
            one[0] = 1;
            Kernel.Write(fd, one).Should().Be(8);

            Kernel.Poll(fds, 0).Should().Be(1);
            (fds[0].revents & Flags.POLLIN).Should().Be(Flags.POLLIN);
        }
    }

    [Fact]
    public void AnIoctlTheFileDoesNotKnowReturnsItsErrnoInsteadOfThrowing()
    {
        Kernel.EventFd(0, 0, out var fd).Should().Be(0);
        using (fd)
        {
            int value = 0;
            int rc = Kernel.Ioctl(fd, FIONREAD, &value);

            // An eventfd has no ioctls, and FIONREAD is answered by the VFS only for regular files.
            rc.Should().Be(-Errno.ENOTTY);
        }
    }

    [Fact]
    public void TheIoctlPathDoesNotAllocate()
    {
        Kernel.EventFd(0, 0, out var fd).Should().Be(0);
        using (fd)
        {
            int value = 0;
            // Warm up: JIT and first-call stubs allocate once.
            for (int i = 0; i < 1000; i++)
            {
                _ = Kernel.Ioctl(fd, FIONREAD, &value);
            }

            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 10_000; i++)
            {
                _ = Kernel.Ioctl(fd, FIONREAD, &value);
            }
            long allocated = GC.GetAllocatedBytesForCurrentThread() - before;

            allocated.Should().Be(0);
        }
    }

    [Fact]
    public void AClosedHandleCannotReachTheKernelAgain()
    {
        Kernel.EventFd(0, 0, out var fd).Should().Be(0);
        fd.Dispose();

        fd.IsClosed.Should().BeTrue();
        Kernel.Ioctl(fd, FIONREAD, (void*)null).Should().Be(-Errno.EBADF);
    }

    [Fact]
    public void AnonymousMemoryIsMappedAndUnmapped()
    {
        Kernel.Mmap(null, 8192, Flags.PROT_READ | Flags.PROT_WRITE, Flags.MAP_PRIVATE, 0, out var mapping).Should().Be(0);
        using (mapping)
        {
            mapping.Length.Should().Be((nuint)8192);
            (mapping.Address % 4096).Should().Be(0);
            var bytes = new Span<byte>((void*)mapping.Address, 8192);
            bytes.Fill(0xA5);
            bytes[8191].Should().Be(0xA5);
        }
        mapping.IsClosed.Should().BeTrue();
    }

    [Fact]
    public void ReadLinkAndListDirectoryReadTheFileSystem()
    {
        Kernel.ReadLink("/proc/self", out var target).Should().Be(0);
        int.TryParse(target, out _).Should().BeTrue();

        Kernel.ListDirectory("/proc/self/fd", out var names).Should().Be(0);
        names.Should().Contain("0");

        Kernel.ListDirectory("/nonexistent-folder", out _).Should().Be(-Errno.ENOENT);
        Kernel.ListDirectory("/proc/self/status", out _).Should().Be(-Errno.ENOTDIR, "a file is there, as the simulated kernel answers for a sysfs attribute");
        Kernel.ReadLink("/nonexistent-link", out _).Should().Be(-Errno.ENOENT);
    }

    [Fact]
    public void PReadAndPWriteWorkAtOffsets()
    {
        string path = Path.GetTempFileName();
        try
        {
            Kernel.Open(path, Flags.O_RDWR, out var fd).Should().Be(0);
            using (fd)
            {
                Kernel.PWrite(fd, "abcdef"u8, 10).Should().Be(6);
                Span<byte> back = stackalloc byte[3];
                Kernel.PRead(fd, back, 12).Should().Be(3);
                back.ToArray().Should().Equal("cde"u8.ToArray());
            }
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void StatReportsTheTypeModeAndOwnerOfAFile()
    {
        Kernel.Stat("/dev/null", out var devNull).Should().Be(0);
        (devNull.IsCharacterDevice, devNull.Permissions, devNull.UserId).Should().Be((true, 0x1b6u, 0u));
        Kernel.Stat("/proc", out var proc).Should().Be(0);
        proc.IsDirectory.Should().BeTrue();
        Kernel.Stat("/nonexistent/vfio/42", out _).Should().Be(-Errno.ENOENT);
    }

    [Fact]
    public void AccessAndChownAnswerForTheCallingProcess()
    {
        Kernel.Access("/dev/null", Flags.R_OK | Flags.W_OK).Should().Be(0);
        Kernel.Access("/nonexistent/vfio/42", Flags.R_OK).Should().Be(-Errno.ENOENT);
        string path = Path.GetTempFileName();
        try
        {
            Kernel.Stat(path, out var before).Should().Be(0);
            Kernel.Chown(path, -1, -1).Should().Be(0, "keeping both owners is allowed to anyone");
            Kernel.Stat(path, out var after).Should().Be(0);
            (after.UserId, after.GroupId).Should().Be((before.UserId, before.GroupId));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void TheMemlockLimitCapabilitiesAndReleaseComeFromTheKernel()
    {
        Kernel.GetResourceLimit(Flags.RLIMIT_MEMLOCK, out ulong soft, out ulong hard).Should().Be(0);
        soft.Should().BeLessThanOrEqualTo(hard);
        Kernel.GetResourceLimit(-1, out _, out _).Should().Be(-Errno.EINVAL);
        Kernel.GetCapabilities(out ulong caps).Should().Be(0);
        bool root = File.ReadAllText("/proc/self/status").Contains("Uid:\t0\t", StringComparison.Ordinal);
        if (root)
        {
            (caps & (1UL << Flags.CAP_IPC_LOCK)).Should().NotBe(0, "root has CAP_IPC_LOCK");
        }
        Kernel.GetKernelRelease(out string release).Should().Be(0);
        release.Should().Be(File.ReadAllText("/proc/sys/kernel/osrelease").Trim());
    }
}
