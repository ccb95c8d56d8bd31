using Vfio.Interop;

namespace Vfio.Testing;

/// <summary>What VFIO_DEVICE_GET_REGION_INFO says about one region.</summary>
internal readonly record struct RegionDescriptor(ulong Size, uint Flags, IReadOnlyList<SparseMmapArea>? SparseAreas = null, bool MsixMappable = false)
{
    public static RegionDescriptor None => new(0, 0);
}

/// <summary>
/// The behaviour of a simulated device: its registers, interrupts and DMA. Derive from
/// <see cref="PciDeviceModel"/> or <see cref="PlatformDeviceModel"/> and override their register hooks.
/// </summary>
/// <remarks>
/// The kernel calls a model's hooks one at a time (never two at once for the same model), and never
/// while it holds its own lock, so a hook may raise interrupts and perform DMA. Work a device does
/// after a register write returns (a DMA transfer, a command completing) is scheduled with
/// <see cref="ScheduleWork(Action)"/> and runs under the same rule. docs/device-models.md is the
/// guide for model authors.
/// </remarks>
public abstract partial class DeviceModel
{
    private protected DeviceModel()
    {
        _drain = new WorkDrain(this);
    }

    // The model's own thread-pool work item for its background work (DeviceModel.Work.cs).
    private readonly WorkDrain _drain;

    /// <summary>The kernel device that hosts this model, once it was added to a kernel.</summary>
    internal SimulatedDevice? Device { get; set; }

    /// <summary>
    /// Serialises the model's hooks: every register hook and reset runs under it. Taken before the
    /// kernel lock, never under it (the kernel defers model calls until its lock is released).
    /// </summary>
    internal object Gate { get; } = new();

    /// <summary>
    /// The model's lock: held while every hook and every piece of scheduled work runs. Take it in
    /// members a test reads from outside (a register's value, a counter), so that they see the
    /// device between two hooks, never in the middle of one.
    /// </summary>
    protected object ModelLock => Gate;

    /// <summary>
    /// Whether the device can be reset (VFIO_DEVICE_FLAGS_RESET, VFIO_DEVICE_RESET). True unless
    /// overridden. For a PCI function the kernel decides, as vfio-pci does (see <see cref="PciDeviceModel.SupportsReset"/>).
    /// </summary>
    public virtual bool SupportsReset => true;

    /// <summary>Whether the device file reports VFIO_DEVICE_FLAGS_RESET and takes VFIO_DEVICE_RESET now.</summary>
    internal virtual bool ResetWorks => SupportsReset;

    /// <summary>
    /// Raises interrupt <paramref name="vector"/> of IRQ index <paramref name="irqIndex"/> (for PCI: 0 INTx,
    /// 1 MSI, 2 MSI-X, 3 ERR, 4 REQ). Returns true when it was delivered to an eventfd the driver
    /// registered; otherwise it stays pending (masked, not enabled or without eventfd) and is delivered
    /// when the driver unmasks or registers one.
    /// </summary>
    /// <param name="irqIndex">The IRQ index, as in VFIO_DEVICE_GET_IRQ_INFO.</param>
    /// <param name="vector">The vector within the index.</param>
    public bool RaiseInterrupt(int irqIndex, int vector = 0) =>
        Device is { } device && device.Kernel.RaiseInterrupt(device, irqIndex, vector);

    /// <summary>
    /// Reads memory at <paramref name="iova"/> through the IOMMU, as the device's DMA would. Returns false,
    /// and records a <see cref="DmaFault"/>, when any byte is not mapped readable for the device.
    /// </summary>
    /// <param name="iova">The I/O virtual address the device reads from.</param>
    /// <param name="destination">Receives the bytes.</param>
    public bool DmaRead(ulong iova, Span<byte> destination) =>
        Device is { } device && device.Kernel.Dma(device, iova, destination, write: false);

    /// <summary>
    /// Writes memory at <paramref name="iova"/> through the IOMMU, as the device's DMA would. Returns false,
    /// and records a <see cref="DmaFault"/>, when any byte is not mapped writable for the device.
    /// </summary>
    /// <param name="iova">The I/O virtual address the device writes to.</param>
    /// <param name="source">The bytes to write.</param>
    public unsafe bool DmaWrite(ulong iova, ReadOnlySpan<byte> source)
    {
        if (Device is not { } device)
        {
            return false;
        }
        fixed (byte* p = source)
        {
            return device.Kernel.Dma(device, iova, new Span<byte>(p, source.Length), write: true);
        }
    }

    /// <summary>
    /// Puts the device's registers back to their reset values: called when the kernel resets the
    /// device (VFIO_DEVICE_RESET, a hot reset, and for a PCI function the resets vfio-pci does at open
    /// and close when the function has a reset method), with the model's lock held.
    /// </summary>
    protected virtual void OnReset()
    {
    }

    internal void ResetFromKernel()
    {
        lock (Gate)
        {
            ResetLocked();
        }
    }

    /// <summary>Resets the device's registers; the Gate is held.</summary>
    internal void ResetLocked()
    {
        LockAssert.Held(Gate);
        OnReset();
    }

    /// <summary>
    /// A reset the kernel wraps in a save and restore of config space (VFIO_DEVICE_RESET and hot
    /// reset: pci_dev_save_and_disable, reset, pci_dev_restore): the device's own state is reset,
    /// config space reads as before.
    /// </summary>
    internal virtual void ResetKeepingConfig() => ResetFromKernel();

