using NvmeDriver;
using Vfio.Testing;

namespace Vfio.Tests.Samples;

/// <summary>
/// The NVMe sample's controller on a simulated QEMU NVMe controller, opened, enabled and with
/// namespace 1 identified; disposing it disables the controller, unregisters it and checks that the
/// kernel has nothing left open.
/// </summary>
internal sealed class SimulatedNvme : IAsyncDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    private readonly SimulatedKernel _kernel = new();
    private readonly VfioRegistry _registry;
    private DeviceReference _open;

    private SimulatedNvme(NvmeDeviceModel model)
    {
        Model = model;
        _kernel.AddPciDevice("0000:00:05.0", model, iommuGroup: 5);
        _registry = new VfioRegistry(_kernel);
        _registry.AddDriver(new NvmePciDriver());
    }

    public NvmeDeviceModel Model { get; }

    public NvmeController Controller { get; private set; } = null!;

    public NvmeNamespace Namespace { get; private set; } = null!;

    /// <summary>A token that bounds a wait, so that a controller that never answers fails the test instead of hanging it.</summary>
    public static CancellationToken Soon() => new CancellationTokenSource(Timeout).Token;

    /// <summary>Starts the controller with <paramref name="vectors"/> MSI-X vectors.</summary>
    public static async Task<SimulatedNvme> StartAsync(int vectors = 2, long namespaceBlocks = 32768)
    {
        var nvme = new SimulatedNvme(new NvmeDeviceModel(namespaceBlocks: namespaceBlocks));
        nvme.Controller = (NvmeController)(await nvme._registry.ProbeAsync()).Registered.Single();
        nvme._open = nvme.Controller.Open();
        await nvme.Controller.StartAsync(adminEntries: 8, vectors, Soon());
        nvme.Namespace = await nvme.Controller.IdentifyNamespaceAsync(1, Soon());
        return nvme;
    }

    public async ValueTask DisposeAsync()
    {
        await Controller.DisableAsync(Soon());
        await Model.WhenIdleAsync();
        _open.Dispose();
        await _registry.UnregisterAsync(Controller, Soon());
        Controller.Dispose();
        await _registry.DisposeAsync();
        _kernel.AssertNoLeaks();
    }
}
