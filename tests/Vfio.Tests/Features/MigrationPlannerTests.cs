using Xunit.Abstractions;
using S = Vfio.VfioMigrationState;
using C = Vfio.VfioMigrationCapabilities;

namespace Vfio.Tests.Features;

/// <summary>
/// The migration path planner against two independent oracles: the kernel's next-state table of
/// <c>vfio_mig_get_next_state</c> (drivers/vfio/vfio_main.c, Linux 6.2+, with its skip-over loop for
/// unsupported states), and the arc list of the &lt;linux/vfio.h&gt; comments searched breadth-first.
/// </summary>
public class MigrationPlannerTests(ITestOutputHelper output)
{
    private static readonly S[] States = [S.Error, S.Stop, S.Running, S.StopCopy, S.Resuming, S.RunningP2P, S.PreCopy, S.PreCopyP2P];

    // vfio_from_fsm_table[current][target] = the next state, transcribed row by row.
    private static readonly Dictionary<S, Dictionary<S, S>> KernelTable = new()
    {
        [S.Stop] = Row(stop: S.Stop, running: S.RunningP2P, preCopy: S.RunningP2P, preCopyP2P: S.RunningP2P, stopCopy: S.StopCopy, resuming: S.Resuming, runningP2P: S.RunningP2P),
        [S.Running] = Row(stop: S.RunningP2P, running: S.Running, preCopy: S.PreCopy, preCopyP2P: S.RunningP2P, stopCopy: S.RunningP2P, resuming: S.RunningP2P, runningP2P: S.RunningP2P),
        [S.PreCopy] = Row(stop: S.Running, running: S.Running, preCopy: S.PreCopy, preCopyP2P: S.PreCopyP2P, stopCopy: S.PreCopyP2P, resuming: S.Running, runningP2P: S.Running),
        [S.PreCopyP2P] = Row(stop: S.RunningP2P, running: S.RunningP2P, preCopy: S.PreCopy, preCopyP2P: S.PreCopyP2P, stopCopy: S.StopCopy, resuming: S.RunningP2P, runningP2P: S.RunningP2P),
        [S.StopCopy] = Row(stop: S.Stop, running: S.Stop, preCopy: S.Error, preCopyP2P: S.Error, stopCopy: S.StopCopy, resuming: S.Stop, runningP2P: S.Stop),
        [S.Resuming] = Row(stop: S.Stop, running: S.Stop, preCopy: S.Stop, preCopyP2P: S.Stop, stopCopy: S.Stop, resuming: S.Resuming, runningP2P: S.Stop),
        [S.RunningP2P] = Row(stop: S.Stop, running: S.Running, preCopy: S.Running, preCopyP2P: S.PreCopyP2P, stopCopy: S.Stop, resuming: S.Stop, runningP2P: S.RunningP2P),
        [S.Error] = Row(S.Error, S.Error, S.Error, S.Error, S.Error, S.Error, S.Error),
    };

    // state_flags_table: the flags a state needs; ERROR needs all bits, so no device has it.
    private static ulong StateFlags(S state) => state switch
    {
        S.Stop or S.Running or S.StopCopy or S.Resuming => 1,
        S.RunningP2P => 1 | 2,
        S.PreCopy => 1 | 4,
        S.PreCopyP2P => 1 | 2 | 4,
        _ => ~0UL,
    };

    [Fact]
    public void EveryTransitionForEveryFlagSetMatchesTheKernelTableAndTheDocumentedArcs()
    {
        int checkedCount = 0;
        int refused = 0;
        for (ulong flags = 0; flags < 8; flags++)
        {
            var caps = (C)flags;
            var documented = DocumentedArcs(caps);
            foreach (var from in States)
            {
                foreach (var to in States)
                {
                    var expected = KernelPath(from, to, flags);
                    var actual = MigrationPlanner.Plan(from, to, caps, out string? reason);
                    checkedCount++;
                    if (expected is null)
                    {
                        refused++;
                        actual.Should().BeNull($"the kernel refuses {from} -> {to} with flags {flags}");
                        reason.Should().NotBeNullOrEmpty();
                        continue;
                    }
                    actual.Should().Equal(expected, $"{from} -> {to} with flags {flags} follows the kernel's table");
                    var previous = from;
                    foreach (var step in actual!)
                    {
                        documented.Should().Contain((previous, step), $"each step of {from} -> {to} (flags {flags}) is an arc vfio.h documents");
                        previous = step;
                    }
                    actual!.Length.Should().Be(Distance(documented, from, to), $"{from} -> {to} (flags {flags}) is a shortest path");
                }
            }
        }
        output.WriteLine($"{checkedCount} (from, to, flags) combinations checked, {refused} refused");
        checkedCount.Should().Be(512);
        refused.Should().BeGreaterThan(0);
    }

