using System.Globalization;
using Vfio.Interop;

namespace Vfio.Testing;

public sealed partial class SimulatedKernel
{
    /// <summary>The size of a simulated hugepage: 2 MiB, as x86-64's default.</summary>
    internal const ulong HugePageSize = 2UL << 20;

    private readonly List<DmaFault> _dmaFaults = [];
    private ulong? _memlockLimit;
    private ulong _lockedMemory;
    private int _hugePages;
    private int _hugePagesUsed;

    /// <summary>
    /// The process's locked-memory limit in bytes (<c>RLIMIT_MEMLOCK</c>, <c>ulimit -l</c>), which
    /// VFIO_IOMMU_MAP_DMA charges pinned pages to and refuses with ENOMEM beyond; null (the default)
    /// when unlimited, as for a caller with CAP_IPC_LOCK such as root.
    /// </summary>
    public ulong? MemoryLockLimit
    {
        get
        {
            using (Enter())
            {
                return _memlockLimit;
            }
        }
        set
        {
            using (Enter())
            {
                _memlockLimit = value;
            }
        }
    }

    /// <summary>The bytes DMA mappings have pinned and charged to <see cref="MemoryLockLimit"/> (the mm's <c>locked_vm</c>).</summary>
    public ulong LockedMemory
    {
        get
        {
            using (Enter())
            {
                return _lockedMemory;
            }
        }
    }

    /// <summary>
    /// Whether VFIO_IOMMU_GET_INFO reports the DMA_AVAIL capability (true, as Linux 5.10 and later);
    /// false models an older kernel. Applies to containers whose IOMMU is set afterwards.
    /// </summary>
    public bool ReportsDmaAvailable { get; set; } = true;

    /// <summary>
    /// The 2 MiB hugepages reserved in the pool (<c>/proc/sys/vm/nr_hugepages</c>; 0 by default, as on
    /// most systems). An anonymous <c>MAP_HUGETLB</c> mapping takes pages from it and fails with ENOMEM
    /// when too few are free; munmap gives them back.
    /// </summary>
    public int HugePages
    {
        get
        {
            using (Enter())
            {
                return _hugePages;
            }
        }
        set
        {
            ArgumentOutOfRangeException.ThrowIfNegative(value);
            using (Enter())
            {
                _hugePages = value;
            }
        }
    }

    /// <summary>The hugepages not taken by a mapping.</summary>
    public int FreeHugePages
    {
        get
        {
            using (Enter())
            {
                return Math.Max(0, _hugePages - _hugePagesUsed);
            }
        }
    }

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
            if (DmaMappingsLocked(device, out string reason) is not { } iommu)
            {
                return FaultLocked(device, iova, data.Length, write, reason);
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

    /// <summary>
    /// The mappings the device's DMA goes through: its iommufd page table's IOAS when bound through
    /// its cdev, else its group's type1 container; null with the reason the access faults. The lock is held.
    /// </summary>
    private IDmaMappings? DmaMappingsLocked(SimulatedDevice device, out string reason)
    {
        if (IommufdBindingLocked(device) is { } binding)
        {
            reason = "the device is bound to an iommufd but attached to no page table (DMA is blocked)";
            return binding.Attached?.Ioas;
        }
        var container = device.Group.Container;
        reason = "the group is not in a container with an IOMMU";
        // Without an IOMMU the device's addresses are physical addresses: whatever page has that frame.
        return container?.NoIommuDriver == true ? new PhysicalMemory(this) : container?.Type1;
    }

    /// <summary>Charges pinned bytes to the locked-memory limit; false when they would exceed it. The lock is held.</summary>
    internal bool TryLockLocked(ulong bytes)
    {
        AssertLocked();
        if (!IpcLockCapability && _memlockLimit is ulong limit && (_lockedMemory + bytes > limit || _lockedMemory + bytes < bytes))
        {
            return false;
        }
        _lockedMemory += bytes;
        return true;
    }

    /// <summary>Gives back pinned bytes; the lock is held.</summary>
    internal void UnlockLocked(ulong bytes)
    {
        AssertLocked();
        _lockedMemory -= bytes;
    }

    /// <summary>Takes hugepages for a MAP_HUGETLB mapping of <paramref name="length"/> bytes (rounded up); false when too few are free. The lock is held.</summary>
    internal bool TryTakeHugePagesLocked(nuint length, out int pages)
    {
        AssertLocked();
        pages = checked((int)(((ulong)length + HugePageSize - 1) / HugePageSize));
        if (_hugePages - _hugePagesUsed < pages)
        {
            return false;
        }
        _hugePagesUsed += pages;
        return true;
    }

    /// <summary>Returns hugepages of an unmapped MAP_HUGETLB mapping; the lock is held.</summary>
    internal void PutHugePagesLocked(int pages)
    {
        AssertLocked();
        _hugePagesUsed -= pages;
    }

    // The sysfs files the library reads about DMA: the type1 driver's mapping limit and the 2 MiB pool.
    private void InitializeDma()
    {
        // Both are writable by root at run time, as in Linux.
        ShowType1ModuleLocked();
        var pool = Sysfs.Directory("kernel/mm/hugepages/hugepages-2048kB");
        pool.Attribute("nr_hugepages", () => Decimal(_hugePages) + "\n", text => StoreCount(text, v => _hugePages = Math.Max(v, _hugePagesUsed)));
        pool.Attribute("free_hugepages", () => Decimal(Math.Max(0, _hugePages - _hugePagesUsed)) + "\n");
    }

    /// <summary>The type1 driver's module folder with its parameter; the lock is held (or the kernel is being made).</summary>
    private void ShowType1ModuleLocked() =>
        Sysfs.Directory("module/vfio_iommu_type1/parameters").Attribute("dma_entry_limit", () => Decimal(DmaEntryLimit) + "\n", text => StoreCount(text, v => DmaEntryLimit = v));

    private static int StoreCount(string text, Action<int> set)
    {
        if (!int.TryParse(text.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out int value))
        {
            return -Errno.EINVAL;
        }
        set(value);
        return 0;
    }

    private bool FaultLocked(SimulatedDevice device, ulong iova, int length, bool write, string reason)
    {
        AssertLocked();
        _dmaFaults.Add(new DmaFault(device.Name, iova, length, write, reason));
        return false;
    }
}
