namespace Vfio.Testing;

/// <summary>Placeholder replaced by the simulated kernel.</summary>
internal static class Placeholder
{
}
