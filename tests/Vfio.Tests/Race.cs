namespace Vfio.Tests;

/// <summary>
/// Races actions against each other, round by round, for the seeded stress tests: each action of a
/// round runs on its own dedicated thread, released together with the others and then delayed by a
/// spin whose length comes from a seeded generator, so a failing seed replays the same spread of
/// interleavings. A round that does not finish within the guard fails as a hang; nothing sleeps.
/// </summary>
internal sealed class Race : IDisposable
{
    private readonly Random _random;
    private readonly int[] _maxSpins;
    private readonly TimeSpan _guard;
    private readonly Thread[] _threads;
    private readonly Barrier _barrier;
    private readonly int[] _spins;
    private Action[] _actions = [];
    private Exception? _failure;
    private volatile bool _stopping;

    /// <param name="seed">The seed of the spins.</param>
    /// <param name="guard">How long a round may take before it counts as a hang.</param>
    /// <param name="maxSpins">
    /// One per action of a round: the longest spin before it, in <see cref="Thread.SpinWait(int)"/>
    /// iterations. An action whose effect shows later (an interrupt, delivered by another thread) races
    /// best against one given a longer spread.
    /// </param>
    public Race(int seed, TimeSpan guard, params int[] maxSpins)
    {
        int threads = maxSpins.Length;
        _random = new Random(seed);
        _maxSpins = maxSpins;
        _guard = guard;
        _spins = new int[threads];
        _barrier = new Barrier(threads + 1);
        _threads = new Thread[threads];
        for (int i = 0; i < threads; i++)
        {
            int index = i;
            _threads[i] = new Thread(() => Work(index)) { IsBackground = true, Name = $"race {index}" };
            _threads[i].Start();
        }
    }

    /// <summary>How many rounds ran.</summary>
    public int Rounds { get; private set; }

    /// <summary>Runs one round: every action at once (one per thread), then waits for all of them.</summary>
    /// <exception cref="TimeoutException">An action did not return within the guard: a hang.</exception>
    public void Round(params Action[] actions)
    {
        if (actions.Length != _threads.Length)
        {
            throw new ArgumentException($"This race runs {_threads.Length} actions a round.", nameof(actions));
        }
        for (int i = 0; i < _spins.Length; i++)
        {
            _spins[i] = _random.Next(_maxSpins[i]);
        }
        _actions = actions;
        if (!_barrier.SignalAndWait(_guard) || !_barrier.SignalAndWait(_guard))
        {
            throw new TimeoutException($"Round {Rounds} of the race did not finish within {_guard.TotalSeconds} s: an action hangs.");
        }
        Rounds++;
        if (Interlocked.Exchange(ref _failure, null) is { } failure)
        {
            throw new InvalidOperationException($"An action of round {Rounds - 1} threw.", failure);
        }
    }

    public void Dispose()
    {
        _stopping = true;
        if (_barrier.SignalAndWait(TimeSpan.FromSeconds(5)))
        {
            foreach (var thread in _threads)
            {
                thread.Join(TimeSpan.FromSeconds(5));
            }
            _barrier.Dispose();
        }
    }

    private void Work(int index)
    {
        while (true)
        {
            if (!_barrier.SignalAndWait(Timeout.InfiniteTimeSpan) || _stopping)
            {
                return;
            }
            Thread.SpinWait(_spins[index]);
            try
            {
                _actions[index]();
            }
            catch (Exception e)
            {
                Interlocked.CompareExchange(ref _failure, e, null);
            }
            _barrier.SignalAndWait(Timeout.InfiniteTimeSpan);
        }
    }
}
