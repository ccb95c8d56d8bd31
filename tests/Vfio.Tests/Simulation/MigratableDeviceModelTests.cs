using System.Buffers.Binary;
using Vfio.Interop;
using Vfio.Testing;

namespace Vfio.Tests.Simulation;

/// <summary>A driver author's own migratable device: a model derived from <see cref="MigratableDeviceModel"/>.</summary>
public sealed class MigratableDeviceModelTests : KernelTest
{
    private const string A = "0000:00:04.0";
    private const string B = "0000:00:05.0";

    /// <summary>
    /// A counter device: writing BAR0 offset 0 adds to a counter kept outside BAR0's memory, reading it
    /// gives the counter. Its migration carries the counter (8 bytes) and refuses a counter above
    /// <see cref="Limit"/>, as a device checks what it loads.
    /// </summary>
    private sealed class CounterModel() : MigratableDeviceModel(0x1af4, 0x10ff, 0x058000, VfioMigrationCapabilities.StopCopy | VfioMigrationCapabilities.PreCopy, 4096)
    {
        public const ulong Limit = 1_000_000;

        private ulong _counter;

        /// <summary>The counter, read as the model saves it.</summary>
        public ulong Counter => BinaryPrimitives.ReadUInt64LittleEndian(GetDeviceState());

        protected override ulong ReadBar(int bar, ulong offset, int size) =>
            bar == 0 && offset == 0 ? _counter : base.ReadBar(bar, offset, size);

        protected override void WriteBar(int bar, ulong offset, int size, ulong value)
        {
            if (bar == 0 && offset == 0)
            {
                _counter += value;
                MarkStateChanged();
                return;
            }
            base.WriteBar(bar, offset, size, value);
        }

        protected override byte[] SaveDeviceState()
        {
            var state = new byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(state, _counter);
            return state;
        }

        protected override bool LoadDeviceState(ReadOnlySpan<byte> state)
        {
            if (state.Length != 8 || BinaryPrimitives.ReadUInt64LittleEndian(state) > Limit)
            {
                return false;
            }
            _counter = BinaryPrimitives.ReadUInt64LittleEndian(state);
            return true;
        }

        protected override void OnReset()
        {
            base.OnReset();
            _counter = 0;
        }
    }

    private (RecordingPciDevice Device, CounterModel Model) Add(string address, int group)
    {
        var model = new CounterModel();
        AddPci(address, group, model);
        return (RegisterPci(address), model);
    }

    [Fact]
    public async Task ADerivedModelMigratesTheStateItSavesAndLoads()
    {
        var (a, modelA) = Add(A, 4);
        var (b, modelB) = Add(B, 5);
        using var openA = a.Open();
        using var openB = b.Open();
        a.WriteRegion(0, 0, BitConverter.GetBytes(41UL));
        a.WriteRegion(0, 0, BitConverter.GetBytes(1UL));

        var migrationA = a.GetMigration();
        migrationA.Capabilities.Should().Be(VfioMigrationCapabilities.StopCopy | VfioMigrationCapabilities.PreCopy);
        migrationA.SetState(VfioMigrationState.StopCopy);
        using var saved = new MemoryStream();
        long written = await migrationA.SaveAsync(saved);
        written.Should().Be(16 + 8, "one record: its 16-byte header and the 8 bytes the model saves");
        modelA.Counter.Should().Be(42);

        var migrationB = b.GetMigration();
        migrationB.SetState(VfioMigrationState.Resuming);
        saved.Position = 0;
        await migrationB.ResumeAsync(saved);
        migrationB.SetState(VfioMigrationState.Running);
        modelB.Counter.Should().Be(42);
        var read = new byte[8];
        b.ReadRegion(0, 0, read);
        BitConverter.ToUInt64(read).Should().Be(42);
    }

    [Fact]
    public async Task StateTheDerivedModelRefusesFailsTheLoadingArcAndLeavesTheDeviceResuming()
    {
        var (a, _) = Add(A, 4);
        var (b, modelB) = Add(B, 5);
        using var openA = a.Open();
        using var openB = b.Open();
        a.WriteRegion(0, 0, BitConverter.GetBytes(CounterModel.Limit + 1));
        var migrationA = a.GetMigration();
        migrationA.SetState(VfioMigrationState.StopCopy);
        using var saved = new MemoryStream();
        await migrationA.SaveAsync(saved);

        var migrationB = b.GetMigration();
        migrationB.SetState(VfioMigrationState.Resuming);
        saved.Position = 0;
        await migrationB.ResumeAsync(saved);
        var failed = FluentActions.Invoking(() => migrationB.SetState(VfioMigrationState.Running)).Should().Throw<VfioMigrationException>().Which;
        failed.KernelErrno.Should().Be(Errno.EINVAL);
        failed.CurrentState.Should().Be(VfioMigrationState.Resuming);
        modelB.MigrationState.Should().Be(VfioMigrationState.Resuming);
        modelB.Counter.Should().Be(0);
    }

    [Fact]
    public async Task AChangeTheDerivedModelMarksGivesPreCopyNewData()
    {
        var (a, _) = Add(A, 4);
        using var open = a.Open();
        a.WriteRegion(0, 0, BitConverter.GetBytes(5UL));
        var migration = a.GetMigration();
        migration.SetState(VfioMigrationState.PreCopy);
        using var saved = new MemoryStream();
        (await migration.SaveAsync(saved)).Should().Be(24, "the initial record");
        (await migration.SaveAsync(saved)).Should().Be(0, "nothing changed since");

        a.WriteRegion(0, 0, BitConverter.GetBytes(3UL)); // the counter lives outside BAR0's memory: the model marks it
        (await migration.SaveAsync(saved)).Should().Be(24, "a new record after the change");
        migration.SetState(VfioMigrationState.Running);
    }
}
