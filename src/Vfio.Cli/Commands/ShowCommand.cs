using System.CommandLine;
using System.Globalization;
using Vfio.Cli.Output;

namespace Vfio.Cli.Commands;

/// <summary>
/// <c>vfio show</c>: opens a function through VFIO and prints what the kernel says of it: regions,
/// interrupts, config-space capabilities, reset, features, migration and the backend used.
/// </summary>
internal static class ShowCommand
{
    private static readonly string[] IrqNames = ["INTx", "MSI", "MSI-X", "ERR", "REQ"];

    public static Command Create(Cli cli)
    {
        var address = Cli.Address("The PCI function, bound to vfio-pci");
        var backend = new Option<VfioBackend?>("--backend")
        {
            Description = "Open it through this backend: legacy (the group and container) or iommufd (the device cdev); by default as the library chooses (iommufd where /dev/iommu and the cdev exist)",
        };
        var command = new Command("show", "Open a function bound to vfio-pci and show its regions, interrupts, capabilities, reset, features and migration support")
        {
            address,
            backend,
        };
        command.SetAction(cli.Action(async (parse, json, _) =>
        {
            var document = await InspectAsync(cli, parse.GetValue(address)![0], parse.GetValue(backend)).ConfigureAwait(false);
            if (json)
            {
                cli.WriteJson(document, CliJson.Default.ShowDocument);
            }
            else
            {
                Write(cli.Output, document);
            }
            return Cli.Ok;
        }));
        return command;
    }

    /// <summary>A device with no behaviour of its own: the tool only looks at what VFIO reports.</summary>
    private sealed class InspectedDevice(PciDeviceContext context) : PciVfioDevice(context);

    private static async Task<ShowDocument> InspectAsync(Cli cli, PciAddress address, VfioBackend? backend)
    {
        var function = PciFunction.Read(cli.Kernel, address);
        if (!function.IsBoundToVfio)
        {
            throw new VfioException($"{address} is bound to {function.Driver ?? "no driver"}, not vfio-pci: bind it first (vfio bind {address}).");
        }
        InspectedDevice? device = null;
        try
        {
            return await cli.WithRegistryAsync(registry =>
            {
                device = new InspectedDevice(registry.FindPci(address));
                registry.Register(device);
                using (device.Open())
                {
                    return Read(function, device);
                }
            }, backend).ConfigureAwait(false);
        }
        finally
        {
            device?.Dispose();
        }
    }