    [Theory]
    [InlineData(C.StopCopy | C.P2P, S.Running, S.StopCopy, new[] { S.RunningP2P, S.Stop, S.StopCopy })]
    [InlineData(C.StopCopy, S.Running, S.StopCopy, new[] { S.Stop, S.StopCopy })]
    [InlineData(C.StopCopy | C.P2P, S.Resuming, S.Running, new[] { S.Stop, S.RunningP2P, S.Running })]
    [InlineData(C.StopCopy, S.Resuming, S.Running, new[] { S.Stop, S.Running })]
    [InlineData(C.StopCopy | C.P2P | C.PreCopy, S.PreCopy, S.StopCopy, new[] { S.PreCopyP2P, S.StopCopy })]
    [InlineData(C.StopCopy | C.PreCopy, S.PreCopy, S.StopCopy, new[] { S.StopCopy })]
    [InlineData(C.StopCopy | C.P2P | C.PreCopy, S.Resuming, S.PreCopy, new[] { S.Stop, S.RunningP2P, S.Running, S.PreCopy })]
    [InlineData(C.StopCopy | C.P2P | C.PreCopy, S.PreCopy, S.Stop, new[] { S.Running, S.RunningP2P, S.Stop })]
    [InlineData(C.StopCopy | C.P2P | C.PreCopy, S.Running, S.StopCopy, new[] { S.RunningP2P, S.Stop, S.StopCopy })]
    [InlineData(C.StopCopy, S.StopCopy, S.Resuming, new[] { S.Stop, S.Resuming })]
    [InlineData(C.StopCopy, S.Stop, S.Stop, new S[0])]
    public void HandCheckedPathsFollowTheUapiComments(C caps, S from, S to, S[] path) =>
        MigrationPlanner.Plan(from, to, caps, out _).Should().Equal(path);

    [Theory]
    [InlineData(C.StopCopy, S.Running, S.RunningP2P, "VFIO_MIGRATION_P2P")]
    [InlineData(C.StopCopy | C.P2P, S.Running, S.PreCopy, "VFIO_MIGRATION_PRE_COPY")]
    [InlineData(C.StopCopy | C.P2P | C.PreCopy, S.StopCopy, S.PreCopy, "not permitted")]
    [InlineData(C.StopCopy, S.Error, S.Running, "reset")]
    [InlineData(C.StopCopy, S.Running, S.Error, "cannot be requested")]
    [InlineData(C.None, S.Running, S.Stop, "does not support migration")]
    public void RefusedTransitionsSayWhy(C caps, S from, S to, string why)
    {
        MigrationPlanner.Plan(from, to, caps, out string? reason).Should().BeNull();
        reason.Should().Contain(why);
    }

    private static Dictionary<S, S> Row(S stop, S running, S preCopy, S preCopyP2P, S stopCopy, S resuming, S runningP2P) => new()
    {
        [S.Stop] = stop,
        [S.Running] = running,
        [S.PreCopy] = preCopy,
        [S.PreCopyP2P] = preCopyP2P,
        [S.StopCopy] = stopCopy,
        [S.Resuming] = resuming,
        [S.RunningP2P] = runningP2P,
        [S.Error] = S.Error,
    };

    // vfio_mig_get_next_state applied until the target, as a driver's set_state loop does. The kernel's
    // skip-over loop would spin on ERROR (its flags are all ones); here reaching ERROR means EINVAL.
    private static S[]? KernelPath(S current, S target, ulong flags)
    {
        bool Supported(S s) => (StateFlags(s) & flags) == StateFlags(s);
        if (!Supported(current) || !Supported(target))
        {
            return null;
        }
        var path = new List<S>();
        while (current != target)
        {
            var next = KernelTable[current][target];
            while (next != S.Error && !Supported(next))
            {
                next = KernelTable[next][target];
            }
            if (next == S.Error)
            {
                return null;
            }
            path.Add(next);
            current = next;
        }
        return [.. path];
    }

    // The FSM arcs the vfio.h comments say a driver implements for each flag combination.
    private static HashSet<(S, S)> DocumentedArcs(C caps)
    {
        var arcs = new HashSet<(S, S)>();
        if ((caps & C.StopCopy) == 0)
        {
            return arcs;
        }
        arcs.UnionWith([(S.Running, S.Stop), (S.Stop, S.Running), (S.Stop, S.StopCopy), (S.StopCopy, S.Stop), (S.Stop, S.Resuming), (S.Resuming, S.Stop)]);
        if ((caps & C.P2P) != 0)
        {
            // With P2P the driver steps RUNNING <-> STOP through RUNNING_P2P.
            arcs.ExceptWith([(S.Running, S.Stop), (S.Stop, S.Running)]);
            arcs.UnionWith([(S.Running, S.RunningP2P), (S.RunningP2P, S.Running), (S.RunningP2P, S.Stop), (S.Stop, S.RunningP2P)]);
        }
        if ((caps & C.PreCopy) != 0)
        {
            arcs.UnionWith([(S.Running, S.PreCopy), (S.PreCopy, S.Running)]);
            if ((caps & C.P2P) != 0)
            {
                arcs.UnionWith([(S.PreCopy, S.PreCopyP2P), (S.PreCopyP2P, S.PreCopy), (S.PreCopyP2P, S.RunningP2P), (S.RunningP2P, S.PreCopyP2P), (S.PreCopyP2P, S.StopCopy)]);
            }
            else
            {
                arcs.Add((S.PreCopy, S.StopCopy));
            }
        }
        return arcs;
    }

    private static int Distance(HashSet<(S, S)> arcs, S from, S to)
    {
        var distance = new Dictionary<S, int> { [from] = 0 };
        var queue = new Queue<S>([from]);
        while (queue.Count > 0)
        {
            var s = queue.Dequeue();
            foreach (var (a, b) in arcs)
            {
                if (a == s && distance.TryAdd(b, distance[s] + 1))
                {
                    queue.Enqueue(b);
                }
            }
        }
        return distance[to];
    }
}
