using Vfio.Interop;

namespace Vfio.Testing;

/// <summary>
/// A simulated platform device for vfio-platform: memory regions (index &lt;&lt; 40 in the device
/// file) read and written through <see cref="ReadRegister"/> and <see cref="WriteRegister"/> (plain
/// memory unless overridden), and one interrupt per IRQ index, level- or edge-triggered. No
/// configuration space. It is described either by device tree (<see cref="Compatible"/>) or by ACPI
/// (<see cref="AcpiHid"/>), as vfio-platform's probe tells them apart.
/// </summary>
public class PlatformDeviceModel : DeviceModel
{
    private readonly List<(ulong Size, bool Mappable, bool ReadOnly)> _regions = [];
    private readonly List<bool> _levelTriggered = [];
    private readonly List<byte[]> _memory = [];
    private bool _sealed;

    /// <summary>Creates a platform device described by device tree, with its <c>compatible</c> property.</summary>
    /// <param name="compatible">
    /// The entries of its <c>compatible</c> property, most specific first, e.g. "arm,pl330", "arm,primecell".
    /// May be empty only for an ACPI device (<see cref="AcpiHid"/> set).
    /// </param>
    public PlatformDeviceModel(params string[] compatible)
    {
        ArgumentNullException.ThrowIfNull(compatible);
        foreach (string entry in compatible)
        {
            ArgumentException.ThrowIfNullOrEmpty(entry, nameof(compatible));
            if (entry.Contains('\0', StringComparison.Ordinal))
            {
                throw new ArgumentException("A compatible entry has no NUL character.", nameof(compatible));
            }
        }
        Compatible = [.. compatible];
    }

    /// <summary>The device tree compatible entries, most specific first (empty for an ACPI device).</summary>
    public IReadOnlyList<string> Compatible { get; }

    /// <summary>
    /// The ACPI hardware id (e.g. "AMDI8001") when the device is enumerated by ACPI; null for a device
    /// tree device. vfio-platform probes ACPI first: an ACPI device's reset handler is its <c>_RST</c> method.
    /// </summary>
    public string? AcpiHid { get; init; }

    /// <summary>
    /// Whether vfio-platform finds a reset handler for the device: a reset module registered for its
    /// first compatible entry (in Linux: calxeda,hb-xgmac and amd,xgbe-seattle-v1a, plus a few
    /// vendors' out of tree), or an ACPI <c>_RST</c> method. Without one, vfio-platform refuses to
    /// bind the device unless <see cref="SimulatedKernel.PlatformResetRequired"/> is false, and the
    /// device reports no <c>VFIO_DEVICE_FLAGS_RESET</c>. True by default.
    /// </summary>
    public bool HasResetHandler { get; init; } = true;

    /// <summary>
    /// A positive errno the reset handler fails with (0, the default: it succeeds). A failing reset
    /// makes <c>VFIO_DEVICE_RESET</c> fail, and the open of the device too while reset is required.
    /// </summary>
    public int ResetErrno { get; set; }

    /// <inheritdoc/>
    public override bool SupportsReset => HasResetHandler;

    /// <summary>Declares the next memory region (an <c>IORESOURCE_MEM</c> resource) and returns its index.</summary>
    /// <param name="size">Its size in bytes.</param>
    /// <param name="mappable">Whether the resource is page-aligned so that user space may mmap it (only page-multiple sizes can be).</param>
    /// <param name="readOnly">An <c>IORESOURCE_READONLY</c> resource: readable, not writable.</param>
    public int AddRegion(ulong size, bool mappable = true, bool readOnly = false)
    {
        ThrowIfSealed();
        ArgumentOutOfRangeException.ThrowIfZero(size);
        _regions.Add((size, mappable && size % SimulatedKernel.PageSize == 0, readOnly));
        _memory.Add(new byte[Math.Min(size, 64UL << 20)]);
        return _regions.Count - 1;
    }

    /// <summary>Declares the next interrupt and returns its IRQ index.</summary>
    /// <param name="levelTriggered">
    /// A level-triggered interrupt is maskable and masked automatically when it fires, until
    /// unmasked; an edge-triggered one is neither maskable nor automasked (as vfio-platform reports them).
    /// </param>
    public int AddIrq(bool levelTriggered = true)
    {
        ThrowIfSealed();
        _levelTriggered.Add(levelTriggered);
        return _levelTriggered.Count - 1;
    }

