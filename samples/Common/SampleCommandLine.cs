using System.Globalization;
using Microsoft.Extensions.Logging;
using Vfio;

namespace Vfio.Samples;

/// <summary>
/// The command line every sample takes: an optional PCI address (none: run on the simulated
/// kernel), <c>--backend legacy|iommufd</c> to force how the library reaches the device (by default
/// it chooses), and <c>--verbose</c> for the library's logs on the console.
/// </summary>
internal sealed class SampleCommandLine
{
    private SampleCommandLine(PciAddress? address, bool verbose, VfioBackend? backend)
    {
        Address = address;
        Verbose = verbose;
        Backend = backend;
    }

    /// <summary>The device to drive on the machine's kernel, or null for the simulated kernel.</summary>
    public PciAddress? Address { get; }

    /// <summary>Whether to log at Debug level to the console.</summary>
    public bool Verbose { get; }

    /// <summary>The backend to force (<see cref="VfioRegistryOptions.Backend"/>), or null to let the library choose.</summary>
    public VfioBackend? Backend { get; }

    /// <summary>Parses the arguments; on --help or an error, writes usage and returns the exit code instead.</summary>
    /// <param name="program">The program's name, for messages.</param>
    /// <param name="args">The arguments.</param>
    /// <param name="output">Where --help goes.</param>
    /// <param name="exitCode">0 after --help, 2 after a bad argument.</param>
    public static SampleCommandLine? Parse(string program, IReadOnlyList<string> args, TextWriter output, out int exitCode)
    {
        string usage = $"usage: {program} [PCI-ADDRESS] [--backend legacy|iommufd] [--verbose]   (no address: run on the simulated kernel)";
        exitCode = 0;
        bool verbose = false;
        PciAddress? address = null;
        VfioBackend? backend = null;
        for (int i = 0; i < args.Count; i++)
        {
            string arg = args[i];
            if (arg is "--verbose" or "-v")
            {
                verbose = true;
            }
            else if (arg == "--backend")
            {
                string value = i + 1 < args.Count ? args[++i] : string.Empty;
                if (!BackendDescription.TryParse(value, out VfioBackend chosen))
                {
                    Console.Error.WriteLine($"{program}: --backend takes legacy or iommufd, not '{value}'\n{usage}");
                    exitCode = 2;
                    return null;
                }
                backend = chosen;
            }
            else if (arg is "--help" or "-h")
            {
                output.WriteLine(usage);
                return null;
            }
            else if (PciAddress.TryParse(arg, CultureInfo.InvariantCulture, out var parsed))
            {
                address = parsed;
            }
            else
            {
                Console.Error.WriteLine($"{program}: '{arg}' is not a PCI address (dddd:bb:dd.f)\n{usage}");
                exitCode = 2;
                return null;
            }
        }
        return new SampleCommandLine(address, verbose, backend);
    }

    /// <summary>A logger factory: single-line console logs at Debug with --verbose, nothing otherwise.</summary>
    public ILoggerFactory CreateLoggerFactory() => LoggerFactory.Create(builder =>
    {
        builder.SetMinimumLevel(Verbose ? LogLevel.Debug : LogLevel.None);
        if (Verbose)
        {
            builder.AddSimpleConsole(o =>
            {
                o.SingleLine = true;
                o.TimestampFormat = "HH:mm:ss.fff ";
            });
        }
    });
}
