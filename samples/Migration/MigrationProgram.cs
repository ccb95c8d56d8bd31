using System.Globalization;
using Vfio;
using Vfio.Testing;
using static MigrationSample.MigrationReport;

namespace MigrationSample;

/// <summary>
/// The sample's program: a migration round trip on the simulated kernel. Device A runs with some
/// state; it is moved to STOP_COPY (the library walks RUNNING -> RUNNING_P2P -> STOP -> STOP_COPY),
/// its state is saved to a file with progress, device B is moved to RESUMING, loads the file and is
/// moved to RUNNING; then both states are compared. No QEMU device implements VFIO migration, so
/// there is no real-kernel mode.
/// </summary>
public static class MigrationProgram
{
    /// <summary>The size of the device state (the BAR0 of each device).</summary>
    public const int StateSize = 64 * 1024;

    /// <summary>Runs the round trip; returns 0 when the states match.</summary>
    /// <param name="output">Where the report goes.</param>
    /// <param name="cancellationToken">Stops the transfers.</param>
    public static async Task<int> RunAsync(TextWriter output, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(output);
        var kernel = new SimulatedKernel();
        var caps = VfioMigrationCapabilities.StopCopy | VfioMigrationCapabilities.P2P;
        kernel.AddPciDevice("0000:00:04.0", new MigratableDeviceModel(caps, StateSize), iommuGroup: 4);
        kernel.AddPciDevice("0000:00:05.0", new MigratableDeviceModel(caps, StateSize), iommuGroup: 5);
        string file = Path.Combine(Path.GetTempPath(), "vfio-migration-" + Guid.NewGuid().ToString("N") + ".bin");
        bool same;
        try
        {
            await using (var registry = new VfioRegistry(kernel))
            {
                registry.AddDriver(new MigratablePciDriver());
                var probed = await registry.ProbeAsync(cancellationToken).ConfigureAwait(false);
                registry.TryFind<MigratableDevice>("0000:00:04.0", out var a);
                registry.TryFind<MigratableDevice>("0000:00:05.0", out var b);
                await Line(output, "probe", $"{probed.Registered.Count} device(s): {a!.Name} (source), {b!.Name} (destination)").ConfigureAwait(false);

                using var openA = a.Open();
                using var openB = b.Open();
                var state = new byte[StateSize];
                new Random(2024).NextBytes(state);
                a.LoadState(state);
                var migrationA = a.GetMigration();
                await Line(output, "source", $"{StateSize} bytes of state in BAR0; migration {migrationA.Capabilities}").ConfigureAwait(false);

                var path = migrationA.PlanPath(VfioMigrationState.StopCopy);
                migrationA.SetState(VfioMigrationState.StopCopy);
                await Line(output, "stop copy", "RUNNING -> " + string.Join(" -> ", path.Select(Name))).ConfigureAwait(false);

                long saved;
                var progress = new ConsoleProgress();
                await using (var stream = File.Create(file))
                {
                    saved = await migrationA.SaveAsync(stream, progress, cancellationToken).ConfigureAwait(false);
                }
                await Line(output, "save", $"{saved} bytes to {Path.GetFileName(file)} in {progress.Reports} progress report(s)").ConfigureAwait(false);

                var migrationB = b.GetMigration();
                migrationB.SetState(VfioMigrationState.Resuming);
                long resumed;
                await using (var stream = File.OpenRead(file))
                {
                    resumed = await migrationB.ResumeAsync(stream, null, cancellationToken).ConfigureAwait(false);
                }
                var back = migrationB.PlanPath(VfioMigrationState.Running);
                migrationB.SetState(VfioMigrationState.Running);
                await Line(output, "resume", $"{resumed} bytes into RESUMING, then RESUMING -> {string.Join(" -> ", back.Select(Name))}").ConfigureAwait(false);

                migrationA.SetState(VfioMigrationState.Running);
                same = b.ReadState(StateSize).AsSpan().SequenceEqual(a.ReadState(StateSize));
                await Line(output, "compare", same ? "destination state equals source state" : "STATES DIFFER", same).ConfigureAwait(false);
            }
            kernel.AssertNoLeaks();
            await Line(output, "leak check", "no file, mapping or DMA mapping left open").ConfigureAwait(false);
        }
        finally
        {
            File.Delete(file);
        }
        return same ? 0 : 1;
    }

    /// <summary>Counts progress reports (a real tool would draw a bar with BytesTransferred / EstimatedTotalBytes).</summary>
    private sealed class ConsoleProgress : IProgress<MigrationProgress>
    {
        public int Reports { get; private set; }

        public void Report(MigrationProgress value) => Reports++;
    }
}
