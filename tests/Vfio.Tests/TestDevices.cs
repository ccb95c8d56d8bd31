namespace Vfio.Tests;

/// <summary>A PCI device as a driver author would write one, recording its hooks.</summary>
internal sealed class RecordingPciDevice : PciVfioDevice
{
    private readonly Lock _lock = new();
    private readonly List<int> _requests = [];

    public RecordingPciDevice(PciDeviceContext context)
        : base(context)
    {
    }

    public int FirstOpens { get; private set; }

    public int LastCloses { get; private set; }

    public bool Disposed { get; private set; }

    /// <summary>Called from the release-request hook with its count.</summary>
    public Action<int>? WhenReleaseRequested { get; set; }

    /// <summary>Thrown from the first-open hook when set.</summary>
    public Exception? FailFirstOpen { get; set; }

    /// <summary>Runs inside the first-open hook (under the device set's lock).</summary>
    public Action? DuringFirstOpen { get; set; }

    public IReadOnlyList<int> Requests
    {
        get
        {
            lock (_lock)
            {
                return [.. _requests];
            }
        }
    }

    protected override void OnFirstOpen()
    {
        DuringFirstOpen?.Invoke();
        if (FailFirstOpen is not null)
        {
            throw FailFirstOpen;
        }
        FirstOpens++;
    }

    protected override void OnLastClose() => LastCloses++;

    protected override void OnReleaseRequested(int count)
    {
        lock (_lock)
        {
            _requests.Add(count);
        }
        WhenReleaseRequested?.Invoke(count);
    }

    protected override void Dispose(bool disposing)
    {
        Disposed = true;
        base.Dispose(disposing);
    }
}

/// <summary>A device whose DMA reaches 28 address bits, as QEMU's edu device.</summary>
internal sealed class NarrowDmaDevice : PciVfioDevice
{
    public const ulong Mask = (1UL << 28) - 1;

    public NarrowDmaDevice(PciDeviceContext context)
        : base(context)
    {
        DmaMask = Mask;
    }
}

internal static class TestContexts
{
    /// <summary>A PCI function's context as the registry would discover it, without reading sysfs.</summary>
    public static PciDeviceContext Pci(VfioRegistry registry, string address = "0000:00:03.0", int group = 5,
        ushort vendor = 0x1234, ushort device = 0x11e8, uint classCode = 0x00ff00) =>
        new(registry, PciAddress.Parse(address), group, IommuGroupKind.Iommu, "vfio-pci", vendor, device, classCode, 0x1af4, 0x1100, "pci-slot:" + PciAddress.Parse(address).SlotName);
}
