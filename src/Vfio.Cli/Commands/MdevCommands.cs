using System.CommandLine;
using System.Globalization;
using Vfio.Cli.Output;

namespace Vfio.Cli.Commands;

/// <summary><c>vfio mdev list|create|remove</c>: mediated device parents, their types, and the mdevs that exist.</summary>
internal static class MdevCommands
{
    public static Command Create(Cli cli)
    {
        var command = new Command("mdev", "Mediated devices: list parents, types and devices; create and remove devices");
        command.Subcommands.Add(List(cli));
        command.Subcommands.Add(CreateDevice(cli));
        command.Subcommands.Add(Remove(cli));
        return command;
    }

    private static Command List(Cli cli)
    {
        var command = new Command("list", "List the mdev parents with their types (and instances left), and the mdevs that exist");
        command.SetAction(cli.Action((parse, json, _) => cli.WithRegistryAsync(registry =>
        {
            var parents = registry.DiscoverMdevParents();
            var devices = registry.DiscoverMdev();
            var parentsJson = parents.Select(p => new MdevParentJson(p.Name,
                [.. p.Types.Select(t => new MdevTypeJson(t.Id, t.Name, t.Description, t.DeviceApi, Available(t)))])).ToList();
            var devicesJson = devices.Select(d => new MdevJson(d.Uuid.ToString("D", CultureInfo.InvariantCulture), d.TypeId, d.Parent, d.GroupId, d.KernelDriver)).ToList();
            if (json)
            {
                cli.WriteJson(new MdevListDocument(Schema.Version, parentsJson, devicesJson), CliJson.Default.MdevListDocument);
                return Cli.Ok;
            }
            if (parentsJson.Count == 0)
            {
                cli.Output.WriteLine($"No mdev parents ({cli.Kernel.SysfsRoot}/class/mdev_bus is empty): load a parent driver (e.g. modprobe mtty, or a GPU's vGPU driver).");
            }
            else
            {
                var types = new TextTable("PARENT", "TYPE", "NAME", "API", "AVAILABLE", "DESCRIPTION");
                foreach (var p in parentsJson)
                {
                    foreach (var t in p.Types)
                    {
                        types.Add(p.Name, t.Id, t.Name, t.DeviceApi, t.AvailableInstances?.ToString(CultureInfo.InvariantCulture), t.Description ?? "");
                    }
                }
                types.WriteTo(cli.Output);
            }
            cli.Output.WriteLine();
            if (devicesJson.Count == 0)
            {
                cli.Output.WriteLine("No mdevs.");
            }
            else
            {
                var table = new TextTable("UUID", "TYPE", "PARENT", "GROUP", "DRIVER");
                foreach (var d in devicesJson)
                {
                    table.Add(d.Uuid, d.Type, d.Parent, d.Group.ToString(CultureInfo.InvariantCulture), d.Driver);
                }
                table.WriteTo(cli.Output);
            }
            return Cli.Ok;
        })));
        return command;
    }

    private static int? Available(MdevType type)
    {
        try
        {
            return type.ReadAvailableInstances();
        }
        catch (VfioException)
        {
            return null;
        }
    }

    private static Command CreateDevice(Cli cli)
    {
        var parent = new Argument<string>("PARENT") { Description = "The parent device (a name under /sys/class/mdev_bus, e.g. mtty)" };
        var type = new Argument<string>("TYPE") { Description = "The type id (e.g. mtty-2)" };
        var uuid = new Option<Guid?>("--uuid") { Description = "The new device's UUID (a random one by default)" };
        var command = new Command("create", "Create an mdev of a type and leave it for a driver to use (remove it with vfio mdev remove)")
        {
            parent, type, uuid,
        };
        command.SetAction(cli.Action((parse, json, _) => cli.WithRegistryAsync(registry =>
        {
            var mdevType = registry.FindMdevParent(parse.GetValue(parent)!).Type(parse.GetValue(type)!);
            var id = mdevType.CreateDevice(parse.GetValue(uuid));
            string text = id.ToString("D", CultureInfo.InvariantCulture);
            if (json)
            {
                cli.WriteJson(new MdevChangeDocument(Schema.Version, text, mdevType.Id, mdevType.Parent.Name, "created"), CliJson.Default.MdevChangeDocument);
            }
            else
            {
                cli.Output.WriteLine($"Created mdev {text} ({mdevType.Id} on {mdevType.Parent.Name}).");
            }
            return Cli.Ok;
        })));
        return command;
    }

    private static Command Remove(Cli cli)
    {
        var uuid = new Argument<Guid>("UUID") { Description = "The mdev to remove" };
        var command = new Command("remove", "Remove an mdev (the kernel waits while a process has it open)")
        {
            uuid,
        };
        command.SetAction(cli.Action((parse, json, _) => cli.WithRegistryAsync(registry =>
        {
            var id = parse.GetValue(uuid);
            string text = id.ToString("D", CultureInfo.InvariantCulture);
            var device = registry.DiscoverMdev().FirstOrDefault(d => d.Uuid == id)
                ?? throw new VfioNotFoundException($"No mdev {text} ({cli.Kernel.SysfsRoot}/bus/mdev/devices/{text}); vfio mdev list shows those there are.");
            var parentName = device.Parent ?? throw new VfioException($"The mdev {text} has no parent in sysfs.");
            var mdevType = registry.FindMdevParent(parentName).Type(device.TypeId);
            mdevType.RemoveDevice(id);
            if (json)
            {
                cli.WriteJson(new MdevChangeDocument(Schema.Version, text, mdevType.Id, parentName, "removed"), CliJson.Default.MdevChangeDocument);
            }
            else
            {
                cli.Output.WriteLine($"Removed mdev {text} ({mdevType.Id} on {parentName}).");
            }
            return Cli.Ok;
        })));
        return command;
    }
}
