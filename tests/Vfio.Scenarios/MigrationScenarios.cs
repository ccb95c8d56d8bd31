using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using MdevLifecycle;
using MigrationSample;
using Vfio.Interop;
using static Vfio.Interop.Interop;
using static Vfio.Interop.VfioUapi;

namespace Vfio.Scenarios;

/// <summary>
/// Migration v2 on a real device: the kernel's mtty sample, which implements it from Linux 6.7 on
/// (STOP_COPY, P2P and PRE_COPY, the data size, DMA logging that logs nothing). Two mtty cards, one
/// given a state, migrated to the other through the library; every arc mtty takes and the
/// requests it refuses; the data files' rules at the errno level; a resume that fails; transfers
/// cancelled while blocked. Run in the mdev VM (tests/vm/run-mdev-tests.sh) and, in dotnet test,
/// on the simulated kernel's mtty. On an older kernel (6.1's mtty has no migration) each checks
/// that the library reports the feature as not supported, then skips.
/// </summary>
internal static class MigrationScenarios
{
    /// <summary>Every migration scenario, in the order they run.</summary>
    public static IReadOnlyList<Scenario> All { get; } =
    [
        new("migration_mtty_capabilities_and_data_size", CapabilitiesAndDataSize),
        new("migration_mtty_pre_copy_round_trip", PreCopyRoundTrip),
        new("migration_mtty_every_arc", EveryArc),
        new("migration_mtty_refused_requests", RefusedRequests),
        new("migration_mtty_saving_file_rules", SavingFileRules),
        new("migration_mtty_resuming_file_rules", ResumingFileRules),
        new("migration_mtty_resume_garbage_fails_the_arc", ResumeGarbage),
        new("migration_mtty_cancel_blocked_transfers", CancelBlockedTransfers),
        new("dirty_mtty_dma_logging_reports_nothing", DmaLoggingReportsNothing),
    ];

    /// <summary>The Linux release whose mtty gained migration v2.</summary>
    private static readonly Version MttyMigrationSince = new(6, 7);

    private static VfioRegistry Registry(ScenarioContext context)
    {
        var registry = new VfioRegistry(context.Kernel);
        registry.AddDriver(new MttyDriver());
        return registry;
    }

    private static Task<CreatedMdev<MttyDevice>> Create(VfioRegistry registry, string type = "mtty-2") =>
        registry.FindMdevParent(MdevScenarios.Parent).CreateAsync<MttyDevice>(type);

    /// <summary>The device's migration; on a kernel whose mtty has none, checks the refusal and skips.</summary>
    private static VfioMigration Migration(ScenarioContext context, MttyDevice device)
    {
        if (context.KernelVersion < MttyMigrationSince)
        {
            var refused = Check.Throws<VfioNotSupportedException>(() => device.GetMigration(), "GetMigration on mtty of Linux " + context.KernelVersion);
            Check.Equal(Errno.ENOTTY, refused.Errno, "errno of VFIO_DEVICE_FEATURE MIGRATION");
            throw new ScenarioSkippedException($"Linux {context.KernelVersion}'s mtty has no migration v2 (mtty has it from {MttyMigrationSince}); the library reports the feature as not supported (ENOTTY)");
        }
        return device.GetMigration();
    }

    /// <summary>A whole stream of <paramref name="device"/>, saved through STOP_COPY; the device is back in RUNNING.</summary>
    private static async Task<byte[]> SaveWhole(VfioMigration migration)
    {
        migration.SetState(VfioMigrationState.StopCopy);
        using var stream = new MemoryStream();
        await migration.SaveAsync(stream);
        migration.SetState(VfioMigrationState.Running);
        return stream.ToArray();
    }

    private static void State(VfioMigrationState expected, VfioMigrationState actual, string what) =>
        Check.True(expected == actual, $"{what}: expected {MigrationReport.Name(expected)}, got {MigrationReport.Name(actual)}");

