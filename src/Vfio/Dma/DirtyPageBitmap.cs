using System.Numerics;

namespace Vfio;

/// <summary>
/// Which pages of an IOVA range the IOMMU reported dirty: bit <c>i</c> (word <c>i / 64</c>, bit
/// <c>i % 64</c>) stands for the page at <c>Iova + i * PageSize</c>, as the kernel lays the bitmap out.
/// </summary>
public sealed class DirtyPageBitmap
{
    private readonly ulong[] _words;

    internal DirtyPageBitmap(ulong iova, ulong length, ulong pageSize, ulong[] words)
    {
        Iova = iova;
        Length = length;
        PageSize = pageSize;
        _words = words;
        PageCount = checked((int)(length / pageSize));
        // The kernel writes whole words; bits past the range are none of the caller's business.
        if (PageCount % 64 != 0)
        {
            _words[^1] &= (1UL << (PageCount % 64)) - 1;
        }
        foreach (ulong word in _words)
        {
            DirtyPageCount += BitOperations.PopCount(word);
        }
    }

    /// <summary>The IOVA of the first page.</summary>
    public ulong Iova { get; }

    /// <summary>The bytes the bitmap covers.</summary>
    public ulong Length { get; }

    /// <summary>The bytes one bit stands for: the IOMMU's smallest page size.</summary>
    public ulong PageSize { get; }

    /// <summary>The pages the bitmap covers.</summary>
    public int PageCount { get; }

    /// <summary>How many of them are dirty.</summary>
    public int DirtyPageCount { get; }

    /// <summary>Whether every page of the range is dirty.</summary>
    public bool AllDirty => DirtyPageCount == PageCount;

    /// <summary>The bitmap as the kernel wrote it, one bit per page.</summary>
    public ReadOnlySpan<ulong> Words => _words;

    /// <summary>Whether the page holding <paramref name="iova"/> is dirty.</summary>
    /// <param name="iova">An IOVA inside the range.</param>
    /// <exception cref="ArgumentOutOfRangeException">The IOVA lies outside the range.</exception>
    public bool IsDirty(ulong iova)
    {
        if (iova < Iova || iova - Iova >= Length)
        {
            throw new ArgumentOutOfRangeException(nameof(iova), iova, $"The bitmap covers 0x{Iova:x}+0x{Length:x}.");
        }
        ulong page = (iova - Iova) / PageSize;
        return (_words[page / 64] & (1UL << (int)(page % 64))) != 0;
    }

    /// <summary>The IOVAs of the dirty pages, in order.</summary>
    public IEnumerable<ulong> DirtyPages()
    {
        for (int page = 0; page < PageCount; page++)
        {
            if ((_words[page / 64] & (1UL << (page % 64))) != 0)
            {
                yield return Iova + (ulong)page * PageSize;
            }
        }
    }

    /// <inheritdoc/>
    public override string ToString() => $"{DirtyPageCount} of {PageCount} pages dirty in 0x{Iova:x}+0x{Length:x}";
}
