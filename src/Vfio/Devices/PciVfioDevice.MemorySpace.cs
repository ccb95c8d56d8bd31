namespace Vfio;

// What makes a PCI function's memory stop answering through vfio-pci (__vfio_pci_memory_enabled):
// memory space off in the command register, or the function in D3hot through its power management
// capability's PMCSR. The library sees both in its own config writes.
public abstract partial class PciVfioDevice
{
    private int _pmcsr = -1; // PMCSR's config offset; 0 without power management; -1 not looked up yet

    private protected override bool BeforeRegionWrite(int index, ulong offset, ReadOnlySpan<byte> data)
    {
        if (index != ConfigRegion)
        {
            return false;
        }
        bool command = Covers(offset, data.Length, PciConfig.Command);
        // Capabilities live from 0x40 on: a write below it cannot reach PMCSR, and needs no lookup.
        int pmcsr = offset + (ulong)data.Length > 0x40 ? PmcsrOffset() : 0;
        bool power = pmcsr != 0 && Covers(offset, data.Length, pmcsr);
        if (!command && !power)
        {
            return false;
        }
        bool memoryOff = command && (data[(int)((ulong)PciConfig.Command - offset)] & PciConfig.CommandMemory) == 0;
        bool d3 = power && (data[(int)((ulong)pmcsr - offset)] & 3) == 3;
        if (memoryOff || d3)
        {
            SuspendMappedRegions();
        }
        return true;
    }

    private protected override bool MemoryAnswers()
    {
        if ((ReadConfig16(PciConfig.Command) & PciConfig.CommandMemory) == 0)
        {
            return false;
        }
        int pmcsr = PmcsrOffset();
        return pmcsr == 0 || (ReadConfig16(pmcsr) & 3) != 3;
    }

    private static bool Covers(ulong offset, int length, int at) => (ulong)at >= offset && (ulong)at < offset + (ulong)length;

    /// <summary>PMCSR's offset (power management capability + 4), looked up once: the capability list is the function's own.</summary>
    private int PmcsrOffset()
    {
        int known = Volatile.Read(ref _pmcsr);
        if (known < 0)
        {
            known = TryFindCapability(PciCapabilityId.PowerManagement, out var pm) ? pm.Offset + 4 : 0;
            Volatile.Write(ref _pmcsr, known);
        }
        return known;
    }
}