    private static void CheckHeader(ReadOnlySpan<byte> stream, int ports, string what)
    {
        Check.True(stream.Length >= MttyDeviceLayout.HeaderSize, what + " is shorter than mtty's header");
        Check.Equal(MttyDeviceLayout.Magic, BinaryPrimitives.ReadUInt64LittleEndian(stream), what + ": magic");
        Check.Equal(1u, BinaryPrimitives.ReadUInt32LittleEndian(stream[8..]), what + ": major version");
        Check.Equal(0u, BinaryPrimitives.ReadUInt32LittleEndian(stream[12..]), what + ": minor version");
        Check.Equal((uint)ports, BinaryPrimitives.ReadUInt32LittleEndian(stream[16..]), what + ": port count");
        Check.Equal(0u, BinaryPrimitives.ReadUInt32LittleEndian(stream[20..]), what + ": flags");
    }

    public static async Task CapabilitiesAndDataSize(ScenarioContext context)
    {
        await using var registry = Registry(context);
        await using var two = await Create(registry, "mtty-2");
        await using var one = await Create(registry, "mtty-1");
        var migration = Migration(context, two.Device);
        Check.True(migration.Capabilities == (VfioMigrationCapabilities.StopCopy | VfioMigrationCapabilities.P2P | VfioMigrationCapabilities.PreCopy), "mtty's migration flags are " + migration.Capabilities);
        State(VfioMigrationState.Running, migration.GetState(), "a new card's migration state");
        Check.True(!migration.HasDataSession, "a data session is open before any state change");
        Check.True(two.Device.ProbeFeature(VfioFeature.MigrationDataSize, VfioFeatureAccess.Get), "MIG_DATA_SIZE is not offered for GET");
        Check.True(!two.Device.ProbeFeature(VfioFeature.MigrationDataSize, VfioFeatureAccess.Set), "MIG_DATA_SIZE is offered for SET");
        Check.Equal(MttyDeviceLayout.StreamSize(2), DataSize(two.Device), "mtty-2's STOP_COPY length (24-byte header, two 36-byte ports)");
        Migration(context, one.Device);
        Check.Equal(MttyDeviceLayout.StreamSize(1), DataSize(one.Device), "mtty-1's STOP_COPY length");
        context.Note($"mtty: {migration.Capabilities}; MIG_DATA_SIZE {DataSize(one.Device)} (mtty-1), {DataSize(two.Device)} (mtty-2)");
    }

    private static ulong DataSize(MttyDevice device)
    {
        Span<byte> size = stackalloc byte[Unsafe.SizeOf<vfio_device_feature_mig_data_size>()];
        device.GetFeature(VfioFeature.MigrationDataSize, size);
        return BinaryPrimitives.ReadUInt64LittleEndian(size);
    }

