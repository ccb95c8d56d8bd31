using Vfio;
using Vfio.Cli;

// The tool on the running kernel; Ctrl+C cancels a wait (a bind's rollback still runs).
using var cancel = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) =>
{
    e.Cancel = true;
    cancel.Cancel();
};
return await VfioCommandLine.RunAsync(args, VfioKernel.Linux, Console.Out, Console.Error, cancellationToken: cancel.Token).ConfigureAwait(false);
