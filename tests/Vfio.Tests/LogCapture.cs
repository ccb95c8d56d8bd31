using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace Vfio.Tests;

/// <summary>One captured log entry with its structured fields.</summary>
internal sealed record LogEntry(string Category, LogLevel Level, EventId EventId, string Message, IReadOnlyDictionary<string, object?> Fields, Exception? Exception)
{
    public object? this[string field] => Fields.GetValueOrDefault(field);

    public override string ToString() => $"{Level} {Category}[{EventId.Id}] {Message}";
}

/// <summary>A logger factory and provider that keeps every entry, at every level, in order.</summary>
internal sealed class LogCapture : ILoggerFactory, ILoggerProvider
{
    private readonly ConcurrentQueue<LogEntry> _entries = new();

    /// <summary>Runs for each entry as it is logged, on the logging thread.</summary>
    public Action<LogEntry>? OnEntry { get; set; }

    public IReadOnlyList<LogEntry> Entries => [.. _entries];

    public IReadOnlyList<LogEntry> Named(string eventName) => [.. _entries.Where(e => e.EventId.Name == eventName)];

    public void Clear() => _entries.Clear();

    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

    public void AddProvider(ILoggerProvider provider)
    {
    }

    public void Dispose()
    {
    }

    private sealed class Logger(LogCapture capture, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            var fields = new Dictionary<string, object?>(StringComparer.Ordinal);
            if (state is IEnumerable<KeyValuePair<string, object?>> pairs)
            {
                foreach (var (key, value) in pairs)
                {
                    fields[key] = value;
                }
            }
            var entry = new LogEntry(category, logLevel, eventId, formatter(state, exception), fields, exception);
            capture._entries.Enqueue(entry);
            capture.OnEntry?.Invoke(entry);
        }
    }
}
