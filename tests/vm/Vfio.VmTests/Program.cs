using System.Globalization;
using EduDriver;
using NvmeDriver;
using MdevLifecycle;
using Vfio.Scenarios;

namespace Vfio.VmTests;

/// <summary>
/// Runs the VFIO scenarios against the running kernel. Started inside the VM by
/// tests/vm/run-vm-tests.sh as <c>Vfio.VmTests --device ADDRESS --group N [--not-viable-device ADDRESS
/// --not-viable-group N] [--hot-reset-device ADDRESS]... [--hot-reset-group N] [--only NAME]...</c>, and as <c>Vfio.VmTests --sample ADDRESS</c> to run the
/// edu sample's program, and as <c>Vfio.VmTests --nvme-sample ADDRESS</c> to run the NVMe sample's, and as
/// <c>Vfio.VmTests --nvme-bench ADDRESS --kernel-disk DEVICE</c> for benchmarks/vm/run-nvme-bench.sh (<see cref="NvmeBench"/>).
/// </summary>
internal static class Program
{
    private const string Usage = "usage: Vfio.VmTests --device ADDRESS --group N [--not-viable-device ADDRESS --not-viable-group N]\n"
        + "       [--hot-reset-device ADDRESS --hot-reset-device ADDRESS --hot-reset-group N] [--only NAME]...\n"
        + "       Vfio.VmTests --sample ADDRESS [--verbose]\n"
        + "       Vfio.VmTests --nvme-sample ADDRESS [--verbose]\n"
        + "       Vfio.VmTests --nvme-bench ADDRESS --kernel-disk DEVICE [--seconds N] [--warm-up N] [--region-mib N]\n"
        + "       Vfio.VmTests --mdev | --mdev-sample [--verbose]";

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
        if (args.Length > 1 && args[0] == "--nvme-bench")
        {
            return await NvmeBench.RunAsync(["--device", .. args[1..]], Console.Out).ConfigureAwait(false);
        }
        if (args.Length > 0 && args[0] == "--mdev-sample")
        {
            return await MdevLifecycleProgram.RunAsync(["--real", .. args[1..]], Console.Out).ConfigureAwait(false);
        }
        if (args.Length > 0 && args[0] == "--mdev")
        {
            // The mdev machine (tests/vm/run-mdev-tests.sh): the mtty parent, no PCI device for vfio.
            var mdevContext = new ScenarioContext(VfioKernel.Linux, string.Empty, -1) { Log = Console.Out };
            return await ScenarioRunner.RunAsync(ScenarioCatalog.Mdev, mdevContext, Console.Out).ConfigureAwait(false) == 0 ? 0 : 1;
        }

        string? device = null;
        int? group = null;
        string? notViableDevice = null;
        int? notViableGroup = null;
        var hotResetDevices = new List<string>();
        int? hotResetGroup = null;
        var only = new List<string>();
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
                case "--only":
                    only.Add(value);
                    break;
                default:
                    Console.Error.WriteLine(Usage);
                    return 2;
            }
            i++;
        }
        if (device is null || group is null)
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
        };
        IEnumerable<Scenario> scenarios = ScenarioCatalog.All;
        if (only.Count > 0)
        {
            scenarios = scenarios.Where(s => only.Contains(s.Name));
        }
        return await ScenarioRunner.RunAsync(scenarios, context, Console.Out).ConfigureAwait(false) == 0 ? 0 : 1;
    }
}
