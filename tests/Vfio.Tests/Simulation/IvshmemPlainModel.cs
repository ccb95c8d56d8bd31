using Vfio.Testing;

namespace Vfio.Tests.Simulation;

/// <summary>
/// QEMU's ivshmem-plain (<c>-object memory-backend-ram,id=m,size=1M -device ivshmem-plain,memdev=m</c>,
/// hw/misc/ivshmem.c) as the VM suite's machine has it: a conventional function with no capability
/// and no INTx, BAR0 its registers (interrupt mask and status; IVPosition reads 0 without a server),
/// BAR2 the shared memory. A reset clears the registers and leaves the memory, which belongs to the
/// host; with no reset method the kernel never resets it anyway.
/// </summary>
internal sealed class IvshmemPlainModel : PciDeviceModel
{
    private readonly byte[] _memory = new byte[1 << 20];
    private uint _interruptMask;
    private uint _interruptStatus;

    public IvshmemPlainModel()
        : base(0x1af4, 0x1110, 0x050000)
    {
        Revision = 1;
        SubsystemVendorId = 0x1af4;
        SubsystemId = 0x1100;
        InterruptPin = 0;
        HasPowerManagement = false;
        DefineBar(0, 0x100);
        DefineBar(2, 1 << 20, PciBarKind.Memory64, prefetchable: true);
    }

    protected override ulong ReadBar(int bar, ulong offset, int size) => (bar, offset) switch
    {
        (2, _) => ReadStore(_memory, offset, size),
        (0, 0) => _interruptMask,
        (0, 4) => _interruptStatus,
        _ => 0,
    };

    protected override void WriteBar(int bar, ulong offset, int size, ulong value)
    {
        if (bar == 2)
        {
            WriteStore(_memory, offset, size, value);
        }
        else if (bar == 0 && offset == 0)
        {
            _interruptMask = (uint)value;
        }
    }

    protected override void OnReset()
    {
        base.OnReset();
        _interruptMask = 0;
        _interruptStatus = 0;
    }
}
