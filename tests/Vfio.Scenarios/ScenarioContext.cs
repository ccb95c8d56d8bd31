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

    /// <summary>
    /// How the library is made to reach the devices on this machine (the VM suite's mode); which
    /// container the kernel has is <see cref="IommufdServesContainer"/>'s to say.
    /// </summary>
    public ScenarioMode Mode { get; init; } = ScenarioMode.Legacy;

    /// <summary>
    /// The backend the library is made to use in this mode: the legacy one in legacy and legacy-compat
    /// (also where the kernel has iommufd and the device cdevs, as the kernels built from source do),
    /// iommufd in iommufd.
    /// </summary>
    public VfioBackend Backend => Mode == ScenarioMode.Iommufd ? VfioBackend.Iommufd : VfioBackend.Legacy;

    /// <summary>A registry on the machine's kernel that uses the mode's <see cref="Backend"/>.</summary>
    public VfioRegistry NewRegistry() => new(Kernel, options: new VfioRegistryOptions { Backend = Backend });

    /// <summary>Skips the scenario when the kernel has no iommufd or no VFIO device cdev (every Debian kernel), saying so.</summary>
    public void SkipWithoutIommufd()
    {
        bool iommufd = Kernel.ListDirectory(Kernel.DevRoot, out var dev) == 0 && dev.Contains("iommu");
        bool cdevs = Kernel.ListDirectory(Kernel.Dev("vfio/devices"), out var nodes) == 0 && nodes.Length > 0;
        var missing = new List<string>(2);
        if (!iommufd)
        {
            missing.Add("no /dev/iommu (CONFIG_IOMMUFD)");
        }
        if (!cdevs)
        {
            missing.Add("no VFIO device cdev (CONFIG_VFIO_DEVICE_CDEV)");
        }
        if (missing.Count > 0)
        {
            throw new ScenarioSkippedException("the kernel has " + string.Join(" and ", missing));
        }
    }

    /// <summary>
    /// Whether <c>/dev/vfio/vfio</c> is iommufd's compatibility container (a kernel built with
    /// CONFIG_IOMMUFD_VFIO_CONTAINER instead of vfio's own container), as the kernel answers the
    /// library's question (<see cref="VfioContainer.IsServedByIommufd"/>). Asked of the kernel rather
    /// than read from the mode: that kernel runs in modes legacy-compat and iommufd alike, and the
    /// scenarios that open the container themselves meet it in both. False without the node; an
    /// unexpected error from the kernel fails the scenario.
    /// </summary>
    public bool IommufdServesContainer
    {
        get
        {
            if (Kernel.Open(Kernel.Dev("vfio/vfio"), Vfio.Interop.Interop.Flags.O_RDWR, out var fd) != 0)
            {
                return false;
            }
            using (fd)
            {
                return VfioContainer.IsServedByIommufd(Kernel, fd);
            }
        }
    }

    /// <summary>Skips the scenario, saying why, where <c>/dev/vfio/vfio</c> is iommufd's compatibility container (<see cref="IommufdServesContainer"/>).</summary>
    public void SkipOnIommufdCompat(string reason)
    {
        if (IommufdServesContainer)
        {
            throw new ScenarioSkippedException("not on iommufd's compatibility container: " + reason);
        }
    }

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
