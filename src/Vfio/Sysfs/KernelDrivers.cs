namespace Vfio;

/// <summary>What the library knows of kernel drivers by name.</summary>
internal static class KernelDrivers
{
    /// <summary>vfio-pci and its vendor variants (mlx5_vfio_pci, hisi_acc_vfio_pci, ...), vfio-platform, vfio-amba, vfio_ap, ...</summary>
    public static bool IsVfio(string driver) =>
        driver.StartsWith("vfio", StringComparison.Ordinal)
        || driver.Contains("vfio_pci", StringComparison.Ordinal)
        || driver.Contains("vfio-pci", StringComparison.Ordinal);

    /// <summary>
    /// Drivers that set <c>driver_managed_dma</c>, so their devices do not keep a group from VFIO:
    /// vfio's own, pci-stub and the PCIe port driver (Linux 5.19 and later).
    /// </summary>
    public static bool ManagesDma(string driver) => IsVfio(driver) || driver is "pci-stub" or "pcieport";
}
