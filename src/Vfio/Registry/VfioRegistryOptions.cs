namespace Vfio;

/// <summary>Settings of a <see cref="VfioRegistry"/>.</summary>
public sealed record VfioRegistryOptions
{
    /// <summary>
    /// How often unregistering asks holders of remaining references to let go (the kernel asks
    /// every 10 s; user space can afford to ask sooner). Default: 1 s.
    /// </summary>
    public TimeSpan ReleaseRequestInterval { get; init; } = TimeSpan.FromSeconds(1);
}
