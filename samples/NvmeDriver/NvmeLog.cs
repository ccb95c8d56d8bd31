using Microsoft.Extensions.Logging;

namespace NvmeDriver;

/// <summary>The NVMe sample's log messages: controller state changes at Information, commands at Debug.</summary>
internal static partial class NvmeLog
{
    [LoggerMessage(1, LogLevel.Information, "NVMe controller {Device} disabled after {ElapsedMs} ms")]
    public static partial void Disabled(ILogger logger, string device, double elapsedMs);

    [LoggerMessage(2, LogLevel.Information, "NVMe controller {Device} ready after {ElapsedMs} ms")]
    public static partial void Enabled(ILogger logger, string device, double elapsedMs);

    [LoggerMessage(3, LogLevel.Information, "NVMe controller {Device}: I/O queue pair {QueueId} created with {Entries} entries, completions {Completion}")]
    public static partial void IoQueuesCreated(ILogger logger, string device, int queueId, int entries, string completion);

    [LoggerMessage(4, LogLevel.Debug, "NVMe controller {Device}: {Command} submitted on queue {QueueId} as command {CommandId}")]
    public static partial void Submitted(ILogger logger, string device, string command, int queueId, ushort commandId);

    [LoggerMessage(5, LogLevel.Debug, "NVMe controller {Device}: {Command} on queue {QueueId} (command {CommandId}) completed with status 0x{Status:x}")]
    public static partial void Completed(ILogger logger, string device, string command, int queueId, ushort commandId, ushort status);
}