    public static async Task PreCopyRoundTrip(ScenarioContext context)
    {
        await using var registry = Registry(context);
        await using var source = await Create(registry);
        await using var destination = await Create(registry);
        var a = source.Device;
        var b = destination.Device;
        var migrationA = Migration(context, a);
        var migrationB = b.GetMigration();
        string before = MttyState.Read(b);
        MttyState.Prepare(a, MttyMigrationProgram.Received);

        // PRE_COPY: the header only; mtty ends its pre-copy data with a read of 0, not ENOMSG.
        Check.True(migrationA.PlanPath(VfioMigrationState.PreCopy).SequenceEqual([VfioMigrationState.PreCopy]), "RUNNING -> PRE_COPY is one arc");
        migrationA.SetState(VfioMigrationState.PreCopy);
        Check.True(migrationA.HasDataSession, "PRE_COPY opened no data session");
        using var stream = new MemoryStream();
        var reports = new List<MigrationProgress>();
        long initial = await migrationA.SaveAsync(stream, new Reports(reports));
        Check.Equal((long)MttyDeviceLayout.HeaderSize, initial, "bytes saved in PRE_COPY");
        Check.True(reports is [.., { BytesTransferred: MttyDeviceLayout.HeaderSize, EstimatedTotalBytes: MttyDeviceLayout.HeaderSize }],
            "the PRE_COPY progress should say 24 of 24 bytes (VFIO_MIG_GET_PRECOPY_INFO: nothing initial or dirty left), said " + string.Join(", ", reports));
        Check.Equal(0L, await migrationA.SaveAsync(stream), "bytes of a second PRE_COPY save (mtty reports no dirty data)");

        // STOP_COPY continues the same file: the ports follow the header.
        var path = migrationA.PlanPath(VfioMigrationState.StopCopy);
        Check.True(path.SequenceEqual([VfioMigrationState.PreCopyP2P, VfioMigrationState.StopCopy]), "PRE_COPY -> STOP_COPY goes through PRE_COPY_P2P, but planned " + string.Join(" -> ", path));
        migrationA.SetState(VfioMigrationState.StopCopy);
        Check.True(migrationA.HasDataSession, "the data session ended on PRE_COPY_P2P -> STOP_COPY");
        long rest = await migrationA.SaveAsync(stream);
        Check.Equal((long)(2 * MttyDeviceLayout.PortSize), rest, "bytes saved in STOP_COPY after PRE_COPY");
        byte[] saved = stream.ToArray();
        CheckHeader(saved, 2, "the saved stream");
        migrationA.SetState(VfioMigrationState.Running);
        Check.True(!migrationA.HasDataSession, "the saving session outlived STOP_COPY");

        var resumePath = migrationB.PlanPath(VfioMigrationState.Resuming);
        Check.True(resumePath.SequenceEqual([VfioMigrationState.RunningP2P, VfioMigrationState.Stop, VfioMigrationState.Resuming]), "RUNNING -> RESUMING planned " + string.Join(" -> ", resumePath));
        migrationB.SetState(VfioMigrationState.Resuming);
        Check.Equal((long)saved.Length, await migrationB.ResumeAsync(new MemoryStream(saved)), "bytes resumed");
        migrationB.SetState(VfioMigrationState.Running);
        State(VfioMigrationState.Running, migrationB.GetState(), "the destination's state after the resume");

        // The destination saves what the source saved, byte for byte, and shows the same registers and FIFO.
        byte[] again = await SaveWhole(migrationB);
        Check.True(again.AsSpan().SequenceEqual(saved), $"the destination's stream {Convert.ToHexString(again)} differs from the source's {Convert.ToHexString(saved)}");
        string stateA = MttyState.Read(a);
        string stateB = MttyState.Read(b);
        Check.Equal(stateA, stateB, "the destination's state");
        Check.True(stateB != before, "the destination showed that state before the resume already: " + before);
        context.Note("migrated " + stateB);
    }

    public static async Task EveryArc(ScenarioContext context)
    {
        await using var registry = Registry(context);
        await using var card = await Create(registry);
        var migration = Migration(context, card.Device);
        MttyState.Prepare(card.Device, "arc"u8);
        const VfioMigrationState R = VfioMigrationState.Running, RP = VfioMigrationState.RunningP2P, S = VfioMigrationState.Stop;
        const VfioMigrationState SC = VfioMigrationState.StopCopy, RES = VfioMigrationState.Resuming;
        const VfioMigrationState PC = VfioMigrationState.PreCopy, PCP = VfioMigrationState.PreCopyP2P;
        // A tour over all 15 arcs of a device with P2P and PRE_COPY (the arcs the vfio.h FSM comment lists).
        VfioMigrationState[] tour = [RP, R, PC, PCP, PC, R, RP, PCP, RP, S, RP, S, SC, S, RES, S, RP, PCP, SC, S, RP, R];
        var arcs = new HashSet<(VfioMigrationState, VfioMigrationState)>();
        byte[]? stream = null;
        var current = R;
        foreach (var next in tour)
        {
            var path = migration.PlanPath(next);
            Check.True(path.SequenceEqual([next]), $"{MigrationReport.Name(current)} -> {MigrationReport.Name(next)} is one arc, but planned {string.Join(" -> ", path.Select(MigrationReport.Name))}");
            migration.SetState(next);
            State(next, migration.GetState(), $"the state after the arc {MigrationReport.Name(current)} -> {MigrationReport.Name(next)}");
            bool session = next is SC or RES or PC or PCP;
            Check.Equal(session, migration.HasDataSession, $"a data session open in {MigrationReport.Name(next)}");
            if (next == SC && stream is null)
            {
                using var saved = new MemoryStream();
                await migration.SaveAsync(saved);
                stream = saved.ToArray();
            }
            if (next == RES)
            {
                // RESUMING -> STOP loads the state: it needs a whole stream.
                await migration.ResumeAsync(new MemoryStream(stream!));
            }
            arcs.Add((current, next));
            current = next;
        }
        Check.Equal(15, arcs.Count, "distinct arcs walked");
        context.Note("walked " + string.Join(", ", arcs.Select(a => MigrationReport.Name(a.Item1) + "->" + MigrationReport.Name(a.Item2))));
    }

