using System.Buffers.Binary;
using Vfio;

namespace NvmeDriver;

/// <summary>
/// Builds the two data pointers of an NVMe command (PRP1, PRP2) for a transfer in a
/// <see cref="DmaBuffer"/>, with the controller's memory page size of 4 KiB (CC.MPS 0).
/// </summary>
/// <remarks>
/// <para>
/// PRP1 is the IOVA of the first byte; it may start anywhere in a page (dword aligned). When the
/// transfer ends within that page, PRP2 is unused. When it ends within the next page, PRP2 is that
/// page's IOVA. Otherwise PRP2 is the IOVA of a PRP list: one 8-byte entry per further page, each
/// page aligned. A list here is one page of 512 entries, so a transfer reaches at most 512 pages
/// after the first (the controller's MDTS is usually lower: QEMU's is 512 KiB).
/// </para>
/// <para>
/// A DMA buffer is contiguous in IOVA space and page aligned, so its pages follow one another:
/// entry i is the IOVA of the transfer's first page plus (i + 1) pages.
/// </para>
/// </remarks>
public static class PrpList
{
    /// <summary>The memory page size PRP entries describe (CC.MPS 0).</summary>
    public const int PageSize = 4096;

    /// <summary>Entries in one list page.</summary>
    public const int EntriesPerList = PageSize / 8;

    /// <summary>The largest transfer whose first byte starts a page: the first page and one full list.</summary>
    public const int MaxTransferBytes = PageSize * (EntriesPerList + 1);

    /// <summary>Whether a transfer of <paramref name="length"/> bytes from <paramref name="offset"/> needs a list page.</summary>
    /// <param name="offset">The offset of the transfer's first byte in its buffer.</param>
    /// <param name="length">The transfer's length in bytes.</param>
    public static bool NeedsList(ulong offset, int length) => (int)(offset % PageSize) + length > 2 * PageSize;

    /// <summary>
    /// Returns PRP1 and PRP2 for <paramref name="length"/> bytes of <paramref name="buffer"/> from
    /// <paramref name="offset"/>, writing the PRP list into <paramref name="list"/> (the list page's
    /// memory, whose IOVA is <paramref name="listIova"/>) when the transfer spans more than two pages.
    /// </summary>
    /// <param name="buffer">The data buffer.</param>
    /// <param name="offset">The offset of the first byte in the buffer; a multiple of 4.</param>
    /// <param name="length">The number of bytes, at least 1.</param>
    /// <param name="list">The list page's memory (at least the entries needed), or empty when the transfer needs no list.</param>
    /// <param name="listIova">The IOVA of <paramref name="list"/>, page aligned.</param>
    /// <exception cref="ArgumentOutOfRangeException">The transfer is outside the buffer, misaligned, or longer than one list describes.</exception>
    public static (ulong Prp1, ulong Prp2) Build(DmaBuffer buffer, ulong offset, int length, Span<byte> list, ulong listIova)
    {
        ArgumentNullException.ThrowIfNull(buffer);
        if (length < 1 || offset > buffer.Length || (ulong)length > buffer.Length - offset || (offset & 3) != 0)
        {
            ThrowOutOfRange(buffer, offset, length);
        }
        ulong prp1 = buffer.Iova + offset;
        int first = PageSize - (int)(prp1 % PageSize);
        if (length <= first)
        {
            return (prp1, 0);
        }
        ulong next = prp1 - (prp1 % PageSize) + PageSize;
        int rest = length - first;
        if (rest <= PageSize)
        {
            return (prp1, next);
        }
        int entries = (rest + PageSize - 1) / PageSize;
        if (entries > EntriesPerList || list.Length < entries * 8)
        {
            throw new ArgumentOutOfRangeException(nameof(length), length,
                $"A {length}-byte transfer at offset {offset} needs {entries} PRP list entries; one list page holds {Math.Min(EntriesPerList, list.Length / 8)}.");
        }
        if ((listIova % PageSize) != 0)
        {
            throw new ArgumentException($"The PRP list's IOVA 0x{listIova:x} is not page aligned.", nameof(listIova));
        }
        for (int i = 0; i < entries; i++)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(list[(i * 8)..], next + ((ulong)i * PageSize));
        }
        return (prp1, listIova);
    }

    private static void ThrowOutOfRange(DmaBuffer buffer, ulong offset, int length) =>
        throw new ArgumentOutOfRangeException(nameof(length), length,
            $"A {length}-byte transfer at offset {offset} is not a dword-aligned range inside the {buffer.Length}-byte {buffer}.");
}
