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

    [Fact]
    public void AnEmptyMapTranslatesNothingAndRemovesNothing()
    {
        var map = new IovaTranslation();

        Translate(map, 0).Should().BeNull();
        Translate(map, 0x10_0000).Should().BeNull();
        Translate(map, nint.MaxValue).Should().BeNull();
        map.Remove(0x10_0000).Should().BeFalse();
        map.Count.Should().Be(0);
    }

    [Fact]
    public void OneBufferTranslatesFromItsFirstToItsLastByteOnly()
    {
        var map = new IovaTranslation();
        map.Add(0x10_0000, 0x2000, 0x8000);

        Translate(map, 0xf_ffff).Should().BeNull("one before the start");
        Translate(map, 0x10_0000).Should().Be(0x8000, "exactly at the start");
        Translate(map, 0x10_1fff).Should().Be(0x9fff, "the last byte");
        Translate(map, 0x10_2000).Should().BeNull("one past the end");
        map.Remove(0x10_0001).Should().BeFalse("only a buffer's start removes it");
        map.Remove(0x10_0000).Should().BeTrue();
        Translate(map, 0x10_0000).Should().BeNull();
        map.Count.Should().Be(0);
    }

    [Fact]
    public void AddressesInTheGapsBetweenBuffersTranslateToNothing()
    {
        var map = new IovaTranslation();
        // Three buffers with gaps of one byte, one page and far more between them.
        map.Add(0x10_0000, 0x1000, 0x1000);
        map.Add(0x10_1001, 0x1000, 0x4000);
        map.Add(0x10_3001, 0x1000, 0x9000);
        map.Add(0x7000_0000, 0x1000, 0x2_0000);

        Translate(map, 0x10_1000).Should().BeNull("the one-byte gap");
        Translate(map, 0x10_1001).Should().Be(0x4000);
        Translate(map, 0x10_2000).Should().Be(0x4fff);
        Translate(map, 0x10_2001).Should().BeNull("the page gap");
        Translate(map, 0x10_3000).Should().BeNull("the page gap's last byte");
        Translate(map, 0x10_3001).Should().Be(0x9000);
        Translate(map, 0x3000_0000).Should().BeNull("the wide gap");
        Translate(map, 0x7000_0fff).Should().Be(0x2_0fff);
        Translate(map, 0x7000_1000).Should().BeNull();
    }

    [Fact]
    public void ABufferEndingAtTheHighestAddressTranslatesItsLastByte()
    {
        var map = new IovaTranslation();
        // Unused key slots hold nint.MaxValue: the highest address must still find the right entry.
        for (int i = 0; i < 20; i++)
        {
            map.Add(nint.MaxValue - 0xfff - ((nint)(19 - i) << 13), 0x1000, (ulong)i << 12);
        }

        Translate(map, nint.MaxValue).Should().Be((19UL << 12) + 0xfff);
        Translate(map, nint.MaxValue - 0x1000).Should().BeNull("the gap below the last buffer");
        Translate(map, nint.MaxValue - 0xfff - 0x2000).Should().Be(18UL << 12);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(15)]
    [InlineData(16)]
    [InlineData(17)]
    [InlineData(IovaTranslation.MaxChunk)]
    [InlineData(IovaTranslation.MaxChunk + 1)]
    [InlineData(5000)]
    public void ManyBuffersOfRandomSizesTranslateAsALinearSearchDoes(int buffers)
    {
        var random = new Random(buffers);
        var map = new IovaTranslation();
        var live = new List<(nint Host, ulong Length, ulong Iova)>();
        nint next = 0x1000;
        for (int i = 0; i < buffers; i++)
        {
            // Random lengths and random gaps (sometimes none), added in random order below.
            ulong length = (ulong)random.Next(1, 0x5000);
            live.Add((next, length, (ulong)random.NextInt64(1, 1L << 40)));
            next += (nint)length + (random.Next(3) == 0 ? 0 : random.Next(1, 0x3000));
        }
        foreach (var b in live.OrderBy(_ => random.Next()))
        {
            map.Add(b.Host, b.Length, b.Iova);
        }
        CrossCheck(map, live, random, next);

        // Remove a random half, then check again: chunks shrink and some go.
        foreach (var b in live.OrderBy(_ => random.Next()).Take(buffers / 2).ToList())
        {
            map.Remove(b.Host).Should().BeTrue();
            live.Remove(b);
        }
        map.Count.Should().Be(live.Count);
        CrossCheck(map, live, random, next);
    }

    [Fact]
    public void FloorFindsTheLastKeyAtOrBelowTheAddress()
    {
        IovaTranslation.Floor([], 5).Should().Be(-1);
        IovaTranslation.Floor([10], 9).Should().Be(-1);
        IovaTranslation.Floor([10], 10).Should().Be(0);
        IovaTranslation.Floor([10], nint.MaxValue).Should().Be(0);
        var random = new Random(7);
        for (int n = 1; n < 70; n++)
        {
            nint[] keys = [.. Enumerable.Range(0, n).Select(i => (nint)(i * 10))];
            for (nint host = -5; host < n * 10 + 5; host++)
            {
                int expected = Array.FindLastIndex(keys, k => k <= host);
                IovaTranslation.Floor(keys, host).Should().Be(expected, "{0} keys, address {1}", n, host);
            }
        }
        nint[] wide = [.. Enumerable.Range(0, 1000).Select(_ => (nint)random.NextInt64(0, long.MaxValue)).Distinct().Order()];
        for (int i = 0; i < 1000; i++)
        {
            nint host = (nint)random.NextInt64(0, long.MaxValue);
            IovaTranslation.Floor(wide, host).Should().Be(Array.FindLastIndex(wide, k => k <= host));
        }
    }

    [Fact]
    public async Task ReadersSeeTheOldOrTheNewMappingWhileABufferIsRemappedElsewhere()
    {
        var map = new IovaTranslation();
        for (int i = 0; i < 600; i++)
        {
            map.Add(Host(i), 0x1000, (ulong)i << 12);
        }
        const ulong OldIova = 0x1_0000_0000, NewIova = 0x2_0000_0000;
        var moving = Host(301);
        using var stop = new CancellationTokenSource();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        using var readersStarted = new CountdownEvent(2);
        var readers = Enumerable.Range(0, 2).Select(r => Task.Run(() =>
        {
            readersStarted.Signal();
            var seen = new HashSet<ulong?>();
            long wrong = 0;
            while (!stop.IsCancellationRequested)
            {
                seen.Add(Translate(map, moving + 0x10));
                wrong += Translate(map, Host(300) + 0xfff) == (300UL << 12) + 0xfff ? 0 : 1;
                wrong += Translate(map, Host(302)) == 302UL << 12 ? 0 : 1;
            }
            return (seen, wrong);
        })).ToArray();
        var writer = Task.Run(() =>
        {
            readersStarted.Wait(timeout.Token);
            // The buffer in the middle goes and comes back at one IOVA, then at the other.
            for (int round = 0; round < 20_000; round++)
            {
                map.Remove(moving).Should().BeTrue();
                map.Add(moving, 0x1000, round % 2 == 0 ? OldIova : NewIova);
            }
            stop.Cancel();
        });

        await writer.WaitAsync(timeout.Token);
        foreach (var (seen, wrong) in await Task.WhenAll(readers))
        {
            wrong.Should().Be(0);
            seen.Should().BeSubsetOf([null, (ulong?)(301UL << 12) + 0x10, OldIova + 0x10, NewIova + 0x10]);
        }
    }

    // Every buffer's first, middle and last byte and the byte past it, plus random addresses, against a linear search.
    private static void CrossCheck(IovaTranslation map, List<(nint Host, ulong Length, ulong Iova)> live, Random random, nint end)
    {
        ulong? Linear(nint host)
        {
            foreach (var b in live)
            {
                if (host >= b.Host && (ulong)(host - b.Host) < b.Length)
                {
                    return b.Iova + (ulong)(host - b.Host);
                }
            }
            return null;
        }
        var probes = new List<nint> { 0, 0xfff, end, nint.MaxValue };
        foreach (var b in live)
        {
            probes.AddRange([b.Host - 1, b.Host, b.Host + (nint)(b.Length / 2), b.Host + (nint)b.Length - 1, b.Host + (nint)b.Length]);
        }
        for (int i = 0; i < 2000; i++)
        {
            probes.Add((nint)random.NextInt64(0, end + 0x1000));
        }
        foreach (var host in probes)
        {
            Translate(map, host).Should().Be(Linear(host), "address 0x{0:x}", host);
        }
    }

    private static nint Host(int i) => (nint)(0x7f00_0000_0000L + ((long)i << 13));

    private static ulong? Translate(IovaTranslation map, nint host) => map.TryTranslate(host, out ulong iova) ? iova : null;
}
