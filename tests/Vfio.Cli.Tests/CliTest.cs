using System.Text.Json;
using Vfio.Testing;

namespace Vfio.Cli.Tests;

/// <summary>
/// A test of the vfio command on the simulated kernel: runs it in-process as the tool's Main runs it,
/// with its binding records in a folder of its own, and checks afterwards that nothing is left open.
/// </summary>
public abstract class CliTest : IDisposable
{
    protected CliTest()
    {
        Bindings = Path.Combine(Path.GetTempPath(), "vfio-cli-tests-" + Guid.NewGuid().ToString("N"));
    }

    protected SimulatedKernel Kernel { get; } = new();

    /// <summary>Where the tool keeps its binding records in this test (instead of /run/vfio-dotnet/bindings).</summary>
    protected string Bindings { get; }

    /// <summary>A path under the simulated kernel's device root ("vfio/7").</summary>
    protected string Dev(string relative) => Kernel.DevRoot + "/" + relative;

    /// <summary>What one run of the tool gave.</summary>
    protected sealed record Result(int ExitCode, string Output, string Error)
    {
        public JsonElement Json => JsonDocument.Parse(Output).RootElement;
    }

    protected Task<Result> Run(params string[] args) => Run(new StringWriter(), args);

    /// <summary>Runs the tool with its error output going to <paramref name="error"/> (a test that watches it as it is written).</summary>
    protected async Task<Result> Run(StringWriter error, params string[] args)
    {
        using var output = new StringWriter();
        using var _ = error;
        int code = await VfioCommandLine.RunAsync(args, Kernel, output, error, Bindings).WaitAsync(TimeSpan.FromSeconds(60));
        return new Result(code, output.ToString(), error.ToString());
    }

    /// <summary>The NVMe controller of the VM suite: on the host nvme driver, alone in group 7.</summary>
    protected SimulatedPciDevice AddNvme(string address = "0000:00:06.0", int group = 7, string? driver = "nvme") =>
        Kernel.AddPciDevice(address, new NvmeDeviceModel(), group, driver);

    public void Dispose()
    {
        if (Directory.Exists(Bindings))
        {
            Directory.Delete(Bindings, recursive: true);
        }
        Kernel.AssertNoLeaks();
        GC.SuppressFinalize(this);
    }
}
