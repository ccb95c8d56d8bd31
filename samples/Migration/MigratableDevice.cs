using Vfio;

namespace MigrationSample;

/// <summary>
/// A driver for a migratable PCI function whose device state is its BAR0 (the simulated kernel's
/// <c>MigratableDeviceModel</c>): it loads and reads that state, and migrates it.
/// </summary>
public sealed class MigratableDevice : PciVfioDevice
{
    /// <summary>The vendor id the driver matches.</summary>
    public const ushort Vendor = 0x1234;

    /// <summary>The device id the driver matches.</summary>
    public const ushort Device = 0x11f0;

    /// <summary>Creates the device; no kernel I/O until it is opened.</summary>
    /// <param name="context">The discovered function.</param>
    public MigratableDevice(PciDeviceContext context)
        : base(context)
    {
    }

    /// <summary>Writes <paramref name="state"/> into BAR0 (what the device would compute on its own while running).</summary>
    /// <param name="state">The bytes.</param>
    public void LoadState(ReadOnlySpan<byte> state) => WriteRegion(0, 0, state);

    /// <summary>Reads <paramref name="length"/> bytes of BAR0.</summary>
    /// <param name="length">How many bytes.</param>
    public byte[] ReadState(int length)
    {
        var bytes = new byte[length];
        ReadRegion(0, 0, bytes);
        return bytes;
    }
}

/// <summary>Binds <see cref="MigratableDevice"/> to functions with its ids.</summary>
public sealed class MigratablePciDriver : PciDriver<MigratableDevice>
{
    /// <summary>Creates the driver.</summary>
    public MigratablePciDriver()
        : base("migratable", PciMatch.Id(MigratableDevice.Vendor, MigratableDevice.Device))
    {
    }

    /// <inheritdoc/>
    protected override MigratableDevice CreateDevice(PciDeviceContext context) => new(context);
}
