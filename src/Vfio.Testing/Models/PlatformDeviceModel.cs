using Vfio.Interop;

namespace Vfio.Testing;

/// <summary>
/// A simulated platform device for vfio-platform: memory regions (index &lt;&lt; 40 in the device
/// file) read and written through <see cref="ReadRegister"/> and <see cref="WriteRegister"/> (plain
/// memory unless overridden), and one interrupt per IRQ index. No configuration space.
/// </summary>
public class PlatformDeviceModel : DeviceModel
{
    private readonly List<(ulong Size, bool Mappable)> _regions = [];
    private readonly List<bool> _levelTriggered = [];
    private readonly List<byte[]> _memory = [];
    private bool _sealed;

    /// <summary>Creates a platform device that matches the device-tree compatible string <paramref name="compatible"/>.</summary>
    /// <param name="compatible">The first entry of its <c>compatible</c> property, e.g. "arm,pl330".</param>
    public PlatformDeviceModel(string compatible)
    {
        ArgumentException.ThrowIfNullOrEmpty(compatible);
        Compatible = compatible;
    }

    /// <summary>The device-tree compatible string.</summary>
    public string Compatible { get; }

    /// <summary>Declares the next memory region and returns its index.</summary>
    /// <param name="size">Its size in bytes.</param>
    /// <param name="mappable">Whether user space may mmap it (only page-multiple sizes can be).</param>
    public int AddRegion(ulong size, bool mappable = true)
    {
        ThrowIfSealed();
        ArgumentOutOfRangeException.ThrowIfZero(size);
        _regions.Add((size, mappable && size % SimulatedKernel.PageSize == 0));
        _memory.Add(new byte[Math.Min(size, 64UL << 20)]);
        return _regions.Count - 1;
    }

    /// <summary>Declares the next interrupt and returns its IRQ index.</summary>
    /// <param name="levelTriggered">A level-triggered interrupt is masked automatically when it fires, until unmasked.</param>
    public int AddIrq(bool levelTriggered = true)
    {
        ThrowIfSealed();
        _levelTriggered.Add(levelTriggered);
        return _levelTriggered.Count - 1;
    }

    internal bool IsLevelTriggered(int index) => _levelTriggered[index];

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
        _sealed = true;
    }

    internal override uint InfoFlags => VfioUapi.VFIO_DEVICE_FLAGS_PLATFORM;

    internal override int RegionCount => _regions.Count;

    internal override int IrqIndexCount => _levelTriggered.Count;

    internal override RegionDescriptor DescribeRegion(int index)
    {
        var (size, mappable) = _regions[index];
        uint flags = VfioUapi.VFIO_REGION_INFO_FLAG_READ | VfioUapi.VFIO_REGION_INFO_FLAG_WRITE
            | (mappable ? VfioUapi.VFIO_REGION_INFO_FLAG_MMAP : 0);
        return new RegionDescriptor(size, flags);
    }

    internal override bool DescribeIrq(int index, out uint flags, out int count)
    {
        flags = VfioUapi.VFIO_IRQ_INFO_EVENTFD | VfioUapi.VFIO_IRQ_INFO_MASKABLE
            | (_levelTriggered[index] ? VfioUapi.VFIO_IRQ_INFO_AUTOMASKED : 0);
        count = 1;
        return true;
    }

    internal override long AccessRegion(int index, ulong offset, Span<byte> data, bool write)
    {
        lock (Gate)
        {
            return Chunked(offset, data, write, (o, s) => ReadRegister(index, o, s), (o, s, v) => WriteRegister(index, o, s, v));
        }
    }

    internal override ulong ReadMapped(int index, ulong offset, int size)
    {
        lock (Gate)
        {
            return ReadRegister(index, offset, size);
        }
    }

    internal override void WriteMapped(int index, ulong offset, int size, ulong value)
    {
        lock (Gate)
        {
            WriteRegister(index, offset, size, value);
        }
    }
}
