using System.Globalization;

namespace Vfio.VmTests;

/// <summary>
/// Runs the VFIO scenarios against the running kernel. Started inside the VM by
/// tests/vm/run-vm-tests.sh as <c>Vfio.VmTests --device ADDRESS --group N [--only NAME]...</c>.
/// </summary>
internal static class Program
{
    private static int Main(string[] args)
    {
        string? device = null;
        int? group = null;
        var only = new List<string>();
        for (int i = 0; i < args.Length; i++)
        {
            string value = i + 1 < args.Length ? args[i + 1] : string.Empty;
            switch (args[i])
            {
                case "--device":
                    device = value;
                    i++;
                    break;
                case "--group":
                    group = int.Parse(value, CultureInfo.InvariantCulture);
                    i++;
                    break;
                case "--only":
                    only.Add(value);
                    i++;
                    break;
                default:
                    Console.Error.WriteLine("usage: Vfio.VmTests --device ADDRESS --group N [--only NAME]...");
                    return 2;
            }
        }
        if (device is null || group is null)
        {
            Console.Error.WriteLine("usage: Vfio.VmTests --device ADDRESS --group N [--only NAME]...");
            return 2;
        }

        var context = new ScenarioContext(VfioKernel.Linux, device, group.Value) { Log = Console.Out };
        IEnumerable<Scenario> scenarios = SmokeScenarios.All;
        if (only.Count > 0)
        {
            scenarios = scenarios.Where(s => only.Contains(s.Name));
        }
        return ScenarioRunner.Run(scenarios, context, Console.Out) == 0 ? 0 : 1;
    }
}
