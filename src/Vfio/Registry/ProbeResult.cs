namespace Vfio;

/// <summary>What a probe did.</summary>
/// <param name="Registered">The devices it created and registered.</param>
/// <param name="Removed">The devices it unregistered because they left vfio.</param>
/// <param name="Failures">
/// The devices a driver failed to set up, and the new devices whose sysfs could not be read, each with its
/// error; nothing of them was kept.
/// </param>
public sealed record ProbeResult(IReadOnlyList<VfioDevice> Registered, IReadOnlyList<string> Removed, IReadOnlyList<ProbeFailure> Failures)
{
    /// <summary>
    /// PCI functions a driver matches that the probe left alone because they are not bound to
    /// vfio-pci: held by a kernel driver, or by none. Each says which, and how to hand it over.
    /// </summary>
    public IReadOnlyList<ProbeNotOnVfio> NotOnVfio { get; init; } = [];
}

/// <summary>A PCI function a driver matches that is not bound to vfio-pci, so no device was made for it.</summary>
/// <param name="Device">The function's address.</param>
/// <param name="Driver">The driver that matches it.</param>
/// <param name="KernelDriver">The kernel driver it is bound to, or null when it is bound to none.</param>
/// <param name="Hint">What to do to drive it: the vfio tool, the binding API, or the sysfs writes that hand it to vfio-pci.</param>
public sealed record ProbeNotOnVfio(string Device, string Driver, string? KernelDriver, string Hint);

/// <summary>A device a driver failed to set up, or whose sysfs could not be read.</summary>
/// <param name="Device">The device name.</param>
/// <param name="Driver">The driver that failed, or null when the device could not be described (its sysfs unreadable or malformed), before any driver was chosen.</param>
/// <param name="Error">Why: for a device that could not be described, a <see cref="VfioException"/> naming it and saying what sysfs read.</param>
public sealed record ProbeFailure(string Device, string? Driver, Exception Error);
