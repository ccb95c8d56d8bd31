using NvmeDriver;
using Vfio.Testing;

namespace Vfio.Tests.Samples;

/// <summary>The NVMe sample driver and its program on the simulated kernel.</summary>
public class NvmeControllerTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task TheProgramPassesEveryStepAndLeavesTheWrittenBlocksOnTheNamespace()
    {
        var model = new NvmeDeviceModel();
        using var output = new StringWriter();

        int exitCode = await NvmeDriverProgram.RunAsync([], output, model);

        string text = output.ToString();
        exitCode.Should().Be(0, text);
        text.Should().Contain("All 18 steps passed in ");
        text.Should().Contain("model 'QEMU NVMe Ctrl', serial 'VFIONVME01', firmware '7.2.22'");
        text.Should().Contain("32768 blocks of 512 bytes (16 MiB)");
        text.Should().Contain("READ past the end refused: status type 0 (generic), code 0x80 (LBA out of range), do not retry");
        model.ReadBlocks((long)NvmeDriverProgram.TestLba, NvmeDriverProgram.TestBlocks).Should().Contain(b => b != 0, "the program wrote its pattern there");
        model.ReadBlocks((long)NvmeDriverProgram.LargeLba, 128).Should().Contain(b => b != 0, "the PRP list step wrote 64 KiB there");
        text.Should().Contain("64 KiB at LBA 64: WRITE from offset 512 on polled queue 2 (PRP1 + a 16-entry PRP list)");
        model.IoQueues.SubmissionQueues.Should().BeEmpty();
    }

    [Fact]
    public async Task TheProgramReportsAFailedStepAndStillCleansUp()
    {
        // Too small for the test blocks: the namespace step fails, the rest is released.
        var model = new NvmeDeviceModel(namespaceBlocks: 8);
        using var output = new StringWriter();

        int exitCode = await NvmeDriverProgram.RunAsync([], output, model);

        string text = output.ToString();
        exitCode.Should().Be(1);
        text.Should().MatchRegex(@"\[FAIL\] identify ns 1 .*namespace 1 has 8 blocks, too few for the test");
        text.Should().Contain("[  ok] leak check");
        text.Should().Contain("1 step(s) failed");
    }

    [Fact]
    public async Task AFailedCommandThrowsWithItsStatusDecoded()
    {
        var kernel = new SimulatedKernel();
        kernel.AddPciDevice("0000:00:05.0", new NvmeDeviceModel(namespaceBlocks: 64), iommuGroup: 5);
        await using (var registry = new VfioRegistry(kernel))
        {
            registry.AddDriver(new NvmePciDriver());
            var nvme = (NvmeController)(await registry.ProbeAsync()).Registered.Single();
            using (nvme.Open())
            {
                using var timeout = new CancellationTokenSource(Timeout);
                await nvme.DisableAsync(timeout.Token);
                nvme.ConfigureAdminQueues(8);
                await nvme.EnableAsync(timeout.Token);
                nvme.EnableMsix();
                var ns = await nvme.IdentifyNamespaceAsync(1, timeout.Token);
                var pair = await nvme.CreateIoQueuePairAsync(1, 16, timeout.Token);
                using var buffer = nvme.AllocateDmaBuffer(4096);

                var read = () => pair.ReadAsync(ns, 63, 2, buffer, 0, timeout.Token);

                var failure = (await read.Should().ThrowAsync<NvmeCommandException>()).Which;
                failure.Status.Type.Should().Be(0);
                failure.Status.Code.Should().Be(0x80);
                failure.Status.DoNotRetry.Should().BeTrue();
                failure.Message.Should().Be("READ on queue 1 failed: status type 0 (generic), code 0x80 (LBA out of range), do not retry");

                var missing = () => nvme.IdentifyNamespaceAsync(0, timeout.Token);
                (await missing.Should().ThrowAsync<NvmeCommandException>()).Which.Status.CodeName.Should().Be("invalid namespace or format");

                await nvme.DeleteIoQueuePairAsync(pair, timeout.Token);
                await nvme.DisableAsync(timeout.Token);
            }
            await registry.UnregisterAsync(nvme);
            nvme.Dispose();
        }
        kernel.AssertNoLeaks();
    }

    [Fact]
    public async Task EnablingWithoutAdminQueuesIsRefusedBeforeTouchingTheController()
    {
        var kernel = new SimulatedKernel();
        var model = new NvmeDeviceModel();
        kernel.AddPciDevice("0000:00:05.0", model, iommuGroup: 5);
        await using (var registry = new VfioRegistry(kernel))
        {
            registry.AddDriver(new NvmePciDriver());
            var nvme = (NvmeController)(await registry.ProbeAsync()).Registered.Single();
            using (nvme.Open())
            {
                var enable = () => nvme.EnableAsync();
                await enable.Should().ThrowAsync<InvalidOperationException>().WithMessage("*ConfigureAdminQueues*");
                model.ControllerStatus.Should().Be(0u);
            }
            await registry.UnregisterAsync(nvme);
            nvme.Dispose();
        }
        kernel.AssertNoLeaks();
    }

    [Theory]
    [InlineData(0x4101, "status type 1 (command specific), code 0x01 (invalid queue identifier), do not retry")]
    [InlineData(0x010c, "status type 1 (command specific), code 0x0c (invalid queue deletion)")]
    [InlineData(0x2281, "status type 2 (media and data integrity), code 0x81 (unrecovered read error), more in the error log")]
    [InlineData(0x0000, "status type 0 (generic), code 0x00 (successful completion)")]
    public void StatusesDecodeTypeCodeAndFlags(int value, string text)
    {
        var status = new NvmeStatus((ushort)value);
        status.ToString().Should().Be(text);
        status.IsSuccess.Should().Be(value == 0);
    }
}
