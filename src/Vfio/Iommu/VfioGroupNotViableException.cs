namespace Vfio;

/// <summary>A group cannot be used because a device in it is bound to a kernel driver.</summary>
public sealed class VfioGroupNotViableException : VfioException
{
    /// <summary>Creates the exception.</summary>
    /// <param name="message">What is wrong and what to do.</param>
    /// <param name="groupId">The group.</param>
    /// <param name="blockingDevices">Each device that blocks the group, with its driver ("0000:03:00.1 is bound to ixgbe").</param>
    public VfioGroupNotViableException(string message, int groupId, IReadOnlyList<string> blockingDevices)
        : base(message, ErrorTarget.Group(groupId))
    {
        NotViableGroupId = groupId;
        BlockingDevices = blockingDevices;
    }

    /// <summary>The group that is not viable (the same as <see cref="VfioException.GroupId"/>).</summary>
    public int NotViableGroupId { get; }

    /// <summary>Each device that blocks the group, with its driver.</summary>
    public IReadOnlyList<string> BlockingDevices { get; }
}
