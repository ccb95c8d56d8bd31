namespace Vfio;

/// <summary>
/// Finds the path the migration state machine takes from one state to another over the arcs a
/// device supports, by the rules of &lt;linux/vfio.h&gt;: the shortest path; saving-group states
/// (PRE_COPY, PRE_COPY_P2P, STOP_COPY) never inside a path unless the path starts in that group and
/// has not left it yet (a session is continued, never opened midway); among equally short paths, the
/// one that leaves the saving group soonest; STOP_COPY to a PRE_COPY state refused. This is the
/// result the kernel's <c>vfio_mig_get_next_state</c> table encodes, computed here by search.
/// </summary>
internal static class MigrationPlanner
{
    private const int StateCount = 8;

    /// <summary>The arcs a device with <paramref name="caps"/> implements, as the vfio.h comments list them.</summary>
    public static IEnumerable<(VfioMigrationState From, VfioMigrationState To)> Arcs(VfioMigrationCapabilities caps)
    {
        if ((caps & VfioMigrationCapabilities.StopCopy) == 0)
        {
            yield break;
        }
        bool p2p = (caps & VfioMigrationCapabilities.P2P) != 0;
        bool preCopy = (caps & VfioMigrationCapabilities.PreCopy) != 0;
        yield return (VfioMigrationState.Resuming, VfioMigrationState.Stop);
        yield return (VfioMigrationState.Stop, VfioMigrationState.Resuming);
        yield return (VfioMigrationState.Stop, VfioMigrationState.StopCopy);
        yield return (VfioMigrationState.StopCopy, VfioMigrationState.Stop);
        if (p2p)
        {
            yield return (VfioMigrationState.Running, VfioMigrationState.RunningP2P);
            yield return (VfioMigrationState.RunningP2P, VfioMigrationState.Running);
            yield return (VfioMigrationState.RunningP2P, VfioMigrationState.Stop);
            yield return (VfioMigrationState.Stop, VfioMigrationState.RunningP2P);
        }
        else
        {
            yield return (VfioMigrationState.Running, VfioMigrationState.Stop);
            yield return (VfioMigrationState.Stop, VfioMigrationState.Running);
        }
        if (preCopy)
        {
            yield return (VfioMigrationState.Running, VfioMigrationState.PreCopy);
            yield return (VfioMigrationState.PreCopy, VfioMigrationState.Running);
            if (p2p)
            {
                yield return (VfioMigrationState.PreCopy, VfioMigrationState.PreCopyP2P);
                yield return (VfioMigrationState.PreCopyP2P, VfioMigrationState.PreCopy);
                yield return (VfioMigrationState.PreCopyP2P, VfioMigrationState.RunningP2P);
                yield return (VfioMigrationState.PreCopyP2P, VfioMigrationState.StopCopy);
                yield return (VfioMigrationState.RunningP2P, VfioMigrationState.PreCopyP2P);
            }
            else
            {
                yield return (VfioMigrationState.PreCopy, VfioMigrationState.StopCopy);
            }
        }
    }

    /// <summary>Whether a device with <paramref name="caps"/> has <paramref name="state"/> (ERROR is never requestable).</summary>
    public static bool Supports(VfioMigrationCapabilities caps, VfioMigrationState state)
    {
        if ((caps & VfioMigrationCapabilities.StopCopy) == 0)
        {
            return false;
        }
        return state switch
        {
            VfioMigrationState.Stop or VfioMigrationState.Running or VfioMigrationState.StopCopy or VfioMigrationState.Resuming => true,
            VfioMigrationState.RunningP2P => (caps & VfioMigrationCapabilities.P2P) != 0,
            VfioMigrationState.PreCopy => (caps & VfioMigrationCapabilities.PreCopy) != 0,
            VfioMigrationState.PreCopyP2P => (caps & (VfioMigrationCapabilities.P2P | VfioMigrationCapabilities.PreCopy)) == (VfioMigrationCapabilities.P2P | VfioMigrationCapabilities.PreCopy),
            _ => false,
        };
    }

    /// <summary>Whether <paramref name="state"/> belongs to the saving group, which shares one data session.</summary>
    public static bool IsSaving(VfioMigrationState state) =>
        state is VfioMigrationState.StopCopy or VfioMigrationState.PreCopy or VfioMigrationState.PreCopyP2P;

