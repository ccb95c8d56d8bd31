using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Globalization;
using EduDriver;
using Microsoft.Extensions.Logging;
using Vfio.Interop;
using static Vfio.Interop.Interop;
using static Vfio.Interop.VfioUapi;

namespace Vfio.Scenarios;

/// <summary>
/// No-IOMMU groups: a machine without an IOMMU whose vfio module runs in unsafe no-IOMMU mode
/// (<c>vfio.enable_unsafe_noiommu_mode=1</c>): a device bound to vfio-pci gets a group
/// <c>/dev/vfio/noiommu-N</c> whose container has the no-IOMMU driver, which maps nothing. The
/// kernel's answers at the errno level; the library opening the edu device with one warning,
/// refusing what the kernel refuses, and giving DMA buffers physical addresses the device really
/// uses. Run in the VM's noiommu mode (tests/vm/run-vm-tests.sh) and on the simulated kernel.
/// </summary>
internal static class NoIommuScenarios
{
    private const string HugePagesPath = "kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);
    private static readonly ulong Page = (ulong)Environment.SystemPageSize;

    /// <summary>Every no-IOMMU scenario, in the order they run.</summary>
    public static IReadOnlyList<Scenario> All { get; } =
    [
        new("noiommu_group_node_and_container_driver", GroupNodeAndContainerDriver),
        new("noiommu_library_opens_with_one_warning_and_refuses_iommu_calls", LibraryOpensWithOneWarning),
        new("noiommu_dma_buffer_at_its_physical_address", BufferAtItsPhysicalAddress),
        new("noiommu_large_buffers_need_hugepages", LargeBuffersNeedHugePages),
    ];