    private static ShowDocument Read(PciFunction function, InspectedDevice device)
    {
        var info = device.Info!;
        var iommu = device.AddressSpace!.IommuInfo;
        ulong[] pageSizes = [.. Enumerable.Range(0, 64).Where(b => (iommu.PageSizes & (1UL << b)) != 0).Select(b => 1UL << b)];
        IovaRangeJson[] ranges = [.. iommu.IovaRanges.Select(r => new IovaRangeJson(Cli.Hex(r.Start), Cli.Hex(r.End)))];
        string groupKind = device.GroupKind.ToString().ToLowerInvariant();
        var backend = device.AddressSpace is IommufdAddressSpace ioas
            ? new BackendJson("iommufd", null, IommuTypeName(device.GetIommuHardwareInfo().Type), groupKind, null, device.CdevPath, ioas.IoasId,
                ioas.LockedMemoryAccounting == LockedMemoryAccounting.Process ? "process" : "user", pageSizes, ranges, null)
            : new BackendJson("container", device.Group!.Container!.IsIommufdCompat ? "iommufd-compat" : "vfio", device.Group.Container.IommuTypeName, groupKind, device.Group.NodePath, null, null, null,
                pageSizes, ranges, iommu.DmaMappingsAvailable);
        var flags = Named((info.IsPci, "pci"), (info.IsPlatform, "platform"), (info.CanReset, "reset"));
        var regions = new List<RegionJson>();
        for (int i = 0; i < info.RegionCount; i++)
        {
            RegionInfo r;
            try
            {
                r = device.GetRegionInfo(i);
            }
            catch (VfioException e) when (e.Errno == Errno.EINVAL)
            {
                // vfio-pci answers EINVAL for a region the device lacks (the VGA region of a non-VGA device).
                regions.Add(new RegionJson(i, RegionName(i), 0, Cli.Hex(0), [], null, null, false, "the device has none (EINVAL)"));
                continue;
            }
            regions.Add(new RegionJson(i, RegionName(i), r.Size, Cli.Hex(r.Offset), RegionFlags(r.Flags),
                r.SparseMmapAreas?.Select(a => new SparseAreaJson(Cli.Hex(a.Offset), a.Size)).ToList(),
                r.Type is { } t ? new RegionTypeJson(Cli.Hex(t.Type), Cli.Hex(t.Subtype)) : null, r.MsixMappable, null));
        }
        var irqs = device.GetIrqInfos().Select(q => new IrqJson(q.Index, q.Index < IrqNames.Length ? IrqNames[q.Index] : "irq " + q.Index, q.Count, IrqFlags(q))).ToList();
        var config = new ConfigJson(
            [.. device.Capabilities.Select(c => Describe(device, c))],
            [.. device.ExtendedCapabilities.Select(c => new CapabilityJson(Cli.Hex((ulong)c.Offset), Cli.Hex((ulong)c.Id), Name(c.Id), c.Version, null))]);
        var reset = ReadReset(device, info);
        var features = Enum.GetValues<VfioFeature>()
            .Select(f => new FeatureJson(FeatureName(f), (int)f, Probe(device, f, VfioFeatureAccess.Get), Probe(device, f, VfioFeatureAccess.Set)))
            .ToList();
        MigrationJson migration;
        try
        {
            using var m = device.GetMigration();
            migration = new MigrationJson(true, [.. Enum.GetValues<VfioMigrationCapabilities>()
                .Where(c => c != VfioMigrationCapabilities.None && m.Capabilities.HasFlag(c)).Select(c => c.ToString())]);
        }
        catch (VfioNotSupportedException)
        {
            migration = new MigrationJson(false, []);
        }
        return new ShowDocument(Schema.Version, Cli.ToJson(function), backend, new DeviceInfoJson(flags, info.RegionCount, info.IrqCount),
            regions, irqs, config, reset, features, migration);
    }

    private static ResetJson ReadReset(InspectedDevice device, VfioDeviceInfo info)
    {
        try
        {
            var affected = device.GetHotResetDependencies();
            return new ResetJson(info.CanReset, true, [.. affected.Select(d => new HotResetDependencyJson(d.Address.ToString(), d.GroupId))], null);
        }
        catch (VfioException e)
        {
            return new ResetJson(info.CanReset, false, [], e.Message);
        }
    }

    private static bool Probe(InspectedDevice device, VfioFeature feature, VfioFeatureAccess access)
    {
        try
        {
            return device.ProbeFeature(feature, access);
        }
        catch (VfioException)
        {
            return false;
        }
    }

    private static string RegionName(int index) => index switch
    {
        <= 5 => "BAR" + index.ToString(CultureInfo.InvariantCulture),
        6 => "ROM",
        7 => "config",
        8 => "VGA",
        _ => "device-specific",
    };

    private static List<string> RegionFlags(RegionAccess access) => Named(
        ((access & RegionAccess.Read) != 0, "read"), ((access & RegionAccess.Write) != 0, "write"),
        ((access & RegionAccess.Mmap) != 0, "mmap"), ((access & RegionAccess.Caps) != 0, "caps"));

    private static List<string> IrqFlags(IrqInfo irq) =>
        Named((irq.EventFd, "eventfd"), (irq.Maskable, "maskable"), (irq.AutoMasked, "automasked"), (irq.NoResize, "noresize"));

    /// <summary>The names of the flags that are set, in order.</summary>
    private static List<string> Named(params (bool Set, string Name)[] flags) => [.. flags.Where(f => f.Set).Select(f => f.Name)];