    /// <summary>
    /// The device stops asserting level-triggered interrupt <paramref name="irqIndex"/> (its cause was
    /// cleared): an assertion still pending because the line was masked, or had no eventfd, is
    /// dropped, so unmasking does not fire it. Call it from <see cref="WriteRegister"/> when the driver
    /// acknowledges the interrupt. An edge already latched stays pending.
    /// </summary>
    /// <param name="irqIndex">The IRQ index.</param>
    public void LowerInterrupt(int irqIndex)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(irqIndex);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(irqIndex, _levelTriggered.Count);
        if (_levelTriggered[irqIndex] && Device is { } device)
        {
            device.Kernel.LowerInterrupt(device, irqIndex);
        }
    }

    internal bool IsLevelTriggered(int index) => _levelTriggered[index];

    /// <summary>The NUL-separated form of <see cref="Compatible"/> that <c>of_node/compatible</c> holds.</summary>
    internal string CompatibleProperty => string.Concat(Compatible.Select(c => c + "\0"));

    /// <summary>Reads a register of region <paramref name="region"/>. By default regions are plain memory.</summary>
    /// <param name="region">The region index.</param>
    /// <param name="offset">The offset in the region.</param>
    /// <param name="size">1, 2, 4 or 8 bytes.</param>
    protected virtual ulong ReadRegister(int region, ulong offset, int size) => ReadStore(_memory[region], offset, size);

    /// <summary>Writes a register of region <paramref name="region"/>. By default regions are plain memory.</summary>
    /// <param name="region">The region index.</param>
    /// <param name="offset">The offset in the region.</param>
    /// <param name="size">1, 2, 4 or 8 bytes.</param>
    /// <param name="value">The value, in its low <paramref name="size"/> bytes.</param>
    protected virtual void WriteRegister(int region, ulong offset, int size, ulong value) => WriteStore(_memory[region], offset, size, value);

    /// <inheritdoc/>
    protected override void OnReset()
    {
        foreach (var memory in _memory)
        {
            Array.Clear(memory);
        }
    }

    private void ThrowIfSealed()
    {
        if (_sealed)
        {
            throw new InvalidOperationException("The model is in use by a kernel; define it before adding it.");
        }
    }

    internal override void Seal()
    {
        if (_sealed)
        {
            throw new InvalidOperationException("The model is already in use by a kernel.");
        }
        if (Compatible.Count == 0 && string.IsNullOrEmpty(AcpiHid))
        {
            throw new InvalidOperationException("A platform device needs a compatible entry (device tree) or an ACPI hardware id.");
        }
        _sealed = true;
    }

    internal override uint InfoFlags => VfioUapi.VFIO_DEVICE_FLAGS_PLATFORM;

    internal override int RegionCount => _regions.Count;

    internal override int IrqIndexCount => _levelTriggered.Count;

    internal override RegionDescriptor DescribeRegion(int index)
    {
        var (size, mappable, readOnly) = _regions[index];
        uint flags = VfioUapi.VFIO_REGION_INFO_FLAG_READ
            | (readOnly ? 0 : VfioUapi.VFIO_REGION_INFO_FLAG_WRITE)
            | (mappable ? VfioUapi.VFIO_REGION_INFO_FLAG_MMAP : 0);
        return new RegionDescriptor(size, flags);
    }

    internal override bool DescribeIrq(int index, out uint flags, out int count)
    {
        // vfio_platform_irq_init: only level-triggered lines can be masked, and they are automasked.
        flags = VfioUapi.VFIO_IRQ_INFO_EVENTFD
            | (_levelTriggered[index] ? VfioUapi.VFIO_IRQ_INFO_MASKABLE | VfioUapi.VFIO_IRQ_INFO_AUTOMASKED : 0);
        count = 1;
        return true;
    }

    internal override long AccessRegion(int index, ulong offset, Span<byte> data, bool write)
    {
        lock (Gate)
        {
            return AccessRegistersLocked(index, offset, data, write);
        }
    }

    private protected override ulong ReadRegisterLocked(int region, ulong offset, int size)
    {
        LockAssert.Held(Gate);
        return ReadRegister(region, offset, size);
    }

    private protected override void WriteRegisterLocked(int region, ulong offset, int size, ulong value)
    {
        LockAssert.Held(Gate);
        WriteRegister(region, offset, size, value);
    }
}