    public static unsafe void GroupNodeAndContainerDriver(ScenarioContext context)
    {
        var kernel = context.Kernel;
        var sysfs = new SysfsReader(kernel);
        string group = context.GroupId.ToString(CultureInfo.InvariantCulture);
        Check.Equal("Y", sysfs.ReadText("module/vfio/parameters/enable_unsafe_noiommu_mode")?.Trim() ?? "none", "vfio's enable_unsafe_noiommu_mode");
        Check.Equal("vfio-noiommu", sysfs.ReadText("kernel/iommu_groups/" + group + "/name")?.Trim() ?? "none", "the group's name");
        Check.Equal(group, sysfs.ReadLinkName("bus/pci/devices/" + context.DeviceAddress + "/iommu_group") ?? "none", "the device's iommu_group link");
        Check.Fails(kernel.Stat(kernel.Dev("vfio/" + group), out _), Errno.ENOENT, "stat of /dev/vfio/" + group + " (a no-IOMMU group's node is noiommu-" + group + ")");
        string node = kernel.Dev("vfio/noiommu-" + group);
        Check.Ok(kernel.Stat(node, out var status), "stat " + node);
        Check.True(status.IsCharacterDevice, node + " is not a character device");

        // An empty container asks every IOMMU driver; in unsafe mode the no-IOMMU driver says yes.
        Check.Ok(kernel.Open(kernel.Dev("vfio/vfio"), Flags.O_RDWR, out var container), "open /dev/vfio/vfio");
        using (container)
        {
            Check.Equal(1, kernel.Ioctl(container, VFIO_CHECK_EXTENSION, VFIO_NOIOMMU_IOMMU), "CHECK_EXTENSION(VFIO_NOIOMMU_IOMMU) of an empty container");
            Check.Ok(kernel.Open(node, Flags.O_RDWR, out var groupFd), "open " + node);
            using (groupFd)
            {
                var groupStatus = new vfio_group_status { argsz = (uint)sizeof(vfio_group_status) };
                Check.Ok(kernel.Ioctl(groupFd, VFIO_GROUP_GET_STATUS, &groupStatus), "VFIO_GROUP_GET_STATUS");
                Check.True((groupStatus.flags & VFIO_GROUP_FLAGS_VIABLE) != 0, "the no-IOMMU group is not viable");
                int containerFd = container.Value;
                Check.Ok(kernel.Ioctl(groupFd, VFIO_GROUP_SET_CONTAINER, &containerFd), "VFIO_GROUP_SET_CONTAINER");
                // With a no-IOMMU group in it, only the no-IOMMU driver answers.
                Check.Equal(1, kernel.Ioctl(container, VFIO_CHECK_EXTENSION, VFIO_NOIOMMU_IOMMU), "CHECK_EXTENSION(VFIO_NOIOMMU_IOMMU) with the group in");
                Check.Equal(0, kernel.Ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU), "CHECK_EXTENSION(VFIO_TYPE1v2_IOMMU) with the group in");
                Check.Fails(kernel.Ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU), Errno.ENODEV, "VFIO_SET_IOMMU(TYPE1v2) for a no-IOMMU group");
                Check.Ok(kernel.Ioctl(container, VFIO_SET_IOMMU, VFIO_NOIOMMU_IOMMU), "VFIO_SET_IOMMU(NOIOMMU)");

                // The no-IOMMU driver has no IOMMU ioctls at all.
                var info = new vfio_iommu_type1_info { argsz = (uint)sizeof(vfio_iommu_type1_info) };
                Check.Fails(kernel.Ioctl(container, VFIO_IOMMU_GET_INFO, &info), Errno.ENOTTY, "VFIO_IOMMU_GET_INFO");
                var map = new vfio_iommu_type1_dma_map { argsz = (uint)sizeof(vfio_iommu_type1_dma_map), flags = VFIO_DMA_MAP_FLAG_READ, iova = 0x100000, size = Page };
                Check.Fails(kernel.Ioctl(container, VFIO_IOMMU_MAP_DMA, &map), Errno.ENOTTY, "VFIO_IOMMU_MAP_DMA");
                var unmap = new vfio_iommu_type1_dma_unmap { argsz = (uint)sizeof(vfio_iommu_type1_dma_unmap), iova = 0x100000, size = Page };
                Check.Fails(kernel.Ioctl(container, VFIO_IOMMU_UNMAP_DMA, &unmap), Errno.ENOTTY, "VFIO_IOMMU_UNMAP_DMA");
                var dirty = new vfio_iommu_type1_dirty_bitmap { argsz = (uint)sizeof(vfio_iommu_type1_dirty_bitmap), flags = VFIO_IOMMU_DIRTY_PAGES_FLAG_START };
                Check.Fails(kernel.Ioctl(container, VFIO_IOMMU_DIRTY_PAGES, &dirty), Errno.ENOTTY, "VFIO_IOMMU_DIRTY_PAGES");

                byte[] name = System.Text.Encoding.UTF8.GetBytes(context.DeviceAddress + "\0");
                int deviceFd;
                fixed (byte* p = name)
                {
                    deviceFd = kernel.Ioctl(groupFd, VFIO_GROUP_GET_DEVICE_FD, p);
                }
                Check.Ok(deviceFd, "VFIO_GROUP_GET_DEVICE_FD " + context.DeviceAddress);
                using var device = new SafeFd(kernel, deviceFd);
                var deviceInfo = new vfio_device_info { argsz = (uint)sizeof(vfio_device_info) };
                Check.Ok(kernel.Ioctl(device, VFIO_DEVICE_GET_INFO, &deviceInfo), "VFIO_DEVICE_GET_INFO");
                Check.True((deviceInfo.flags & VFIO_DEVICE_FLAGS_PCI) != 0, "the device is not a PCI device");
            }
        }
    }

    public static async Task LibraryOpensWithOneWarning(ScenarioContext context)
    {
        using var log = new WarningLog();
        await WithOpenEduAsync(context, log, device =>
        {
            Check.True(device.GroupKind == IommuGroupKind.NoIommu, "the device's group kind is " + device.GroupKind);
            VfioContainer container = device.Group!.Container!;
            Check.Equal("noiommu", container.IommuTypeName, "the container's IOMMU");
            Check.True(container.IsNoIommu, "the container says it has an IOMMU");
            var warnings = log.Warnings;
            Check.Equal(1, warnings.Count, "warnings logged on opening (" + string.Join(" | ", warnings) + ")");
            Check.True(warnings[0].Contains("all of the machine's memory", StringComparison.Ordinal) && warnings[0].Contains("taints the kernel", StringComparison.Ordinal),
                "the warning does not name the risk: " + warnings[0]);
            context.Note("warning: " + warnings[0]);

            var info = Check.Throws<VfioNotSupportedException>(() => _ = container.IommuInfo, "the IOMMU info of a no-IOMMU container");
            Check.Equal(Errno.ENOTTY, info.Errno, "errno of VFIO_IOMMU_GET_INFO");
            Check.Throws<VfioNotSupportedException>(() => container.StartDirtyPageTracking(), "dirty tracking of a no-IOMMU container");
            var fixedIova = Check.Throws<VfioNotSupportedException>(() => device.AllocateDmaBuffer(Page, iova: 0x100000), "a buffer at a chosen IOVA");
            Check.True(fixedIova.Message.Contains("physical address", StringComparison.Ordinal), "the refusal does not say why: " + fixedIova.Message);
            using (DmaBuffer one = device.AllocateDmaBuffer(Page))
            {
                Check.Equal(1, container.DmaMappingCount, "buffers of the container");
            }
            Check.Equal(0, container.DmaMappingCount, "buffers after the dispose");
            Check.Equal(1, log.Warnings.Count, "warnings after a buffer came and went");
            return Task.CompletedTask;
        });
        // Opening again is a new container: one warning each time, never one per buffer or device.
        await WithOpenEduAsync(context, log, _ => Task.CompletedTask);
        Check.Equal(2, log.Warnings.Count, "warnings after the second open");
    }

    public static Task BufferAtItsPhysicalAddress(ScenarioContext context) => WithOpenEduAsync(context, null, async device =>
    {
        using DmaBuffer source = device.AllocateDmaBuffer(Page, DmaAccess.DeviceReads);
        using DmaBuffer destination = device.AllocateDmaBuffer(Page, DmaAccess.DeviceWrites);
        foreach (var buffer in new[] { source, destination })
        {
            Check.True(!buffer.IsHugePages, "a one-page buffer was made of hugepages");
            Check.Equal(Page, buffer.Length, "a one-page buffer's length");
            Check.Equal(PhysicalAddress(context, buffer.HostAddress), buffer.Iova, "the buffer's device address (the physical address /proc/self/pagemap gives)");
            Check.True(buffer.Iova != 0 && buffer.Iova + buffer.Length - 1 <= device.DmaMask, FormattableString.Invariant($"the physical address 0x{buffer.Iova:x} is outside edu's DMA mask"));
            Check.Equal(buffer.Iova + 0x10, device.Group!.Container!.TranslateToIova(buffer.HostAddress + 0x10) ?? 0, "TranslateToIova of a host address in the buffer");
        }
        // The device reaches memory at those addresses: a round trip through edu's own buffer.
        for (int i = 0; i < 256; i++)
        {
            source.Span[i] = (byte)(i * 7 + 3);
        }
        using var timeout = new CancellationTokenSource(Timeout);
        await device.CopyToDeviceAsync(source, 0, 0, 256, timeout.Token).ConfigureAwait(false);
        await device.CopyFromDeviceAsync(destination, 16, 0, 256, timeout.Token).ConfigureAwait(false);
        for (int i = 0; i < 256; i++)
        {
            Check.Equal((byte)(i * 7 + 3), destination.Span[16 + i], "byte " + i + " after edu's round trip by physical address");
        }
        context.Note(FormattableString.Invariant($"edu copied 256 bytes from physical 0x{source.Iova:x} and back to 0x{destination.Iova + 16:x}"));
    });

    public static async Task LargeBuffersNeedHugePages(ScenarioContext context)
    {
        var sysfs = new SysfsReader(context.Kernel);
        string original = sysfs.ReadText(HugePagesPath)?.Trim() ?? throw new ScenarioFailedException("no 2 MiB hugepage pool in sysfs");
        try
        {
            sysfs.WriteText(HugePagesPath, "0");
            await WithOpenEduAsync(context, null, device =>
            {
                var none = Check.Throws<VfioResourceLimitException>(() => device.AllocateDmaBuffer(4 * Page), "a 4-page buffer with no hugepages");
                Check.Equal(VfioResourceLimitException.HugePages, none.Limit, "the limit named");
                Check.True(none.Message.Contains("physically contiguous", StringComparison.Ordinal), "the error does not say why hugepages: " + none.Message);
                Check.True(!none.Message.Contains("HugeIfAvailable", StringComparison.Ordinal), "the error suggests a fallback that cannot help: " + none.Message);
                Check.Throws<VfioResourceLimitException>(() => device.AllocateDmaBuffer(4 * Page, pages: DmaPages.HugeIfAvailable), "a 4-page HugeIfAvailable buffer with no hugepages");
                using DmaBuffer single = device.AllocateDmaBuffer(Page, pages: DmaPages.HugeIfAvailable);
                Check.True(!single.IsHugePages, "a one-page HugeIfAvailable buffer claims hugepages with an empty pool");
                context.Note("no hugepages: " + none.Message);
                return Task.CompletedTask;
            }).ConfigureAwait(false);

            sysfs.WriteText(HugePagesPath, "2");
            await WithOpenEduAsync(context, null, async device =>
            {
                using DmaBuffer large = device.AllocateDmaBuffer(16 * Page);
                Check.True(large.IsHugePages, "a 16-page buffer is not made of hugepages");
                Check.Equal(DmaBuffer.HugePageSize, large.Length, "its length, rounded to 2 MiB");
                // Every page is where the first one's physical address says: the device can use all of it.
                for (ulong offset = 0; offset < large.Length; offset += 0x40000)
                {
                    Check.Equal(large.Iova + offset, PhysicalAddress(context, large.HostAddress + (nint)offset), FormattableString.Invariant($"the physical address at offset 0x{offset:x}"));
                }
                int at = (int)DmaBuffer.HugePageSize - 0x1000;
                for (int i = 0; i < 128; i++)
                {
                    large.Span[at + i] = (byte)(i ^ 0xa5);
                }
                using var timeout = new CancellationTokenSource(Timeout);
                await device.CopyToDeviceAsync(large, at, 0, 128, timeout.Token).ConfigureAwait(false);
                await device.CopyFromDeviceAsync(large, 0x800, 0, 128, timeout.Token).ConfigureAwait(false);
                for (int i = 0; i < 128; i++)
                {
                    Check.Equal((byte)(i ^ 0xa5), large.Span[0x800 + i], "byte " + i + " after the device's round trip in the hugepage buffer");
                }
                context.Note(FormattableString.Invariant($"a 16-page buffer became 2 MiB of hugepage at physical 0x{large.Iova:x}"));
            }).ConfigureAwait(false);
        }
        finally
        {
            sysfs.WriteText(HugePagesPath, original);
        }
    }

    /// <summary>The physical address of a host address, read from the page map as the kernel shows it to root.</summary>
    private static ulong PhysicalAddress(ScenarioContext context, nint address)
    {
        var kernel = context.Kernel;
        Check.Ok(kernel.Open("/proc/self/pagemap", Flags.O_RDONLY, out var fd), "open /proc/self/pagemap");
        using (fd)
        {
            Span<byte> entry = stackalloc byte[8];
            Check.Equal(8L, kernel.PRead(fd, entry, (long)((ulong)address / Page * 8)), "bytes of one pagemap entry");
            ulong value = BinaryPrimitives.ReadUInt64LittleEndian(entry);
            Check.True((value & (1UL << 63)) != 0, FormattableString.Invariant($"the page at 0x{address:x} is not present"));
            return (value & ((1UL << 55) - 1)) * Page + ((ulong)address % Page);
        }
    }

    private static async Task WithOpenEduAsync(ScenarioContext context, ILoggerFactory? log, Func<EduDevice, Task> body)
    {
        var registry = new VfioRegistry(context.Kernel, log);
        await using (registry.ConfigureAwait(false))
        {
            registry.AddDriver(new EduPciDriver());
            ProbeResult probe = await registry.ProbeAsync().ConfigureAwait(false);
            EduDevice device = probe.Registered.OfType<EduDevice>().FirstOrDefault(d => d.Name == context.DeviceAddress)
                ?? throw new ScenarioFailedException("the edu driver did not register " + context.DeviceAddress + " (failures: " + string.Join("; ", probe.Failures.Select(f => f.Device + ": " + f.Error.Message)) + ")");
            using DeviceReference open = device.Open();
            await body(device).ConfigureAwait(false);
        }
    }

    /// <summary>Keeps the warnings the library logs.</summary>
    private sealed class WarningLog : ILoggerFactory, ILoggerProvider
    {
        private readonly ConcurrentQueue<string> _warnings = new();

        public IReadOnlyList<string> Warnings => [.. _warnings];

        public ILogger CreateLogger(string categoryName) => new Logger(_warnings);

        public void AddProvider(ILoggerProvider provider)
        {
        }

        public void Dispose()
        {
        }

        private sealed class Logger(ConcurrentQueue<string> warnings) : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state)
                where TState : notnull => null;

            public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Warning;

            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            {
                if (logLevel >= LogLevel.Warning)
                {
                    warnings.Enqueue(formatter(state, exception));
                }
            }
        }
    }
}
