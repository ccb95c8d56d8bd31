namespace Vfio.Scenarios;

/// <summary>The one scenario suite, run against the simulated kernel by dotnet test and against the real kernel in the VM.</summary>
internal static class ScenarioCatalog
{
    /// <summary>Every scenario, in the order they run: the uAPI basics, the kernel's rules at errno level, then the edu driver on the public API.</summary>
    public static IReadOnlyList<Scenario> All { get; } = [.. SmokeScenarios.All, .. UapiScenarios.All, .. IommufdScenarios.All, .. EduScenarios.All, .. ResetScenarios.All, .. FunctionResetScenarios.All, .. ConfigVirtualizationScenarios.All, .. InterruptScenarios.All, .. DmaScenarios.All, .. DirtyScenarios.All, .. PciScenarios.All, .. FeatureScenarios.All, .. SharedMemoryScenarios.All];

    /// <summary>The scenarios that need a kernel with iommufd and the VFIO device cdev; they skip on others.</summary>
    public static IReadOnlyList<Scenario> NeedIommufd { get; } = IommufdScenarios.All;

    /// <summary>
    /// The scenarios of type1's mapping limit and dirty tracking, which iommufd's compatibility container
    /// lacks: they skip where it serves /dev/vfio/vfio (its absence is checked by others).
    /// </summary>
    public static IReadOnlyList<Scenario> NotOnIommufdCompat { get; } =
        [.. All.Where(s => s.Name is "dma_entry_limit_enospc_and_library_check" or "dirty_type1_needs_type1v2" or "dirty_type1_one_read_over_mappings_off_a_bitmap_word_is_stale")];

    /// <summary>The scenarios that need the library's legacy container; they skip in mode iommufd.</summary>
    public static IReadOnlyList<Scenario> NeedContainer { get; } = DirtyScenarios.InTheContainer;

    /// <summary>
    /// The mediated device scenarios, run on a machine with the kernel's mtty sample driver loaded
    /// (tests/vm/run-mdev-tests.sh): the mdev lifecycle, then migration v2 between mtty cards.
    /// </summary>
    public static IReadOnlyList<Scenario> Mdev { get; } = [.. MdevScenarios.All, .. MigrationScenarios.All];

    /// <summary>
    /// The no-IOMMU scenarios, run on a machine without an IOMMU with vfio in unsafe no-IOMMU mode
    /// (tests/vm/run-vm-tests.sh in mode noiommu): the edu device in a no-IOMMU group.
    /// </summary>
    public static IReadOnlyList<Scenario> NoIommu { get; } = NoIommuScenarios.All;

    /// <summary>
    /// The platform device scenarios, run on QEMU's microvm machine (tests/vm/run-platform-tests.sh): a
    /// virtio-mmio entropy device (ACPI LNRO0005) bound to vfio-platform in no-IOMMU mode.
    /// </summary>
    public static IReadOnlyList<Scenario> Platform { get; } = PlatformScenarios.All;

    /// <summary>Finds a scenario by name.</summary>
    public static Scenario Named(string name) =>
        All.Concat(Mdev).Concat(NoIommu).Concat(Platform).FirstOrDefault(s => s.Name == name) ?? throw new ArgumentException("no scenario named " + name, nameof(name));
}
