using System.Diagnostics;
using System.Globalization;
using Vfio;

namespace NvmeDriver;

/// <summary>What <see cref="NvmeLoadGenerator"/> runs.</summary>
public sealed record NvmeLoadOptions
{
    /// <summary>WRITE commands when true, READ commands otherwise.</summary>
    public bool Write { get; init; }

    /// <summary>How many I/O queue pairs, each driven by its own thread (polling) or its own loop (interrupts).</summary>
    public int Queues { get; init; } = 1;

    /// <summary>Commands in flight per queue pair (1 to 4095).</summary>
    public int Depth { get; init; } = 1;

    /// <summary>Bytes per command, a multiple of the block size.</summary>
    public int TransferBytes { get; init; } = 4096;

    /// <summary>The region of the namespace the commands go to, from its first block.</summary>
    public ulong RegionBytes { get; init; } = 32UL << 20;

    /// <summary>
    /// How many completions each queue pair takes before it writes its completion queue's head
    /// doorbell (<see cref="NvmeQueuePair.CompletionsPerDoorbell"/>); 1 writes it every round.
    /// </summary>
    public int CompletionsPerDoorbell { get; init; } = 32;

    /// <summary>Completions by polling the completion queues or by MSI-X interrupt.</summary>
    public NvmeCompletionMode Completion { get; init; } = NvmeCompletionMode.Polling;

