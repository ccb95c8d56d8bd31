using System.ComponentModel;
using System.Diagnostics;

namespace Vfio.Tests.Abi;

/// <summary>The result of one gcc run.</summary>
internal sealed record GccResult(int ExitCode, string StdOut, string StdErr);

/// <summary>Runs gcc on a C source given on standard input.</summary>
internal static class Gcc
{
    public const string InstallHint = "install gcc and linux-libc-dev (apt-get install gcc linux-libc-dev)";

    public static async Task<GccResult> RunAsync(string gcc, IEnumerable<string> arguments, string source)
    {
        var start = new ProcessStartInfo(gcc)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in arguments)
        {
            start.ArgumentList.Add(a);
        }
        start.Environment["LC_ALL"] = "C"; // plain quotes in diagnostics, whatever the machine's locale

        Process process;
        try
        {
            process = Process.Start(start) ?? throw new InvalidOperationException($"could not start {gcc}");
        }
        catch (Win32Exception e)
        {
            throw new InvalidOperationException(
                $"The ABI conformance check needs a C compiler, and '{gcc}' could not be started ({e.Message}): {InstallHint}.", e);
        }

        using (process)
        {
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            await process.StandardInput.WriteAsync(source);
            process.StandardInput.Close();
            using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
            await process.WaitForExitAsync(timeout.Token);
            return new GccResult(process.ExitCode, await stdout, await stderr);
        }
    }
}