    private static string FeatureName(VfioFeature feature) => feature switch
    {
        VfioFeature.PciVfToken => "pci-vf-token",
        VfioFeature.Migration => "migration",
        VfioFeature.MigrationDeviceState => "mig-device-state",
        VfioFeature.LowPowerEntry => "low-power-entry",
        VfioFeature.LowPowerEntryWithWakeup => "low-power-entry-with-wakeup",
        VfioFeature.LowPowerExit => "low-power-exit",
        VfioFeature.DmaLoggingStart => "dma-logging-start",
        VfioFeature.DmaLoggingStop => "dma-logging-stop",
        VfioFeature.DmaLoggingReport => "dma-logging-report",
        VfioFeature.MigrationDataSize => "mig-data-size",
        _ => "feature-" + ((int)feature).ToString(CultureInfo.InvariantCulture),
    };

    private static CapabilityJson Describe(InspectedDevice device, PciCapability capability)
    {
        string? detail = capability.Id switch
        {
            PciCapabilityId.Msi when device.ReadMsiCapability() is { } msi => string.Create(CultureInfo.InvariantCulture,
                $"{msi.MultipleMessageCapable} vector(s){(msi.Is64Bit ? ", 64-bit" : "")}{(msi.PerVectorMasking ? ", per-vector masking" : "")}{(msi.Enabled ? ", enabled" : "")}"),
            PciCapabilityId.MsiX when device.ReadMsixCapability() is { } msix => string.Create(CultureInfo.InvariantCulture,
                $"{msix.TableSize} vectors, table in BAR{msix.TableBar} at 0x{msix.TableOffset:x}, PBA in BAR{msix.PendingBitArrayBar} at 0x{msix.PendingBitArrayOffset:x}{(msix.Enabled ? ", enabled" : "")}"),
            PciCapabilityId.PciExpress when device.ReadPciExpressCapability() is { } pcie => string.Create(CultureInfo.InvariantCulture,
                $"v{pcie.Version} {pcie.PortType}{(pcie.SupportsFunctionLevelReset ? ", FLR" : "")}, max payload {pcie.MaxPayloadSizeSupported} bytes, link x{pcie.LinkWidth} (max x{pcie.MaxLinkWidth})"),
            PciCapabilityId.PowerManagement when device.ReadPowerManagementCapability() is { } pm => string.Create(CultureInfo.InvariantCulture,
                $"v{pm.Version}, now {pm.PowerState}{(pm.NoSoftReset ? ", no soft reset" : "")}"),
            _ => null,
        };
        return new CapabilityJson(Cli.Hex((ulong)capability.Offset), Cli.Hex((ulong)capability.Id), Name(capability.Id), null, detail);
    }

    private static string Name(PciCapabilityId id) => id switch
    {
        PciCapabilityId.PowerManagement => "Power Management",
        PciCapabilityId.Msi => "MSI",
        PciCapabilityId.MsiX => "MSI-X",
        PciCapabilityId.PciExpress => "PCI Express",
        PciCapabilityId.VendorSpecific => "Vendor Specific",
        PciCapabilityId.AdvancedFeatures => "Advanced Features",
        _ => Enum.IsDefined(id) ? id.ToString() : "unknown",
    };

    private static string Name(PciExtendedCapabilityId id) => Enum.IsDefined(id) ? id.ToString() : "unknown";

    private static string IommuTypeName(IommuHardwareType type) => type switch
    {
        IommuHardwareType.IntelVtd => "intel-vtd",
        IommuHardwareType.None => "unknown",
        _ => "type " + ((int)type).ToString(CultureInfo.InvariantCulture),
    };