    /// <summary>How long the measured part runs.</summary>
    public TimeSpan Duration { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>How long the load runs before it is measured.</summary>
    public TimeSpan WarmUp { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>The id of the first queue pair; the others follow. With interrupts, MSI-X vectors up to the last id must be enabled.</summary>
    public int FirstQueueId { get; init; } = 1;

    /// <summary>The seed of the block addresses.</summary>
    public ulong Seed { get; init; } = 0x5eed;

    /// <inheritdoc/>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"random {(Write ? "write" : "read")} {TransferBytes / 1024} KiB, QD{Depth} x {Queues} queue(s), {(Completion == NvmeCompletionMode.Polling ? "polled" : "MSI-X")}");
}

/// <summary>Where the load generator's time per I/O went, measured with a clock read between the phases of each round.</summary>
/// <param name="SubmissionNs">Writing the submission entries (block address, PRPs, command identifier).</param>
/// <param name="SubmissionDoorbellNs">The submission queue tail doorbell write (and the completion queue's head before it when the controller needs the room).</param>
/// <param name="WaitNs">From the doorbell to the first completion seen: the device's work plus polling, or plus the interrupt's delivery and the waiter's wake-up.</param>
/// <param name="CompletionScanNs">Taking the posted completion entries (phase tags, statuses, latencies).</param>
/// <param name="CompletionDoorbellNs">The completion queue head doorbell write, in the rounds that make it.</param>
/// <param name="CommandsPerRound">Commands taken per round on average (each round submits, waits, takes and rings once).</param>
/// <param name="EmptyPollsPerIo">Looks at an empty completion queue per I/O (polling).</param>
/// <param name="WakeUpsPerIo">Interrupt waits that returned, per I/O (interrupts).</param>
/// <param name="ClockReadNs">One clock read, which each phase above includes once.</param>
public sealed record NvmeIoPhases(
    double SubmissionNs,
    double SubmissionDoorbellNs,
    double WaitNs,
    double CompletionScanNs,
    double CompletionDoorbellNs,
    double CommandsPerRound,
    double EmptyPollsPerIo,
    double WakeUpsPerIo,
    double ClockReadNs)
{
    /// <summary>The sum of the phases: the driver's time per I/O with the device's.</summary>
    public double TotalNs => SubmissionNs + SubmissionDoorbellNs + WaitNs + CompletionScanNs + CompletionDoorbellNs;
}

/// <summary>What one load run measured.</summary>
/// <param name="Options">What ran.</param>
/// <param name="Ios">Commands completed within the measured time.</param>
/// <param name="Elapsed">The measured time.</param>
/// <param name="Latency">Submission-to-completion latencies of those commands.</param>
/// <param name="LoopAllocatedBytes">
/// Managed bytes the queues' loops allocated on the threads that ran them, over the measured rounds:
/// the I/O path's own allocations (submitting, ringing, polling or starting the wait for an interrupt, taking completions).
/// </param>
/// <param name="ProcessAllocatedBytes">
/// Managed bytes the whole process allocated, every thread, from the start of the measured time to
/// the end of the run: the runtime's own work too (a thread-pool thread started, for one).
/// </param>
/// <param name="Phases">Where the time per I/O went.</param>
public sealed record NvmeLoadResult(NvmeLoadOptions Options, long Ios, TimeSpan Elapsed, LatencyHistogram Latency, long LoopAllocatedBytes, long ProcessAllocatedBytes, NvmeIoPhases Phases)
{
    /// <summary>Commands per second.</summary>
    public double Iops => Ios / Elapsed.TotalSeconds;

    /// <summary>Managed bytes the I/O path allocated per I/O (<see cref="LoopAllocatedBytes"/> / <see cref="Ios"/>; 0 on an allocation-free path).</summary>
    public double AllocatedBytesPerIo => Ios == 0 ? 0 : (double)LoopAllocatedBytes / Ios;
}

/// <summary>
/// A small load generator for <see cref="NvmeQueuePair"/>'s I/O path, as fio is for a kernel's block
/// device: random 4 KiB (by default) reads or writes over a region of a namespace, a fixed number
/// of commands in flight per queue pair, one thread per queue pair, for a fixed time after a warm-up.
/// It reports IOPS, latency percentiles, the bytes allocated per I/O and where the time per I/O went.
/// </summary>
/// <remarks>
/// Each queue's loop runs rounds: fill the queue to its depth, ring the submission doorbell once,
/// wait for a completion (polling the phase tag, or awaiting the MSI-X vector), take every posted
/// completion, ring the completion doorbell once. A command's latency runs from the start of the
/// round that submitted it to the clock read after the wait that found it.
/// </remarks>
public static class NvmeLoadGenerator
{
    /// <summary>
    /// Creates the queue pairs, runs the load, deletes the queue pairs. Throws when a command fails,
    /// or when the controller completes nothing for 10 seconds.
    /// </summary>
    /// <param name="controller">An enabled controller (with MSI-X vectors for interrupt-driven queues).</param>
    /// <param name="ns">The namespace.</param>
    /// <param name="options">What to run.</param>
    /// <param name="cancellationToken">Stops the run.</param>
    public static async Task<NvmeLoadResult> RunAsync(NvmeController controller, NvmeNamespace ns, NvmeLoadOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(controller);
        ArgumentNullException.ThrowIfNull(ns);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.Queues, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.Depth, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(options.Depth, NvmeController.MaxQueueEntries - 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.TransferBytes, ns.BlockSize);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.CompletionsPerDoorbell, 1);
        if (options.TransferBytes % ns.BlockSize != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(options), options.TransferBytes, $"The transfer size is not a multiple of the {ns.BlockSize}-byte block.");
        }
        ulong slots = Math.Min(options.RegionBytes, ns.Bytes) / (ulong)options.TransferBytes;
        if (slots == 0)
        {
            throw new ArgumentOutOfRangeException(nameof(options), options.RegionBytes, "The region holds no transfer.");
        }

        var workers = new List<QueueWorker>(options.Queues);
        try
        {
            for (int i = 0; i < options.Queues; i++)
            {
                var pair = await controller.CreateIoQueuePairAsync(options.FirstQueueId + i, QueueEntries(options.Depth), options.Completion, cancellationToken).ConfigureAwait(false);
                pair.CompletionsPerDoorbell = options.CompletionsPerDoorbell;
                try
                {
                    workers.Add(new QueueWorker(controller, pair, ns, options, slots, options.Seed + (ulong)i));
                }
                catch
                {
                    await controller.DeleteIoQueuePairAsync(pair, cancellationToken).ConfigureAwait(false);
                    throw;
                }
            }
            var run = new Run(options, workers.Count);
            // A wait for an interrupt that never comes ends here; polling loops check the clock themselves.
            using var watchdog = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            watchdog.CancelAfter(options.WarmUp + options.Duration + TimeSpan.FromSeconds(10));
            Task[] running = [.. workers.Select(w => w.Start(run, watchdog.Token))];
            try
            {
                await Task.WhenAll(running).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (watchdog.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
            {
                throw new TimeoutException($"The load on {controller.Name} ({options}) did not finish within 10 s of its end: an interrupt never came (CSTS 0x{controller.ReadStatus():x}).");
            }

            var latency = new LatencyHistogram();
            var phases = new PhaseTotals();
            foreach (var worker in workers)
            {
                latency.Add(worker.Latency);
                phases.Add(worker.Phases);
            }
            return new NvmeLoadResult(options, latency.Count, options.Duration, latency, phases.Allocated, run.AllocatedBytes, phases.PerIo(ClockReadNs()));
        }
        finally
        {
            using var cleanup = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            foreach (var worker in workers)
            {
                await worker.DisposeAsync(cleanup.Token).ConfigureAwait(false);
            }
        }
    }

    /// <summary>Entries per queue for a depth: room for the depth, and at least 64 as a driver sizes its queues once (Linux takes 1024).</summary>
    private static int QueueEntries(int depth) => Math.Max(depth + 1, 64);

    /// <summary>The cost of one <see cref="Stopwatch.GetTimestamp"/>, in nanoseconds (the fastest of a few batches).</summary>
    private static double ClockReadNs()
    {
        double best = double.MaxValue;
        for (int batch = 0; batch < 5; batch++)
        {
            long start = Stopwatch.GetTimestamp();
            long sink = 0;
            for (int i = 0; i < 1000; i++)
            {
                sink += Stopwatch.GetTimestamp();
            }
            long end = Stopwatch.GetTimestamp();
            best = Math.Min(best, Stopwatch.GetElapsedTime(start, end).TotalNanoseconds / (1000 + (sink == 0 ? 1 : 0)));
        }
        return best;
    }

    /// <summary>The timeline every queue's loop follows, and the process's allocations over the measured part.</summary>
    private sealed class Run(NvmeLoadOptions options, int workers)
    {
        private long _allocatedAtStart = -1;
        private int _running = workers;

        public long MeasureFrom { get; } = Stopwatch.GetTimestamp() + Ticks(options.WarmUp);

        public long MeasureTo => MeasureFrom + Ticks(options.Duration);

        public long StuckAfter { get; } = Ticks(TimeSpan.FromSeconds(10));

        public long AllocatedBytes { get; private set; }

        /// <summary>The first loop to reach the measured part reads the process's allocation count.</summary>
        public void MeasurementStarted()
        {
            if (Interlocked.CompareExchange(ref _allocatedAtStart, 0, -1) == -1)
            {
                Volatile.Write(ref _allocatedAtStart, GC.GetTotalAllocatedBytes(precise: true));
            }
        }

        /// <summary>The last loop to finish reads it again.</summary>
        public void WorkerFinished()
        {
            if (Interlocked.Decrement(ref _running) == 0)
            {
                long start = Volatile.Read(ref _allocatedAtStart);
                AllocatedBytes = start < 0 ? 0 : GC.GetTotalAllocatedBytes(precise: true) - start;
            }
        }

        private static long Ticks(TimeSpan span) => (long)(span.TotalSeconds * Stopwatch.Frequency);
    }

    /// <summary>One queue pair's loop, its data buffer and what it measured.</summary>
    private sealed class QueueWorker
    {
        private readonly NvmeController _controller;
        private readonly NvmeQueuePair _pair;
        private readonly NvmeNamespace _ns;
        private readonly NvmeLoadOptions _options;
        private readonly DmaBuffer _data;
        private readonly long[] _submittedAt;
        private readonly ulong _slots;
        private readonly int _blocks;
        private ulong _random;
        private Run? _run;

        public QueueWorker(NvmeController controller, NvmeQueuePair pair, NvmeNamespace ns, NvmeLoadOptions options, ulong slots, ulong seed)
        {
            _controller = controller;
            _pair = pair;
            _ns = ns;
            _options = options;
            _slots = slots;
            _blocks = options.TransferBytes / ns.BlockSize;
            _random = seed | 1;
            _submittedAt = new long[pair.Capacity];
            _data = controller.AllocateDmaBuffer((ulong)pair.Capacity * (ulong)options.TransferBytes, options.Write ? DmaAccess.DeviceReads : DmaAccess.DeviceWrites);
            new Random((int)seed).NextBytes(_data.Span);
        }

        public LatencyHistogram Latency { get; } = new();

        public PhaseTotals Phases { get; } = new();

        public Task Start(Run run, CancellationToken cancellationToken)
        {
            _run = run;
            if (_pair.Completion == NvmeCompletionMode.Interrupt)
            {
                return Task.Run(() => RunInterruptedAsync(cancellationToken), cancellationToken);
            }
            var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var thread = new Thread(() =>
            {
                try
                {
                    RunPolled(cancellationToken);
                    done.SetResult();
                }
#pragma warning disable CA1031 // the failure goes to the awaiting caller
                catch (Exception e)
#pragma warning restore CA1031
                {
                    done.SetException(e);
                }
            })
            {
                IsBackground = true,
                Name = $"nvme load q{_pair.Id}",
            };
            thread.Start();
            return done.Task;
        }

        public async Task DisposeAsync(CancellationToken cancellationToken)
        {
            try
            {
                if (_pair.InFlight == 0)
                {
                    await _controller.DeleteIoQueuePairAsync(_pair, cancellationToken).ConfigureAwait(false);
                }
            }
            finally
            {
                _data.Dispose();
            }
        }

        /// <summary>One thread spinning on the completion queue's phase tag.</summary>
        private void RunPolled(CancellationToken cancellationToken)
        {
            var run = _run!;
            try
            {
                var round = default(Round);
                while (true)
                {
                    long mark = GC.GetAllocatedBytesForCurrentThread();
                    if (!Submit(ref round))
                    {
                        break;
                    }
                    long spins = 0;
                    while (!_pair.HasCompletion)
                    {
                        if ((++spins & 0xffff) == 0)
                        {
                            CheckProgress(round.Rung, cancellationToken);
                        }
                    }
                    round.EmptyPolls = spins;
                    Complete(ref round, mark);
                }
            }
            finally
            {
                run.WorkerFinished();
            }
        }

        /// <summary>One loop awaiting the queue's MSI-X vector whenever the completion queue is empty.</summary>
        private async Task RunInterruptedAsync(CancellationToken cancellationToken)
        {
            var run = _run!;
            try
            {
                var round = default(Round);
                while (true)
                {
                    // The loop may resume on another thread after each wait: allocations are counted
                    // on each thread from the mark to the point it leaves it.
                    long mark = GC.GetAllocatedBytesForCurrentThread();
                    if (!Submit(ref round))
                    {
                        break;
                    }
                    long wakeUps = 0;
                    long allocated = 0;
                    while (!_pair.HasCompletion)
                    {
                        CheckProgress(round.Rung, cancellationToken);
                        var wait = _pair.WaitForInterruptAsync(cancellationToken);
                        allocated += GC.GetAllocatedBytesForCurrentThread() - mark;
                        await wait.ConfigureAwait(false);
                        mark = GC.GetAllocatedBytesForCurrentThread();
                        wakeUps++;
                    }
                    round.WakeUps = wakeUps;
                    round.Allocated = allocated;
                    Complete(ref round, mark);
                }
            }
            finally
            {
                run.WorkerFinished();
            }
        }

        /// <summary>Fills the queue to its depth (until the measured part ends) and rings the doorbell; false when nothing is left in flight.</summary>
        private bool Submit(ref Round round)
        {
            var run = _run!;
            long start = round.Finished != 0 ? round.Finished : Stopwatch.GetTimestamp();
            round = new Round { Started = start };
            if (start < run.MeasureTo)
            {
                while (_pair.InFlight < _options.Depth)
                {
                    // Each command has its own slice of the buffer, chosen by the identifier it is about to take.
                    ulong lba = NextSlot() * (ulong)_blocks;
                    ulong offset = (ulong)_pair.NextCommandId * (ulong)_options.TransferBytes;
                    bool submitted = _options.Write
                        ? _pair.TrySubmitWrite(_ns, lba, _blocks, _data, offset, out ushort id)
                        : _pair.TrySubmitRead(_ns, lba, _blocks, _data, offset, out id);
                    if (!submitted)
                    {
                        break;
                    }
                    _submittedAt[id] = start;
                }
            }
            round.Written = Stopwatch.GetTimestamp();
            _pair.RingSubmissionDoorbell();
            round.Rung = Stopwatch.GetTimestamp();
            return _pair.InFlight > 0;
        }

        /// <summary>Takes every posted completion, rings the completion doorbell and counts the round (its allocations since <paramref name="mark"/> on this thread too).</summary>
        private void Complete(ref Round round, long mark)
        {
            var run = _run!;
            round.Seen = Stopwatch.GetTimestamp();
            bool measured = round.Seen >= run.MeasureFrom && round.Seen < run.MeasureTo;
            if (measured)
            {
                run.MeasurementStarted();
            }
            int taken = 0;
            while (_pair.TryTakeCompletion(out var completion))
            {
                if (!completion.Status.IsSuccess)
                {
                    throw new NvmeCommandException(_options.Write ? "WRITE" : "READ", _pair.Id, completion.Status);
                }
                if (measured)
                {
                    Latency.Record(round.Seen - _submittedAt[completion.CommandId]);
                }
                taken++;
            }
            round.Taken = Stopwatch.GetTimestamp();
            _pair.RingCompletionDoorbell();
            round.Finished = Stopwatch.GetTimestamp();
            round.Allocated += GC.GetAllocatedBytesForCurrentThread() - mark;
            if (measured && round.Started >= run.MeasureFrom)
            {
                Phases.Add(round, taken);
            }
        }

        private void CheckProgress(long since, CancellationToken cancellationToken)
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (Stopwatch.GetTimestamp() - since > _run!.StuckAfter)
            {
                throw new TimeoutException($"{_pair} completed none of its {_pair.InFlight} commands in flight within 10 s (CSTS 0x{_controller.ReadStatus():x}).");
            }
        }

        /// <summary>A uniformly random transfer slot of the region (xorshift64*, then a multiply for the range).</summary>
        private ulong NextSlot()
        {
            ulong x = _random;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            _random = x;
            ulong r = x * 0x2545F4914F6CDD1DUL;
            return (ulong)(((UInt128)r * _slots) >> 64);
        }
    }

    /// <summary>The clock reads of one round.</summary>
    private struct Round
    {
        public long Started;
        public long Written;
        public long Rung;
        public long Seen;
        public long Taken;
        public long Finished;
        public long EmptyPolls;
        public long WakeUps;
        public long Allocated;
    }

    /// <summary>Phase times summed over measured rounds.</summary>
    private sealed class PhaseTotals
    {
        private long _submission;
        private long _doorbell;
        private long _wait;
        private long _scan;
        private long _completionDoorbell;
        private long _rounds;
        private long _commands;
        private long _emptyPolls;
        private long _wakeUps;

        /// <summary>Bytes the measured rounds allocated on their loops' threads.</summary>
        public long Allocated { get; private set; }

        public void Add(in Round round, int commands)
        {
            Allocated += round.Allocated;
            _submission += round.Written - round.Started;
            _doorbell += round.Rung - round.Written;
            _wait += round.Seen - round.Rung;
            _scan += round.Taken - round.Seen;
            _completionDoorbell += round.Finished - round.Taken;
            _emptyPolls += round.EmptyPolls;
            _wakeUps += round.WakeUps;
            _rounds++;
            _commands += commands;
        }

        public void Add(PhaseTotals other)
        {
            Allocated += other.Allocated;
            _submission += other._submission;
            _doorbell += other._doorbell;
            _wait += other._wait;
            _scan += other._scan;
            _completionDoorbell += other._completionDoorbell;
            _emptyPolls += other._emptyPolls;
            _wakeUps += other._wakeUps;
            _rounds += other._rounds;
            _commands += other._commands;
        }

        /// <summary>Per I/O: each phase's time over the commands the measured rounds took.</summary>
        public NvmeIoPhases PerIo(double clockReadNs)
        {
            long commands = Math.Max(1, _commands);
            double Ns(long ticks) => Stopwatch.GetElapsedTime(0, ticks).TotalNanoseconds / commands;
            return new NvmeIoPhases(
                Ns(_submission),
                Ns(_doorbell),
                Ns(_wait),
                Ns(_scan),
                Ns(_completionDoorbell),
                _rounds == 0 ? 0 : (double)_commands / _rounds,
                (double)_emptyPolls / commands,
                (double)_wakeUps / commands,
                clockReadNs);
        }
    }
}
