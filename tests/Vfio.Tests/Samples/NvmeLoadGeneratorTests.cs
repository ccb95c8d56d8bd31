using NvmeDriver;
using static Vfio.Tests.Samples.SimulatedNvme;

namespace Vfio.Tests.Samples;

/// <summary>The NVMe sample's load generator on the simulated controller: it runs, counts, measures and cleans up (no timing is asserted).</summary>
public class NvmeLoadGeneratorTests
{
    [Theory]
    [InlineData(NvmeCompletionMode.Polling)]
    [InlineData(NvmeCompletionMode.Interrupt)]
    public async Task ALoadOnTwoQueuesCompletesCommandsMeasuresThemAndDeletesItsQueues(NvmeCompletionMode completion)
    {
        await using var nvme = await StartAsync(vectors: 3);
        var options = new NvmeLoadOptions
        {
            Write = true,
            Queues = 2,
            Depth = 4,
            RegionBytes = 1 << 20,
            Completion = completion,
            WarmUp = TimeSpan.FromMilliseconds(50),
            Duration = TimeSpan.FromMilliseconds(300),
        };
        int before = nvme.Model.CommandsCompleted;

        var result = await NvmeLoadGenerator.RunAsync(nvme.Controller, nvme.Namespace, options, Soon());

        result.Ios.Should().BeGreaterThan(0);
        result.Latency.Count.Should().Be(result.Ios);
        (nvme.Model.CommandsCompleted - before).Should().BeGreaterThanOrEqualTo((int)result.Ios, "every measured command was completed by the controller");
        result.Latency.Percentile(99).Should().BeGreaterThanOrEqualTo(result.Latency.Percentile(50));
        result.Phases.WaitNs.Should().BeGreaterThan(0);
        result.Phases.CommandsPerRound.Should().BeInRange(1, 4);
        result.Iops.Should().BeApproximately(result.Ios / 0.3, 1e-6);
        if (completion == NvmeCompletionMode.Polling)
        {
            result.Phases.WakeUpsPerIo.Should().Be(0);
            // One thread runs each polled loop from start to end: what it allocates is all the I/O path does.
            result.LoopAllocatedBytes.Should().Be(0, "submitting, ringing, polling and taking completions allocate nothing");
        }
        else
        {
            result.Phases.EmptyPollsPerIo.Should().Be(0);
            nvme.Model.MessagesSent(1).Should().BeGreaterThan(0);
            nvme.Model.MessagesSent(2).Should().BeGreaterThan(0);
        }
        nvme.Controller.IoQueues.Should().BeEmpty();
        nvme.Model.IoQueues.SubmissionQueues.Should().BeEmpty();
        nvme.Model.ReadBlocks(0, 2048).Should().Contain(b => b != 0, "the writes carried the random pattern of the data buffers");
        nvme.Model.ReadBlocks(2048, 2048).Should().OnlyContain(b => b == 0, "nothing was written past the 1 MiB region");
    }

    [Fact]
    public async Task OptionsOutsideTheNamespaceOrTheQueueLimitsAreRefusedBeforeAnyQueueIsMade()
    {
        await using var nvme = await StartAsync();

        var tooDeep = () => NvmeLoadGenerator.RunAsync(nvme.Controller, nvme.Namespace, new NvmeLoadOptions { Depth = 4096 });
        var ragged = () => NvmeLoadGenerator.RunAsync(nvme.Controller, nvme.Namespace, new NvmeLoadOptions { TransferBytes = 1000 });
        var empty = () => NvmeLoadGenerator.RunAsync(nvme.Controller, nvme.Namespace, new NvmeLoadOptions { RegionBytes = 2048 });

        await tooDeep.Should().ThrowAsync<ArgumentOutOfRangeException>();
        await ragged.Should().ThrowAsync<ArgumentOutOfRangeException>().WithMessage("*not a multiple of the 512-byte block*");
        await empty.Should().ThrowAsync<ArgumentOutOfRangeException>().WithMessage("*holds no transfer*");
        nvme.Controller.IoQueues.Should().BeEmpty();
    }
}
