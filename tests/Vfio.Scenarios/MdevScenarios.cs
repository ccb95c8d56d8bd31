using System.Globalization;
using MdevLifecycle;
using static Vfio.Interop.VfioUapi;

namespace Vfio.Scenarios;

/// <summary>
/// The mediated device lifecycle against the kernel's mtty sample driver (parent "mtty", types
/// mtty-1 and mtty-2 sharing 24 ports): discovery, creation, opening through the emulated IOMMU
/// group, register access, removal, and the errors of creation. Run in the mdev VM
/// (tests/vm/run-mdev-tests.sh) and, in dotnet test, on the simulated kernel's mtty parent. Every
/// scenario leaves no mdev behind.
/// </summary>
internal static class MdevScenarios
{
    public const string Parent = "mtty";

    /// <summary>Every mdev scenario, in the order they run.</summary>
    public static IReadOnlyList<Scenario> All { get; } =
    [
        new("mdev_parent_types", ParentTypes),
        new("mdev_create_open_remove", CreateOpenRemove),
        new("mdev_uart_loopback_two_ports", UartLoopbackTwoPorts),
        new("mdev_intx_on_receive", IntxOnReceive),
        new("mdev_existing_uuid_eexist", ExistingUuid),
        new("mdev_no_instances_enospc", NoInstancesLeft),
        new("mdev_unknown_type", UnknownType),
        new("mdev_not_created_not_removed", NotCreatedNotRemoved),
    ];

    private static VfioRegistry Registry(ScenarioContext context)
    {
        var registry = context.NewRegistry();
        registry.AddDriver(new MttyDriver());
        return registry;
    }

    public static async Task ParentTypes(ScenarioContext context)
    {
        await using var registry = Registry(context);
        var parent = registry.DiscoverMdevParents().SingleOrDefault(p => p.Name == Parent)
            ?? throw new ScenarioFailedException("no mdev parent mtty in class/mdev_bus");
        Check.Equal("mtty-1,mtty-2", string.Join(",", parent.Types.Select(t => t.Id)), "type ids");
        var one = parent.Type("mtty-1");
        var two = parent.Type("mtty-2");
        Check.Equal("Single port serial", one.Name, "mtty-1 name");
        Check.Equal("Dual port serial", two.Name, "mtty-2 name");
        Check.Equal("vfio-pci", one.DeviceApi, "mtty-1 device_api");
        Check.True(one.Description is null, "mtty shows no description attribute, but one reads '" + one.Description + "'");
        int ports = one.ReadAvailableInstances();
        Check.Equal(ports / 2, two.ReadAvailableInstances(), "mtty-2 available_instances (half the free ports)");
        context.Note($"mtty: {ports} free ports; mtty-1 {ports} available, mtty-2 {two.ReadAvailableInstances()} available");
    }

    public static async Task CreateOpenRemove(ScenarioContext context)
    {
        await using var registry = Registry(context);
        var parent = registry.FindMdevParent(Parent);
        var one = parent.Type("mtty-1");
        var two = parent.Type("mtty-2");
        int ports = one.ReadAvailableInstances();
        var sysfs = new SysfsReader(context.Kernel);
        Guid uuid;
        int group;
        await using (var mdev = await one.CreateAsync<MttyDevice>())
        {
            uuid = mdev.Uuid;
            string name = uuid.ToString("D", CultureInfo.InvariantCulture);
            Check.Equal(ports - 1, one.ReadAvailableInstances(), "mtty-1 available_instances after a create");
            Check.Equal((ports - 1) / 2, two.ReadAvailableInstances(), "mtty-2 available_instances after an mtty-1 create");
            Check.True(one.ReadDevices().Contains(uuid), "the type's devices folder does not list " + name);
            Check.Equal("mtty-1", sysfs.ReadLinkName("bus/mdev/devices/" + name + "/mdev_type") ?? "none", "mdev_type link");
            string? groupText = sysfs.ReadLinkName("bus/mdev/devices/" + name + "/iommu_group");
            Check.True(groupText is not null, "the mdev has no iommu_group link");
            group = int.Parse(groupText!, CultureInfo.InvariantCulture);
            Check.Equal("vfio-noiommu", sysfs.ReadText("kernel/iommu_groups/" + groupText + "/name") ?? "none", "the emulated group's name");
            Check.True(sysfs.List("kernel/iommu_groups/" + groupText + "/devices").SequenceEqual([name]), "the group holds the mdev alone");

            var device = mdev.Device;
            Check.True(device.GroupKind == IommuGroupKind.Emulated, "group kind is " + device.GroupKind + ", not Emulated");
            Check.Equal(group, device.GroupId, "device group");
            Check.True(device.IsOpen, "the created device is open");
            Check.True(device.Backend == context.Backend, $"the mdev was opened through the {device.Backend} backend, not {context.Backend}");
            if (context.Backend == VfioBackend.Legacy)
            {
                Check.Equal("type1v2", device.Group!.Container!.IommuTypeName, "the emulated group's container IOMMU");
            }
            else
            {
                // Linux 6.6 and later give an mdev a cdev too; its bind makes an emulated "access" to the
                // iommufd, which attaches to the registry's IOAS like a device's page table.
                Check.True(device.Group is null && device.CdevPath is not null && device.AddressSpace is IommufdAddressSpace,
                    "an mdev opened through its cdev has no group file, names its cdev and uses the registry's IOAS");
                context.Note("cdev: " + device.CdevPath);
            }
            var info = device.Info!;
            Check.True((info.Flags & VFIO_DEVICE_FLAGS_PCI) != 0, "device flags lack VFIO_DEVICE_FLAGS_PCI");
            Check.Equal(9u, info.RegionCount, "regions");
            Check.Equal(5u, info.IrqCount, "irqs");
            Check.Equal(8UL, device.GetRegionInfo(0).Size, "BAR0 size");
            Check.Equal(0UL, device.GetRegionInfo(1).Size, "BAR1 size of a one-port card");
            Check.Equal(0xffUL, device.GetRegionInfo(MttyDevice.ConfigRegion).Size, "config region size");
            Check.Equal(0x32534348u, device.ReadConfig32(0), "vendor and device id");
            Check.Equal(0x07000210u, device.ReadConfig32(8), "class code and revision");
            // mtty sizes BAR0 as an 8-byte I/O BAR.
            device.WriteConfig32(0x10, 0xffffffff);
            Check.Equal(0xfffffff9u, device.ReadConfig32(0x10), "BAR0 after sizing");
            Check.Equal(1, device.Ports, "ports");
            context.Note($"created {name} in emulated group {group}");
        }
        string gone = uuid.ToString("D", CultureInfo.InvariantCulture);
        Check.Equal(ports, one.ReadAvailableInstances(), "mtty-1 available_instances after the remove");
        Check.True(!sysfs.Exists("bus/mdev/devices/" + gone), "bus/mdev/devices/" + gone + " still exists after the remove");
        Check.True(registry.CreatedMdevs.Count == 0, "the registry still lists the mdev as created");
        Check.True(registry.Devices.Count == 0, "the device is still registered");
    }

