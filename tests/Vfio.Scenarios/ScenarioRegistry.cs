namespace Vfio.Scenarios;

/// <summary>A registry with one driver, as the scenarios that drive a device through the public API use it.</summary>
internal static class ScenarioRegistry
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Probes with <paramref name="driver"/>, runs <paramref name="body"/> on the device it registered
    /// at <paramref name="address"/>, then unregisters and disposes every device the probe registered.
    /// </summary>
    public static async Task WithRegisteredAsync<TDevice>(ScenarioContext context, VfioDriver driver, string address, Func<VfioRegistry, TDevice, Task> body)
        where TDevice : VfioDevice
    {
        var registry = new VfioRegistry(context.Kernel);
        await using (registry.ConfigureAwait(false))
        {
            registry.AddDriver(driver);
            ProbeResult probe = await registry.ProbeAsync().ConfigureAwait(false);
            foreach (ProbeFailure failure in probe.Failures)
            {
                context.Note("probe failure: " + failure.Device + ": " + failure.Error.Message);
            }
            TDevice device = probe.Registered.OfType<TDevice>().FirstOrDefault(d => d.Name == address)
                ?? throw new ScenarioFailedException("the " + driver.Name + " driver did not register " + address + " (registered: " + string.Join(", ", probe.Registered.Select(d => d.Name)) + ")");
            try
            {
                await body(registry, device).ConfigureAwait(false);
            }
            finally
            {
                foreach (VfioDevice registered in probe.Registered)
                {
                    if (registered.State == VfioDeviceState.Registered)
                    {
                        await UnregisterAsync(registry, registered).ConfigureAwait(false);
                    }
                    registered.Dispose();
                }
            }
        }
    }

    /// <summary>Unregisters <paramref name="device"/>, waiting at most 30 seconds for its references to go.</summary>
    public static async Task UnregisterAsync(VfioRegistry registry, VfioDevice device)
    {
        using var timeout = new CancellationTokenSource(Timeout);
        await registry.UnregisterAsync(device, timeout.Token).ConfigureAwait(false);
    }
}
