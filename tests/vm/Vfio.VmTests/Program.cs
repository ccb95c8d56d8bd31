using System.Globalization;
using EduDriver;
using NvmeDriver;
using MdevLifecycle;
using MigrationSample;
using VirtioRngPlatform;
using Vfio.Cli;
using Vfio.Scenarios;

namespace Vfio.VmTests;

/// <summary>
/// Runs the VFIO scenarios against the running kernel. Started inside the VM by
/// tests/vm/run-vm-tests.sh as <c>Vfio.VmTests [--mode MODE] --device ADDRESS --group N [--not-viable-device ADDRESS
/// --not-viable-group N] [--hot-reset-device ADDRESS]... [--hot-reset-group N] [--shared-memory-device ADDRESS] [--only NAME]...</c> (with <c>--noiommu</c> first: the
/// no-IOMMU scenarios, on the machine of mode noiommu), and as <c>Vfio.VmTests --sample ADDRESS</c> to run the
/// edu sample's program, as <c>Vfio.VmTests --nvme-sample ADDRESS</c> to run the NVMe sample's, as
/// <c>Vfio.VmTests --migration-sample</c> to run the migration sample's mtty round trip, as
/// <c>Vfio.VmTests --platform ...</c> and <c>--platform-sample</c> for the platform machine's scenarios and sample, as
/// <c>Vfio.VmTests --cli ARG...</c> to run the vfio tool, and as
/// <c>Vfio.VmTests --nvme-bench ADDRESS --kernel-disk DEVICE</c> for benchmarks/vm/run-nvme-bench.sh (<see cref="NvmeBench"/>), and
/// <c>Vfio.VmTests --dma-bench ADDRESS --native PATH</c> for benchmarks/vm/run-dma-bench.sh (<see cref="DmaBench"/>). MODE is the
/// mode the host booted the kernel in (legacy, legacy-compat, iommufd or noiommu; <see cref="ScenarioMode"/>).
/// </summary>
internal static class Program
{
    private const string Usage = "usage: Vfio.VmTests [--mode MODE] --device ADDRESS --group N [--not-viable-device ADDRESS --not-viable-group N]\n"
        + "       [--hot-reset-device ADDRESS --hot-reset-device ADDRESS --hot-reset-group N] [--shared-memory-device ADDRESS] [--only NAME]...\n"
        + "       Vfio.VmTests --noiommu --mode noiommu --device ADDRESS --group N [--only NAME]...\n"
        + "       Vfio.VmTests --platform --mode noiommu --device NAME --group N [--only NAME]... | --platform-sample\n"
        + "       Vfio.VmTests --sample ADDRESS [--verbose]\n"
        + "       Vfio.VmTests --nvme-sample ADDRESS [--verbose]\n"
        + "       Vfio.VmTests --nvme-bench ADDRESS --kernel-disk DEVICE [--seconds N] [--warm-up N] [--region-mib N]\n"
        + "       Vfio.VmTests --dma-bench ADDRESS --native PATH [--rounds N] [--open-iterations N] [--map-iterations N] [--huge-iterations N]\n"
        + "       Vfio.VmTests --mdev [--mode MODE] | --mdev-sample [--verbose] | --migration-sample\n"
        + "       Vfio.VmTests --cli ARG... (the vfio tool)\n"
        + "       MODE: legacy (default), legacy-compat, iommufd or noiommu";

