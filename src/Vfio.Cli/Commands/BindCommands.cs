using System.CommandLine;
using System.Globalization;
using Vfio.Cli.Output;

namespace Vfio.Cli.Commands;

/// <summary><c>vfio bind</c> and <c>vfio unbind</c>: hand functions to vfio-pci, keep a record, give them back.</summary>
internal static class BindCommands
{
    public static Command Bind(Cli cli)
    {
        var addresses = Cli.Addresses("The PCI functions to bind (0000:00:06.0)");
        var group = new Option<bool>("--group") { Description = "Bind every other function of their IOMMU groups too, so the groups become viable" };
        var uid = new Option<int?>("--uid") { Description = "Give the group node (and device cdevs) to this user id", CustomParser = ParseId };
        var gid = new Option<int?>("--gid") { Description = "Give the group node (and device cdevs) to this group id", CustomParser = ParseId };
        var timeout = new Option<double>("--timeout") { Description = "Seconds to wait for the group node to appear", DefaultValueFactory = _ => 10 };
        timeout.Validators.Add(r =>
        {
            if (r.GetValueOrDefault<double>() is <= 0 or > 3600)
            {
                r.AddError("--timeout must be between 0 and 3600 seconds.");
            }
        });
        var command = new Command("bind", "Bind PCI functions to vfio-pci, keeping a record of their original drivers (in " + VfioCommandLine.DefaultBindingsDirectory + ") for vfio unbind --restore")
        {
            addresses, group, uid, gid, timeout,
        };
        command.SetAction(cli.Action(async (parse, json, cancellationToken) =>
        {
            var options = new PciBindOptions
            {
                WholeGroup = parse.GetValue(group),
                NodeUserId = parse.GetValue(uid),
                NodeGroupId = parse.GetValue(gid),
                NodeTimeout = TimeSpan.FromSeconds(parse.GetValue(timeout)),
            };
            // The records are written after the binding: the folder is made first, so that a bind
            // that could not be recorded fails before it changes anything.
            cli.Store.EnsureWritable();
            var binding = await PciBinding.BindAsync(cli.Kernel, parse.GetValue(addresses)!, options, cli.Progress, cancellationToken).ConfigureAwait(false);
            var records = new Dictionary<PciAddress, string?>();
            try
            {
                var together = binding.Functions.Select(f => f.Address.ToString()).ToList();
                foreach (var function in binding.Functions)
                {
                    // A function that was already on vfio keeps the record of its earlier bind, if any.
                    records[function.Address] = function.Changed
                        ? cli.Store.Write(new BindingRecordJson(Schema.Version, function.Address.ToString(), function.GroupId,
                            function.OriginalDriver, function.OriginalOverride, DateTimeOffset.UtcNow, together))
                        : cli.Store.Read(function.Address) is null ? null : cli.Store.PathOf(function.Address);
                }
                binding.Keep();
            }
            catch (IOException)
            {
                await binding.RestoreAsync(cli.Progress, CancellationToken.None).ConfigureAwait(false);
                throw;
            }
            var now = binding.Functions.ToDictionary(f => f.Address, f => PciFunction.Read(cli.Kernel, f.Address).Driver);
            if (json)
            {
                cli.WriteJson(new BindDocument(Schema.Version,
                    [.. binding.Functions.Select(f => new BoundJson(f.Address.ToString(), f.GroupId, f.OriginalDriver, f.OriginalOverride, f.Changed, now[f.Address], records[f.Address]))],
                    binding.Nodes), CliJson.Default.BindDocument);
                return Cli.Ok;
            }
            var table = new TextTable("ADDRESS", "WAS", "NOW", "GROUP");
            foreach (var f in binding.Functions)
            {
                table.Add(f.Address.ToString(), f.Changed ? f.OriginalDriver ?? "no driver" : "(already)", now[f.Address], f.GroupId.ToString(CultureInfo.InvariantCulture));
            }
            table.WriteTo(cli.Output);
            string owner = options.NodeUserId is null && options.NodeGroupId is null ? string.Empty
                : $" (owner {options.NodeUserId?.ToString(CultureInfo.InvariantCulture) ?? "-"}:{options.NodeGroupId?.ToString(CultureInfo.InvariantCulture) ?? "-"})";
            cli.Output.WriteLine($"Nodes: {string.Join(", ", binding.Nodes)}{owner}");
            var changed = binding.Functions.Where(f => f.Changed).Select(f => f.Address.ToString()).ToList();
            if (changed.Count > 0)
            {
                cli.Output.WriteLine($"Give them back with: vfio unbind --restore {string.Join(' ', changed)}");
            }
            return Cli.Ok;
        }));
        return command;
    }

