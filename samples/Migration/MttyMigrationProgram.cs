using System.Globalization;
using MdevLifecycle;
using Vfio;
using Vfio.Testing;
using static MigrationSample.MigrationReport;

namespace MigrationSample;

/// <summary>
/// The sample's second program: a migration round trip between two serial cards of the kernel's
/// mtty sample driver, which implements migration v2 from Linux 6.7 on. It creates two mtty-2
/// mdevs, gives the first a state (registers set, bytes waiting in a FIFO), saves it through
/// STOP_COPY into memory, resumes the second from it and compares what both cards show. It runs on
/// the simulated kernel's mtty by default and on the machine's kernel with <c>--real</c> (mtty loaded).
/// </summary>
public static class MttyMigrationProgram
{
    /// <summary>The bytes left in the source card's receive FIFO.</summary>
    public static ReadOnlySpan<byte> Received => "vfio mig"u8;

    /// <summary>Runs the round trip; returns 0 when the destination shows the source's state.</summary>
    /// <param name="real">True for the machine's kernel, false for the simulated one.</param>
    /// <param name="output">Where the report goes.</param>
    /// <param name="cancellationToken">Stops the transfers.</param>
    public static async Task<int> RunAsync(bool real, TextWriter output, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(output);
        SimulatedKernel? simulated = null;
        if (!real)
        {
            simulated = new SimulatedKernel();
            simulated.AddMttyParent();
        }
        VfioKernel kernel = simulated ?? VfioKernel.Linux;
        await output.WriteLineAsync("VFIO migration of an mtty serial card on " + (real ? "the Linux kernel" : "the simulated kernel (Vfio.Testing)")).ConfigureAwait(false);
        bool same;
        await using (var registry = new VfioRegistry(kernel))
        {
            registry.AddDriver(new MttyDriver());
            var parent = registry.FindMdevParent("mtty");
            await using var source = await parent.CreateAsync<MttyDevice>("mtty-2", cancellationToken: cancellationToken).ConfigureAwait(false);
            await using var destination = await parent.CreateAsync<MttyDevice>("mtty-2", cancellationToken: cancellationToken).ConfigureAwait(false);
            var a = source.Device;
            var b = destination.Device;
            await Line(output, "create", $"two mtty-2 cards: {a.Name} (source), {b.Name} (destination)").ConfigureAwait(false);

            MttyState.Prepare(a, Received);
            var migrationA = a.GetMigration();
            await Line(output, "source", $"registers set, {Received.Length} bytes in port 0's FIFO; migration {migrationA.Capabilities}").ConfigureAwait(false);

            var path = migrationA.PlanPath(VfioMigrationState.StopCopy);
            migrationA.SetState(VfioMigrationState.StopCopy);
            await Line(output, "stop copy", "RUNNING -> " + string.Join(" -> ", path.Select(Name))).ConfigureAwait(false);

            using var stream = new MemoryStream();
            var progress = new LastProgress();
            long saved = await migrationA.SaveAsync(stream, progress, cancellationToken).ConfigureAwait(false);
            string announced = progress.Last?.EstimatedTotalBytes is long total ? total.ToString(CultureInfo.InvariantCulture) : "unknown";
            await Line(output, "save", $"{saved} bytes (the device announced {announced})").ConfigureAwait(false);
            migrationA.SetState(VfioMigrationState.Running);

            var migrationB = b.GetMigration();
            migrationB.SetState(VfioMigrationState.Resuming);
            stream.Position = 0;
            long resumed = await migrationB.ResumeAsync(stream, null, cancellationToken).ConfigureAwait(false);
            var back = migrationB.PlanPath(VfioMigrationState.Running);
            migrationB.SetState(VfioMigrationState.Running);
            await Line(output, "resume", $"{resumed} bytes into RESUMING, then RESUMING -> {string.Join(" -> ", back.Select(Name))}").ConfigureAwait(false);

            string stateA = MttyState.Read(a);
            string stateB = MttyState.Read(b);
            same = stateA == stateB;
            await Line(output, "compare", same ? "destination shows the source's state: " + stateB : $"STATES DIFFER: source {stateA}, destination {stateB}", same).ConfigureAwait(false);
        }
        if (simulated is not null)
        {
            simulated.AssertNoLeaks();
            await Line(output, "leak check", "no file, mapping or mdev left").ConfigureAwait(false);
        }
        return same ? 0 : 1;
    }

    /// <summary>Keeps the last progress report.</summary>
    private sealed class LastProgress : IProgress<MigrationProgress>
    {
        public MigrationProgress? Last { get; private set; }

        public void Report(MigrationProgress value) => Last = value;
    }
}