    private static async Task<int> Main(string[] args)
    {
        if (args.Length > 0 && args[0] == "--sample")
        {
            return await EduDriverProgram.RunAsync(args[1..], Console.Out).ConfigureAwait(false);
        }
        if (args.Length > 0 && args[0] == "--nvme-sample")
        {
            return await NvmeDriverProgram.RunAsync(args[1..], Console.Out).ConfigureAwait(false);
        }
        if (args.Length > 0 && args[0] == "--cli")
        {
            // The vfio tool itself, run as its Main runs it (tests/vm/cli-init.sh puts it behind /bin/vfio).
            return await VfioCommandLine.RunAsync(args[1..], VfioKernel.Linux, Console.Out, Console.Error).ConfigureAwait(false);
        }
        if (args.Length > 1 && args[0] == "--nvme-bench")
        {
            return await NvmeBench.RunAsync(["--device", .. args[1..]], Console.Out).ConfigureAwait(false);
        }
        if (args.Length > 1 && args[0] == "--dma-bench")
        {
            return await DmaBench.RunAsync(["--device", .. args[1..]], Console.Out).ConfigureAwait(false);
        }
        if (args.Length > 0 && args[0] == "--mdev-sample")
        {
            return await MdevLifecycleProgram.RunAsync(["--real", .. args[1..]], Console.Out).ConfigureAwait(false);
        }
        if (args.Length == 1 && args[0] == "--platform-sample")
        {
            // The VirtioRngPlatform sample on the platform machine's virtio-mmio entropy device.
            return await VirtioRngProgram.RunAsync(["--real"], Console.Out).ConfigureAwait(false);
        }
        if (args.Length == 1 && args[0] == "--migration-sample")
        {
            // The migration sample's mtty round trip on the kernel's mtty (Linux 6.7 and later).
            return await MttyMigrationProgram.RunAsync(real: true, Console.Out).ConfigureAwait(false);
        }
        if (args.Length > 0 && args[0] == "--mdev")
        {
            // The mdev machine (tests/vm/run-mdev-tests.sh): the mtty parent, no PCI device for vfio.
            ScenarioMode? mdevMode = args is [_, "--mode", { } name] ? ReadMode(name) : args.Length == 1 ? ScenarioMode.Legacy : null;
            if (mdevMode is null)
            {
                Console.Error.WriteLine(Usage);
                return 2;
            }
            var mdevContext = new ScenarioContext(VfioKernel.Linux, string.Empty, -1)
            {
                Log = Console.Out,
                Mode = mdevMode.Value,
                KernelVersion = Environment.OSVersion.Version,
            };
            return await ScenarioRunner.RunAsync(ScenarioCatalog.Mdev, mdevContext, Console.Out).ConfigureAwait(false) == 0 ? 0 : 1;
        }

        // The no-IOMMU machine (mode noiommu): the edu device in a no-IOMMU group, nothing else.
        IEnumerable<Scenario> scenarios = ScenarioCatalog.All;
        if (args.Length > 0 && args[0] == "--noiommu")
        {
            scenarios = ScenarioCatalog.NoIommu;
            args = args[1..];
        }
        else if (args.Length > 0 && args[0] == "--platform")
        {
            // The platform machine (tests/vm/run-platform-tests.sh): the device is a platform device's name.
            scenarios = ScenarioCatalog.Platform;
            args = args[1..];
        }
        string? device = null;
        int? group = null;
        string? notViableDevice = null;
        int? notViableGroup = null;
        var hotResetDevices = new List<string>();
        int? hotResetGroup = null;
        string? sharedMemoryDevice = null;
        var only = new List<string>();
        ScenarioMode? mode = ScenarioMode.Legacy;
        for (int i = 0; i < args.Length; i++)
        {
            string value = i + 1 < args.Length ? args[i + 1] : string.Empty;
            switch (args[i])
            {
                case "--device":
                    device = value;
                    break;
                case "--group":
                    group = int.Parse(value, CultureInfo.InvariantCulture);
                    break;
                case "--not-viable-device":
                    notViableDevice = value;
                    break;
                case "--not-viable-group":
                    notViableGroup = int.Parse(value, CultureInfo.InvariantCulture);
                    break;
                case "--hot-reset-device":
                    hotResetDevices.Add(value);
                    break;
                case "--hot-reset-group":
                    hotResetGroup = int.Parse(value, CultureInfo.InvariantCulture);
                    break;
                case "--shared-memory-device":
                    sharedMemoryDevice = value;
                    break;
                case "--only":
                    only.Add(value);
                    break;
                case "--mode":
                    mode = ReadMode(value);
                    break;
                default:
                    Console.Error.WriteLine(Usage);
                    return 2;
            }
            i++;
        }
        if (device is null || group is null || mode is null)
        {
            Console.Error.WriteLine(Usage);
            return 2;
        }

        var context = new ScenarioContext(VfioKernel.Linux, device, group.Value)
        {
            Log = Console.Out,
            NotViableDeviceAddress = notViableDevice,
            NotViableGroupId = notViableGroup,
            HotResetDevices = hotResetDevices.Count > 0 ? hotResetDevices : null,
            HotResetGroupId = hotResetGroup,
            SharedMemoryDeviceAddress = sharedMemoryDevice,
            Mode = mode.Value,
            KernelVersion = Environment.OSVersion.Version,
        };
        if (only.Count > 0)
        {
            scenarios = scenarios.Where(s => only.Contains(s.Name));
        }
        return await ScenarioRunner.RunAsync(scenarios, context, Console.Out).ConfigureAwait(false) == 0 ? 0 : 1;
    }

    /// <summary>Reads --mode's value; null (after saying why) for a mode this program cannot run.</summary>
    private static ScenarioMode? ReadMode(string name)
    {
        ScenarioMode? mode = ScenarioModes.Parse(name);
        if (mode is null)
        {
            Console.Error.WriteLine("Vfio.VmTests: no mode '" + name + "'");
        }
        return mode;
    }
}
