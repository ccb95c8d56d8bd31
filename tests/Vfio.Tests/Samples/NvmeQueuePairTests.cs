using NvmeDriver;
using static Vfio.Tests.Samples.SimulatedNvme;

namespace Vfio.Tests.Samples;

/// <summary>The NVMe sample's queue pair: its I/O path (many commands in flight, one doorbell each way) and its one-command path.</summary>
public class NvmeQueuePairTests
{
    [Fact]
    public async Task ManyCommandsGoOutWithOneDoorbellAndEachComesBackWithItsOwnIdentifier()
    {
        await using var nvme = await StartAsync();
        var pair = await nvme.Controller.CreateIoQueuePairAsync(1, 17, NvmeCompletionMode.Polling, Soon());
        using var data = nvme.Controller.AllocateDmaBuffer(16 * 4096, DmaAccess.DeviceReads);
        new Random(7).NextBytes(data.Span);
        int before = nvme.Model.CommandsCompleted;

        var ids = new List<ushort>();
        for (int i = 0; i < 16; i++)
        {
            pair.TrySubmitWrite(nvme.Namespace, (ulong)(i * 8), 8, data, (ulong)(i * 4096), out ushort id).Should().BeTrue();
            ids.Add(id);
        }
        pair.InFlight.Should().Be(16);
        nvme.Model.CommandsCompleted.Should().Be(before, "the controller learns of the commands at the doorbell");
        pair.RingSubmissionDoorbell();
        var completed = await TakeAsync(pair, 16);
        pair.RingCompletionDoorbell();

        ids.Should().Equal(Enumerable.Range(0, 16).Select(i => (ushort)i), "identifiers are handed out lowest first");
        completed.Select(c => c.CommandId).Should().BeEquivalentTo(ids);
        completed.Should().OnlyContain(c => c.Status.IsSuccess && c.SubmissionQueueId == 1);
        pair.InFlight.Should().Be(0);
        nvme.Model.ReadBlocks(0, 128).Should().Equal(data.Span.ToArray());
    }

    [Fact]
    public async Task ASubmissionBeyondTheCapacityIsRefusedAndWritesNothing()
    {
        await using var nvme = await StartAsync();
        var pair = await nvme.Controller.CreateIoQueuePairAsync(1, 4, NvmeCompletionMode.Polling, Soon());
        using var data = nvme.Controller.AllocateDmaBuffer(4 * 4096, DmaAccess.DeviceWrites);

        for (int i = 0; i < 3; i++)
        {
            pair.TrySubmitRead(nvme.Namespace, 0, 8, data, (ulong)(i * 4096), out _).Should().BeTrue();
        }
        pair.NextCommandId.Should().Be(-1);
        byte[] queue = pair.Submissions.Span.ToArray();

        pair.TrySubmitRead(nvme.Namespace, 0, 8, data, 3 * 4096, out _).Should().BeFalse();

        pair.Capacity.Should().Be(3, "a queue of 4 entries holds 3 commands");
        pair.Submissions.Span.ToArray().Should().Equal(queue);
        pair.RingSubmissionDoorbell();
        (await TakeAsync(pair, 3)).Should().HaveCount(3);
        pair.RingCompletionDoorbell();
        pair.TrySubmitRead(nvme.Namespace, 0, 8, data, 0, out _).Should().BeTrue("the taken completions freed their identifiers");
        pair.RingSubmissionDoorbell();
        (await TakeAsync(pair, 1)).Should().ContainSingle();
        pair.RingCompletionDoorbell();
    }

    [Fact]
    public async Task IdentifiersAndPhaseTagsHoldOverManyWrapsOfASmallQueue()
    {
        await using var nvme = await StartAsync();
        var pair = await nvme.Controller.CreateIoQueuePairAsync(1, 3, NvmeCompletionMode.Interrupt, Soon());
        using var data = nvme.Controller.AllocateDmaBuffer(2 * 4096, DmaAccess.DeviceWrites);

        for (int round = 0; round < 20; round++)
        {
            pair.TrySubmitRead(nvme.Namespace, (ulong)round, 1, data, 0, out ushort a).Should().BeTrue();
            pair.TrySubmitRead(nvme.Namespace, (ulong)round + 1, 1, data, 4096, out ushort b).Should().BeTrue();
            pair.RingSubmissionDoorbell();
            var completed = await TakeAsync(pair, 2);
            pair.RingCompletionDoorbell();
            completed.Select(c => c.CommandId).Should().BeEquivalentTo([a, b], $"round {round}");
        }
    }

    [Fact]
    public async Task AFailedCommandComesBackWithItsStatusAndFreesItsIdentifier()
    {
        await using var nvme = await StartAsync();
        var pair = await nvme.Controller.CreateIoQueuePairAsync(1, 4, NvmeCompletionMode.Polling, Soon());
        using var data = nvme.Controller.AllocateDmaBuffer(4096, DmaAccess.DeviceWrites);

        pair.TrySubmitRead(nvme.Namespace, nvme.Namespace.BlockCount, 1, data, 0, out ushort id).Should().BeTrue();
        pair.RingSubmissionDoorbell();
        var completion = (await TakeAsync(pair, 1)).Single();
        pair.RingCompletionDoorbell();

        completion.CommandId.Should().Be(id);
        completion.Status.Code.Should().Be(0x80, "LBA out of range");
        pair.InFlight.Should().Be(0);
    }

