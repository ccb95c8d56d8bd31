using Microsoft.Extensions.Logging;

namespace Vfio;

/// <summary>The log messages of <see cref="PciBinding"/>: each change it makes to a function's driver.</summary>
internal static partial class BindingLog
{
    [LoggerMessage(900, LogLevel.Information, "Bound {Device} to vfio-pci (it was on {OriginalDriver})")]
    public static partial void Bound(ILogger logger, string device, string originalDriver);

    [LoggerMessage(901, LogLevel.Warning, "Undid the binding of {Device} after a later step failed (back on {OriginalDriver})")]
    public static partial void Undone(ILogger logger, string device, string originalDriver);

    [LoggerMessage(902, LogLevel.Error, "Could not undo the binding of {Device}")]
    public static partial void UndoFailed(ILogger logger, string device, Exception exception);

    [LoggerMessage(903, LogLevel.Information, "Gave {Node} to user {UserId}, group {GroupId} (-1: unchanged)")]
    public static partial void NodeOwned(ILogger logger, string node, int userId, int groupId);

    [LoggerMessage(904, LogLevel.Information, "Restored {Device}: now on {Driver}")]
    public static partial void Restored(ILogger logger, string device, string driver);

    [LoggerMessage(905, LogLevel.Information, "Unbound {Device} from vfio; it has no driver now")]
    public static partial void Unbound(ILogger logger, string device);
}