    /// <summary>
    /// The states after <paramref name="from"/> up to and including <paramref name="to"/> (empty when
    /// they are equal), or null when the transition is not allowed; <paramref name="reason"/> says why.
    /// </summary>
    public static VfioMigrationState[]? Plan(VfioMigrationState from, VfioMigrationState to, VfioMigrationCapabilities caps, out string? reason)
    {
        reason = null;
        if ((caps & VfioMigrationCapabilities.StopCopy) == 0)
        {
            reason = "the device does not support migration (no VFIO_MIGRATION_STOP_COPY)";
            return null;
        }
        if (!Supports(caps, from))
        {
            reason = from == VfioMigrationState.Error
                ? "the device is in ERROR: only a device reset (VFIO_DEVICE_RESET) leaves it, back to RUNNING"
                : $"the device reports state {Name(from)}, which its capabilities ({caps}) do not include";
            return null;
        }
        if (!Supports(caps, to))
        {
            reason = to == VfioMigrationState.Error
                ? "ERROR cannot be requested"
                : $"{Name(to)} needs {(to == VfioMigrationState.RunningP2P ? "VFIO_MIGRATION_P2P" : to == VfioMigrationState.PreCopy ? "VFIO_MIGRATION_PRE_COPY" : "VFIO_MIGRATION_P2P and VFIO_MIGRATION_PRE_COPY")}, which the device does not advertise ({caps})";
            return null;
        }
        if (from == VfioMigrationState.StopCopy && to is VfioMigrationState.PreCopy or VfioMigrationState.PreCopyP2P)
        {
            reason = $"STOP_COPY -> {Name(to)} is not permitted by the uAPI";
            return null;
        }
        if (from == to)
        {
            return [];
        }

        // Breadth-first over (state, still in the starting saving session), keeping for each node the
        // best (length, saving states inside) predecessor; 8 states, so at most 16 nodes.
        var arcs = Arcs(caps).ToLookup(a => a.From, a => a.To);
        var best = new (int Length, int Saving, int Parent)[StateCount * 2];
        Array.Fill(best, (int.MaxValue, int.MaxValue, -1));
        int start = Node(from, IsSaving(from));
        best[start] = (0, 0, -1);
        var queue = new Queue<int>();
        queue.Enqueue(start);
        while (queue.Count > 0)
        {
            int node = queue.Dequeue();
            var state = (VfioMigrationState)(node >> 1);
            bool inSession = (node & 1) != 0;
            if (state == to)
            {
                continue;
            }
            bool interior = node != start;
            foreach (var next in arcs[state])
            {
                bool nextInSession = inSession && IsSaving(next);
                if (next != to && IsSaving(next) && !nextInSession)
                {
                    continue; // a saving state inside the path would open a session midway
                }
                int saving = best[node].Saving + (interior && IsSaving(state) ? 1 : 0);
                int length = best[node].Length + 1;
                int target = Node(next, nextInSession);
                var current = best[target];
                if (length < current.Length || (length == current.Length && saving < current.Saving))
                {
                    bool seen = current.Length != int.MaxValue;
                    best[target] = (length, saving, node);
                    if (!seen)
                    {
                        queue.Enqueue(target);
                    }
                }
            }
        }
        int end = -1;
        foreach (int candidate in new[] { Node(to, false), Node(to, true) })
        {
            if (best[candidate].Length != int.MaxValue
                && (end < 0 || best[candidate].Length < best[end].Length
                    || (best[candidate].Length == best[end].Length && best[candidate].Saving < best[end].Saving)))
            {
                end = candidate;
            }
        }
        if (end < 0)
        {
            reason = $"no path from {Name(from)} to {Name(to)} over the arcs the device supports";
            return null;
        }
        var path = new List<VfioMigrationState>();
        for (int node = end; node != start; node = best[node].Parent)
        {
            path.Add((VfioMigrationState)(node >> 1));
        }
        path.Reverse();
        return [.. path];
    }

    /// <summary>The kernel's name of a state ("RUNNING_P2P").</summary>
    public static string Name(VfioMigrationState state) => state switch
    {
        VfioMigrationState.Error => "ERROR",
        VfioMigrationState.Stop => "STOP",
        VfioMigrationState.Running => "RUNNING",
        VfioMigrationState.StopCopy => "STOP_COPY",
        VfioMigrationState.Resuming => "RESUMING",
        VfioMigrationState.RunningP2P => "RUNNING_P2P",
        VfioMigrationState.PreCopy => "PRE_COPY",
        VfioMigrationState.PreCopyP2P => "PRE_COPY_P2P",
        _ => ((int)state).ToString(System.Globalization.CultureInfo.InvariantCulture),
    };

    private static int Node(VfioMigrationState state, bool inSession) => ((int)state << 1) | (inSession ? 1 : 0);
}
