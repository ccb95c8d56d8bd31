namespace Vfio.Testing;

public sealed partial class SimulatedKernel
{
    private readonly List<DmaFault> _dmaFaults = [];

    /// <summary>The DMA accesses the IOMMU refused so far, oldest first.</summary>
    public IReadOnlyList<DmaFault> DmaFaults
    {
        get
        {
            using (Enter())
            {
                return [.. _dmaFaults];
            }
        }
    }

    /// <summary>A device's DMA through its container's IOMMU mappings; see <see cref="DeviceModel.DmaRead"/>.</summary>
    internal unsafe bool Dma(SimulatedDevice device, ulong iova, Span<byte> data, bool write)
    {
        // Read the command register before taking the kernel lock: the kernel never waits for a model.
        bool busMaster = device.Model is not PciDeviceModel pci || pci.BusMasterEnabled;
        using (Enter())
        {
            if (!busMaster)
            {
                return FaultLocked(device, iova, data.Length, write, "bus mastering is disabled in the command register");
            }
            var container = device.Group.Container;
            if (container?.Type1 is not { } iommu)
            {
                return FaultLocked(device, iova, data.Length, write,
                    container?.NoIommuDriver == true ? "DMA without an IOMMU is not simulated" : "the group is not in a container with an IOMMU");
            }
            int done = 0;
            while (done < data.Length)
            {
                ulong address = iova + (ulong)done;
                var mapping = iommu.Find(address);
                if (mapping is null)
                {
                    return FaultLocked(device, address, data.Length - done, write, "no mapping");
                }
                if (write ? !mapping.Write : !mapping.Read)
                {
                    return FaultLocked(device, address, data.Length - done, write, write ? "the mapping is not writable by the device" : "the mapping is not readable by the device");
                }
                int n = (int)Math.Min((ulong)(data.Length - done), mapping.End - address);
                var memory = new Span<byte>((byte*)mapping.Vaddr + (address - mapping.Iova), n);
                if (write)
                {
                    data.Slice(done, n).CopyTo(memory);
                }
                else
                {
                    memory.CopyTo(data.Slice(done, n));
                }
                done += n;
            }
            return true;
        }
    }

    private bool FaultLocked(SimulatedDevice device, ulong iova, int length, bool write, string reason)
    {
        _dmaFaults.Add(new DmaFault(device.Name, iova, length, write, reason));
        return false;
    }
}
