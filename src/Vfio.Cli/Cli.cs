using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Vfio.Cli.Output;

namespace Vfio.Cli;

/// <summary>What every command works with: the kernel, where it writes, the binding records, and the shared options.</summary>
internal sealed class Cli(VfioKernel kernel, TextWriter output, TextWriter error, BindingStore store)
{
    public const int Ok = 0;
    public const int Failure = 1;
    public const int Usage = 2;

    public VfioKernel Kernel { get; } = kernel;

    public TextWriter Output { get; } = output;

    public TextWriter Error { get; } = error;

    public BindingStore Store { get; } = store;

    /// <summary>--json, on every command.</summary>
    public Option<bool> Json { get; } = new("--json")
    {
        Description = "Print one JSON document (schema in docs/cli.md) instead of tables",
        Recursive = true,
    };

    /// <summary>Progress of long waits goes to standard error, so it never mixes with --json on standard output.</summary>
    public IProgress<PciBindingWait> Progress => new WaitReporter(Error);

    /// <summary>Runs <paramref name="body"/> with a registry on the kernel, disposed afterwards.</summary>
    /// <param name="body">What to do with the registry.</param>
    /// <param name="backend">A backend to force (--backend), or null to let the library choose per device.</param>
    public async Task<T> WithRegistryAsync<T>(Func<VfioRegistry, T> body, VfioBackend? backend = null)
    {
        var registry = new VfioRegistry(Kernel, options: new VfioRegistryOptions { Backend = backend });
        try
        {
            return body(registry);
        }
        finally
        {
            await registry.DisposeAsync().ConfigureAwait(false);
        }
    }

    public void WriteJson<T>(T document, JsonTypeInfo<T> type) => Output.WriteLine(JsonSerializer.Serialize(document, type));

    /// <summary>A command's action: runs the body and turns failures into a message and exit code 1 (2 for usage errors).</summary>
    public Func<ParseResult, CancellationToken, Task<int>> Action(Func<ParseResult, bool, CancellationToken, Task<int>> body) =>
        async (parse, cancellationToken) =>
        {
            bool json = parse.GetValue(Json);
            try
            {
                return await body(parse, json, cancellationToken).ConfigureAwait(false);
            }
            catch (UsageException e)
            {
                return Fail(json, e.Message, null, Usage);
            }
            catch (VfioException e)
            {
                return Fail(json, e.Message, e.Errno == 0 ? null : e.ErrorName, Failure);
            }
            catch (OperationCanceledException)
            {
                return Fail(json, "Cancelled.", null, Failure);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidOperationException)
            {
                return Fail(json, e.Message, null, Failure);
            }
        };

    private int Fail(bool json, string message, string? errno, int exitCode)
    {
        Error.WriteLine("vfio: " + message);
        if (json)
        {
            WriteJson(new ErrorDocument(Schema.Version, new ErrorJson(message, errno, exitCode)), CliJson.Default.ErrorDocument);
        }
        return exitCode;
    }

    /// <summary>An argument of one or more PCI addresses; a malformed one is a usage error that names it.</summary>
    public static Argument<PciAddress[]> Addresses(string description) => new("ADDRESS")
    {
        Description = description,
        Arity = ArgumentArity.OneOrMore,
        CustomParser = ParseAddresses,
    };

    /// <summary>An argument of exactly one PCI address.</summary>
    public static Argument<PciAddress[]> Address(string description) => new("ADDRESS")
    {
        Description = description,
        Arity = ArgumentArity.ExactlyOne,
        CustomParser = ParseAddresses,
    };

    private static PciAddress[] ParseAddresses(ArgumentResult result)
    {
        var addresses = new List<PciAddress>();
        foreach (var token in result.Tokens)
        {
            if (PciAddress.TryParse(token.Value, CultureInfo.InvariantCulture, out var address))
            {
                addresses.Add(address);
            }
            else
            {
                result.AddError($"'{token.Value}' is not a PCI address (domain:bus:slot.function, such as 0000:00:03.0).");
            }
        }
        return [.. addresses];
    }

    /// <summary>Parses hexadecimal ("1b36", "0x1b36") for the filters of vfio list.</summary>
    public static uint? ParseHex(ArgumentResult result, int maxDigits)
    {
        string text = result.Tokens.Count > 0 ? result.Tokens[0].Value : string.Empty;
        string digits = text.StartsWith("0x", StringComparison.OrdinalIgnoreCase) ? text[2..] : text;
        if (digits.Length == 0 || digits.Length > maxDigits
            || !uint.TryParse(digits, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out uint value))
        {
            result.AddError($"'{text}' is not a hexadecimal number of at most {maxDigits} digits.");
            return null;
        }
        return value;
    }

    public static string Hex4(uint value) => value.ToString("x4", CultureInfo.InvariantCulture);

    public static string Hex(ulong value) => "0x" + value.ToString("x", CultureInfo.InvariantCulture);

    public static FunctionJson ToJson(PciFunction f) => new(f.Address.ToString(), Hex4(f.VendorId), Hex4(f.DeviceId),
        f.ClassCode.ToString("x6", CultureInfo.InvariantCulture), Hex4(f.SubsystemVendorId), Hex4(f.SubsystemId),
        f.Driver, f.DriverOverride, f.IommuGroup, f.IsBridge);

    /// <summary>A size as people read it: "16 KiB", "2 MiB", "300 bytes".</summary>
    public static string Size(ulong bytes)
    {
        string[] units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
        int unit = 0;
        while (unit < units.Length - 1 && bytes >= 1024 && bytes % 1024 == 0)
        {
            bytes /= 1024;
            unit++;
        }
        return bytes.ToString(CultureInfo.InvariantCulture) + " " + units[unit];
    }

    /// <summary>Writes "vfio: waiting for X (3 s of 10 s)" for each report of a long wait.</summary>
    private sealed class WaitReporter(TextWriter error) : IProgress<PciBindingWait>
    {
        public void Report(PciBindingWait value)
        {
            string limit = value.Limit is { } l ? string.Create(CultureInfo.InvariantCulture, $" of {l.TotalSeconds:0.#} s") : string.Empty;
            error.WriteLine(string.Create(CultureInfo.InvariantCulture, $"vfio: waiting for {value.What} ({value.Elapsed.TotalSeconds:0.#} s{limit})"));
        }
    }
}

/// <summary>A command line that parsed but asks for something impossible (exit code 2).</summary>
internal sealed class UsageException(string message) : Exception(message);
