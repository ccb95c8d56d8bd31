using Vfio.Testing;

namespace Vfio.Tests.Simulation;

/// <summary>
/// A device model on the simulated kernel, registered and opened as a device with no logic of its
/// own: memory space and bus mastering on, BAR0 mapped. For tests that drive a model register by
/// register. Disposing it closes and unregisters the device and checks that the kernel has nothing
/// left open.
/// </summary>
internal sealed class RawPciFunction : IAsyncDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    private readonly SimulatedKernel _kernel;
    private readonly VfioRegistry _registry;
    private readonly RawDevice _device;
    private readonly DeviceReference _open;

    /// <summary>Adds the model to the kernel at the address and opens it.</summary>
    public RawPciFunction(SimulatedKernel kernel, string address, PciDeviceModel model, int iommuGroup)
    {
        _kernel = kernel;
        kernel.AddPciDevice(address, model, iommuGroup);
        _registry = new VfioRegistry(kernel);
        _device = new RawDevice(_registry.FindPci(PciAddress.Parse(address)));
        _registry.Register(_device);
        _open = _device.Open();
    }

    /// <summary>The open device.</summary>
    public PciVfioDevice Device => _device;

    /// <summary>BAR0 of the function, mapped while the device is open.</summary>
    public MmioRegion Bar0 => _device.Bar0;

    /// <summary>A token that bounds a wait, so that a model that never answers fails the test instead of hanging it.</summary>
    public static CancellationToken Soon() => new CancellationTokenSource(Timeout).Token;

    public async ValueTask DisposeAsync()
    {
        _open.Dispose();
        await _registry.UnregisterAsync(_device);
        _device.Dispose();
        await _registry.DisposeAsync();
        _kernel.AssertNoLeaks();
    }

    /// <summary>Exposes BAR0 of the function, with no device logic of its own.</summary>
    private sealed class RawDevice(PciDeviceContext context) : PciVfioDevice(context)
    {
        public MmioRegion Bar0 { get; private set; } = null!;

        protected override void OnFirstOpen()
        {
            EnableCommand(memorySpace: true, busMaster: true);
            Bar0 = OpenRegion(0);
        }

        protected override void OnLastClose() => Bar0.Dispose();
    }
}
