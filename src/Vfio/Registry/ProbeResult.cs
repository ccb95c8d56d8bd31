namespace Vfio;

/// <summary>What a probe did.</summary>
/// <param name="Registered">The devices it created and registered.</param>
/// <param name="Removed">The devices it unregistered because they left vfio.</param>
/// <param name="Failures">
/// The devices a driver failed to set up, and the new devices whose sysfs could not be read, each with its
/// error; nothing of them was kept.
/// </param>
public sealed record ProbeResult(IReadOnlyList<VfioDevice> Registered, IReadOnlyList<string> Removed, IReadOnlyList<ProbeFailure> Failures);

/// <summary>A device a driver failed to set up, or whose sysfs could not be read.</summary>
/// <param name="Device">The device name.</param>
/// <param name="Driver">The driver that failed, or null when the device could not be described (its sysfs unreadable or malformed), before any driver was chosen.</param>
/// <param name="Error">Why: for a device that could not be described, a <see cref="VfioException"/> naming it and saying what sysfs read.</param>
public sealed record ProbeFailure(string Device, string? Driver, Exception Error);
