using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio;

/// <summary>Which way a device may use a DMA buffer.</summary>
[Flags]
public enum DmaAccess
{
    /// <summary>The device reads the buffer (host to device).</summary>
    DeviceReads = 1,

    /// <summary>The device writes the buffer (device to host).</summary>
    DeviceWrites = 2,

    /// <summary>Both.</summary>
    ReadWrite = DeviceReads | DeviceWrites,
}

/// <summary>
/// Page-aligned host memory mapped into the device's IOMMU at <see cref="Iova"/>: the address the
/// device uses for it. Disposing it unmaps it from the IOMMU and frees the memory.
/// </summary>
/// <remarks>
/// The buffer holds a reference on its device, so unregistering waits for it. When the device
/// closes, buffers still alive are unmapped from the IOMMU (the device can no longer reach them);
/// their memory stays valid until they are disposed.
/// </remarks>
public sealed unsafe class DmaBuffer : IDisposable, IDeviceResource
{
    private readonly VfioDevice _device;
    private readonly SafeMapping _memory;
    private VfioContainer? _container;
    private DeviceReference _reference;
    private int _state; // 0 mapped, 1 unmapped (revoked), 2 disposed

    internal DmaBuffer(VfioDevice device, VfioContainer container, SafeMapping memory, ulong iova, ulong length, DmaAccess access, DeviceReference reference)
    {
        _device = device;
        _container = container;
        _memory = memory;
        Iova = iova;
        Length = length;
        Access = access;
        _reference = reference;
    }

    /// <summary>The address the device uses for the buffer.</summary>
    public ulong Iova { get; }

    /// <summary>The buffer's length in bytes (a multiple of the IOMMU page size).</summary>
    public ulong Length { get; }

    /// <summary>Which way the device may use it.</summary>
    public DmaAccess Access { get; }

    /// <summary>True while the device can reach the buffer through the IOMMU.</summary>
    public bool IsMapped => Volatile.Read(ref _state) == 0;

    /// <summary>The buffer's memory.</summary>
    /// <exception cref="ObjectDisposedException">The buffer was disposed.</exception>
    public Span<byte> Span
    {
        get
        {
            ObjectDisposedException.ThrowIf(Volatile.Read(ref _state) == 2, this);
            return new Span<byte>((void*)_memory.Address, checked((int)Length));
        }
    }

    internal nint HostAddress => _memory.Address;

    /// <summary>The IOVA of byte <paramref name="offset"/> of the buffer.</summary>
    /// <param name="offset">An offset inside the buffer.</param>
    public ulong IovaAt(ulong offset)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(offset, Length);
        return Iova + offset;
    }

    /// <summary>Unmaps the buffer from the IOMMU and frees its memory.</summary>
    public void Dispose()
    {
        if (Unmap())
        {
            _device.ForgetResource(this);
        }
        if (Interlocked.Exchange(ref _state, 2) != 2)
        {
            _memory.Dispose();
        }
    }

    /// <inheritdoc/>
    public override string ToString() => $"DMA buffer {Iova:#x}+{Length:#x} of {_device.Name}";

    bool IDeviceResource.Revoke() => Unmap();

    /// <summary>The container dropped every mapping (its last group left): nothing to unmap any more.</summary>
    internal void Orphan() => Volatile.Write(ref _container, null);

    private bool Unmap()
    {
        if (Interlocked.CompareExchange(ref _state, 1, 0) != 0)
        {
            return false;
        }
        try
        {
            Interlocked.Exchange(ref _container, null)?.Unmap(this);
        }
        finally
        {
            _reference.Dispose();
        }
        return true;
    }

    internal static DmaBuffer Allocate(VfioDevice device, ulong length, DmaAccess access, ulong? iova)
    {
        ArgumentOutOfRangeException.ThrowIfZero(length);
        if ((access & DmaAccess.ReadWrite) == 0)
        {
            throw new ArgumentException("A DMA buffer must be readable or writable by the device.", nameof(access));
        }
        var container = device.Group?.Container
            ?? throw new InvalidOperationException($"Device {device.Name} is not open: open it before allocating DMA memory.");
        ulong page = container.IommuInfo.MinPageSize;
        length = (length + page - 1) & ~(page - 1);
        if (!device.TryGet(out var reference))
        {
            throw new InvalidOperationException($"Device {device.Name} is being unregistered.");
        }
        SafeMapping? memory = null;
        try
        {
            VfioErrors.Check(device.Kernel.Mmap(null, (nuint)length, Flags.PROT_READ | Flags.PROT_WRITE, Flags.MAP_PRIVATE | Flags.MAP_POPULATE, 0, out memory),
                "mmap (DMA memory)", device.ErrorTarget);
            var buffer = container.Map(device, memory, length, access, iova, reference);
            device.TrackResource(buffer);
            return buffer;
        }
        catch
        {
            memory?.Dispose();
            reference.Dispose();
            throw;
        }
    }
}