    /// <summary>A MIG_DEVICE_STATE SET made directly: the kernel's answer and the data fd it gave (owned by the caller).</summary>
    private static int SetStateRaw(MttyDevice device, uint state, out SafeFd? dataFd)
    {
        var mig = new vfio_device_feature_mig_state { device_state = state, data_fd = -1 };
        int rc = device.FeatureCore(VfioFeature.MigrationDeviceState, VFIO_DEVICE_FEATURE_SET, MemoryMarshal.AsBytes(new Span<vfio_device_feature_mig_state>(ref mig)));
        dataFd = rc == 0 && mig.data_fd >= 0 ? new SafeFd(device.Kernel, mig.data_fd) : null;
        return rc;
    }

    private static VfioMigrationState GetStateRaw(MttyDevice device)
    {
        var mig = new vfio_device_feature_mig_state { data_fd = -1 };
        Check.Ok(device.FeatureCore(VfioFeature.MigrationDeviceState, VFIO_DEVICE_FEATURE_GET, MemoryMarshal.AsBytes(new Span<vfio_device_feature_mig_state>(ref mig))), "MIG_DEVICE_STATE GET");
        return (VfioMigrationState)mig.device_state;
    }

    public static async Task RefusedRequests(ScenarioContext context)
    {
        await using var registry = Registry(context);
        await using var card = await Create(registry);
        var device = card.Device;
        var migration = Migration(context, device);

        // The kernel walks a multi-arc request itself (vfio_mig_get_next_state), opening the file at the end.
        Check.Ok(SetStateRaw(device, (uint)VfioMigrationState.StopCopy, out var saving), "MIG_DEVICE_STATE SET RUNNING -> STOP_COPY in one request");
        using (saving)
        {
            Check.True(saving is not null, "entering STOP_COPY gave no data fd");
            State(VfioMigrationState.StopCopy, GetStateRaw(device), "the state after one request for STOP_COPY");
            // STOP_COPY -> PRE_COPY(_P2P) is forbidden; ERROR cannot be asked for; 9 is no state. The state stays.
            Check.Fails(SetStateRaw(device, (uint)VfioMigrationState.PreCopy, out _), Errno.EINVAL, "SET STOP_COPY -> PRE_COPY");
            Check.Fails(SetStateRaw(device, (uint)VfioMigrationState.PreCopyP2P, out _), Errno.EINVAL, "SET STOP_COPY -> PRE_COPY_P2P");
            Check.Fails(SetStateRaw(device, (uint)VfioMigrationState.Error, out _), Errno.EINVAL, "SET ERROR");
            Check.Fails(SetStateRaw(device, 9, out _), Errno.EINVAL, "SET state 9");
            State(VfioMigrationState.StopCopy, GetStateRaw(device), "the state after the refused requests");
        }

        // The library refuses the same before asking the kernel, and says why.
        var planned = Check.Throws<VfioNotSupportedException>(() => migration.SetState(VfioMigrationState.PreCopy), "SetState(PreCopy) from STOP_COPY");
        Check.True(planned.Message.Contains("STOP_COPY", StringComparison.Ordinal), "the refusal does not name the state: " + planned.Message);
        Check.Throws<VfioNotSupportedException>(() => migration.SetState(VfioMigrationState.Error), "SetState(Error)");
        Check.Ok(SetStateRaw(device, (uint)VfioMigrationState.Running, out var none), "MIG_DEVICE_STATE SET STOP_COPY -> RUNNING in one request");
        Check.True(none is null, "leaving STOP_COPY for RUNNING gave a data fd");
        State(VfioMigrationState.Running, migration.GetState(), "the state after returning to RUNNING");
    }