    /// <summary>Called once when the model is added to a kernel: later definitions are refused.</summary>
    internal virtual void Seal()
    {
    }

    /// <summary>The first open of the device (the bus driver's enable); runs outside the kernel lock.</summary>
    internal virtual void Enable()
    {
        if (SupportsReset)
        {
            ResetFromKernel();
        }
    }

    /// <summary>The last close of the device (the bus driver's disable); runs outside the kernel lock.</summary>
    internal virtual void Disable()
    {
        if (SupportsReset)
        {
            ResetFromKernel();
        }
    }

    internal abstract uint InfoFlags { get; }

    internal abstract int RegionCount { get; }

    internal abstract RegionDescriptor DescribeRegion(int index);

    /// <summary>Whether VFIO_DEVICE_GET_REGION_INFO answers for the index (EINVAL otherwise).</summary>
    internal virtual bool HasRegion(int index) => index >= 0 && index < RegionCount;

    internal abstract int IrqIndexCount { get; }

    /// <summary>VFIO_DEVICE_GET_IRQ_INFO for one index; false when the index is invalid for this device.</summary>
    internal abstract bool DescribeIrq(int index, out uint flags, out int count);

    /// <summary>The number of vectors SET_IRQS accepts for an index (0 when the index does not exist).</summary>
    internal int IrqCount(int index) => DescribeIrq(index, out _, out int count) ? count : 0;

    /// <summary>
    /// Whether a pread or pwrite that runs past the region's end is refused (a negative errno) rather
    /// than cut short; 0 to cut it short, as vfio-pci does for BARs.
    /// </summary>
    internal virtual int RefusePastEnd(int index) => 0;

    /// <summary>A pread or pwrite inside a region; returns the count or a negative errno. Runs outside the kernel lock.</summary>
    internal abstract long AccessRegion(int index, ulong offset, Span<byte> data, bool write);

    /// <summary>
    /// Whether a CPU access through a mapping of the device's regions reaches them now. vfio-pci says
    /// no (the access is SIGBUS) while memory space is off or the function is in D3.
    /// </summary>
    internal virtual bool MappedMemoryReachable => true;

    /// <summary>A read of a mapped region (a trapped mmap access): the register, under the Gate.</summary>
    internal ulong ReadMapped(int index, ulong offset, int size)
    {
        lock (Gate)
        {
            return ReadRegisterLocked(index, offset, size);
        }
    }

    /// <summary>A write to a mapped region (a trapped mmap access): the register, under the Gate.</summary>
    internal void WriteMapped(int index, ulong offset, int size, ulong value)
    {
        lock (Gate)
        {
            WriteRegisterLocked(index, offset, size, value);
        }
    }

    /// <summary>A pread or pwrite of a region's registers, in the pieces <see cref="Chunked"/> makes; the Gate is held.</summary>
    internal long AccessRegistersLocked(int index, ulong offset, Span<byte> data, bool write)
    {
        LockAssert.Held(Gate);
        return Chunked(offset, data, write, (o, s) => ReadRegisterLocked(index, o, s), (o, s, v) => WriteRegisterLocked(index, o, s, v));
    }

    /// <summary>Reads a register of a region (a BAR, a platform resource) as the device answers it; the Gate is held.</summary>
    private protected abstract ulong ReadRegisterLocked(int region, ulong offset, int size);

    /// <summary>Writes a register of a region as the device takes it; the Gate is held.</summary>
    private protected abstract void WriteRegisterLocked(int region, ulong offset, int size, ulong value);

    /// <summary>Splits an access into naturally aligned pieces of at most 4 bytes, as vfio-pci's region access does.</summary>
    internal static long Chunked(ulong offset, Span<byte> data, bool write, Func<ulong, int, ulong> read, Action<ulong, int, ulong> store)
    {
        int done = 0;
        while (done < data.Length)
        {
            ulong position = offset + (ulong)done;
            int remaining = data.Length - done;
            int size = remaining >= 4 && position % 4 == 0 ? 4 : remaining >= 2 && position % 2 == 0 ? 2 : 1;
            var piece = data.Slice(done, size);
            if (write)
            {
                ulong value = 0;
                for (int i = size - 1; i >= 0; i--)
                {
                    value = (value << 8) | piece[i];
                }
                store(position, size, value);
            }
            else
            {
                ulong value = read(position, size);
                for (int i = 0; i < size; i++)
                {
                    piece[i] = (byte)(value >> (8 * i));
                }
            }
            done += size;
        }
        return done;
    }

    /// <summary>Reads little-endian bytes of a backing store as a register value.</summary>
    internal static ulong ReadStore(byte[] store, ulong offset, int size)
    {
        ulong value = 0;
        for (int i = size - 1; i >= 0; i--)
        {
            ulong at = offset + (ulong)i;
            value = (value << 8) | (at < (ulong)store.Length ? store[at] : 0xffUL);
        }
        return value;
    }

    /// <summary>Writes a register value into a backing store as little-endian bytes.</summary>
    internal static void WriteStore(byte[] store, ulong offset, int size, ulong value)
    {
        for (int i = 0; i < size; i++)
        {
            ulong at = offset + (ulong)i;
            if (at < (ulong)store.Length)
            {
                store[at] = (byte)(value >> (8 * i));
            }
        }
    }

    internal static int NoSuchRegion => -Errno.EINVAL;
}