    public static async Task UartLoopbackTwoPorts(ScenarioContext context)
    {
        await using var registry = Registry(context);
        await using var mdev = await registry.FindMdevParent(Parent).CreateAsync<MttyDevice>("mtty-2");
        var device = mdev.Device;
        Check.Equal(2, device.Ports, "ports");
        Check.Equal(8UL, device.GetRegionInfo(1).Size, "BAR1 size");
        for (int port = 0; port < 2; port++)
        {
            Check.Equal((byte)0x60, device.ReadRegister(port, MttyDevice.LineStatus), $"port {port} line status when idle");
            byte[] sent = [(byte)'a', (byte)('0' + port), 0x00, 0xff];
            byte[] received = device.Loopback(port, sent);
            Check.True(received.AsSpan().SequenceEqual(sent), $"port {port} looped back {Convert.ToHexString(received)}, sent {Convert.ToHexString(sent)}");
            // IIR with no interrupt enabled: "no interrupt pending" with the FIFO bits of a 16550.
            Check.Equal((byte)0xc1, device.ReadRegister(port, 2), $"port {port} IIR");
            device.WriteRegister(port, MttyDevice.Scratch, (byte)(0xa0 | port));
            Check.Equal((byte)(0xa0 | port), device.ReadRegister(port, MttyDevice.Scratch), $"port {port} scratch");
        }
        // The FIFO holds 16 bytes: a 17th sets overrun. mtty tells "data ready" by comparing its ring's
        // indexes, and a full ring has head back on tail, so it then reads as empty: LSR is
        // TEMT | THRE | OE (0x62), not DR | OE, on Linux 6.1.
        device.WriteRegister(0, MttyDevice.FifoControl, 0x07);
        for (int i = 0; i < 15; i++)
        {
            device.WriteRegister(0, MttyDevice.Data, (byte)i);
        }
        Check.Equal((byte)0x01, device.ReadRegister(0, MttyDevice.LineStatus), "line status with 15 bytes in the FIFO (data ready)");
        device.WriteRegister(0, MttyDevice.Data, 15);
        device.WriteRegister(0, MttyDevice.Data, 16);
        Check.Equal((byte)0x62, device.ReadRegister(0, MttyDevice.LineStatus), "line status after 17 bytes (full ring reads empty, overrun)");
        device.WriteRegister(0, MttyDevice.FifoControl, 0x07);
    }

