namespace Vfio.Scenarios;

/// <summary>
/// What a scenario runs against: a kernel, and the devices and IOMMU groups prepared for it. The
/// machine has two QEMU edu functions bound to vfio-pci: one alone in its group
/// (<see cref="DeviceAddress"/>, <see cref="GroupId"/>), and one that shares its slot, and so its
/// group, with a function bound to a host driver (<see cref="NotViableDeviceAddress"/>,
/// <see cref="NotViableGroupId"/>), which makes that group not viable.
/// </summary>
/// <param name="Kernel">The real kernel in the VM, or a simulated one.</param>
/// <param name="DeviceAddress">The PCI address of the edu device alone in its group ("0000:00:03.0").</param>
/// <param name="GroupId">Its IOMMU group (the number in /dev/vfio/N).</param>
internal sealed record ScenarioContext(VfioKernel Kernel, string DeviceAddress, int GroupId)
{
    /// <summary>The edu function whose group also holds a function bound to a host driver.</summary>
    public string? NotViableDeviceAddress { get; init; }

    /// <summary>The group of <see cref="NotViableDeviceAddress"/>.</summary>
    public int? NotViableGroupId { get; init; }

    /// <summary>
    /// The two edu functions of one slot behind a PCIe root port, bound to vfio-pci: one reset scope,
    /// so a hot reset of either resets both. Both are in <see cref="HotResetGroupId"/>.
    /// </summary>
    public IReadOnlyList<string>? HotResetDevices { get; init; }

    /// <summary>The group of <see cref="HotResetDevices"/>.</summary>
    public int? HotResetGroupId { get; init; }

    /// <summary>A QEMU ivshmem-plain function bound to vfio-pci: its BAR2 is shared memory, for bulk copies.</summary>
    public string? SharedMemoryDeviceAddress { get; init; }

    /// <summary>The functions behind the root port and their group; fails the scenario when the machine has none.</summary>
    public (string Function0, string Function1, int Group) HotResetPair =>
        HotResetDevices is [{ } first, { } second] && HotResetGroupId is { } group
            ? (first, second, group)
            : throw new ScenarioFailedException("the machine has no pair of edu functions behind a root port");

    /// <summary>
    /// The version of the kernel the scenarios run on (the VM's <c>uname -r</c>), for the behaviour
    /// that changed between versions; the simulated kernel models Linux 6.1.
    /// </summary>
    public Version KernelVersion { get; init; } = new(6, 1);

    /// <summary>How the kernel offers VFIO on this machine; the simulated kernel models <see cref="ScenarioMode.Legacy"/>.</summary>
    public ScenarioMode Mode { get; init; } = ScenarioMode.Legacy;

    /// <summary>Skips the scenario (reported as skipped, with the reason) when the machine runs in <paramref name="mode"/>.</summary>
    public void SkipIn(ScenarioMode mode, string reason)
    {
        if (Mode == mode)
        {
            throw new ScenarioSkippedException("not in mode " + mode.Name() + ": " + reason);
        }
    }

    /// <summary>Where scenarios write what they observed (shown as "# " lines, not results).</summary>
    public TextWriter Log { get; init; } = TextWriter.Null;

    /// <summary>Writes one observation line.</summary>
    public void Note(string text) => Log.WriteLine("# " + text);

    /// <summary>The not-viable group and its edu function; fails the scenario when the machine has none.</summary>
    public (string Device, int Group) NotViable =>
        NotViableDeviceAddress is { } device && NotViableGroupId is { } group
            ? (device, group)
            : throw new ScenarioFailedException("the machine has no edu function in a group shared with a host driver's device");
}
