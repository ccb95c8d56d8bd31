namespace Vfio.Tests.Dma;

public class IovaTranslationTests
{
    [Fact]
    public void AnAddressInsideABufferTranslatesAndOneOutsideDoesNot()
    {
        var map = new IovaTranslation();
        map.Add(0x10_0000, 0x3000, 0xa000);
        map.Add(0x20_0000, 0x1000, 0x5000);

        Translate(map, 0x10_0000).Should().Be(0xa000);
        Translate(map, 0x10_2fff).Should().Be(0xcfff);
        Translate(map, 0x10_3000).Should().BeNull("one past the end");
        Translate(map, 0xf_ffff).Should().BeNull("one before the start");
        Translate(map, 0x20_0800).Should().Be(0x5800);
        map.Count.Should().Be(2);
    }

    [Fact]
    public void ChunksSplitAndEmptyChunksGoAsBuffersComeAndGo()
    {
        var map = new IovaTranslation();
        const int N = IovaTranslation.MaxChunk * 5 + 3;
        // Out of order, so inserts land in every chunk, not only the last.
        var order = Enumerable.Range(0, N).OrderBy(i => (i * 7919) % N).ToArray();
        foreach (int i in order)
        {
            map.Add(Host(i), 0x1000, (ulong)i << 12);
        }
        for (int i = 0; i < N; i++)
        {
            Translate(map, Host(i) + 0x10).Should().Be(((ulong)i << 12) + 0x10);
        }
        foreach (int i in order.Where(i => i % 3 != 0))
        {
            map.Remove(Host(i)).Should().BeTrue();
        }
        map.Remove(Host(1)).Should().BeFalse("it is gone already");
        for (int i = 0; i < N; i++)
        {
            Translate(map, Host(i)).Should().Be(i % 3 == 0 ? (ulong)i << 12 : null);
        }
        map.Count.Should().Be((N + 2) / 3);
    }

    [Fact]
    public async Task ReadersSeeEveryStableBufferWhileAWriterAddsAndRemovesOthers()
    {
        var map = new IovaTranslation();
        for (int i = 0; i < 1000; i += 2)
        {
            map.Add(Host(i), 0x1000, (ulong)i << 12);
        }
        using var stop = new CancellationTokenSource();
        var writer = Task.Run(() =>
        {
            // Odd buffers come and go; even ones never change.
            for (int round = 0; round < 50; round++)
            {
                for (int i = 1; i < 1000; i += 2)
                {
                    map.Add(Host(i), 0x1000, (ulong)i << 12);
                }
                for (int i = 1; i < 1000; i += 2)
                {
                    map.Remove(Host(i));
                }
            }
            stop.Cancel();
        });
        var readers = Enumerable.Range(0, 2).Select(r => Task.Run(() =>
        {
            long misses = 0;
            var random = new Random(r);
            while (!stop.IsCancellationRequested)
            {
                int i = random.Next(500) * 2;
                if (Translate(map, Host(i) + 8) != ((ulong)i << 12) + 8)
                {
                    misses++;
                }
            }
            return misses;
        })).ToArray();

        await writer.WaitAsync(TimeSpan.FromSeconds(60));
        (await Task.WhenAll(readers)).Should().AllSatisfy(m => m.Should().Be(0));
    }

    private static nint Host(int i) => (nint)(0x7f00_0000_0000L + ((long)i << 13));

    private static ulong? Translate(IovaTranslation map, nint host) => map.TryTranslate(host, out ulong iova) ? iova : null;
}
