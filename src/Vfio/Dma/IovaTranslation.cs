using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Vfio;

/// <summary>
/// Host address to IOVA lookup for a container's DMA buffers, read without a lock. The buffers are
/// kept sorted by host address in chunks of at most <see cref="MaxChunk"/> entries behind an index of
/// each chunk's first address; a lookup is O(log n) over an immutable snapshot. A change copies one
/// chunk (at most 256 entries) and the chunk index (one entry per chunk) and publishes a new snapshot,
/// so readers never wait and never see a half-made change.
/// </summary>
/// <remarks>
/// <para>Writers must be serialised by the caller (the container's DMA lock).</para>
/// <para>
/// The lookup is laid out for the CPU cache and free of data-dependent branches (a random address
/// makes a branchy binary search mispredict at about every other step). The chunk index is small
/// (one address per 128 to 256 buffers) and searched branchlessly. Inside a chunk, the addresses form
/// a two-level B-tree-like array of <see cref="Block"/>-key blocks (128 bytes, two cache lines each):
/// first a summary block holding every block's first address, then the blocks. Two block scans
/// (vector compares and a count) find the entry: three cache lines plus the entry itself.
/// </para>
/// <para>
/// Memory: 24 bytes per entry (host, length, IOVA) and 8 for its key; per chunk, a 128-byte summary,
/// up to 15 padding keys (120 bytes) and about 100 bytes of object headers and index slots. With
/// chunks of 128 to 256 entries (a split leaves two halves of 128) that is 33 to 35 bytes per
/// mapping, plus one chunk's copy while a change is made. Chunks emptied by unmaps are dropped but
/// not merged, so many unmaps can leave smaller chunks and more bytes per mapping.
/// </para>
/// </remarks>
internal sealed class IovaTranslation
{
    internal const int MaxChunk = Block * Block;

    /// <summary>Keys per block: 16 addresses, 128 bytes.</summary>
    internal const int Block = 16;

    private Snapshot _snapshot = Snapshot.Empty;

    /// <summary>How many buffers the map holds.</summary>
    public int Count => Volatile.Read(ref _snapshot).Count;

    /// <summary>The IOVA of <paramref name="host"/>; false when no buffer holds it. Lock-free.</summary>
    public bool TryTranslate(nint host, out ulong iova)
    {
        var s = Volatile.Read(ref _snapshot);
        int c = Floor(s.Firsts, host);
        if (c >= 0)
        {
            // The chunk's first address is at or below host, so the entry found is the floor.
            var chunk = s.Chunks[c];
            var e = chunk.Entries[chunk.Locate(host)];
            ulong offset = (ulong)(host - e.Host);
            if (offset < e.Length)
            {
                iova = e.Iova + offset;
                return true;
            }
        }
        iova = 0;
        return false;
    }

    /// <summary>Adds a buffer; its host range must not overlap one already in.</summary>
    public void Add(nint host, ulong length, ulong iova)
    {
        var s = _snapshot;
        var entry = new Entry(host, length, iova);
        if (s.Chunks.Length == 0)
        {
            Publish([new Chunk([entry])], 1);
            return;
        }
        int c = Math.Max(0, Floor(s.Firsts, host));
        var entries = s.Chunks[c].Entries;
        int at = s.Chunks[c].Floor(host) + 1;
        var grown = new Entry[entries.Length + 1];
        Array.Copy(entries, grown, at);
        grown[at] = entry;
        Array.Copy(entries, at, grown, at + 1, entries.Length - at);
        if (grown.Length <= MaxChunk)
        {
            var chunks = (Chunk[])s.Chunks.Clone();
            chunks[c] = new Chunk(grown);
            Publish(chunks, s.Count + 1);
            return;
        }
        // Split the full chunk in two halves.
        int half = grown.Length / 2;
        var split = new Chunk[s.Chunks.Length + 1];
        Array.Copy(s.Chunks, split, c);
        split[c] = new Chunk(grown[..half]);
        split[c + 1] = new Chunk(grown[half..]);
        Array.Copy(s.Chunks, c + 1, split, c + 2, s.Chunks.Length - c - 1);
        Publish(split, s.Count + 1);
    }

    /// <summary>Removes the buffer that starts at <paramref name="host"/>; false when there is none.</summary>
    public bool Remove(nint host)
    {
        var s = _snapshot;
        int c = Floor(s.Firsts, host);
        if (c < 0)
        {
            return false;
        }
        var entries = s.Chunks[c].Entries;
        int at = s.Chunks[c].Locate(host);
        if (entries[at].Host != host)
        {
            return false;
        }
        if (entries.Length == 1)
        {
            var fewer = new Chunk[s.Chunks.Length - 1];
            Array.Copy(s.Chunks, fewer, c);
            Array.Copy(s.Chunks, c + 1, fewer, c, s.Chunks.Length - c - 1);
            Publish(fewer, s.Count - 1);
            return true;
        }
        var shrunk = new Entry[entries.Length - 1];
        Array.Copy(entries, shrunk, at);
        Array.Copy(entries, at + 1, shrunk, at, entries.Length - at - 1);
        var chunks = (Chunk[])s.Chunks.Clone();
        chunks[c] = new Chunk(shrunk);
        Publish(chunks, s.Count - 1);
        return true;
    }

