namespace Vfio;

/// <summary>Settings of a <see cref="VfioRegistry"/>.</summary>
public sealed record VfioRegistryOptions
{
    /// <summary>
    /// How often unregistering asks holders of remaining references to let go (the kernel asks
    /// every 10 s; user space can afford to ask sooner). Default: 1 s.
    /// </summary>
    public TimeSpan ReleaseRequestInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// How long <see cref="VfioRegistry.DisposeAsync()"/> waits for holders of devices' references to let
    /// go before it gives up, naming who still holds what (<see cref="Timeout.InfiniteTimeSpan"/>: as
    /// long as it takes, as the kernel's unregister waits). Default: 30 s.
    /// </summary>
    public TimeSpan DisposeTimeout { get; init; } = TimeSpan.FromSeconds(30);
}