    private static void Write(TextWriter w, ShowDocument d)
    {
        var f = d.Device;
        w.WriteLine($"{f.Address}  [{f.Vendor}:{f.Device}]  class {f.Class}  driver {f.Driver}  group {f.IommuGroup}");
        var b = d.Backend;
        w.WriteLine(b.Interface == "iommufd"
            ? string.Create(CultureInfo.InvariantCulture, $"Backend:     iommufd, IOAS {b.Ioas} ({b.IommuType} IOMMU, pinned memory charged to the {b.LockedMemoryAccounting}); device node {b.DeviceNode} ({b.GroupKind})")
            : b.Container == "iommufd-compat"
                ? $"Backend:     legacy container: iommufd's compatibility container, emulating the {b.IommuType} IOMMU (no dirty page tracking); group node {b.GroupNode} ({b.GroupKind})"
                : $"Backend:     legacy container with the {b.IommuType} IOMMU; group node {b.GroupNode} ({b.GroupKind})");
        w.WriteLine($"IOMMU:       page sizes {string.Join(", ", b.PageSizes.Select(Cli.Size))}; IOVA ranges {string.Join(", ", b.IovaRanges.Select(r => r.Start + "-" + r.End))}"
            + (b.DmaMappingsAvailable is uint avail ? string.Create(CultureInfo.InvariantCulture, $"; {avail} DMA mappings available") : ""));
        w.WriteLine($"Device:      {string.Join(", ", d.Info.Flags)}; {d.Info.Regions} regions, {d.Info.Irqs} interrupt indexes");
        w.WriteLine();
        w.WriteLine("Regions:");
        var regions = new TextTable("INDEX", "NAME", "SIZE", "OFFSET", "FLAGS", "CAPABILITIES");
        foreach (var r in d.Regions)
        {
            var caps = new List<string>();
            if (r.SparseAreas is { } sparse)
            {
                caps.Add("sparse mmap: " + (sparse.Count == 0 ? "none" : string.Join(" ", sparse.Select(a => $"[{a.Offset} +{Cli.Size(a.Size)}]"))));
            }
            if (r.MsixMappable)
            {
                caps.Add("MSI-X table mappable");
            }
            if (r.Type is { } t)
            {
                caps.Add($"type {t.Type}/{t.Subtype}");
            }
            if (r.Unavailable is { } why)
            {
                caps.Add(why);
            }
            regions.Add(r.Index.ToString(CultureInfo.InvariantCulture), r.Name, r.Size == 0 ? "-" : Cli.Size(r.Size), r.Offset,
                r.Flags.Count == 0 ? "-" : string.Join(" ", r.Flags), caps.Count == 0 ? "" : string.Join("; ", caps));
        }
        regions.WriteTo(w, "  ");
        w.WriteLine();
        w.WriteLine("Interrupts:");
        var irqs = new TextTable("INDEX", "NAME", "COUNT", "FLAGS");
        foreach (var q in d.Irqs)
        {
            irqs.Add(q.Index.ToString(CultureInfo.InvariantCulture), q.Name, q.Count.ToString(CultureInfo.InvariantCulture), string.Join(" ", q.Flags));
        }
        irqs.WriteTo(w, "  ");
        w.WriteLine();
        w.WriteLine("Config space capabilities:");
        var caps2 = new TextTable("OFFSET", "ID", "NAME", "DETAIL");
        foreach (var c in d.Config.Capabilities)
        {
            caps2.Add(c.Offset, c.Id, c.Name, c.Detail ?? "");
        }
        foreach (var c in d.Config.ExtendedCapabilities)
        {
            caps2.Add(c.Offset, c.Id, c.Name + " (extended)", c.Version is int v ? "v" + v.ToString(CultureInfo.InvariantCulture) : "");
        }
        if (caps2.RowCount == 0)
        {
            w.WriteLine("  none");
        }
        else
        {
            caps2.WriteTo(w, "  ");
        }
        w.WriteLine();
        w.WriteLine($"Reset:       function reset {(d.Reset.FunctionReset ? "supported (VFIO_DEVICE_RESET)" : "not supported")}");
        w.WriteLine(d.Reset.HotReset
            ? $"Hot reset:   a slot or bus reset resets {string.Join(", ", d.Reset.HotResetAffects.Select(a => $"{a.Address} (group {a.Group})"))}"
            : $"Hot reset:   not possible: {d.Reset.HotResetUnavailable}");
        var supported = d.Features.Where(x => x.Get || x.Set).Select(x => x.Name + " (" + (x.Get && x.Set ? "get, set" : x.Get ? "get" : "set") + ")").ToList();
        w.WriteLine($"Features:    {(supported.Count == 0 ? "none" : string.Join(", ", supported))}");
        w.WriteLine($"Migration:   {(d.Migration.Supported ? "supported: " + string.Join(", ", d.Migration.Flags) : "not supported")}");
    }
}
