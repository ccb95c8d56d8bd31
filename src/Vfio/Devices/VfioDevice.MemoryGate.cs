namespace Vfio;

// The library never lets a register access fault the process: before it does anything after which
// the device's memory stops answering (a config write that clears memory space or enters D3, a reset,
// a hot reset, runtime low power), it suspends every mapped region (all-ones in place, see
// MmioRegion), and it maps them back once the memory answers again. vfio-pci revokes BAR mappings in
// those states, and a touch of one would be SIGBUS.
public abstract partial class VfioDevice
{
    private readonly Lock _memoryGate = new(); // orders suspending and resuming the regions, and admitting new ones
    private bool _memorySuspended; // the regions are suspended: the library turned the memory off (or is about to)
    private bool _lowPower;

    /// <summary>
    /// Suspends every mapped region of the device before its memory stops answering. Throws (and
    /// leaves every region as it was) when one cannot be made safe: the caller must not go on.
    /// </summary>
    internal void SuspendMappedRegions()
    {
        lock (_memoryGate)
        {
            var done = new List<MmioRegion>();
            try
            {
                foreach (var region in LiveRegions())
                {
                    region.Suspend();
                    done.Add(region);
                }
            }
            catch
            {
                foreach (var region in done)
                {
                    ResumeOrLog(region);
                }
                throw;
            }
            _memorySuspended = true;
        }
    }

    /// <summary>Maps the regions back if they were suspended and the device's memory answers now.</summary>
    internal void ResumeMappedRegions()
    {
        lock (_memoryGate)
        {
            if (!_memorySuspended || _lowPower || !MemoryAnswers())
            {
                return;
            }
            bool all = true;
            foreach (var region in LiveRegions())
            {
                all &= ResumeOrLog(region);
            }
            _memorySuspended = !all; // a region that could not be mapped back is tried again next time
        }
    }

    /// <summary>
    /// Called before the library writes to region <paramref name="index"/> (through <see cref="WriteRegion"/>
    /// or a region's file access): suspends the mapped regions when the write stops the device's
    /// memory from answering. True when <see cref="ResumeMappedRegions"/> must be called after the write.
    /// </summary>
    internal bool GateRegionWrite(int index, ulong offset, ReadOnlySpan<byte> data) => BeforeRegionWrite(index, offset, data);

    /// <summary>Tracks a region just opened, suspending it first while the device's memory does not answer.</summary>
    internal void AdmitRegion(MmioRegion region)
    {
        lock (_memoryGate)
        {
            if (_memorySuspended && region.IsMapped)
            {
                region.Suspend();
            }
            TrackResource(region);
        }
    }

    /// <summary>Runs <paramref name="enter"/> (a low power entry) with the regions suspended; they stay so until low power is left.</summary>
    private protected void SuspendForLowPower(Action enter)
    {
        lock (_memoryGate)
        {
            SuspendMappedRegions();
            try
            {
                enter();
            }
            catch
            {
                ResumeMappedRegions();
                throw;
            }
            _lowPower = true;
        }
    }

    /// <summary>Runs <paramref name="exit"/> (the low power exit) and maps the regions back.</summary>
    private protected void ResumeAfterLowPower(Action exit)
    {
        lock (_memoryGate)
        {
            exit();
            _lowPower = false;
            ResumeMappedRegions();
        }
    }

    /// <summary>Forgets the memory state of an earlier open: a device file opens with its memory answering.</summary>
    private void ResetMemoryGate()
    {
        lock (_memoryGate)
        {
            _memorySuspended = false;
            _lowPower = false;
        }
    }

    /// <summary>
    /// Whether the device's memory answers now (asked only after the library suspended the regions).
    /// PCI: memory space on and the function not in D3.
    /// </summary>
    private protected virtual bool MemoryAnswers() => true;

    /// <summary>
    /// Suspends the mapped regions when a write to region <paramref name="index"/> stops the device's
    /// memory from answering (PCI: a config write that clears memory space or enters D3); true when
    /// the memory may answer differently after it, so that the regions must be looked at again.
    /// </summary>
    private protected virtual bool BeforeRegionWrite(int index, ulong offset, ReadOnlySpan<byte> data) => false;

    /// <summary>The device's regions that are mapped (a region reached only through the file is answered by the kernel: EIO while memory is off).</summary>
    private MmioRegion[] LiveRegions()
    {
        lock (_resources)
        {
            return [.. _resources.OfType<MmioRegion>().Where(r => r.IsMapped)];
        }
    }

    private bool ResumeOrLog(MmioRegion region)
    {
        try
        {
            region.Resume();
            return true;
        }
        catch (VfioException e)
        {
            Log.RegionRemapFailed(Registry.Logger, region.ToString(), e);
            return false;
        }
    }
}