    public static async Task SavingFileRules(ScenarioContext context)
    {
        await using var registry = Registry(context);
        await using var card = await Create(registry);
        var device = card.Device;
        Migration(context, device);
        var kernel = context.Kernel;
        Check.Ok(SetStateRaw(device, (uint)VfioMigrationState.PreCopy, out var file), "SET RUNNING -> PRE_COPY");
        using var fd = file ?? throw new ScenarioFailedException("entering PRE_COPY gave no data fd");
        Check.Equal((ulong)MttyDeviceLayout.HeaderSize, PreCopyInitial(kernel, fd), "PRE_COPY initial_bytes before any read");
        var buffer = new byte[256];
        Check.Equal(10L, kernel.Read(fd, buffer.AsSpan(0, 10)), "a 10-byte read in PRE_COPY");
        Check.Equal((ulong)MttyDeviceLayout.HeaderSize - 10, PreCopyInitial(kernel, fd), "initial_bytes after 10 bytes were read");
        Check.Equal((long)MttyDeviceLayout.HeaderSize - 10, kernel.Read(fd, buffer.AsSpan(10)), "the rest of the header");
        Check.Equal(0L, kernel.Read(fd, buffer.AsSpan(MttyDeviceLayout.HeaderSize)), "a read at PRE_COPY's end (mtty: 0, where vfio.h asks for ENOMSG)");
        CheckHeader(buffer, 2, "the PRE_COPY data");
        Check.Fails((int)kernel.PRead(fd, buffer, 0), Errno.ESPIPE, "pread of a data fd");
        Check.Fails((int)kernel.Write(fd, buffer.AsSpan(0, 1)), Errno.EBADF, "write to a saving data fd");
        Span<PollFd> poll = [new PollFd { fd = fd.Value, events = Flags.POLLIN }];
        Check.Equal(1, kernel.Poll(poll, 0), "poll of the saving fd (mtty's file has no poll: always ready)");

        // PRE_COPY -> STOP_COPY in one request keeps the file and gives no new one; the ports follow.
        Check.Ok(SetStateRaw(device, (uint)VfioMigrationState.StopCopy, out var second), "SET PRE_COPY -> STOP_COPY");
        Check.True(second is null, "PRE_COPY -> STOP_COPY gave a second data fd");
        Check.Equal((long)(2 * MttyDeviceLayout.PortSize), kernel.Read(fd, buffer), "the ports, read in STOP_COPY");
        Check.Equal(0L, kernel.Read(fd, buffer), "a read at STOP_COPY's end");
        Check.Fails(PreCopyInfo(kernel, fd, out _), Errno.EINVAL, "VFIO_MIG_GET_PRECOPY_INFO in STOP_COPY");

        // Leaving the state disables the file: it stays open but reads fail.
        Check.Ok(SetStateRaw(device, (uint)VfioMigrationState.Stop, out _), "SET STOP_COPY -> STOP");
        Check.Fails((int)kernel.Read(fd, buffer), Errno.ENODEV, "a read after STOP_COPY was left");
        Check.Ok(SetStateRaw(device, (uint)VfioMigrationState.Running, out _), "SET STOP -> RUNNING");
    }

