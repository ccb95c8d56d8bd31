using System.Runtime.InteropServices;
using EduDriver;
using Vfio.Interop;
using static Vfio.Interop.Interop;
using static Vfio.Interop.VfioUapi;

namespace Vfio.Scenarios;

/// <summary>
/// PCI hot reset: which functions a reset reaches, the kernel's rules for it at errno level, and
/// <see cref="PciVfioDevice.HotReset"/> proving ownership before it asks the kernel. The machine
/// has an edu function on the root bus (no parent bridge: no hot reset) and two edu functions of
/// one slot behind a PCIe root port (one reset scope, one group).
/// </summary>
internal static class ResetScenarios
{
    private const int HeaderSize = 12; // struct vfio_pci_hot_reset(_info) up to count

    /// <summary>Every hot-reset scenario, in the order they run.</summary>
    public static IReadOnlyList<Scenario> All { get; } =
    [
        new("hot_reset_root_bus_enodev", RootBusEnodev),
        new("hot_reset_info_enospc_count", InfoEnospcCount),
        new("hot_reset_info_names_both_functions", DependenciesNameBothFunctions),
        new("hot_reset_kernel_wants_the_affected_group", KernelWantsTheAffectedGroup),
        new("hot_reset_refused_for_an_unbound_function", RefusedForAnUnboundFunction),
        new("hot_reset_resets_the_slot", ResetsTheSlot),
        new("device_sets_are_the_kernels_reset_domains", DeviceSetsAreTheKernelsResetDomains),
    ];

    public static Task RootBusEnodev(ScenarioContext context) => EduScenarios.WithEduAsync(context, context.DeviceAddress, (_, device) =>
    {
        using DeviceReference open = device.Open();
        try
        {
            device.GetHotResetDependencies();
        }
        catch (VfioNotSupportedException e)
        {
            context.Note("GetHotResetDependencies() on the root bus: " + e.Message);
            Check.Equal(Errno.ENODEV, e.Errno, "errno");
            return Task.CompletedTask;
        }
        throw new ScenarioFailedException("hot reset info of a function on the root bus did not fail with ENODEV");
    });

    public static unsafe void InfoEnospcCount(ScenarioContext context)
    {
        var (function0, function1, group) = context.HotResetPair;
        using var files = new VfioFiles(context, function0, group);
        files.OpenReadyContainer();
        SafeFd device = files.OpenDevice();

        var buffer = new byte[HeaderSize + (2 * sizeof(vfio_pci_dependent_device))];
        MemoryMarshal.Write(buffer, new vfio_pci_hot_reset_info { argsz = HeaderSize - 1 });
        Check.Fails(Info(context, device, buffer), Errno.EINVAL, "hot reset info with argsz below the header");

        MemoryMarshal.Write(buffer, new vfio_pci_hot_reset_info { argsz = HeaderSize, flags = 0xff });
        Check.Fails(Info(context, device, buffer), Errno.ENOSPC, "hot reset info with room for no function");
        var header = MemoryMarshal.Read<vfio_pci_hot_reset_info>(buffer);
        Check.Equal(2u, header.count, "count after ENOSPC");
        Check.Equal((uint)HeaderSize, header.argsz, "argsz after ENOSPC (the kernel leaves it)");
        Check.Equal(0u, header.flags, "flags after ENOSPC");

        MemoryMarshal.Write(buffer, new vfio_pci_hot_reset_info { argsz = (uint)buffer.Length });
        Check.Ok(Info(context, device, buffer), "hot reset info with room for two functions");
        header = MemoryMarshal.Read<vfio_pci_hot_reset_info>(buffer);
        Check.Equal(2u, header.count, "count");
        var entries = MemoryMarshal.Cast<byte, vfio_pci_dependent_device>(buffer.AsSpan(HeaderSize));
        string[] names = [.. entries.ToArray().Select(e => new PciAddress(e.segment, e.bus, (byte)(e.devfn >> 3), (byte)(e.devfn & 7)).ToString())];
        context.Note("dependent devices: " + string.Join(", ", names));
        Check.Equal(function0 + "," + function1, string.Join(",", names), "dependent devices");
        Check.True(entries[0].group_id == (uint)group && entries[1].group_id == (uint)group, "the functions' groups are not " + group);
    }

    public static Task DependenciesNameBothFunctions(ScenarioContext context)
    {
        var (function0, function1, group) = context.HotResetPair;
        return EduScenarios.WithEduAsync(context, function1, (_, device) =>
        {
            using DeviceReference open = device.Open();
            var dependencies = device.GetHotResetDependencies();
            context.Note("GetHotResetDependencies(): " + string.Join(", ", dependencies));
            Check.Equal(function0 + " (group " + group + "), " + function1 + " (group " + group + ")", string.Join(", ", dependencies), "dependencies");
            return Task.CompletedTask;
        });
    }

