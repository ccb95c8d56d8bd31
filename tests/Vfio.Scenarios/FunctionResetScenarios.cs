using System.Globalization;
using Vfio.Interop;
using static Vfio.Interop.VfioUapi;

namespace Vfio.Scenarios;

/// <summary>
/// When vfio-pci can reset a function, and when it does (vfio_pci_core_enable, vfio_pci_core_disable
/// and the PCI core's reset methods): each function of the machine with the reset methods Linux
/// found when it enumerated it (sysfs reset_method) and the VFIO_DEVICE_FLAGS_RESET the first open's
/// reset attempt gives; a function without a reset method keeping its registers and memory across
/// close and reopen, and one with FLR losing them.
/// </summary>
/// <remarks>
/// The machine: edu on the root bus (no method), an NVMe controller (FLR; its power management has
/// No_Soft_Reset), the two edu functions behind a root port (the first enumerated has "bus", which
/// fails once its sibling is on the bus, so neither reports reset), an edu function alone behind
/// another root port ("bus", which works), ivshmem-plain (no capability, no method) and a modern
/// virtio-rng on the root bus (no power management: no method).
/// </remarks>
internal static class FunctionResetScenarios
{
    private const ushort QemuVendor = 0x1af4;

    /// <summary>Every function reset scenario, in the order they run.</summary>
    public static IReadOnlyList<Scenario> All { get; } =
    [
        new("reset_methods_and_flags_as_linux_finds_them", MethodsAndFlags),
        new("reset_none_keeps_state_across_reopen", NoMethodKeepsState),
        new("reset_flr_clears_state_across_reopen", FlrClearsState),
        new("reset_ioctl_follows_the_flag", IoctlFollowsTheFlag),
    ];

    /// <summary>The edu function alone on a bus behind a root port (its own reset scope).</summary>
    public static string LoneEdu(ScenarioContext context)
    {
        var sysfs = new SysfsReader(context.Kernel);
        string[] all = sysfs.List("bus/pci/devices");
        foreach (string address in PciFunction.Find(context, 0x1234, 0x11e8))
        {
            string bus = address[..7];
            if (bus != "0000:00" && all.Count(a => a.StartsWith(bus + ":", StringComparison.Ordinal)) == 1)
            {
                return address;
            }
        }
        throw new ScenarioFailedException("the machine has no edu function alone on a bus behind a root port");
    }

    public static string Nvme(ScenarioContext context) => PciFunction.FindOne(context, 0x1b36, 0x0010, "NVMe controller");

    public static string Ivshmem(ScenarioContext context) => PciFunction.FindOne(context, QemuVendor, 0x1110, "ivshmem-plain");

    public static string VirtioRng(ScenarioContext context) => PciFunction.FindOne(context, QemuVendor, 0x1044, "modern virtio-rng");

    public static void MethodsAndFlags(ScenarioContext context)
    {
        var (pair0, pair1, _) = context.HotResetPair;
        (string Address, string What, string? Methods, bool Reset)[] expected =
        [
            (context.DeviceAddress, "edu on the root bus", null, false),
            (Nvme(context), "NVMe", "flr", true),
            (pair0, "first edu of the pair", "bus", false),
            (pair1, "second edu of the pair", null, false),
            (LoneEdu(context), "edu alone behind a root port", "bus", true),
            (Ivshmem(context), "ivshmem-plain", null, false),
            (VirtioRng(context), "virtio-rng", null, false),
        ];
        foreach (var (address, what, methods, reset) in expected)
        {
            using var function = PciFunction.Open(context, address);
            uint flags = function.Info.flags;
            context.Note(string.Create(CultureInfo.InvariantCulture, $"{address} ({what}): reset_method [{function.ResetMethod}], device flags 0x{flags:x}"));
            Check.Equal(methods ?? "(none)", function.ResetMethod ?? "(none)", what + " reset_method");
            Check.Equal(reset, (flags & VFIO_DEVICE_FLAGS_RESET) != 0, what + " reports VFIO_DEVICE_FLAGS_RESET");
        }
    }

