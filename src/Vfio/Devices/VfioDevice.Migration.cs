using System.Buffers;
using System.Globalization;
using System.IO.Pipelines;
using System.Runtime.InteropServices;
using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio;

public abstract partial class VfioDevice
{
    private VfioMigration? _migration;

    /// <summary>
    /// The device's migration interface (<c>VFIO_DEVICE_FEATURE_MIGRATION</c>), the same object until
    /// it is disposed or the device closes. The device must be open.
    /// </summary>
    /// <exception cref="VfioNotSupportedException">The device (or its kernel driver) does not support migration; no QEMU-emulated device does.</exception>
    public VfioMigration GetMigration()
    {
        var existing = Volatile.Read(ref _migration);
        if (existing is not null)
        {
            return existing;
        }
        var mig = GetFeature(VfioFeature.Migration, new vfio_device_feature_migration());
        var migration = new VfioMigration(this, (VfioMigrationCapabilities)mig.flags);
        if (Interlocked.CompareExchange(ref _migration, migration, null) is { } raced)
        {
            return raced;
        }
        TrackResource(migration);
        return migration;
    }

    internal void ForgetMigration(VfioMigration migration)
    {
        Interlocked.CompareExchange(ref _migration, null, migration);
        ForgetResource(migration);
    }
}
