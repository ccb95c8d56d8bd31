namespace Vfio;

/// <summary>
/// Host address to IOVA lookup for a container's DMA buffers, read without a lock. The buffers are
/// kept sorted by host address in chunks of at most <see cref="MaxChunk"/> entries behind an index of
/// each chunk's first address; a lookup is two binary searches (O(log n)) over an immutable snapshot.
/// A change copies one chunk (at most 256 entries) and the chunk index (one entry per chunk) and
/// publishes a new snapshot, so readers never wait and never see a half-made change.
/// </summary>
/// <remarks>Writers must be serialised by the caller (the container's DMA lock).</remarks>
internal sealed class IovaTranslation
{
    internal const int MaxChunk = 256;

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
            // The search reads only the chunk's addresses (8 bytes each: fewer cache lines than the
            // entries), then one entry. i >= 0: the chunk's first address is at or below host.
            var chunk = s.Chunks[c];
            var e = chunk.Entries[Floor(chunk.Hosts, host)];
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
        int at = Floor(s.Chunks[c].Hosts, host) + 1;
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
        int at = Floor(s.Chunks[c].Hosts, host);
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
            firsts[i] = chunks[i].Hosts[0];
        }
        Volatile.Write(ref _snapshot, new Snapshot(firsts, chunks, count));
    }

    // The index of the last key at or below host, or -1.
    private static int Floor(nint[] keys, nint host)
    {
        int lo = 0, hi = keys.Length - 1, found = -1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            if (keys[mid] <= host)
            {
                found = mid;
                lo = mid + 1;
            }
            else
            {
                hi = mid - 1;
            }
        }
        return found;
    }

    private readonly record struct Entry(nint Host, ulong Length, ulong Iova);

    /// <summary>Up to <see cref="MaxChunk"/> buffers sorted by host address; immutable, shared by snapshots until it changes.</summary>
    private sealed class Chunk
    {
        public readonly Entry[] Entries;
        public readonly nint[] Hosts;

        public Chunk(Entry[] entries)
        {
            Entries = entries;
            Hosts = new nint[entries.Length];
            for (int i = 0; i < entries.Length; i++)
            {
                Hosts[i] = entries[i].Host;
            }
        }
    }

    private sealed class Snapshot(nint[] firsts, Chunk[] chunks, int count)
    {
        public static readonly Snapshot Empty = new([], [], 0);

        public readonly nint[] Firsts = firsts;
        public readonly Chunk[] Chunks = chunks;
        public readonly int Count = count;
    }
}
