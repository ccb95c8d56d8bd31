using System.Globalization;

namespace Vfio.Scenarios;

/// <summary>
/// Buffers copied into and out of memory behind a BAR: QEMU's ivshmem-plain, whose BAR2 is shared
/// memory (<see cref="ScenarioContext.SharedMemoryDeviceAddress"/>), through <see cref="MmioRegion"/>'s
/// bulk copies on the public API.
/// </summary>
internal static class SharedMemoryScenarios
{
    /// <summary>ivshmem's PCI IDs (Red Hat, Inter-VM shared memory).</summary>
    private const ushort Vendor = 0x1af4;
    private const ushort DeviceId = 0x1110;
    private const int SharedMemoryBar = 2;

    public static IReadOnlyList<Scenario> All { get; } =
    [
        new("bar_bulk_copy_round_trip", BulkCopyRoundTrip),
        new("bar_bulk_copy_memory_space_off", BulkCopyMemorySpaceOff),
    ];

    /// <summary>
    /// A buffer copied in at an unaligned offset through the mapping reads back the same through the
    /// mapping and through the kernel's pread, and what the kernel's pwrite put there reads back through
    /// the mapping: both reach the same device memory.
    /// </summary>
    public static Task BulkCopyRoundTrip(ScenarioContext context) => WithOpenAsync(context, (device, bar2) =>
    {
        byte[] sent = Pattern(5000, 1);
        byte[] back = new byte[sent.Length];
        const ulong At = 0x1003;

        bar2.Write(At, sent);
        bar2.Read(At, back);
        Same(sent, back, "read back through the mapping");

        back.AsSpan().Clear();
        device.ReadRegion(SharedMemoryBar, At, back);
        Same(sent, back, "read back through the device file (pread)");

        byte[] other = Pattern(3001, 2);
        device.WriteRegion(SharedMemoryBar, bar2.Size - (ulong)other.Length, other);
        byte[] seen = new byte[other.Length];
        bar2.Read(bar2.Size - (ulong)other.Length, seen);
        Same(other, seen, "written through the device file (pwrite), read through the mapping up to the BAR's end");

        Check.Throws<ArgumentOutOfRangeException>(() => bar2.Read(bar2.Size - 4, new byte[8]), "a copy past the BAR's end");
        return Task.CompletedTask;
    });

    /// <summary>
    /// vfio-pci revokes the mapping while memory space is off; a bulk copy then reads all-ones and its
    /// writes are dropped, without a fault, and the memory is there again once memory space is on.
    /// </summary>
    public static Task BulkCopyMemorySpaceOff(ScenarioContext context) => WithOpenAsync(context, (device, bar2) =>
    {
        byte[] sent = Pattern(4096, 3);
        bar2.Write(0x800, sent);
        device.UpdateCommand(PciCommand.None, clear: PciCommand.MemorySpace);
        byte[] back = new byte[sent.Length];
        try
        {
            Check.True(bar2.IsSuspended, "the region is not suspended with memory space off");
            bar2.Read(0x800, back);
            Check.True(!back.AsSpan().ContainsAnyExcept((byte)0xff), "a copy with memory space off read something other than all-ones");
            bar2.Write(0x800, new byte[sent.Length]); // dropped
        }
        finally
        {
            device.UpdateCommand(PciCommand.MemorySpace);
        }
        bar2.Read(0x800, back);
        Same(sent, back, "read back once memory space is on again (the copy made while it was off was dropped)");
        return Task.CompletedTask;
    });

    private static byte[] Pattern(int length, int seed)
    {
        byte[] bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    private static void Same(byte[] expected, byte[] actual, string what)
    {
        int differs = expected.AsSpan().CommonPrefixLength(actual);
        if (differs < expected.Length)
        {
            throw new ScenarioFailedException(string.Create(CultureInfo.InvariantCulture,
                $"{what}: byte {differs} of {expected.Length} is 0x{actual[differs]:x2}, not 0x{expected[differs]:x2}"));
        }
    }

    /// <summary>Registers the shared-memory function, opens it with memory space on and its BAR2 mapped, and cleans up.</summary>
    private static Task WithOpenAsync(ScenarioContext context, Func<SharedMemoryDevice, MmioRegion, Task> body)
    {
        string address = context.SharedMemoryDeviceAddress
            ?? throw new ScenarioFailedException("the machine has no ivshmem function bound to vfio-pci");
        return ScenarioRegistry.WithRegisteredAsync<SharedMemoryDevice>(context, new SharedMemoryDriver(), address, async (_, device) =>
        {
            using DeviceReference open = device.Open();
            device.EnableCommand(memorySpace: true, busMaster: false);
            using MmioRegion bar2 = device.OpenRegion(SharedMemoryBar);
            Check.True(bar2.IsMapped, "BAR2 was opened through the device file, not mapped");
            context.Note(string.Create(CultureInfo.InvariantCulture, $"BAR2: {bar2.Size} bytes, mapped"));
            await body(device, bar2).ConfigureAwait(false);
        });
    }

    private sealed class SharedMemoryDevice(PciDeviceContext context) : PciVfioDevice(context);

    private sealed class SharedMemoryDriver() : PciDriver<SharedMemoryDevice>("ivshmem", PciMatch.Id(Vendor, DeviceId))
    {
        protected internal override SharedMemoryDevice CreateDevice(PciDeviceContext context) => new(context);
    }
}