    /// <summary>Forgets every buffer.</summary>
    public void Clear() => Volatile.Write(ref _snapshot, Snapshot.Empty);

    private void Publish(Chunk[] chunks, int count)
    {
        var firsts = new nint[chunks.Length];
        for (int i = 0; i < chunks.Length; i++)
        {
            firsts[i] = chunks[i].First;
        }
        Volatile.Write(ref _snapshot, new Snapshot(firsts, chunks, count));
    }

    /// <summary>The index of the last key at or below <paramref name="host"/>, or -1; keys sorted ascending. Branchless, O(log n).</summary>
    internal static int Floor(nint[] keys, nint host)
    {
        int n = keys.Length;
        if (n == 0)
        {
            return -1;
        }
        ref nint key = ref MemoryMarshal.GetArrayDataReference(keys);
        int lo = 0;
        while (n > 1)
        {
            // Invariant: the answer (if any) is in [lo, lo + n); both halves stay inside the array.
            int half = n >> 1;
            lo = Unsafe.Add(ref key, lo + half) <= host ? lo + half : lo;
            n -= half;
        }
        return lo - (Unsafe.Add(ref key, lo) > host ? 1 : 0);
    }

    /// <summary>How many of the <see cref="Block"/> keys from <paramref name="key"/> on are at or below <paramref name="host"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int CountAtOrBelow(ref nint key, nint host)
    {
        if (Vector256.IsHardwareAccelerated)
        {
            var h = Vector256.Create((long)host);
            ref long k = ref Unsafe.As<nint, long>(ref key);
            // Each lane of a compare is -1 (at or below) or 0; the sum of the four is minus the count.
            var sum = Vector256.LessThanOrEqual(Vector256.LoadUnsafe(ref k), h)
                + Vector256.LessThanOrEqual(Vector256.LoadUnsafe(ref k, 4), h)
                + Vector256.LessThanOrEqual(Vector256.LoadUnsafe(ref k, 8), h)
                + Vector256.LessThanOrEqual(Vector256.LoadUnsafe(ref k, 12), h);
            return -(int)Vector256.Sum(sum);
        }
        int count = 0;
        for (int i = 0; i < Block; i++)
        {
            count += Unsafe.Add(ref key, i) <= host ? 1 : 0;
        }
        return count;
    }

    private readonly record struct Entry(nint Host, ulong Length, ulong Iova);

    /// <summary>Up to <see cref="MaxChunk"/> buffers sorted by host address; immutable, shared by snapshots until it changes.</summary>
    private sealed class Chunk
    {
        public readonly Entry[] Entries;

        // [0, Block): each block's first address (the summary), then the blocks of addresses; unused
        // slots hold nint.MaxValue, above every address a buffer can start at.
        private readonly nint[] _keys;
        private readonly int _lastBlock;

        public Chunk(Entry[] entries)
        {
            Entries = entries;
            int blocks = (entries.Length + Block - 1) / Block;
            _lastBlock = blocks - 1;
            _keys = new nint[Block + blocks * Block];
            _keys.AsSpan().Fill(nint.MaxValue);
            for (int i = 0; i < entries.Length; i++)
            {
                _keys[Block + i] = entries[i].Host;
                if (i % Block == 0)
                {
                    _keys[i / Block] = entries[i].Host;
                }
            }
        }

        public nint First => _keys[Block];

        /// <summary>The index of the last entry starting at or below <paramref name="host"/>, which must be at or above <see cref="First"/>.</summary>
        public int Locate(nint host)
        {
            ref nint keys = ref MemoryMarshal.GetArrayDataReference(_keys);
            // At least one block starts at or below host; Min guards the padding when host is nint.MaxValue.
            int block = Math.Min(CountAtOrBelow(ref keys, host) - 1, _lastBlock);
            int at = (block * Block) + CountAtOrBelow(ref Unsafe.Add(ref keys, Block + (block * Block)), host) - 1;
            return Math.Min(at, Entries.Length - 1);
        }

        /// <summary>The index of the last entry starting at or below <paramref name="host"/>, or -1.</summary>
        public int Floor(nint host) => host < First ? -1 : Locate(host);
    }

    private sealed class Snapshot(nint[] firsts, Chunk[] chunks, int count)
    {
        public static readonly Snapshot Empty = new([], [], 0);

        public readonly nint[] Firsts = firsts;
        public readonly Chunk[] Chunks = chunks;
        public readonly int Count = count;
    }
}
