using Vfio.Testing;

namespace Vfio.Tests.Features;

/// <summary>Migration v2 through the library against the simulated kernel's migratable device model.</summary>
public class VfioMigrationTests : KernelTest
{
    private const string A = "0000:00:04.0";
    private const string B = "0000:00:05.0";

    private (RecordingPciDevice Device, MigratableDeviceModel Model) Add(string address, int group, VfioMigrationCapabilities caps = VfioMigrationCapabilities.StopCopy | VfioMigrationCapabilities.P2P, bool dataSize = false)
    {
        var model = new MigratableDeviceModel(caps) { ReportsDataSize = dataSize };
        AddPci(address, group, model);
        return (RegisterPci(address), model);
    }

    private static byte[] Pattern(int seed)
    {
        var bytes = new byte[4096];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    [Fact]
    public async Task SavedStateResumedOnASecondDeviceEqualsTheFirstDevicesState()
    {
        var (a, modelA) = Add(A, 4);
        var (b, modelB) = Add(B, 5);
        using var openA = a.Open();
        using var openB = b.Open();
        var state = Pattern(1);
        a.WriteRegion(0, 0, state);

        var migrationA = a.GetMigration();
        migrationA.PlanPath(VfioMigrationState.StopCopy).Should().Equal(VfioMigrationState.RunningP2P, VfioMigrationState.Stop, VfioMigrationState.StopCopy);
        migrationA.SetState(VfioMigrationState.StopCopy);
        modelA.MigrationState.Should().Be(VfioMigrationState.StopCopy);
        Kernel.OpenFileCount(SimulatedFileKind.MigrationData).Should().Be(1);

        using var saved = new MemoryStream();
        var reports = new List<MigrationProgress>();
        long written = await migrationA.SaveAsync(saved, new SyncProgress(reports.Add));
        written.Should().Be(saved.Length).And.BeGreaterThan(state.Length);
        reports.Should().NotBeEmpty();
        reports[^1].BytesTransferred.Should().Be(written);
        reports.Should().OnlyContain(r => r.EstimatedTotalBytes == null, "Linux 6.1 has no MIG_DATA_SIZE");

        var migrationB = b.GetMigration();
        migrationB.SetState(VfioMigrationState.Resuming);
        saved.Position = 0;
        (await migrationB.ResumeAsync(saved)).Should().Be(written);
        migrationB.SetState(VfioMigrationState.Running);

        modelB.MigrationState.Should().Be(VfioMigrationState.Running);
        modelB.GetDeviceState().Should().Equal(modelA.GetDeviceState());
        var readBack = new byte[state.Length];
        b.ReadRegion(0, 0, readBack);
        readBack.Should().Equal(state);
        migrationB.HasDataSession.Should().BeFalse("leaving RESUMING ends the session");

        migrationA.SetState(VfioMigrationState.Running);
        migrationA.HasDataSession.Should().BeFalse();
        Kernel.OpenFileCount(SimulatedFileKind.MigrationData).Should().Be(0);
    }

    [Fact]
    public async Task TheDataSizeEstimateIsReportedWhenTheKernelHasMigDataSize()
    {
        var (a, _) = Add(A, 4, dataSize: true);
        using var open = a.Open();
        var migration = a.GetMigration();
        migration.SetState(VfioMigrationState.StopCopy);
        var reports = new List<MigrationProgress>();
        long written = await migration.SaveAsync(Stream.Null, new SyncProgress(reports.Add));
        reports.Should().OnlyContain(r => r.EstimatedTotalBytes == written);
    }

    [Fact]
    public void ATargetTheDeviceLacksIsRefusedBeforeAnyArc()
    {
        var (a, model) = Add(A, 4, VfioMigrationCapabilities.StopCopy);
        using var open = a.Open();
        var migration = a.GetMigration();
        migration.Capabilities.Should().Be(VfioMigrationCapabilities.StopCopy);
        var act = () => migration.SetState(VfioMigrationState.RunningP2P);
        act.Should().Throw<VfioNotSupportedException>().WithMessage("*VFIO_MIGRATION_P2P*");
        model.MigrationState.Should().Be(VfioMigrationState.Running);
        migration.PlanPath(VfioMigrationState.StopCopy).Should().Equal(VfioMigrationState.Stop, VfioMigrationState.StopCopy);
    }

    [Fact]
    public void AnArcThatFailsIntoErrorSaysToResetAndAResetRecovers()
    {
        var (a, model) = Add(A, 4);
        using var open = a.Open();
        var migration = a.GetMigration();
        model.FailNextArc(VfioMigrationState.RunningP2P, VfioMigrationState.Stop, Errno.EIO);

        var act = () => migration.SetState(VfioMigrationState.StopCopy);
        var e = act.Should().Throw<VfioMigrationException>().Which;
        e.ArcFrom.Should().Be(VfioMigrationState.RunningP2P);
        e.ArcTo.Should().Be(VfioMigrationState.Stop);
        e.Target.Should().Be(VfioMigrationState.StopCopy);
        e.CurrentState.Should().Be(VfioMigrationState.Error);
        e.RequiresReset.Should().BeTrue();
        e.KernelErrno.Should().Be(Errno.EIO);
        e.Errno.Should().Be(Errno.EIO, "the exception carries the kernel's errno as every VfioException does");
        e.Operation.Should().Contain("RUNNING_P2P -> STOP").And.Contain("VFIO_DEVICE_FEATURE");
        e.Device.Should().Be(A);
        e.Message.Should().Contain("RUNNING_P2P -> STOP").And.Contain("ERROR").And.Contain("Reset the device").And.Contain(A);

        var again = () => migration.SetState(VfioMigrationState.Running);
        again.Should().Throw<VfioNotSupportedException>().WithMessage("*reset*");

        a.Reset();
        migration.GetState().Should().Be(VfioMigrationState.Running);
        migration.SetState(VfioMigrationState.StopCopy);
        model.MigrationState.Should().Be(VfioMigrationState.StopCopy);
    }

    [Fact]
    public void AnArcThatFailsCleanlyReportsTheStateItStoppedIn()
    {
        var (a, model) = Add(A, 4);
        using var open = a.Open();
        var migration = a.GetMigration();
        model.FailNextArc(VfioMigrationState.Stop, VfioMigrationState.StopCopy, Errno.ENOMEM, leaveIn: VfioMigrationState.Stop);

        var e = ((Action)(() => migration.SetState(VfioMigrationState.StopCopy))).Should().Throw<VfioMigrationException>().Which;
        e.CurrentState.Should().Be(VfioMigrationState.Stop, "the kernel may leave the device anywhere along the path");
        e.RequiresReset.Should().BeFalse();
        e.Message.Should().Contain("Retry");
        migration.SetState(VfioMigrationState.Running);
        model.MigrationState.Should().Be(VfioMigrationState.Running);
    }

    [Fact]
    public async Task AStreamFromAnotherKindOfDeviceFailsLeavingResumingAndStaysThere()
    {
        var (b, model) = Add(B, 5);
        using var open = b.Open();
        var migration = b.GetMigration();
        migration.SetState(VfioMigrationState.Resuming);
        await migration.ResumeAsync(new MemoryStream(Pattern(3)));

        var e = ((Action)(() => migration.SetState(VfioMigrationState.Running))).Should().Throw<VfioMigrationException>().Which;
        e.ArcFrom.Should().Be(VfioMigrationState.Resuming);
        e.KernelErrno.Should().Be(Errno.EINVAL);
        e.CurrentState.Should().Be(VfioMigrationState.Resuming);
        model.MigrationState.Should().Be(VfioMigrationState.Resuming);
    }

    [Fact]
    public async Task SavingWithoutASessionSaysWhichStateToEnterFirst()
    {
        var (a, _) = Add(A, 4);
        using var open = a.Open();
        var migration = a.GetMigration();
        var save = () => migration.SaveAsync(Stream.Null);
        (await save.Should().ThrowAsync<InvalidOperationException>()).WithMessage("*STOP_COPY*");
        migration.SetState(VfioMigrationState.Resuming);
        (await save.Should().ThrowAsync<InvalidOperationException>()).WithMessage("*STOP_COPY*");
        var resume = () => migration.ResumeAsync(Stream.Null);
        await resume.Should().NotThrowAsync();
    }

    [Fact]
    public async Task ACancelledSaveLeaksNoDescriptorAndTheSessionCanBeRetried()
    {
        var (a, _) = Add(A, 4);
        using (a.Open())
        {
            var migration = a.GetMigration();
            migration.SetState(VfioMigrationState.StopCopy);
            int eventFds = Kernel.OpenFileCount(SimulatedFileKind.EventFd); // the device's own REQ notifier
            using var cts = new CancellationTokenSource();
            await cts.CancelAsync();
            var act = () => migration.SaveAsync(Stream.Null, null, cts.Token);
            await act.Should().ThrowAsync<OperationCanceledException>();
            Kernel.OpenFileCount(SimulatedFileKind.EventFd).Should().Be(eventFds, "the cancellation eventfd is closed");
            (await migration.SaveAsync(Stream.Null)).Should().BeGreaterThan(0, "the session is still there");
        }
        Kernel.OpenFileCount(SimulatedFileKind.MigrationData).Should().Be(0, "closing the device ends the session");
    }

    [Fact]
    public async Task AnEventfdTheKernelRefusesForASaveNamesTheDevice()
    {
        var (a, _) = Add(A, 4);
        using var open = a.Open();
        var migration = a.GetMigration();
        migration.SetState(VfioMigrationState.StopCopy);
        Kernel.FailNext(SimulatedCall.EventFd, Errno.EMFILE);

        var act = () => migration.SaveAsync(Stream.Null);

        var e = (await act.Should().ThrowAsync<VfioException>()).Which;
        e.Errno.Should().Be(Errno.EMFILE);
        e.Device.Should().Be(A);
        e.Operation.Should().Contain("eventfd");
        (await migration.SaveAsync(Stream.Null)).Should().BeGreaterThan(0, "the session is still there");
    }

    [Fact]
    public async Task ADestinationThatFailsStopsTheTransferAndTheSessionCanBeRetried()
    {
        var model = new MigratableDeviceModel(stateSize: 1 << 20);
        AddPci(A, 4, model);
        var a = RegisterPci(A);
        using var open = a.Open();
        var migration = a.GetMigration();
        migration.SetState(VfioMigrationState.StopCopy);
        int eventFds = Kernel.OpenFileCount(SimulatedFileKind.EventFd); // the device's own REQ notifier
        var act = () => migration.SaveAsync(new FailingStream());
        await act.Should().ThrowAsync<IOException>().WithMessage("disk full");
        Kernel.OpenFileCount(SimulatedFileKind.EventFd).Should().Be(eventFds);

        using var rest = new MemoryStream();
        var reports = new List<MigrationProgress>();
        long n = await migration.SaveAsync(rest, new SyncProgress(reports.Add));
        n.Should().BeGreaterThan(0).And.BeLessThan((1 << 20) + 16, "the failed transfer consumed part of the stream");
        reports.Should().NotBeEmpty();
        reports[^1].BytesTransferred.Should().Be(n);
    }

    [Fact]
    public async Task PreCopyStreamsTheInitialDataThenDirtyDataThenTheFinalState()
    {
        var caps = VfioMigrationCapabilities.StopCopy | VfioMigrationCapabilities.P2P | VfioMigrationCapabilities.PreCopy;
        var (a, modelA) = Add(A, 4, caps);
        var (b, modelB) = Add(B, 5, caps);
        using var openA = a.Open();
        using var openB = b.Open();
        a.WriteRegion(0, 0, Pattern(5));
        var migration = a.GetMigration();
        migration.SetState(VfioMigrationState.PreCopy);

        using var stream = new MemoryStream();
        var reports = new List<MigrationProgress>();
        long initial = await migration.SaveAsync(stream, new SyncProgress(reports.Add));
        initial.Should().BeGreaterThan(4096);
        reports[^1].EstimatedTotalBytes.Should().Be(initial, "VFIO_MIG_GET_PRECOPY_INFO says nothing remains");
        (await migration.SaveAsync(stream)).Should().Be(0, "ENOMSG: nothing new while the device is idle");

        var changed = Pattern(6);
        a.WriteRegion(0, 0, changed);
        (await migration.SaveAsync(stream)).Should().BeGreaterThan(0, "the write dirtied the state");

        migration.PlanPath(VfioMigrationState.StopCopy).Should().Equal(VfioMigrationState.PreCopyP2P, VfioMigrationState.StopCopy);
        migration.SetState(VfioMigrationState.StopCopy);
        migration.HasDataSession.Should().BeTrue("PRE_COPY -> STOP_COPY keeps the session");
        (await migration.SaveAsync(stream)).Should().BeGreaterThan(0);

        var mb = b.GetMigration();
        mb.SetState(VfioMigrationState.Resuming);
        stream.Position = 0;
        await mb.ResumeAsync(stream);
        mb.SetState(VfioMigrationState.Running);
        modelB.GetDeviceState().Should().Equal(modelA.GetDeviceState());
        modelB.GetDeviceState().Should().Equal(changed);
    }

    [Fact]
    public void ADeviceWithoutMigrationSaysTheFeatureIsNotSupported()
    {
        AddPci(A, 4);
        var device = RegisterPci(A);
        using var open = device.Open();
        device.ProbeFeature(VfioFeature.Migration).Should().BeFalse();
        var act = () => device.GetMigration();
        act.Should().Throw<VfioNotSupportedException>()
            .WithMessage("Feature MIGRATION is not supported by this device (0000:00:04.0)*ENOTTY*");
    }

    [Fact]
    public void ReopeningTheDeviceGivesAFreshMigrationInRunning()
    {
        var (a, model) = Add(A, 4);
        VfioMigration first;
        using (a.Open())
        {
            first = a.GetMigration();
            first.SetState(VfioMigrationState.StopCopy);
        }
        model.MigrationState.Should().Be(VfioMigrationState.Running, "the driver returns to RUNNING on close");
        using (a.Open())
        {
            var second = a.GetMigration();
            second.Should().NotBeSameAs(first);
            second.GetState().Should().Be(VfioMigrationState.Running);
        }
    }

    private sealed class FailingStream : MemoryStream
    {
        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default) =>
            ValueTask.FromException(new IOException("disk full"));
    }

    /// <summary>A progress sink that reports on the calling thread (Progress&lt;T&gt; would post).</summary>
    private sealed class SyncProgress(Action<MigrationProgress> report) : IProgress<MigrationProgress>
    {
        public void Report(MigrationProgress value) => report(value);
    }
}