    public static unsafe void KernelWantsTheAffectedGroup(ScenarioContext context)
    {
        var (function0, _, group) = context.HotResetPair;
        using var files = new VfioFiles(context, function0, group);
        files.OpenReadyContainer();
        SafeFd device = files.OpenDevice();
        using var other = new VfioFiles(context);
        SafeFd otherGroup = other.OpenGroup();

        Check.Fails(HotReset(context, device, 0, [files.Group!.Value], count: 0), Errno.EINVAL, "hot reset with count 0");
        Check.Fails(HotReset(context, device, 0, [files.Group!.Value, files.Group!.Value, files.Group!.Value]), Errno.EINVAL, "hot reset with more files than functions");
        Check.Fails(HotReset(context, device, 1, [files.Group!.Value]), Errno.EINVAL, "hot reset with flags");
        Check.Fails(HotReset(context, device, 0, [files.Container!.Value]), Errno.EINVAL, "hot reset with a container file for a group");
        Check.Fails(HotReset(context, device, 0, [otherGroup.Value]), Errno.EINVAL, "hot reset with another group's file only");
        Check.Ok(HotReset(context, device, 0, [files.Group!.Value]), "hot reset with the affected group's file");
        Check.Ok(HotReset(context, device, 0, [otherGroup.Value, files.Group!.Value]), "hot reset with an extra group's file");
    }

    public static async Task RefusedForAnUnboundFunction(ScenarioContext context)
    {
        var (function0, function1, group) = context.HotResetPair;
        var sysfs = new SysfsReader(context.Kernel);
        sysfs.WriteText("bus/pci/drivers/vfio-pci/unbind", function1);
        try
        {
            await EduScenarios.WithEduAsync(context, function0, (registry, device) =>
            {
                Check.True(!registry.TryFind<EduDevice>(function1, out _), function1 + " was registered while bound to no driver");
                using DeviceReference open = device.Open();
                try
                {
                    device.HotReset();
                }
                catch (VfioHotResetNotOwnedException e)
                {
                    context.Note("HotReset(): " + e.Message);
                    Check.True(e.UnownedDevices is [{ } only] && only.StartsWith(function1 + " (group " + group + ")", StringComparison.Ordinal) && only.Contains("bound to no driver", StringComparison.Ordinal),
                        "the unowned devices are not [" + function1 + " ... bound to no driver]: " + string.Join("; ", e.UnownedDevices));
                    Check.Equal(0, e.UnownedGroups.Count, "unowned groups");
                    // The kernel refuses it too: every function of the scope must be bound to vfio-pci.
                    Check.Fails(HotReset(context, device.DeviceFd, 0, [(int)device.Group!.Fd.DangerousGetHandle()]), Errno.EINVAL, "the kernel's hot reset with a function unbound");
                    return Task.CompletedTask;
                }
                throw new ScenarioFailedException("HotReset() with a function of the scope bound to no driver did not throw VfioHotResetNotOwnedException");
            }).ConfigureAwait(false);
        }
        finally
        {
            sysfs.WriteText("bus/pci/devices/" + function1 + "/driver_override", "vfio-pci");
            sysfs.WriteText("bus/pci/drivers_probe", function1);
        }
    }

    public static Task ResetsTheSlot(ScenarioContext context)
    {
        var (_, function1, _) = context.HotResetPair;
        return EduScenarios.WithEduAsync(context, context.HotResetPair.Function0, async (registry, device) =>
        {
            Check.True(registry.TryFind<EduDevice>(function1, out EduDevice? sibling), function1 + " is not registered");
            using (DeviceReference open = device.Open())
            {
                ushort command = device.ReadConfig16(PciConfig.Command);
                Check.True((command & PciConfig.CommandMemory) != 0, "memory decoding is off before the reset");
                // Linux 6.1 wants the group's file, not every function open: the sibling stays closed.
                device.HotReset();
                Check.Equal(EduDevice.Vendor, device.ReadConfig16(PciConfig.VendorId), "vendor id after the reset");
                Check.Equal(command, device.ReadConfig16(PciConfig.Command), "command register after the reset (the kernel restores it)");
                Check.Equal(0x010000edu, device.ReadIdentification(), "identification after the reset");
                Check.True(device.CheckLiveness(0x5a5a1234), "liveness check after the reset");
                // The kernel restores the MSI setup and keeps the eventfds: interrupts still arrive.
                using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
                Check.Equal(120u, await device.ComputeFactorialAsync(5, timeout.Token).ConfigureAwait(false), "5! by MSI after the reset");

                using DeviceReference both = sibling!.Open();
                sibling.HotReset();
                Check.True(sibling.CheckLiveness(0x0badf00d) && device.CheckLiveness(0x600d), "liveness check after the reset through the sibling");
                Check.Equal(720u, await sibling.ComputeFactorialAsync(6, timeout.Token).ConfigureAwait(false), "6! by MSI on the sibling after the reset");
            }
        });
    }

