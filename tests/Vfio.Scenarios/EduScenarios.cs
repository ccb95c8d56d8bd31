using System.Globalization;
using EduDriver;

namespace Vfio.Scenarios;

/// <summary>
/// The edu device driven as a driver author would: through <see cref="VfioRegistry"/> and the
/// sample's <see cref="EduDevice"/>, on the public API only.
/// </summary>
internal static class EduScenarios
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    /// <summary>Every public-API scenario, in the order they run.</summary>
    public static IReadOnlyList<Scenario> All { get; } =
    [
        new("registry_open_reference_unregister", RegistryOpenReferenceUnregister),
        new("registry_container_and_iommu", RegistryContainerAndIommu),
        new("bar0_mmap_registers", Bar0MmapRegisters),
        new("bar0_memory_space_off_reads_all_ones", Bar0MemorySpaceOff),
        new("edu_factorial_msi", FactorialByMsi),
        new("edu_dma_round_trip_4k", DmaRoundTrip),
        new("device_reset_not_supported", ResetNotSupported),
        new("registry_group_not_viable", RegistryGroupNotViable),
    ];

    public static Task RegistryOpenReferenceUnregister(ScenarioContext context) => WithEduAsync(context, context.DeviceAddress, async (registry, device) =>
    {
        Check.True(device.State == VfioDeviceState.Registered, "state after probe is " + device.State);
        using (DeviceReference open = device.Open())
        {
            Check.True(device.IsOpen, "the device is not open after Open()");
            int held = device.ReferenceCount;
            Check.True(held >= 2, "an open device holds fewer than 2 references (registration, open)");
            Check.True(device.TryGet(out DeviceReference extra), "TryGet failed on a registered device");
            using (extra)
            {
                Check.Equal(held + 1, device.ReferenceCount, "references after TryGet");
            }
            Check.Equal(held, device.ReferenceCount, "references after the extra one went");
            Check.Equal(context.GroupId, device.Group?.Id ?? -1, "the device's group");
        }
        Check.True(!device.IsOpen, "the device is still open after its last reference went");
        await ScenarioRegistry.UnregisterAsync(registry, device).ConfigureAwait(false);
        Check.True(device.State == VfioDeviceState.Unregistered, "state after unregister is " + device.State);
        Check.True(!device.TryGet(out _), "TryGet succeeded after unregister");
    });

    public static Task RegistryContainerAndIommu(ScenarioContext context) => WithOpenEduAsync(context, device =>
    {
        VfioContainer container = device.Group?.Container ?? throw new ScenarioFailedException("the open device's group has no container");
        Check.Equal("type1v2", container.IommuTypeName, "container IOMMU type");
        IommuInfo info = container.IommuInfo;
        context.Note("iova ranges: " + string.Join(", ", info.IovaRanges.Select(r => FormattableString.Invariant($"[0x{r.Start:x}, 0x{r.End:x}]"))));
        Check.True(info.IovaRanges.Count > 0, "no IOVA ranges");
        Check.True((info.PageSizes & 0x1000) != 0, "no 4 KiB IOMMU pages");
        Check.Equal("MSI", device.InterruptMode, "interrupt mode");
        return Task.CompletedTask;
    });

    public static Task Bar0MmapRegisters(ScenarioContext context) => WithOpenEduAsync(context, device =>
    {
        RegionInfo bar0 = device.GetRegionInfo(0);
        Check.True(bar0.CanMmap, "BAR0 cannot be mapped");
        Check.Equal(1UL << 20, bar0.Size, "BAR0 size");
        using (MmioRegion region = device.OpenRegion(0))
        {
            Check.True(region.IsMapped, "BAR0 was opened through the device file, not mapped");
            Check.Equal(0x010000edu, region.Read32(0x00), "identification through the mapping");
        }
        Check.Equal(0x010000edu, device.ReadIdentification(), "identification");
        Check.True(device.CheckLiveness(0x12345678), "liveness check");
        Check.True(device.CheckLiveness(0), "liveness check of 0");
        return Task.CompletedTask;
    });

    /// <summary>
    /// vfio-pci revokes BAR mappings while memory space is off: a touch of the old mapping is SIGBUS,
    /// which .NET turns into a fatal AccessViolationException. The library puts all-ones memory in
    /// place before it clears the bit, so the read returns all-ones (as a PCI read of a device that
    /// does not decode), and maps the BAR back once the bit is set again.
    /// </summary>
    public static Task Bar0MemorySpaceOff(ScenarioContext context) => WithOpenEduAsync(context, device =>
    {
        using MmioRegion region = device.OpenRegion(0);
        Check.True(region.IsMapped, "BAR0 was opened through the device file, not mapped");
        Check.Equal(0x010000edu, region.Read32(0x00), "identification with memory space on");
        device.UpdateCommand(PciCommand.None, clear: PciCommand.MemorySpace);
        Check.True(!device.Command.HasFlag(PciCommand.MemorySpace), "memory space is still on");
        try
        {
            uint off = region.Read32(0x00);
            context.Note(FormattableString.Invariant($"identification with memory space off: 0x{off:x8}"));
            Check.Equal(0xffffffffu, off, "a read with memory space off");
            region.Write32(0x04, 0x12345678); // dropped
        }
        catch (VfioException e)
        {
            context.Note("a read with memory space off threw " + e.GetType().Name + ": " + e.Message);
        }
        device.UpdateCommand(PciCommand.MemorySpace);
        Check.Equal(0x010000edu, region.Read32(0x00), "identification once memory space is on again");
        region.Write32(0x04, 0x12345678);
        Check.Equal(~0x12345678u, region.Read32(0x04), "the liveness register answers again");
        return Task.CompletedTask;
    });

    public static Task FactorialByMsi(ScenarioContext context) => WithOpenEduAsync(context, async device =>
    {
        using var timeout = new CancellationTokenSource(Timeout);
        Check.Equal(3628800u, await device.ComputeFactorialAsync(10, timeout.Token).ConfigureAwait(false), "10!");
        Check.Equal(479001600u, await device.ComputeFactorialAsync(12, timeout.Token).ConfigureAwait(false), "12!");
        Check.Equal("MSI", device.InterruptMode, "interrupt mode");
    });

    public static Task DmaRoundTrip(ScenarioContext context) => WithOpenEduAsync(context, async device =>
    {
        const int Size = 4096;
        using var timeout = new CancellationTokenSource(Timeout);
        using DmaBuffer source = device.AllocateDmaBuffer(Size, DmaAccess.DeviceReads);
        using DmaBuffer destination = device.AllocateDmaBuffer(Size, DmaAccess.DeviceWrites);
        Check.True(source.Iova + Size - 1 <= device.DmaMask && destination.Iova + Size - 1 <= device.DmaMask, "a buffer lies above the 28-bit DMA mask");
        new Random(4096).NextBytes(source.Span[..Size]);
        destination.Span.Clear();
        // The device's buffer takes at most 4095 bytes per transfer: two chunks through its buffer.
        int[] chunks = [EduDevice.MaxTransfer, Size - EduDevice.MaxTransfer];
        int at = 0;
        foreach (int count in chunks)
        {
            await device.CopyToDeviceAsync(source, at, 0, count, timeout.Token).ConfigureAwait(false);
            await device.CopyFromDeviceAsync(destination, at, 0, count, timeout.Token).ConfigureAwait(false);
            at += count;
        }
        for (int i = 0; i < Size; i++)
        {
            if (source.Span[i] != destination.Span[i])
            {
                throw new ScenarioFailedException(string.Create(CultureInfo.InvariantCulture, $"byte {i} differs after the round trip: sent 0x{source.Span[i]:x2}, got 0x{destination.Span[i]:x2}"));
            }
        }
    });

    public static Task ResetNotSupported(ScenarioContext context) => WithOpenEduAsync(context, device =>
    {
        Check.True(device.Info is { CanReset: false }, "edu says it can reset");
        try
        {
            device.Reset();
        }
        catch (VfioNotSupportedException e)
        {
            context.Note("Reset(): " + e.Message);
            Check.True(e.Message.Contains("does not support", StringComparison.Ordinal), "the message does not say reset is unsupported: " + e.Message);
            return Task.CompletedTask;
        }
        throw new ScenarioFailedException("Reset() of a device without reset support did not throw VfioNotSupportedException");
    });

    public static Task RegistryGroupNotViable(ScenarioContext context)
    {
        var (address, group) = context.NotViable;
        return WithEduAsync(context, address, (registry, device) =>
        {
            try
            {
                using DeviceReference open = device.Open();
            }
            catch (VfioGroupNotViableException e)
            {
                context.Note("Open(): " + e.Message);
                Check.Equal(group, e.NotViableGroupId, "the group named");
                Check.True(e.BlockingDevices.Count > 0, "the exception names no blocking device");
                Check.True(!device.IsOpen, "the device is open after a failed open");
                return ScenarioRegistry.UnregisterAsync(registry, device);
            }
            throw new ScenarioFailedException("opening an edu device in a not viable group succeeded");
        });
    }

    /// <summary>Probes with the edu driver, hands the device at <paramref name="address"/> over, and cleans up.</summary>
    internal static Task WithEduAsync(ScenarioContext context, string address, Func<VfioRegistry, EduDevice, Task> body) =>
        ScenarioRegistry.WithRegisteredAsync(context, new EduPciDriver(), address, body);

    /// <summary>Probes with the edu driver and runs <paramref name="body"/> on the device alone in its group, held open.</summary>
    internal static Task WithOpenEduAsync(ScenarioContext context, Func<EduDevice, Task> body) => WithEduAsync(context, context.DeviceAddress, async (_, device) =>
    {
        using DeviceReference open = device.Open();
        await body(device).ConfigureAwait(false);
    });
}