    public static async Task IntxOnReceive(ScenarioContext context)
    {
        await using var registry = Registry(context);
        await using var mdev = await registry.FindMdevParent(Parent).CreateAsync<MttyDevice>("mtty-1");
        var device = mdev.Device;
        using var intx = device.EnableInterrupts((int)VFIO_PCI_INTX_IRQ_INDEX);
        device.WriteRegister(0, MttyDevice.FifoControl, 0x07); // FIFO on and cleared: trigger level 1
        device.WriteRegister(0, 1, 0x01);                      // IER: received data available
        device.WriteRegister(0, MttyDevice.Data, 0x42);        // the byte loops back: the FIFO reaches its level
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        ulong count = await intx.WaitAsync(0, timeout.Token);
        Check.True(count >= 1, "no INTx interrupt was counted");
        Check.Equal((byte)0xc4, device.ReadRegister(0, 2), "IIR with received data pending");
        Check.Equal((byte)0x42, device.ReadRegister(0, MttyDevice.Data), "the byte received");
        device.WriteRegister(0, 1, 0x00);
        context.Note($"INTx eventfd counted {count} after one byte with IER.RDI set");
    }

    public static async Task ExistingUuid(ScenarioContext context)
    {
        await using var registry = Registry(context);
        var one = registry.FindMdevParent(Parent).Type("mtty-1");
        var uuid = Guid.NewGuid();
        await using var first = await one.CreateAsync<MttyDevice>(uuid);
        int available = one.ReadAvailableInstances();
        var error = await Check.ThrowsAsync<VfioException>(() => one.CreateAsync<MttyDevice>(uuid), "a second create with the same UUID");
        Check.Equal(Errno.EEXIST, error.Errno, "errno of a duplicate UUID");
        Check.True(error.Message.Contains("exists already", StringComparison.Ordinal), "the error does not say the UUID exists: " + error.Message);
        Check.True(!first.IsRemoved && one.ReadDevices().Contains(uuid), "the existing mdev was removed by the failed create");
        Check.Equal(available, one.ReadAvailableInstances(), "available_instances after the refused create");
        Check.True(first.Device.IsOpen, "the first device is no longer open");
        Check.Equal(1, registry.CreatedMdevs.Count, "created mdevs");
    }

    public static async Task NoInstancesLeft(ScenarioContext context)
    {
        await using var registry = Registry(context);
        var two = registry.FindMdevParent(Parent).Type("mtty-2");
        var sysfs = new SysfsReader(context.Kernel);
        // Take every free port through sysfs directly, as another user of the machine would.
        var taken = new List<string>();
        try
        {
            while (two.ReadAvailableInstances() > 0)
            {
                string name = Guid.NewGuid().ToString("D", CultureInfo.InvariantCulture);
                sysfs.WriteText(two.SysfsRelative + "/create", name);
                taken.Add(name);
            }
            int devices = two.ReadDevices().Count;
            var error = await Check.ThrowsAsync<VfioException>(() => two.CreateAsync<MttyDevice>(), "a create with no instance left");
            Check.Equal(Errno.ENOSPC, error.Errno, "errno with no instance left");
            Check.True(error.Message.Contains("No instance of mtty-2 is left", StringComparison.Ordinal), "the error does not say why: " + error.Message);
            Check.Equal(devices, two.ReadDevices().Count, "devices after the refused create");
            Check.True(registry.CreatedMdevs.Count == 0 && registry.Devices.Count == 0, "the refused create left a device behind");
            context.Note($"took {taken.Count} mtty-2 devices; then: {error.Message}");
        }
        finally
        {
            foreach (string name in taken)
            {
                sysfs.WriteText("bus/mdev/devices/" + name + "/remove", "1");
            }
        }
    }

    public static async Task UnknownType(ScenarioContext context)
    {
        await using var registry = Registry(context);
        var parent = registry.FindMdevParent(Parent);
        var error = await Check.ThrowsAsync<VfioNotFoundException>(() => parent.CreateAsync<MttyDevice>("mtty-3"), "a create of an unknown type");
        Check.True(error.Message.Contains("mtty-1, mtty-2", StringComparison.Ordinal), "the error does not list the types offered: " + error.Message);
        var missing = Check.Throws<VfioNotFoundException>(() => registry.FindMdevParent("no-such-parent"), "a missing parent");
        Check.True(missing.Message.Contains("mtty", StringComparison.Ordinal), "the error does not list the parents there are: " + missing.Message);
    }

    public static async Task NotCreatedNotRemoved(ScenarioContext context)
    {
        var sysfs = new SysfsReader(context.Kernel);
        string name = Guid.NewGuid().ToString("D", CultureInfo.InvariantCulture);
        sysfs.WriteText("class/mdev_bus/" + Parent + "/mdev_supported_types/mtty-1/create", name);
        try
        {
            var registry = Registry(context);
            await using (registry)
            {
                var probe = await registry.ProbeAsync();
                var device = probe.Registered.OfType<MttyDevice>().SingleOrDefault(d => d.Name == name)
                    ?? throw new ScenarioFailedException("probe did not register the mdev created outside the library");
                using (device.Open())
                {
                    Check.Equal(0x32534348u, device.ReadConfig32(0), "vendor and device id");
                }
                Check.True(registry.CreatedMdevs.Count == 0, "a probed mdev counts as created");
            }
            Check.True(sysfs.Exists("bus/mdev/devices/" + name), "disposing the registry removed an mdev it did not create");
        }
        finally
        {
            sysfs.WriteText("bus/mdev/devices/" + name + "/remove", "1");
        }
    }
}