    private static unsafe int PreCopyInfo(VfioKernel kernel, SafeFd fd, out vfio_precopy_info info)
    {
        info = new vfio_precopy_info { argsz = (uint)sizeof(vfio_precopy_info) };
        fixed (vfio_precopy_info* p = &info)
        {
            return kernel.Ioctl(fd, VFIO_MIG_GET_PRECOPY_INFO, p);
        }
    }

    private static ulong PreCopyInitial(VfioKernel kernel, SafeFd fd)
    {
        Check.Ok(PreCopyInfo(kernel, fd, out var info), "VFIO_MIG_GET_PRECOPY_INFO");
        Check.Equal(0UL, info.dirty_bytes, "dirty_bytes (mtty never reports any)");
        return info.initial_bytes;
    }

    public static async Task ResumingFileRules(ScenarioContext context)
    {
        await using var registry = Registry(context);
        await using var source = await Create(registry);
        await using var card = await Create(registry);
        var device = card.Device;
        Migration(context, device);
        byte[] stream = await SaveWhole(source.Device.GetMigration());
        var kernel = context.Kernel;
        Check.Ok(SetStateRaw(device, (uint)VfioMigrationState.Resuming, out var file), "SET RUNNING -> RESUMING");
        using var fd = file ?? throw new ScenarioFailedException("entering RESUMING gave no data fd");
        var buffer = new byte[MttyDeviceLayout.StreamSize(2) + 1];
        Check.Fails((int)kernel.Read(fd, buffer), Errno.EBADF, "read of a resuming data fd");
        Check.Fails((int)kernel.PWrite(fd, stream, 0), Errno.ESPIPE, "pwrite of a data fd");
        Check.Fails(PreCopyInfo(kernel, fd, out _), Errno.ENOTTY, "VFIO_MIG_GET_PRECOPY_INFO on the resuming fd");
        Check.Fails((int)kernel.Write(fd, buffer), Errno.ENOMEM, "a write of one byte more than a whole stream");
        // Half the stream: RESUMING -> STOP refuses to load it, and the device stays in RESUMING.
        Check.Equal(40L, kernel.Write(fd, stream.AsSpan(0, 40)), "a write of the first 40 bytes");
        Check.Fails(SetStateRaw(device, (uint)VfioMigrationState.Stop, out _), Errno.EINVAL, "SET RESUMING -> STOP with 40 of 96 bytes");
        State(VfioMigrationState.Resuming, GetStateRaw(device), "the state after the refused load");
        Check.Equal((long)(stream.Length - 40), kernel.Write(fd, stream.AsSpan(40)), "a write of the rest");
        Check.Ok(SetStateRaw(device, (uint)VfioMigrationState.Running, out _), "SET RESUMING -> RUNNING with the whole stream");
        Check.Fails((int)kernel.Write(fd, stream.AsSpan(0, 1)), Errno.ENODEV, "a write after RESUMING was left");
    }

