namespace Vfio;

/// <summary>What a probe did.</summary>
/// <param name="Registered">The devices it created and registered.</param>
/// <param name="Removed">The devices it unregistered because they left vfio.</param>
/// <param name="Failures">The devices a driver failed to set up, each with its error; nothing of them was kept.</param>
public sealed record ProbeResult(IReadOnlyList<VfioDevice> Registered, IReadOnlyList<string> Removed, IReadOnlyList<ProbeFailure> Failures);

/// <summary>A device a driver failed to set up.</summary>
/// <param name="Device">The device name.</param>
/// <param name="Driver">The driver that failed.</param>
/// <param name="Error">Why.</param>
public sealed record ProbeFailure(string Device, string Driver, Exception Error);