    /// <summary>
    /// The library's device sets are vfio-pci's (vfio_pci_core_register_device): a function on the root
    /// bus is alone, even beside another function of its slot, and the kernel can reset no slot or bus
    /// for it (ENODEV); the two functions behind the root port share one set, and it holds exactly the
    /// functions the kernel's hot reset of either reaches.
    /// </summary>
    public static Task DeviceSetsAreTheKernelsResetDomains(ScenarioContext context)
    {
        var (function0, function1, _) = context.HotResetPair;
        var sysfs = new SysfsReader(context.Kernel);
        foreach (string slot in sysfs.List("bus/pci/slots"))
        {
            context.Note($"slot {slot}: address {sysfs.ReadText("bus/pci/slots/" + slot + "/address")}, module {sysfs.ReadLinkName("bus/pci/slots/" + slot + "/module") ?? "none"}");
        }
        return EduScenarios.WithEduAsync(context, context.DeviceAddress, (registry, root) =>
        {
            Check.Equal("device:" + context.DeviceAddress, root.Set.Id, "the set of the function on the root bus");
            using (DeviceReference open = root.Open())
            {
                try
                {
                    root.GetHotResetDependencies();
                    throw new ScenarioFailedException("the kernel named a hot reset scope for a function on the root bus");
                }
                catch (VfioNotSupportedException e)
                {
                    Check.Equal(Errno.ENODEV, e.Errno, "errno of the hot reset info on the root bus");
                }
            }
            if (context.NotViableDeviceAddress is { } shared)
            {
                // Function 0 of a root-bus slot whose function 1 is the NVMe controller: one slot, two sets.
                var address = PciAddress.Parse(shared);
                var sibling = address with { Function = 1 };
                string first = registry.FindPci(address).SetId;
                string second = registry.FindPci(sibling).SetId;
                context.Note($"sets of {address} and {sibling}: {first}, {second}");
                Check.Equal("device:" + address, first, "the set of " + address);
                Check.Equal("device:" + sibling, second, "the set of " + sibling);
            }
            EduDevice? device = null, other = null;
            Check.True(registry.TryFind(function0, out device) && registry.TryFind(function1, out other),
                function0 + " and " + function1 + " are not both registered");
            Check.True(ReferenceEquals(device!.Set, other!.Set), $"{function0} ({device.Set.Id}) and {function1} ({other.Set.Id}) are in different sets");
            context.Note($"set of {function0} and {function1}: {device.Set.Id}");
            using (DeviceReference open = device.Open())
            {
                string scope = string.Join(",", device.GetHotResetDependencies().Select(d => d.Address.ToString()).Order(StringComparer.Ordinal));
                string members = string.Join(",", registry.Devices.Where(d => ReferenceEquals(d.Set, device.Set)).Select(d => d.Name).Order(StringComparer.Ordinal));
                Check.Equal(scope, members, "the set's members (the kernel's hot reset scope)");
            }
            return Task.CompletedTask;
        });
    }

    private static unsafe int Info(ScenarioContext context, SafeFd device, byte[] buffer)
    {
        fixed (byte* p = buffer)
        {
            return context.Kernel.Ioctl(device, VFIO_DEVICE_GET_PCI_HOT_RESET_INFO, p);
        }
    }

    /// <summary>VFIO_DEVICE_PCI_HOT_RESET with the group fds given; count is their number unless given.</summary>
    private static unsafe int HotReset(ScenarioContext context, SafeFd device, uint flags, int[] groupFds, uint? count = null)
    {
        var buffer = new byte[HeaderSize + (groupFds.Length * sizeof(int))];
        MemoryMarshal.Write(buffer, new vfio_pci_hot_reset { argsz = (uint)buffer.Length, flags = flags, count = count ?? (uint)groupFds.Length });
        groupFds.CopyTo(MemoryMarshal.Cast<byte, int>(buffer.AsSpan(HeaderSize)));
        fixed (byte* p = buffer)
        {
            return context.Kernel.Ioctl(device, VFIO_DEVICE_PCI_HOT_RESET, p);
        }
    }
}
