using Vfio.Testing;

namespace Vfio.Tests;

/// <summary>
/// A test against the simulated kernel: a fresh <see cref="SimulatedKernel"/>, a registry on it that
/// logs into <see cref="Logs"/>, helpers to add PCI functions and create devices for them. After each
/// test every registry is disposed, every device the test created is disposed, and the kernel must
/// have nothing open (no descriptor, mapping, DMA mapping or iommufd object), the registries no
/// group, container or IOAS, and no Debug.Assert (a lock rule among them) may have failed.
/// </summary>
/// <remarks>
/// A test class runs against one backend, which its registries choose by themselves as users' do:
/// <see cref="VfioBackend.Legacy"/> on a kernel that behaves as Linux 6.1 (no <c>/dev/iommu</c>, no
/// cdev), <see cref="VfioBackend.Iommufd"/> on one that behaves as 7.2 (both). A class whose tests
/// apply to both is abstract with two nested classes, <c>Legacy</c> and <c>Iommufd</c>, so xunit runs
/// it twice.
/// </remarks>
public abstract class KernelTest : IAsyncLifetime
{
    /// <summary>Bounds every wait so that a broken lifetime fails the test instead of hanging the run.</summary>
    protected static readonly TimeSpan Guard = TimeSpan.FromSeconds(30);

    private readonly List<VfioRegistry> _registries = [];
    private readonly List<VfioDevice> _devices = [];

    /// <summary>Creates the kernel and the test's registry for a backend.</summary>
    /// <param name="backend">
    /// The backend the registries choose: the kernel's version makes them (6.1 for the legacy one);
    /// null for the simulated kernel's default version (7.2, where they choose iommufd for devices with a cdev).
    /// </param>
    protected KernelTest(VfioBackend? backend = null)
    {
        Backend = backend ?? VfioBackend.Iommufd;
        if (backend == VfioBackend.Legacy)
        {
            Kernel.LinuxVersion = new Version(6, 1);
        }
        Registry = NewRegistry();
    }

    /// <summary>The backend the test's registries use for devices with a cdev.</summary>
    protected VfioBackend Backend { get; }

    /// <summary>The simulated kernel.</summary>
    protected SimulatedKernel Kernel { get; } = new();

    /// <summary>The registry of the test, on <see cref="Kernel"/>.</summary>
    protected VfioRegistry Registry { get; }

    /// <summary>What the registries and devices logged, at every level.</summary>
    private protected LogCapture Logs { get; } = new();

    /// <summary>Another registry on the same kernel (as a second process would have), disposed after the test.</summary>
    /// <param name="releaseRequestInterval">How often unregistering asks for release; 50 ms when null.</param>
    /// <param name="disposeTimeout">How long disposing waits for holders; the default when null.</param>
    /// <param name="backend">A backend the registry's options force; null to let it choose.</param>
    protected VfioRegistry NewRegistry(TimeSpan? releaseRequestInterval = null, TimeSpan? disposeTimeout = null, VfioBackend? backend = null)
    {
        var registry = new VfioRegistry(Kernel, Logs, new VfioRegistryOptions
        {
            ReleaseRequestInterval = releaseRequestInterval ?? TimeSpan.FromMilliseconds(50),
            Backend = backend,
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
            registry.IommufdAddressSpace.Should().BeNull("the IOAS is destroyed and the iommufd closed when the last device leaves");
        }
        Kernel.AssertNoLeaks();
        DebugAsserts.Failures.Should().BeEmpty("no lock rule or other Debug.Assert of the library or the simulated kernel may fail");
    }
}
