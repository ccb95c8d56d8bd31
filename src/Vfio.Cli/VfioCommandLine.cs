using System.CommandLine;
using System.CommandLine.Help;
using Vfio.Cli.Commands;

namespace Vfio.Cli;

/// <summary>
/// The <c>vfio</c> command line, runnable in-process: the tool's <c>Main</c> runs it on the real kernel
/// with the console, tests on a simulated kernel with string writers.
/// </summary>
public static class VfioCommandLine
{
    /// <summary>Where <c>vfio bind</c> keeps its records of original drivers.</summary>
    public const string DefaultBindingsDirectory = "/run/vfio-dotnet/bindings";

    /// <summary>Parses <paramref name="args"/> and runs the command.</summary>
    /// <param name="args">The arguments, without the program name.</param>
    /// <param name="kernel">The kernel the commands work on.</param>
    /// <param name="output">Where results go (tables, or the JSON document).</param>
    /// <param name="error">Where errors, notes and the progress of long waits go.</param>
    /// <param name="bindingsDirectory">Where binding records are kept; <see cref="DefaultBindingsDirectory"/> when null.</param>
    /// <param name="cancellationToken">Cancels a running command (Ctrl+C).</param>
    /// <returns>The exit code: 0 success, 1 failure, 2 usage error.</returns>
    public static async Task<int> RunAsync(IReadOnlyList<string> args, VfioKernel kernel, TextWriter output, TextWriter error,
        string? bindingsDirectory = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(args);
        ArgumentNullException.ThrowIfNull(kernel);
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(error);
        var cli = new Cli(kernel, output, error, new BindingStore(bindingsDirectory ?? DefaultBindingsDirectory));
        // A plain command named vfio rather than RootCommand, which names itself after the assembly (Vfio.Cli).
        var root = new Command("vfio", "Hand PCI devices to user-space drivers through VFIO, and back; inspect them and the machine.")
        {
            new HelpOption(),
            new VersionOption(),
            ListCommand.Create(cli),
            BindCommands.Bind(cli),
            BindCommands.Unbind(cli),
            ShowCommand.Create(cli),
            DoctorCommand.Create(cli),
            MdevCommands.Create(cli),
        };
        root.Options.Add(cli.Json);
        var parse = root.Parse(args);
        if (parse.Errors.Count > 0)
        {
            foreach (var e in parse.Errors)
            {
                error.WriteLine("vfio: " + e.Message);
            }
            error.WriteLine("Try 'vfio --help'" + (parse.CommandResult.Command == root ? "." : $" or 'vfio {CommandPath(parse)} --help'."));
            return Cli.Usage;
        }
        return await parse.InvokeAsync(new InvocationConfiguration
        {
            Output = output,
            Error = error,
            EnableDefaultExceptionHandler = false,
            ProcessTerminationTimeout = null,
        }, cancellationToken).ConfigureAwait(false);
    }

    private static string CommandPath(ParseResult parse)
    {
        var names = new List<string>();
        for (var result = parse.CommandResult; result.Parent is System.CommandLine.Parsing.CommandResult parent; result = parent)
        {
            names.Insert(0, result.Command.Name);
        }
        return string.Join(' ', names);
    }
}
