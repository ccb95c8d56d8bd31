using System.Runtime.InteropServices;
using Vfio.Interop;

namespace Vfio;

public abstract partial class VfioDevice
{
    /// <summary>
    /// Asks the device whether it supports <paramref name="feature"/> in the given directions
    /// (<c>VFIO_DEVICE_FEATURE_PROBE</c>). The device must be open.
    /// </summary>
    /// <param name="feature">The feature.</param>
    /// <param name="access">The directions to check; <see cref="VfioFeatureAccess.None"/> asks only whether the feature exists.</param>
    /// <returns>True when supported; false when the kernel does not know the feature (ENOTTY) or refuses a direction (EINVAL).</returns>
    public bool ProbeFeature(VfioFeature feature, VfioFeatureAccess access = VfioFeatureAccess.None)
    {
        int rc = FeatureCore(feature, VfioUapi.VFIO_DEVICE_FEATURE_PROBE | AccessFlags(access), []);
        return rc switch
        {
            0 => true,
            -Errno.ENOTTY or -Errno.EINVAL => false,
            _ => throw FeatureError(feature, "PROBE", -rc),
        };
    }

    /// <summary>
    /// Reads a feature's data (<c>VFIO_DEVICE_FEATURE_GET</c>) into <paramref name="data"/>, whose length
    /// is the feature's payload size. Typed wrappers exist for the features the library knows.
    /// </summary>
    /// <param name="feature">The feature.</param>
    /// <param name="data">The payload, in and out.</param>
    /// <exception cref="VfioNotSupportedException">The device does not support the feature for GET.</exception>
    public void GetFeature(VfioFeature feature, Span<byte> data) => CheckFeature(feature, VfioFeatureAccess.Get, data);

    /// <summary>Writes a feature's data (<c>VFIO_DEVICE_FEATURE_SET</c>).</summary>
    /// <param name="feature">The feature.</param>
    /// <param name="data">The payload.</param>
    /// <exception cref="VfioNotSupportedException">The device does not support the feature for SET.</exception>
    public void SetFeature(VfioFeature feature, ReadOnlySpan<byte> data)
    {
        if (feature is VfioFeature.LowPowerEntry or VfioFeature.LowPowerEntryWithWakeup or VfioFeature.LowPowerExit)
        {
            // Mapped regions are suspended while the device may be in low power, as EnterLowPower does.
            byte[] payload = data.ToArray();
            Action call = () => CheckFeature(feature, VfioFeatureAccess.Set, payload);
            if (feature == VfioFeature.LowPowerExit)
            {
                ResumeAfterLowPower(call);
            }
            else
            {
                SuspendForLowPower(call);
            }
            return;
        }
        Span<byte> copy = data.Length <= 256 ? stackalloc byte[data.Length] : new byte[data.Length];
        data.CopyTo(copy);
        CheckFeature(feature, VfioFeatureAccess.Set, copy);
    }

    /// <summary>GET or SET with a struct payload, the typed features' path.</summary>
    internal T GetFeature<T>(VfioFeature feature, T value)
        where T : unmanaged
    {
        CheckFeature(feature, VfioFeatureAccess.Get, MemoryMarshal.AsBytes(new Span<T>(ref value)));
        return value;
    }

    internal T SetFeature<T>(VfioFeature feature, T value)
        where T : unmanaged
    {
        CheckFeature(feature, VfioFeatureAccess.Set, MemoryMarshal.AsBytes(new Span<T>(ref value)));
        return value;
    }

    /// <summary>Runs GET or SET and turns its errno into the exception that says what happened.</summary>
    internal void CheckFeature(VfioFeature feature, VfioFeatureAccess access, Span<byte> data)
    {
        int rc = FeatureCore(feature, AccessFlags(access), data);
        if (rc >= 0)
        {
            return;
        }
        // EINVAL also answers a bad payload; a probe tells an unsupported direction apart from it.
        if (rc == -Errno.ENOTTY || (rc == -Errno.EINVAL && !ProbeFeature(feature, access)))
        {
            throw FeatureNotSupported(feature, access, -rc);
        }
        throw FeatureError(feature, access == VfioFeatureAccess.Get ? "GET" : "SET", -rc);
    }

    /// <summary>The raw ioctl: a vfio_device_feature header followed by the payload; 0 or a negative errno.</summary>
    internal unsafe int FeatureCore(VfioFeature feature, uint flags, Span<byte> data)
    {
        int size = sizeof(vfio_device_feature) + data.Length;
        Span<byte> buffer = size <= 512 ? stackalloc byte[size] : new byte[size];
        var header = new vfio_device_feature { argsz = (uint)size, flags = (uint)feature | flags };
        MemoryMarshal.Write(buffer, in header);
        data.CopyTo(buffer[sizeof(vfio_device_feature)..]);
        int rc;
        fixed (byte* p = buffer)
        {
            rc = Kernel.Ioctl(DeviceFd, VfioUapi.VFIO_DEVICE_FEATURE, p);
        }
        buffer[sizeof(vfio_device_feature)..].CopyTo(data);
        return rc;
    }

    internal VfioNotSupportedException FeatureNotSupported(VfioFeature feature, VfioFeatureAccess access, int errno)
    {
        string what = access == VfioFeatureAccess.None ? "" : " for " + access.ToString().ToUpperInvariant();
        string message = $"Feature {FeatureName(feature)} is not supported by this device ({Name}){what}: the kernel answered {Errno.Name(errno)}"
            + (errno == Errno.ENOTTY ? " (it does not know the feature: the kernel or the device's driver is older, or the device lacks it)." : " (the device's driver does not accept that direction).");
        return new VfioNotSupportedException(message, "VFIO_DEVICE_FEATURE " + FeatureName(feature), errno, ErrorTarget);
    }

    private VfioException FeatureError(VfioFeature feature, string direction, int errno) =>
        VfioErrors.Create(errno, $"VFIO_DEVICE_FEATURE {direction} {FeatureName(feature)}", ErrorTarget);

    internal static string FeatureName(VfioFeature feature) => feature switch
    {
        VfioFeature.PciVfToken => "PCI_VF_TOKEN",
        VfioFeature.Migration => "MIGRATION",
        VfioFeature.MigrationDeviceState => "MIG_DEVICE_STATE",
        VfioFeature.LowPowerEntry => "LOW_POWER_ENTRY",
        VfioFeature.LowPowerEntryWithWakeup => "LOW_POWER_ENTRY_WITH_WAKEUP",
        VfioFeature.LowPowerExit => "LOW_POWER_EXIT",
        VfioFeature.DmaLoggingStart => "DMA_LOGGING_START",
        VfioFeature.DmaLoggingStop => "DMA_LOGGING_STOP",
        VfioFeature.DmaLoggingReport => "DMA_LOGGING_REPORT",
        VfioFeature.MigrationDataSize => "MIG_DATA_SIZE",
        _ => ((int)feature).ToString(System.Globalization.CultureInfo.InvariantCulture),
    };

    private static uint AccessFlags(VfioFeatureAccess access) =>
        ((access & VfioFeatureAccess.Get) != 0 ? VfioUapi.VFIO_DEVICE_FEATURE_GET : 0)
        | ((access & VfioFeatureAccess.Set) != 0 ? VfioUapi.VFIO_DEVICE_FEATURE_SET : 0);
}
