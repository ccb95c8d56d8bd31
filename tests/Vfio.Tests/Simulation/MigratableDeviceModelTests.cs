using System.Buffers.Binary;
using Vfio.Testing;

namespace Vfio.Tests.Simulation;

/// <summary>
/// A device model of one's own that migrates: derived from <see cref="MigratableDeviceModel"/>, with its
/// registers as its state, driven through the library's migration API.
/// </summary>
public class MigratableDeviceModelTests : KernelTest
{
    private const string Source = "0000:00:04.0";
    private const string Destination = "0000:00:05.0";

    /// <summary>
    /// A counter: BAR0 0x0 is its count, a write to 0x4 adds that much while the device runs (not in
    /// STOP); its state migrates as the 8 bytes of count and the number of additions.
    /// </summary>
    private sealed class CounterModel : MigratableDeviceModel
    {
        private uint _count;
        private uint _additions;

        public CounterModel()
            : base(0x1234, 0x1c0f, 0x00ff00, VfioMigrationCapabilities.StopCopy | VfioMigrationCapabilities.P2P | VfioMigrationCapabilities.PreCopy)
        {
            DefineBar(0, 0x1000);
        }

        public List<(VfioMigrationState From, VfioMigrationState To)> Arcs { get; } = [];

        public bool Running { get; private set; } = true;

        public uint Count
        {
            get
            {
                lock (ModelLock)
                {
                    return _count;
                }
            }
        }

        protected override ulong ReadBar(int bar, ulong offset, int size) => offset switch
        {
            0x0 => _count,
            0x8 => _additions,
            _ => 0,
        };

        protected override void WriteBar(int bar, ulong offset, int size, ulong value)
        {
            if (offset == 0x4 && Running)
            {
                _count += (uint)value;
                _additions++;
                MarkStateDirty();
            }
        }

        protected override byte[] SaveState()
        {
            var state = new byte[8];
            BinaryPrimitives.WriteUInt32LittleEndian(state, _count);
            BinaryPrimitives.WriteUInt32LittleEndian(state.AsSpan(4), _additions);
            return state;
        }

        protected override bool LoadState(ReadOnlySpan<byte> state)
        {
            if (state.Length != 8)
            {
                return false;
            }
            _count = BinaryPrimitives.ReadUInt32LittleEndian(state);
            _additions = BinaryPrimitives.ReadUInt32LittleEndian(state[4..]);
            return true;
        }

        protected override void OnMigrationStateChanged(VfioMigrationState previous, VfioMigrationState current)
        {
            Arcs.Add((previous, current));
            Running = current is VfioMigrationState.Running or VfioMigrationState.PreCopy;
        }

        protected override void OnReset()
        {
            base.OnReset();
            _count = 0;
            _additions = 0;
            Running = true;
        }
    }

    private (RecordingPciDevice Device, CounterModel Model) Add(string address, int group)
    {
        var model = new CounterModel();
        AddPci(address, group, model);
        return (RegisterPci(address), model);
    }

    private static void Add(RecordingPciDevice device, uint amount) => device.WriteRegion(0, 4, BitConverter.GetBytes(amount));

    [Fact]
    public async Task ADerivedModelsRegistersMigrateAsTheStateItSaves()
    {
        var (source, counter) = Add(Source, 4);
        var (destination, copy) = Add(Destination, 5);
        using var openSource = source.Open();
        using var openDestination = destination.Open();
        Add(source, 5);
        Add(source, 37);

        var migration = source.GetMigration();
        migration.Capabilities.Should().Be(VfioMigrationCapabilities.StopCopy | VfioMigrationCapabilities.P2P | VfioMigrationCapabilities.PreCopy);
        migration.SetState(VfioMigrationState.StopCopy);
        Add(source, 1000);
        counter.Count.Should().Be(42u, "the device does not count in STOP_COPY");
        using var saved = new MemoryStream();
        await migration.SaveAsync(saved);
        var resume = destination.GetMigration();
        resume.SetState(VfioMigrationState.Resuming);
        saved.Position = 0;
        await resume.ResumeAsync(saved);
        resume.SetState(VfioMigrationState.Running);

        copy.Count.Should().Be(42u);
        var additions = new byte[4];
        destination.ReadRegion(0, 8, additions);
        BitConverter.ToUInt32(additions).Should().Be(2u);
        counter.Arcs.Should().Equal(
            (VfioMigrationState.Running, VfioMigrationState.RunningP2P),
            (VfioMigrationState.RunningP2P, VfioMigrationState.Stop),
            (VfioMigrationState.Stop, VfioMigrationState.StopCopy));
        copy.Running.Should().BeTrue();
        migration.SetState(VfioMigrationState.Running);
    }

    [Fact]
    public async Task WritesWhileInPreCopyMarkTheStateDirty()
    {
        var (source, _) = Add(Source, 4);
        using var open = source.Open();
        var migration = source.GetMigration();
        migration.SetState(VfioMigrationState.PreCopy);
        using var first = new MemoryStream();
        await migration.SaveAsync(first);

        Add(source, 7);
        using var second = new MemoryStream();
        await migration.SaveAsync(second);

        second.Length.Should().Be(first.Length, "one more record of the counter's 8 bytes");
        BinaryPrimitives.ReadUInt32LittleEndian(second.ToArray().AsSpan(16)).Should().Be(7u);
        migration.SetState(VfioMigrationState.Running);
    }

    [Fact]
    public async Task AStateTheModelRefusesFailsLeavingResumingAndTheDeviceStaysThere()
    {
        var (destination, copy) = Add(Destination, 5);
        using var open = destination.Open();
        var resume = destination.GetMigration();
        resume.SetState(VfioMigrationState.Resuming);
        var record = new byte[16 + 4]; // a record of the right identity, but 4 bytes of state
        BinaryPrimitives.WriteUInt32LittleEndian(record, 0x524d4656);
        BinaryPrimitives.WriteUInt16LittleEndian(record.AsSpan(4), 0x1234);
        BinaryPrimitives.WriteUInt16LittleEndian(record.AsSpan(6), 0x1c0f);
        BinaryPrimitives.WriteUInt32LittleEndian(record.AsSpan(8), 4);
        await resume.ResumeAsync(new MemoryStream(record));

        var leave = () => resume.SetState(VfioMigrationState.Running);

        leave.Should().Throw<VfioMigrationException>().Which.KernelErrno.Should().Be(Errno.EINVAL);
        copy.MigrationState.Should().Be(VfioMigrationState.Resuming);
        destination.Reset();
        copy.MigrationState.Should().Be(VfioMigrationState.Running);
    }
}
