using System.Globalization;
using System.Runtime.InteropServices;
using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio;

/// <summary>
/// A hot reset was refused before reaching the kernel because the caller does not own every
/// function the reset would reach. The kernel requires a file of every affected group, and every
/// affected function bound to vfio-pci; the message names each function and group that is missing.
/// </summary>
public sealed class VfioHotResetNotOwnedException : VfioException
{
    /// <summary>Creates the exception.</summary>
    /// <param name="message">What is missing and what to do.</param>
    /// <param name="device">The device whose hot reset was asked for.</param>
    /// <param name="unownedDevices">Each affected function that is not owned, with why.</param>
    /// <param name="unownedGroups">Each affected group this registry has not open.</param>
    public VfioHotResetNotOwnedException(string message, string device, IReadOnlyList<string> unownedDevices, IReadOnlyList<int> unownedGroups)
        : base(message)
    {
        ResetDevice = device;
        UnownedDevices = unownedDevices;
        UnownedGroups = unownedGroups;
    }

    /// <summary>The device whose hot reset was asked for.</summary>
    public string ResetDevice { get; }

    /// <summary>Each affected function that is not owned, with why ("0000:01:00.1 (group 5): group 5 is not open in this registry").</summary>
    public IReadOnlyList<string> UnownedDevices { get; }

    /// <summary>Each affected group this registry has not open.</summary>
    public IReadOnlyList<int> UnownedGroups { get; }
}
