using System.CommandLine;
using Vfio.Cli.Output;

namespace Vfio.Cli.Commands;

/// <summary><c>vfio list</c>: every PCI function, grouped by IOMMU group, with its driver and its group's viability.</summary>
internal static class ListCommand
{
    public static Command Create(Cli cli)
    {
        var vendor = new Option<uint?>("--vendor") { Description = "Only functions with this vendor id (hex, e.g. 1b36)", CustomParser = r => Cli.ParseHex(r, 4) };
        var device = new Option<uint?>("--device") { Description = "Only functions with this device id (hex)", CustomParser = r => Cli.ParseHex(r, 4) };
        var classCode = new Option<string?>("--class") { Description = "Only functions whose class starts with these hex digits (01: storage, 0108: NVM, 010802: NVMe)" };
        var driver = new Option<string?>("--driver") { Description = "Only functions bound to this driver ('none' for unbound ones)" };
        var command = new Command("list", "List PCI functions by IOMMU group: ids, class, driver, and whether the group is viable for VFIO")
        {
            vendor, device, classCode, driver,
        };
        classCode.Validators.Add(r =>
        {
            string? text = r.Tokens.Count > 0 ? r.Tokens[0].Value : null;
            if (text is not null && (text.Length is 0 or > 6 || !text.All(Uri.IsHexDigit)))
            {
                r.AddError($"'{text}' is not a class prefix of 1 to 6 hex digits (such as 0108).");
            }
        });
        command.SetAction(cli.Action((parse, json, _) =>
        {
            var filter = new Filter(parse.GetValue(vendor), parse.GetValue(device), parse.GetValue(classCode), parse.GetValue(driver));
            var functions = PciFunction.ReadAll(cli.Kernel).Where(filter.Matches).ToList();
            var groups = IommuGroupInfo.ReadAll(cli.Kernel).ToDictionary(g => g.Id);
            var byGroup = functions.Where(f => f.IommuGroup is not null).GroupBy(f => f.IommuGroup!.Value).OrderBy(g => g.Key).ToList();
            var ungrouped = functions.Where(f => f.IommuGroup is null).ToList();
            if (json)
            {
                cli.WriteJson(new ListDocument(Schema.Version,
                    [.. byGroup.Select(g => ToJson(cli.Kernel, groups[g.Key], g))],
                    [.. ungrouped.Select(Cli.ToJson)]), CliJson.Default.ListDocument);
                return Task.FromResult(Cli.Ok);
            }
            if (functions.Count == 0)
            {
                cli.Output.WriteLine(filter.Any ? "No PCI function matches." : "No PCI functions in sysfs.");
                return Task.FromResult(Cli.Ok);
            }
            var table = new TextTable("GROUP", "VIABLE", "ADDRESS", "IDS", "CLASS", "DRIVER", "OVERRIDE");
            foreach (var group in byGroup)
            {
                var info = groups[group.Key];
                bool first = true;
                foreach (var f in group)
                {
                    table.Add(first ? group.Key.ToString(System.Globalization.CultureInfo.InvariantCulture) + (info.Kind == IommuGroupKind.NoIommu ? " (no-IOMMU)" : "") : "",
                        first ? Viability(info) : "", f.Address.ToString(), Ids(f), ClassOf(f), f.Driver, f.DriverOverride);
                    first = false;
                }
            }
            foreach (var f in ungrouped)
            {
                table.Add("none", "", f.Address.ToString(), Ids(f), ClassOf(f), f.Driver, f.DriverOverride);
            }
            table.WriteTo(cli.Output);
            if (ungrouped.Count > 0)
            {
                cli.Output.WriteLine($"{ungrouped.Count} function(s) have no IOMMU group: the IOMMU is off (vfio doctor says what to do).");
            }
            return Task.FromResult(Cli.Ok);
        }));
        return command;
    }

    private static GroupJson ToJson(VfioKernel kernel, IommuGroupInfo info, IEnumerable<PciFunction> functions) =>
        new(info.Id, info.Kind == IommuGroupKind.NoIommu ? "noiommu" : "iommu", info.IsViable, info.NodePath(kernel),
            [.. info.BlockingMembers.Select(m => new MemberJson(m.Name, m.Driver))], [.. functions.Select(Cli.ToJson)]);

    private static string Viability(IommuGroupInfo group) =>
        group.IsViable ? "yes" : "no: " + string.Join(", ", group.BlockingMembers.Select(m => m.Name + " on " + m.Driver));

    private static string Ids(PciFunction f) => Cli.Hex4(f.VendorId) + ":" + Cli.Hex4(f.DeviceId);

    private static string ClassOf(PciFunction f) => f.ClassCode.ToString("x6", System.Globalization.CultureInfo.InvariantCulture) + (f.IsBridge ? " (bridge)" : "");

    private sealed record Filter(uint? Vendor, uint? Device, string? ClassPrefix, string? Driver)
    {
        public bool Any => Vendor is not null || Device is not null || ClassPrefix is not null || Driver is not null;

        public bool Matches(PciFunction f) =>
            (Vendor is null || f.VendorId == Vendor)
            && (Device is null || f.DeviceId == Device)
            && (ClassPrefix is null || f.ClassCode.ToString("x6", System.Globalization.CultureInfo.InvariantCulture).StartsWith(ClassPrefix.ToLowerInvariant(), StringComparison.Ordinal))
            && (Driver is null || (Driver == "none" ? f.Driver is null : f.Driver == Driver));
    }
}
