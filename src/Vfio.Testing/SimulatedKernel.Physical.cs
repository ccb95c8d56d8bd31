using Vfio.Interop;

namespace Vfio.Testing;

// Physical memory, as far as user space can see it: the page frames behind anonymous mappings,
// reported by /proc/self/pagemap, and the DMA of devices in no-IOMMU groups, which reach memory by
// its physical address with nothing in between.
public sealed partial class SimulatedKernel
{
    /// <summary>The path of the process's page map.</summary>
    internal const string PagemapPath = "/proc/self/pagemap";

    // Frames for 4 KiB pages are handed out from 16 MiB up, never two neighbours in a row, so that a
    // buffer of several pages is never physically contiguous by luck (it rarely is on a real machine);
    // 2 MiB hugepages take aligned runs of 512 frames from 128 MiB up. Everything stays below 4 GiB.
    private const ulong FirstSmallFrame = 0x1000;
    private const ulong FirstHugeFrame = 0x8000;
    private const ulong FramesPerHugePage = HugePageSize / PageSize;

    private readonly Dictionary<ulong, (AnonymousMemory Memory, nuint Offset)> _frames = [];
    private readonly Dictionary<AnonymousMemory, ulong[]> _framesOf = [];
    private readonly Dictionary<nint, ulong> _lockedAreas = [];

    /// <summary>
    /// Whether <c>/proc/self/pagemap</c> shows page frame numbers: only to a process with
    /// CAP_SYS_ADMIN, which root has (<see cref="ProcessUserId"/> 0, the default); others read 0.
    /// </summary>
    internal bool ShowsPageFrames => ProcessUserId == 0;

    /// <summary>The physical address of the byte at host address <paramref name="address"/> in anonymous memory; null when none is mapped there.</summary>
    /// <param name="address">A host virtual address.</param>
    public ulong? PhysicalAddressOf(nint address)
    {
        using (Enter())
        {
            var area = FindAnonymousLocked((ulong)address, 1);
            if (area is null)
            {
                return null;
            }
            nuint offset = (nuint)(address - area.Memory!.Address);
            return FramesLocked(area)[(int)(offset / PageSize)] * PageSize + (offset % PageSize);
        }
    }

    /// <summary>The frames of an anonymous mapping, one per 4 KiB page, assigned when first asked for. The lock is held.</summary>
    private ulong[] FramesLocked(VirtualMemoryArea area)
    {
        AssertLocked();
        var memory = area.Memory!;
        if (_framesOf.TryGetValue(memory, out var frames))
        {
            return frames;
        }
        int pages = (int)(memory.Length / PageSize);
        frames = new ulong[pages];
        if (area.HugePages > 0)
        {
            for (int huge = 0; huge * (int)FramesPerHugePage < pages; huge++)
            {
                ulong start = FirstHugeFrame;
                while (_frames.ContainsKey(start))
                {
                    start += FramesPerHugePage;
                }
                for (int i = 0; i < (int)FramesPerHugePage; i++)
                {
                    int page = huge * (int)FramesPerHugePage + i;
                    frames[page] = start + (ulong)i;
                    _frames.Add(frames[page], (memory, (nuint)page * PageSize));
                }
            }
        }
        else
        {
            ulong next = FirstSmallFrame;
            for (int i = 0; i < pages; i++)
            {
                while (_frames.ContainsKey(next) || (i > 0 && next == frames[i - 1] + 1))
                {
                    next++;
                }
                frames[i] = next;
                _frames.Add(next, (memory, (nuint)i * PageSize));
                next += 2;
            }
        }
        _framesOf.Add(memory, frames);
        return frames;
    }

    /// <summary>[start, end) of a mapping goes away: its locked bytes no longer count, and with its last mapping the memory's frames are free again. The lock is held.</summary>
    private void ReleasePhysicalLocked(VirtualMemoryArea area, nint start, nint end)
    {
        AssertLocked();
        // The memory's page frames go with the last mapping of it (what is left of it after a partial munmap keeps them).
        if (area.Memory is { } memory && !_areas.Values.Any(a => ReferenceEquals(a.Memory, memory)) && _framesOf.Remove(memory, out var frames))
        {
            foreach (ulong frame in frames)
            {
                _frames.Remove(frame);
            }
        }
        // munlock of the unmapped part: the parts left stay locked and charged.
        if (_lockedAreas.Remove(area.Address, out ulong locked))
        {
            UnlockLocked(locked);
            if (area.Address < start)
            {
                LockAreaLocked(area.Address, (nuint)(start - area.Address));
            }
            if (area.End > end)
            {
                LockAreaLocked(end, (nuint)(area.End - end));
            }
        }
    }

    /// <summary>MAP_LOCKED: the mapping's pages are locked and charged to RLIMIT_MEMLOCK; false (EAGAIN) beyond it. The lock is held.</summary>
    private bool LockAreaLocked(nint address, nuint length)
    {
        AssertLocked();
        if (!TryLockLocked(length))
        {
            return false;
        }
        _lockedAreas.Add(address, length);
        return true;
    }

    /// <summary>
    /// One entry of <c>/proc/self/pagemap</c> (fs/proc/task_mmu.c): bit 63 present, bit 56 mapped
    /// exclusively, bits 0-54 the frame number when the reader may see it. The lock is held.
    /// </summary>
    internal ulong PagemapEntryLocked(ulong virtualPage, bool showFrames)
    {
        AssertLocked();
        ulong address = virtualPage * PageSize;
        var area = FindAnonymousLocked(address, 1);
        if (area is null)
        {
            return 0;
        }
        ulong frame = FramesLocked(area)[(int)((address - (ulong)area.Memory!.Address) / PageSize)];
        return (1UL << 63) | (1UL << 56) | (showFrames ? frame : 0);
    }

    /// <summary>What a device without an IOMMU reaches: physical memory, page by page.</summary>
    private sealed class PhysicalMemory(SimulatedKernel kernel) : IDmaMappings
    {
        public DmaMapping? Find(ulong iova)
        {
            kernel.AssertLocked();
            ulong frame = iova / PageSize;
            if (!kernel._frames.TryGetValue(frame, out var page))
            {
                return null;
            }
            return new DmaMapping(frame * PageSize, PageSize, (ulong)(page.Memory.Address + (nint)page.Offset), read: true, write: true, page.Memory);
        }
    }
}

/// <summary><c>/proc/self/pagemap</c>: one 8-byte entry per virtual page, read at the page's index times 8.</summary>
internal sealed class PagemapFile(SimulatedKernel kernel, string path, bool showFrames) : KernelFile(kernel, path)
{
    public override SimulatedFileKind Kind => SimulatedFileKind.Proc;

    public override long PRead(Span<byte> buffer, long offset)
    {
        // pagemap_read: the position and the count must be whole entries.
        if (offset % 8 != 0 || buffer.Length % 8 != 0)
        {
            return -Errno.EINVAL;
        }
        using (Kernel.Enter())
        {
            for (int i = 0; i < buffer.Length / 8; i++)
            {
                ulong entry = Kernel.PagemapEntryLocked((ulong)offset / 8 + (ulong)i, showFrames);
                System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(buffer[(i * 8)..], entry);
            }
        }
        return buffer.Length;
    }
}
