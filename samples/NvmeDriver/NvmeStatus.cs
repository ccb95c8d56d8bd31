using System.Globalization;

namespace NvmeDriver;

/// <summary>
/// The status field of an NVMe completion entry (bits 31:17 of its fourth dword): status code
/// type, status code, more and do-not-retry.
/// </summary>
/// <param name="Value">The 15-bit field, as the controller wrote it (without the phase tag).</param>
public readonly record struct NvmeStatus(ushort Value)
{
    /// <summary>The status code (bits 7:0).</summary>
    public byte Code => (byte)Value;

    /// <summary>The status code type (bits 10:8): 0 generic, 1 command specific, 2 media and data integrity, 3 path related, 7 vendor specific.</summary>
    public int Type => (Value >> 8) & 0x7;

    /// <summary>Whether more status information is available from the error log (M).</summary>
    public bool More => (Value & 0x2000) != 0;

    /// <summary>Whether the controller says the same command would fail again (DNR).</summary>
    public bool DoNotRetry => (Value & 0x4000) != 0;

    /// <summary>Whether the command succeeded.</summary>
    public bool IsSuccess => Type == 0 && Code == 0;

    /// <summary>The status code type's name.</summary>
    public string TypeName => Type switch
    {
        0 => "generic",
        1 => "command specific",
        2 => "media and data integrity",
        3 => "path related",
        7 => "vendor specific",
        _ => "reserved",
    };

    /// <summary>The status code's meaning, as the NVMe base specification names it.</summary>
    public string CodeName => (Type, Code) switch
    {
        (0, 0x00) => "successful completion",
        (0, 0x01) => "invalid command opcode",
        (0, 0x02) => "invalid field in command",
        (0, 0x03) => "command ID conflict",
        (0, 0x04) => "data transfer error",
        (0, 0x05) => "commands aborted due to power loss",
        (0, 0x06) => "internal error",
        (0, 0x07) => "command abort requested",
        (0, 0x08) => "command aborted due to SQ deletion",
        (0, 0x0b) => "invalid namespace or format",
        (0, 0x0c) => "command sequence error",
        (0, 0x13) => "PRP offset invalid",
        (0, 0x80) => "LBA out of range",
        (0, 0x81) => "capacity exceeded",
        (0, 0x82) => "namespace not ready",
        (1, 0x00) => "completion queue invalid",
        (1, 0x01) => "invalid queue identifier",
        (1, 0x02) => "invalid queue size",
        (1, 0x03) => "abort command limit exceeded",
        (1, 0x05) => "asynchronous event request limit exceeded",
        (1, 0x06) => "invalid firmware slot",
        (1, 0x08) => "invalid interrupt vector",
        (1, 0x09) => "invalid log page",
        (1, 0x0a) => "invalid format",
        (1, 0x0c) => "invalid queue deletion",
        (2, 0x80) => "write fault",
        (2, 0x81) => "unrecovered read error",
        (2, 0x85) => "compare failure",
        (2, 0x86) => "access denied",
        _ => "unknown",
    };

    /// <inheritdoc/>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"status type {Type} ({TypeName}), code 0x{Code:x2} ({CodeName}){(DoNotRetry ? ", do not retry" : string.Empty)}{(More ? ", more in the error log" : string.Empty)}");
}

/// <summary>A command the controller completed with an error status.</summary>
public sealed class NvmeCommandException : Exception
{
    /// <summary>Creates the exception for a failed command.</summary>
    /// <param name="command">The command's name (e.g. "CREATE I/O CQ").</param>
    /// <param name="queueId">The submission queue it went through.</param>
    /// <param name="status">The completion's status.</param>
    public NvmeCommandException(string command, int queueId, NvmeStatus status)
        : base(string.Create(CultureInfo.InvariantCulture, $"{command} on queue {queueId} failed: {status}"))
    {
        Command = command;
        QueueId = queueId;
        Status = status;
    }

    /// <summary>Creates the exception with a message.</summary>
    public NvmeCommandException()
        : this("command", 0, default)
    {
    }

    /// <summary>Creates the exception with a message.</summary>
    /// <param name="message">The message.</param>
    public NvmeCommandException(string message)
        : base(message)
    {
        Command = string.Empty;
    }

    /// <summary>Creates the exception with a message and an inner exception.</summary>
    /// <param name="message">The message.</param>
    /// <param name="innerException">The cause.</param>
    public NvmeCommandException(string message, Exception innerException)
        : base(message, innerException)
    {
        Command = string.Empty;
    }

    /// <summary>The command's name.</summary>
    public string Command { get; }

    /// <summary>The submission queue the command went through.</summary>
    public int QueueId { get; }

    /// <summary>The completion's status.</summary>
    public NvmeStatus Status { get; }
}