    public static Command Unbind(Cli cli)
    {
        var addresses = Cli.Addresses("The PCI functions to unbind from vfio-pci");
        var restore = new Option<bool>("--restore") { Description = "Give each function back to the driver it had before vfio bind (without a record: to whatever driver the kernel probes)" };
        var group = new Option<bool>("--group") { Description = "Also every other function of their IOMMU groups that is on vfio" };
        var wait = new Option<bool>("--wait") { Description = "Unbind even a function whose group is open in a process: the kernel blocks until that process lets go, asking it through the device's REQ interrupt" };
        var command = new Command("unbind", "Unbind PCI functions from vfio-pci and clear their driver_override; with --restore, give them back to their original drivers")
        {
            addresses, restore, group, wait,
        };
        command.SetAction(cli.Action(async (parse, json, cancellationToken) =>
        {
            bool restoring = parse.GetValue(restore);
            var options = new PciBindOptions { WaitForRelease = parse.GetValue(wait) };
            var targets = Expand(cli, parse.GetValue(addresses)!, parse.GetValue(group));
            var results = new List<UnboundJson>();
            foreach (var function in targets)
            {
                BindingRecordJson? record = null;
                try
                {
                    record = restoring ? cli.Store.Read(function.Address) : null;
                    IReadOnlyList<PciFunction> after;
                    if (restoring)
                    {
                        var bound = BindingStore.ToBoundFunction(record, function.Address, function.IommuGroup ?? -1);
                        after = await PciBinding.RestoreAsync(cli.Kernel, [bound], options, cli.Progress, cancellationToken).ConfigureAwait(false);
                        if (record is not null)
                        {
                            cli.Store.Delete(function.Address);
                        }
                    }
                    else
                    {
                        after = await PciBinding.UnbindAsync(cli.Kernel, [function.Address], options, cli.Progress, cancellationToken).ConfigureAwait(false);
                    }
                    results.Add(new UnboundJson(function.Address.ToString(), after[0].Driver, restoring, record?.OriginalDriver, record is not null, null));
                }
                catch (Exception e) when (e is VfioException or IOException)
                {
                    results.Add(new UnboundJson(function.Address.ToString(), PciFunction.Read(cli.Kernel, function.Address).Driver, false, record?.OriginalDriver, record is not null, e.Message));
                }
            }
            var warnings = GroupWarnings(cli, targets);
            if (json)
            {
                cli.WriteJson(new UnbindDocument(Schema.Version, results, warnings), CliJson.Default.UnbindDocument);
            }
            else
            {
                var table = new TextTable("ADDRESS", "NOW", "NOTE");
                foreach (var r in results)
                {
                    string note = r.Error is not null ? "failed"
                        : !r.Restored ? r.Driver is null ? "left without a driver" : "not on vfio: left as it is"
                        : r.Recorded ? "restored to its original driver " + (r.OriginalDriver ?? "(none)")
                        : "no record of its original driver: cleared driver_override and let the kernel probe";
                    table.Add(r.Address, r.Driver ?? "no driver", note);
                }
                table.WriteTo(cli.Output);
                foreach (string warning in warnings)
                {
                    cli.Output.WriteLine("Note: " + warning);
                }
            }
            foreach (var failed in results.Where(r => r.Error is not null))
            {
                cli.Error.WriteLine("vfio: " + failed.Error);
            }
            return results.Any(r => r.Error is not null) ? Cli.Failure : Cli.Ok;
        }));
        return command;
    }

    /// <summary>A user or group id: a number from 0 up.</summary>
    private static int? ParseId(System.CommandLine.Parsing.ArgumentResult result)
    {
        string text = result.Tokens.Count > 0 ? result.Tokens[0].Value : string.Empty;
        if (!int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int id))
        {
            result.AddError($"'{text}' is not a user or group id (a number from 0 up).");
            return null;
        }
        return id;
    }

    /// <summary>The functions asked for and, with --group, the rest of their groups that is on vfio.</summary>
    private static List<PciFunction> Expand(Cli cli, PciAddress[] addresses, bool wholeGroup)
    {
        var functions = addresses.Distinct().Select(a => PciFunction.Read(cli.Kernel, a)).ToList();
        if (!wholeGroup)
        {
            return functions;
        }
        var result = new List<PciFunction>(functions);
        foreach (int group in functions.Where(f => f.IommuGroup is not null).Select(f => f.IommuGroup!.Value).Distinct())
        {
            foreach (var member in IommuGroupInfo.Read(cli.Kernel, group).Members)
            {
                if (PciAddress.TryParse(member.Name, CultureInfo.InvariantCulture, out var address) && !result.Any(f => f.Address == address)
                    && PciFunction.Read(cli.Kernel, address) is { IsBoundToVfio: true } function)
                {
                    result.Add(function);
                }
            }
        }
        return result;
    }

    /// <summary>Groups left with functions on vfio that are no longer viable because of what was given back.</summary>
    private static List<string> GroupWarnings(Cli cli, List<PciFunction> targets)
    {
        var warnings = new List<string>();
        foreach (int id in targets.Where(f => f.IommuGroup is not null).Select(f => f.IommuGroup!.Value).Distinct())
        {
            var group = IommuGroupInfo.Read(cli.Kernel, id);
            if (group.HasVfioMember && !group.IsViable)
            {
                warnings.Add($"group {id} still has functions on vfio but is no longer viable: {string.Join(", ", group.BlockingMembers.Select(m => m.Name + " is on " + m.Driver))}.");
            }
        }
        return warnings;
    }
}