    public static async Task ResumeGarbage(ScenarioContext context)
    {
        await using var registry = Registry(context);
        await using var source = await Create(registry);
        await using var destination = await Create(registry);
        var b = destination.Device;
        var migrationB = Migration(context, b);
        MttyState.Prepare(source.Device, "garbage"u8);
        byte[] stream = await SaveWhole(source.Device.GetMigration());

        // A header that is not mtty's: the write that completes it fails with EFAULT...
        migrationB.SetState(VfioMigrationState.Resuming);
        var garbage = new byte[MttyDeviceLayout.HeaderSize];
        new Random(14).NextBytes(garbage);
        var refused = await Check.ThrowsAsync<VfioException>(() => migrationB.ResumeAsync(new MemoryStream(garbage)), "resuming 24 bytes of garbage");
        Check.Equal(Errno.EFAULT, refused.Errno, "errno of the write that completes a bad header");
        State(VfioMigrationState.Resuming, migrationB.GetState(), "the state after the refused write");

        // ...but mtty keeps its bytes: the arc that loads them fails only because the stream is short,
        // and the device stays in RESUMING with its session open.
        var failed = Check.Throws<VfioMigrationException>(() => migrationB.SetState(VfioMigrationState.Running), "SetState(Running) after garbage");
        State(VfioMigrationState.Resuming, failed.ArcFrom, "the failed arc's start");
        State(VfioMigrationState.Stop, failed.ArcTo, "the failed arc's end");
        Check.True(failed.CurrentState == VfioMigrationState.Resuming, "the device is in " + failed.CurrentState + ", not RESUMING, after the failed arc");
        Check.True(!failed.RequiresReset, "a failed load should not ask for a reset");
        Check.Equal(Errno.EINVAL, failed.KernelErrno, "errno of RESUMING -> STOP with 24 of 96 bytes");
        Check.True(migrationB.HasDataSession, "the resuming session closed after the failed arc");
        context.Note(failed.Message);

        // Writing the ports completes the stream; mtty checked the header only once, so it loads them.
        await migrationB.ResumeAsync(new MemoryStream(stream, MttyDeviceLayout.HeaderSize, stream.Length - MttyDeviceLayout.HeaderSize));
        migrationB.SetState(VfioMigrationState.Running);
        Check.Equal(MttyState.Read(source.Device), MttyState.Read(b), "the destination's state after completing the stream");

        // A stream of a one-port card does not fit a two-port card: its header fails the write.
        await using var single = await Create(registry, "mtty-1");
        byte[] oneStream = await SaveWhole(single.Device.GetMigration());
        migrationB.SetState(VfioMigrationState.Resuming);
        var mismatch = await Check.ThrowsAsync<VfioException>(() => migrationB.ResumeAsync(new MemoryStream(oneStream)), "resuming an mtty-1 stream into an mtty-2 card");
        Check.Equal(Errno.EFAULT, mismatch.Errno, "errno of a header with another port count");
    }

    public static async Task CancelBlockedTransfers(ScenarioContext context)
    {
        await using var registry = Registry(context);
        await using var source = await Create(registry);
        await using var destination = await Create(registry);
        var migrationA = Migration(context, source.Device);
        var migrationB = destination.Device.GetMigration();
        MttyState.Prepare(source.Device, "cancel"u8);

        // A save whose destination blocks: cancelling ends it; the bytes in flight are lost, so the
        // save starts over from a fresh STOP_COPY.
        migrationA.SetState(VfioMigrationState.StopCopy);
        using (var cancel = new CancellationTokenSource())
        {
            var blocked = new BlockingStream();
            var save = migrationA.SaveAsync(blocked, null, cancel.Token);
            await blocked.Entered.WaitAsync(TimeSpan.FromSeconds(30));
            Check.True(!save.IsCompleted, "the save completed although its destination blocks");
            await cancel.CancelAsync();
            await Check.ThrowsAsync<OperationCanceledException>(() => save, "a save cancelled while its destination blocks");
        }
        State(VfioMigrationState.StopCopy, migrationA.GetState(), "the state after the cancelled save");
        Check.True(migrationA.HasDataSession, "the cancelled save closed the session");
        migrationA.SetState(VfioMigrationState.Stop);
        byte[] stream = await SaveWhole(migrationA);
        Check.Equal(MttyDeviceLayout.StreamSize(2), (ulong)stream.Length, "bytes of the save started over");

        // A resume whose source blocks (a read that waits for data that never comes): cancelling ends
        // it and leaves RESUMING and its session as they were; the whole stream then loads.
        migrationB.SetState(VfioMigrationState.Resuming);
        using (var cancel = new CancellationTokenSource())
        {
            var blocked = new BlockingStream();
            var resume = migrationB.ResumeAsync(blocked, null, cancel.Token);
            await blocked.Entered.WaitAsync(TimeSpan.FromSeconds(30));
            Check.True(!resume.IsCompleted, "the resume completed although its source blocks");
            await cancel.CancelAsync();
            await Check.ThrowsAsync<OperationCanceledException>(() => resume, "a resume cancelled while its source's read blocks");
        }
        State(VfioMigrationState.Resuming, migrationB.GetState(), "the state after the cancelled resume");
        Check.True(migrationB.HasDataSession, "the cancelled resume closed the session");
        await migrationB.ResumeAsync(new MemoryStream(stream));
        migrationB.SetState(VfioMigrationState.Running);
        Check.Equal(MttyState.Read(source.Device), MttyState.Read(destination.Device), "the destination's state after the resume that followed the cancelled one");
    }

