using Vfio.Testing;

namespace Vfio.Tests;

/// <summary>
/// A test against the simulated kernel: a fresh <see cref="SimulatedKernel"/>, a registry on it that
/// logs into <see cref="Logs"/>, helpers to add PCI functions and create devices for them. After each
/// test every registry is disposed, every device the test created is disposed, and the kernel must
/// have nothing open (no descriptor, mapping or DMA mapping), the registries no group or container,
/// and no Debug.Assert (a lock rule among them) may have failed.
/// </summary>
public abstract class KernelTest : IAsyncLifetime
{
    /// <summary>Bounds every wait so that a broken lifetime fails the test instead of hanging the run.</summary>
    protected static readonly TimeSpan Guard = TimeSpan.FromSeconds(30);

    private readonly List<VfioRegistry> _registries = [];
    private readonly List<VfioDevice> _devices = [];

    protected KernelTest()
    {
        Registry = NewRegistry();
    }

    /// <summary>The simulated kernel.</summary>
    protected SimulatedKernel Kernel { get; } = new();

    /// <summary>The registry of the test, on <see cref="Kernel"/>.</summary>
    protected VfioRegistry Registry { get; }

    /// <summary>What the registries and devices logged, at every level.</summary>
    private protected LogCapture Logs { get; } = new();

    /// <summary>Another registry on the same kernel (as a second process would have), disposed after the test.</summary>
    /// <param name="releaseRequestInterval">How often unregistering asks for release; 50 ms when null.</param>
    /// <param name="disposeTimeout">How long disposing waits for holders; the default when null.</param>
    protected VfioRegistry NewRegistry(TimeSpan? releaseRequestInterval = null, TimeSpan? disposeTimeout = null)
    {
        var registry = new VfioRegistry(Kernel, Logs, new VfioRegistryOptions
        {
            ReleaseRequestInterval = releaseRequestInterval ?? TimeSpan.FromMilliseconds(50),
            DisposeTimeout = disposeTimeout ?? new VfioRegistryOptions().DisposeTimeout,
        });
        _registries.Add(registry);
        return registry;
    }

    /// <summary>Adds a PCI function (QEMU's edu ids by default) bound to vfio-pci.</summary>
    protected SimulatedPciDevice AddPci(string address = "0000:00:03.0", int group = 5, PciDeviceModel? model = null, string? driver = "vfio-pci") =>
        Kernel.AddPciDevice(address, model ?? new PciDeviceModel(0x1234, 0x11e8, 0x00ff00), group, driver);

    /// <summary>Constructs a device for a function the kernel has (init: nothing registered), disposed after the test.</summary>
    private protected RecordingPciDevice CreatePci(string address = "0000:00:03.0", VfioRegistry? registry = null) =>
        Track(new RecordingPciDevice((registry ?? Registry).FindPci(PciAddress.Parse(address, null))));

    /// <summary>Constructs and registers a device for a function the kernel has.</summary>
    private protected RecordingPciDevice RegisterPci(string address = "0000:00:03.0", VfioRegistry? registry = null)
    {
        var device = CreatePci(address, registry);
        device.Registry.Register(device);
        return device;
    }

    /// <summary>Disposes <paramref name="device"/> after the test, once its registry is disposed.</summary>
    protected T Track<T>(T device)
        where T : VfioDevice
    {
        _devices.Add(device);
        return device;
    }

    /// <inheritdoc/>
    public Task InitializeAsync() => Task.CompletedTask;

    /// <inheritdoc/>
    public async Task DisposeAsync()
    {
        Kernel.ClearFailures();
        for (int i = _registries.Count - 1; i >= 0; i--)
        {
            await _registries[i].DisposeAsync().AsTask().WaitAsync(Guard);
        }
        foreach (var device in _devices)
        {
            if (device.State is VfioDeviceState.Initialized or VfioDeviceState.Unregistered)
            {
                device.Dispose();
            }
        }
        foreach (var registry in _registries)
        {
            registry.Groups.Should().BeEmpty("every group is closed when its last device closes");
            registry.Containers.Should().BeEmpty("every container is closed when its last group leaves");
        }
        Kernel.AssertNoLeaks();
        DebugAsserts.Failures.Should().BeEmpty("no lock rule or other Debug.Assert of the library or the simulated kernel may fail");
    }
}
