namespace Vfio.VmTests;

/// <summary>What a scenario runs against: a kernel, and the device and IOMMU group prepared for it.</summary>
/// <param name="Kernel">The real kernel in the VM, or a simulated one.</param>
/// <param name="DeviceAddress">The PCI address of the device bound to vfio-pci ("0000:00:03.0").</param>
/// <param name="GroupId">The device's IOMMU group (the number in /dev/vfio/N).</param>
internal sealed record ScenarioContext(VfioKernel Kernel, string DeviceAddress, int GroupId)
{
    /// <summary>Where scenarios write what they observed (shown as "# " lines, not results).</summary>
    public TextWriter Log { get; init; } = TextWriter.Null;

    /// <summary>Writes one observation line.</summary>
    public void Note(string text) => Log.WriteLine("# " + text);
}
