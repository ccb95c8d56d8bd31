using Vfio.Interop;

namespace Vfio;

public abstract partial class VfioDevice
{
    /// <summary>Describes an interrupt index (<c>VFIO_DEVICE_GET_IRQ_INFO</c>).</summary>
    /// <param name="index">The index (for PCI, see <see cref="PciIrq"/>).</param>
    public IrqInfo GetIrqInfo(int index) => IrqInfo.Query(Kernel, DeviceFd, index, ErrorTarget);

    /// <summary>
    /// Wires vectors of an interrupt index to eventfds and starts waiting on them. For PCI MSI this
    /// also enables MSI in the device; dispose the set to disable the vectors again.
    /// </summary>
    /// <param name="index">The index (for PCI, see <see cref="PciIrq"/>).</param>
    /// <param name="count">How many vectors, from <paramref name="start"/>.</param>
    /// <param name="start">The first vector.</param>
    /// <exception cref="InvalidOperationException">The library wires this index itself (PCI's REQ: see <see cref="OnReleaseRequested"/>; ERR: see <see cref="PciVfioDevice.ErrorDetected"/>).</exception>
    /// <exception cref="VfioNotSupportedException">The index has no vectors.</exception>
    /// <exception cref="VfioException">The kernel refused, e.g. EINVAL for MSI while MSI-X is enabled, or for vectors beyond those enabled first (Linux 6.1 sizes MSI and MSI-X once: dispose the set and enable again to resize).</exception>
    public InterruptSet EnableInterrupts(int index, int count = 1, int start = 0)
    {
        if (IsLibraryIrq(index))
        {
            throw new InvalidOperationException(
                $"Interrupt index {index} of {Name} is wired by the library: override OnReleaseRequested for REQ, subscribe to ErrorDetected for ERR.");
        }
        return InterruptSet.Enable(this, index, start, count);
    }

    /// <summary>
    /// Describes every interrupt index the device file has (<see cref="VfioDeviceInfo.IrqCount"/> of them).
    /// An index the kernel refuses to describe (EINVAL: vfio-pci's ERR on a function that is not PCI
    /// Express) is reported with count 0 and no flags.
    /// </summary>
    public IReadOnlyList<IrqInfo> GetIrqInfos()
    {
        uint n = (Info ?? throw new InvalidOperationException($"Device {Name} is not open.")).IrqCount;
        var infos = new IrqInfo[n];
        for (int i = 0; i < infos.Length; i++)
        {
            infos[i] = IrqInfo.QueryOrNone(Kernel, DeviceFd, i, ErrorTarget);
        }
        return infos;
    }
}