    /// <summary>
    /// Functions without a reset method keep their state: ivshmem-plain its interrupt mask register
    /// and its shared memory, virtio-rng its MSI-X table (written through the mapping, as a device's
    /// own registers are).
    /// </summary>
    public static void NoMethodKeepsState(ScenarioContext context)
    {
        string ivshmem = Ivshmem(context);
        uint mask;
        var memory = new byte[16];
        using (var function = PciFunction.Open(context, ivshmem))
        {
            mask = function.ReadBar32(0, 0) ^ 0x5a5a_a5a5;
            function.WriteBar32(0, 0, mask);
            Check.Equal(16L, function.ReadRegion(2, 0x100, memory), "pread of the shared memory");
            memory[0]++;
            memory[15] ^= 0xff;
            Check.Equal(16L, function.WriteRegion(2, 0x100, memory), "pwrite of the shared memory");
        }
        using (var again = PciFunction.Open(context, ivshmem))
        {
            Check.Equal(mask, again.ReadBar32(0, 0), "ivshmem interrupt mask after close and reopen");
            var read = new byte[16];
            Check.Equal(16L, again.ReadRegion(2, 0x100, read), "pread of the shared memory after reopen");
            Check.True(read.AsSpan().SequenceEqual(memory), "the shared memory changed across close and reopen");
        }

        string virtio = VirtioRng(context);
        uint data;
        using (var function = PciFunction.Open(context, virtio))
        {
            var (bar, table) = MsixTable(function);
            using var mapping = function.Map(bar, table + 0x10);
            data = PciFunction.ReadMapped32(mapping, (nuint)table + 8) ^ 0x0000_5a5a;
            PciFunction.WriteMapped32(mapping, (nuint)table + 8, data);
        }
        using (var again = PciFunction.Open(context, virtio))
        {
            var (bar, table) = MsixTable(again);
            using var mapping = again.Map(bar, table + 0x10);
            Check.Equal(data, PciFunction.ReadMapped32(mapping, (nuint)table + 8), "virtio-rng MSI-X message data after close and reopen");
        }
    }

    /// <summary>
    /// The NVMe controller has FLR: a reset clears its MSI-X table (QEMU's generic PCI reset masks every
    /// vector and clears its message), whether VFIO_DEVICE_RESET asks for it or the close and reopen do.
    /// </summary>
    public static unsafe void FlrClearsState(ScenarioContext context)
    {
        string address = Nvme(context);
        const ulong Aqa = 0x24;
        using (var function = PciFunction.Open(context, address))
        {
            EnableMemory(function);
            var (bar, table) = MsixTable(function);
            using var mapping = function.Map(bar, table + 0x10);
            PciFunction.WriteMapped32(mapping, (nuint)table + 8, 0x1234);
            PciFunction.WriteMapped32(mapping, (nuint)table + 12, 0);
            Check.Equal(0x1234u, PciFunction.ReadMapped32(mapping, (nuint)table + 8), "message data as written");
            function.WriteBar32(0, Aqa, 0x001f_001f);
            Check.Ok(context.Kernel.Ioctl(function.Device, VFIO_DEVICE_RESET, 0), "VFIO_DEVICE_RESET");
            Check.Equal(0u, PciFunction.ReadMapped32(mapping, (nuint)table + 8), "message data after VFIO_DEVICE_RESET");
            Check.Equal(1u, PciFunction.ReadMapped32(mapping, (nuint)table + 12), "vector control after VFIO_DEVICE_RESET (masked)");
            Check.Equal(0x001f_001fu, function.ReadBar32(0, Aqa), "AQA after VFIO_DEVICE_RESET (QEMU 7.2's NVMe reset drops the queues, not the registers)");
            PciFunction.WriteMapped32(mapping, (nuint)table + 8, 0x1234);
        }
        using (var again = PciFunction.Open(context, address))
        {
            EnableMemory(again);
            var (bar, table) = MsixTable(again);
            using var mapping = again.Map(bar, table + 0x10);
            Check.Equal(0u, PciFunction.ReadMapped32(mapping, (nuint)table + 8), "message data after close and reopen");
            Check.Equal(1u, PciFunction.ReadMapped32(mapping, (nuint)table + 12), "vector control after close and reopen (masked)");
        }
    }

    public static void IoctlFollowsTheFlag(ScenarioContext context)
    {
        using (var lone = PciFunction.Open(context, LoneEdu(context)))
        {
            Check.Ok(context.Kernel.Ioctl(lone.Device, VFIO_DEVICE_RESET, 0), "VFIO_DEVICE_RESET of the edu alone behind a root port");
            Check.Equal(0x010000edu, lone.ReadBar32(0, 0), "edu identification after its bus reset");
        }
        using var first = PciFunction.Open(context, context.HotResetPair.Function0);
        Check.Fails(context.Kernel.Ioctl(first.Device, VFIO_DEVICE_RESET, 0), Errno.EINVAL, "VFIO_DEVICE_RESET of the pair's first function (reset_method bus, but not alone on its bus)");
    }

    /// <summary>The MSI-X table's BAR and offset, from the capability vfio-pci shows.</summary>
    public static (uint Bar, ulong Offset) MsixTable(PciFunction function)
    {
        int msix = function.FindCapability(0x11);
        Check.True(msix != 0, function.Address + " shows no MSI-X capability");
        uint table = function.ReadConfig(msix + 4, 4);
        return (table & 7, table & ~7u);
    }

    /// <summary>Memory decoding on, as a driver's first open does (the open leaves it as the kernel's enable set it).</summary>
    private static void EnableMemory(PciFunction function) => function.WriteConfig(0x04, 2, function.ReadConfig(0x04, 2) | 0x2);
}
