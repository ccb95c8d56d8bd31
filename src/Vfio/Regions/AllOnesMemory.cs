using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio;

/// <summary>
/// All-ones memory mapped over a range in place: what a region reads while its device's memory
/// does not answer (a PCI read of a device that does not decode returns all-ones).
/// </summary>
/// <remarks>
/// A memory file is filled with 0xFF and mapped privately over the range with <c>MAP_FIXED</c>, in
/// chunks of at most 1 MiB of the one file: each chunk replaces what was there in one step, so an
/// access on another thread meets the old mapping or the all-ones, never a hole and never zeros (an
/// anonymous mapping filled afterwards would read 0 for a moment). Reads share the file's pages; a
/// write (only an access racing the switch can make one) lands in a private copy of its page and
/// never reaches the device. The file is closed at once; the mappings keep it.
/// </remarks>
internal static class AllOnesMemory
{
    private const int ChunkBytes = 1 << 20;
    private static readonly byte[] Ones = CreateOnes();

    /// <summary>Maps all-ones over [<paramref name="address"/>, + <paramref name="length"/>); 0 or a negative errno.</summary>
    public static int MapOver(VfioKernel kernel, nint address, nuint length)
    {
        nuint page = (nuint)Environment.SystemPageSize;
        nuint rounded = (length + page - 1) & ~(page - 1);
        nuint chunk = Math.Min(rounded, ChunkBytes);
        int r = kernel.MemFd("vfio all-ones", out var file);
        if (r < 0)
        {
            return r;
        }
        using (file)
        {
            for (nuint at = 0; at < chunk;)
            {
                int n = (int)Math.Min((nuint)Ones.Length, chunk - at);
                long written = kernel.PWrite(file, Ones.AsSpan(0, n), (long)at);
                if (written <= 0)
                {
                    return written < 0 ? (int)written : -Errno.EIO;
                }
                at += (nuint)written;
            }
            for (nuint at = 0; at < rounded; at += chunk)
            {
                r = kernel.MmapFixed(address + (nint)at, Math.Min(chunk, rounded - at), Flags.PROT_READ | Flags.PROT_WRITE, Flags.MAP_PRIVATE, file, 0);
                if (r < 0)
                {
                    return r;
                }
            }
        }
        return 0;
    }

    private static byte[] CreateOnes()
    {
        var ones = new byte[64 * 1024];
        ones.AsSpan().Fill(0xff);
        return ones;
    }
}