    public static async Task DmaLoggingReportsNothing(ScenarioContext context)
    {
        await using var registry = Registry(context);
        await using var card = await Create(registry);
        var device = card.Device;
        if (context.KernelVersion < MttyMigrationSince)
        {
            var refused = Check.Throws<VfioNotSupportedException>(() => device.StartDmaLogging([new DmaLogRange(0x100000, 0x10000)]), "StartDmaLogging on mtty of Linux " + context.KernelVersion);
            Check.Equal(Errno.ENOTTY, refused.Errno, "errno of DMA_LOGGING_START");
            throw new ScenarioSkippedException($"Linux {context.KernelVersion}'s mtty has no DMA logging (mtty has it from {MttyMigrationSince}); the library reports it as not supported (ENOTTY)");
        }
        // Misaligned ranges and overlaps are the core's refusals, made before the driver is called.
        var misaligned = Check.Throws<VfioException>(() => device.StartDmaLogging([new DmaLogRange(0x100800, 0x1000)]), "a range not aligned to the page size");
        Check.Equal(Errno.EINVAL, misaligned.Errno, "errno of a misaligned range");
        var overlap = Check.Throws<VfioException>(() => device.StartDmaLogging([new DmaLogRange(0x100000, 0x2000), new DmaLogRange(0x101000, 0x1000)]), "overlapping ranges");
        Check.Equal(Errno.EINVAL, overlap.Errno, "errno of overlapping ranges");
        using var log = device.StartDmaLogging([new DmaLogRange(0x100000, 0x10000), new DmaLogRange(0x200000, 0x4000)]);
        Check.Equal(4096UL, log.PageSize, "the page size mtty keeps");
        ulong[] bits = log.Report(0x100000, 0x10000);
        Check.Equal(1, bits.Length, "bitmap words for 16 pages");
        Check.Equal(0UL, bits[0], "dirty pages of a device that does no DMA");
        context.Note("mtty's DMA log: started with page size 4096, reported 16 pages clean");
    }

    /// <summary>A stream whose reads and writes block until cancelled, and which says when one started.</summary>
    private sealed class BlockingStream : Stream
    {
        private readonly TaskCompletionSource _entered = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Task Entered => _entered.Task;

        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => true;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            _entered.TrySetResult();
            await Task.Delay(Timeout.Infinite, cancellationToken).ConfigureAwait(false);
            return 0;
        }

        public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            _entered.TrySetResult();
            await Task.Delay(Timeout.Infinite, cancellationToken).ConfigureAwait(false);
        }

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException("synchronous reads would block forever");

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException("synchronous writes would block forever");

        public override void Flush()
        {
        }

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();
    }

    /// <summary>Collects progress reports as they come.</summary>
    private sealed class Reports(List<MigrationProgress> list) : IProgress<MigrationProgress>
    {
        public void Report(MigrationProgress value) => list.Add(value);
    }
}

/// <summary>The layout of mtty's migration stream (struct mtty_data in samples/vfio-mdev/mtty.c).</summary>
internal static class MttyDeviceLayout
{
    /// <summary>MTTY_MAGIC.</summary>
    public const ulong Magic = 0x7e9d09898c3e2c4e;

    /// <summary>offsetof(struct mtty_data, ports).</summary>
    public const int HeaderSize = 24;

    /// <summary>sizeof(struct serial_port).</summary>
    public const int PortSize = 36;

    /// <summary>mtty_data_size: the bytes of a whole stream.</summary>
    public static ulong StreamSize(int ports) => (ulong)(HeaderSize + ports * PortSize);
}