    [Fact]
    public async Task TheHeadDoorbellWaitsForItsBatchOfCompletionsButNeverLetsTheCompletionQueueFill()
    {
        await using var nvme = await StartAsync();
        var pair = await nvme.Controller.CreateIoQueuePairAsync(1, 4, NvmeCompletionMode.Polling, Soon());
        pair.CompletionsPerDoorbell = 2;
        using var data = nvme.Controller.AllocateDmaBuffer(3 * 4096, DmaAccess.DeviceWrites);

        await RoundAsync(1);
        nvme.Model.CompletionQueueHead(1).Should().Be(0, "one completion taken is below the batch of 2");
        await RoundAsync(1);
        nvme.Model.CompletionQueueHead(1).Should().Be(2, "the second completion makes the batch");

        pair.CompletionsPerDoorbell = 100;
        await RoundAsync(3);
        nvme.Model.CompletionQueueHead(1).Should().Be(2, "three taken are below the batch of 100");
        await RoundAsync(1);
        nvme.Model.CompletionQueueHead(1).Should().Be(1, "3 taken and 1 in flight would fill the 4-entry queue: the head went first (2 + 3 wraps to 1)");

        async Task RoundAsync(int commands)
        {
            for (int i = 0; i < commands; i++)
            {
                pair.TrySubmitRead(nvme.Namespace, 0, 8, data, (ulong)i * 4096, out _).Should().BeTrue();
            }
            pair.RingSubmissionDoorbell();
            (await TakeAsync(pair, commands)).Should().HaveCount(commands);
            pair.RingCompletionDoorbell();
            await nvme.Model.WhenIdleAsync();
        }
    }

    [Fact]
    public async Task APolledPairHasNoInterruptToWaitForAndItsOneCommandPathPolls()
    {
        await using var nvme = await StartAsync();
        var pair = await nvme.Controller.CreateIoQueuePairAsync(1, 8, NvmeCompletionMode.Polling, Soon());
        using var data = nvme.Controller.AllocateDmaBuffer(4096, DmaAccess.ReadWrite);
        data.Span.Fill(0x3c);

        var wait = async () => await pair.WaitForInterruptAsync();

        pair.Vector.Should().Be(-1);
        await wait.Should().ThrowAsync<InvalidOperationException>().WithMessage("*polled*");
        await pair.WriteAsync(nvme.Namespace, 5, 8, data, 0, Soon());
        await nvme.Model.WhenIdleAsync();
        nvme.Model.ReadBlocks(5, 8).Should().OnlyContain(b => b == 0x3c);
        nvme.Model.MessagesSent(1).Should().Be(0);
    }

    [Fact]
    public async Task ATransferOfManyPagesTakesAPrpListFromItsIdentifiersPage()
    {
        await using var nvme = await StartAsync();
        var pair = await nvme.Controller.CreateIoQueuePairAsync(1, 4, NvmeCompletionMode.Interrupt, Soon());
        using var source = nvme.Controller.AllocateDmaBuffer(40 * 4096, DmaAccess.DeviceReads);
        using var back = nvme.Controller.AllocateDmaBuffer(40 * 4096, DmaAccess.DeviceWrites);
        new Random(11).NextBytes(source.Span);
        const int Length = 32 * 4096;

        await pair.WriteAsync(nvme.Namespace, 1000, Length / 512, source, 2048, Soon());
        await pair.ReadAsync(nvme.Namespace, 1000, Length / 512, back, 4096, Soon());

        back.Span.Slice(4096, Length).ToArray().Should().Equal(source.Span.Slice(2048, Length).ToArray());
    }

    [Fact]
    public async Task CreatingAnInterruptDrivenPairWithoutItsVectorNamesTheVectorsToEnable()
    {
        await using var nvme = await StartAsync(vectors: 2);

        var create = () => nvme.Controller.CreateIoQueuePairAsync(2, 8, NvmeCompletionMode.Interrupt, Soon());

        await create.Should().ThrowAsync<InvalidOperationException>().WithMessage("*vector 2*2 vectors are enabled*EnableMsix(3)*");
        nvme.Controller.IoQueues.Should().BeEmpty();
        nvme.Model.IoQueues.CompletionQueues.Should().BeEmpty();
    }

    /// <summary>Takes <paramref name="count"/> completions, polling or waiting for the pair's interrupt.</summary>
    private static async Task<List<NvmeCompletion>> TakeAsync(NvmeQueuePair pair, int count)
    {
        var taken = new List<NvmeCompletion>();
        var token = Soon();
        while (taken.Count < count)
        {
            if (pair.TryTakeCompletion(out var completion))
            {
                taken.Add(completion);
            }
            else if (pair.Vector >= 0)
            {
                await pair.WaitForInterruptAsync(token);
            }
            else
            {
                token.ThrowIfCancellationRequested();
                await Task.Yield();
            }
        }
        return taken;
    }
}
