using MdevLifecycle;
using Vfio.Testing;
using Xunit.Abstractions;

namespace Vfio.Tests.Sweeps;

/// <summary>
/// Every public path under failure injection: each kernel call the path makes is failed in turn with
/// each of several errnos, on a fresh simulated machine per case. Each case must end in success or
/// in a <see cref="VfioException"/> that names its kernel call and its device or group; within a
/// bound (no hang); with the device usable once the failure is cleared (the path again, then an open,
/// a config read and a DMA buffer); and, after teardown, with nothing left open or mapped in the
/// kernel. The library's interrupt poller threads are failed the same way, through the failures the
/// simulated kernel arms for one set.
/// </summary>
public sealed class FaultSweepTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Guard = TimeSpan.FromSeconds(20);
    private static readonly int[] Errnos = [Errno.EIO, Errno.EINTR, Errno.ENOMEM];
    private const string PciFunction = "0000:00:03.0";
    private const int Group = 5;
    private const string BehindBridge = "0000:02:00.0";
    private const string Sibling = "0000:02:00.1";
    private const string Target = "0000:00:04.0";

    /// <summary>A path: what is set up without failures, the calls failed in turn, and whether the calls can simply run again.</summary>
    private sealed record SweepPath(string Name, Func<Machine, Task> Arrange, Func<Machine, Task> Act, bool Repeatable = true);

    /// <summary>One case's machine: a simulated kernel, a registry on it, a device and what the path holds.</summary>
    private sealed class Machine
    {
        public Machine(PciDeviceModel? model = null, string address = PciFunction)
        {
            Address = address;
            if (address == BehindBridge)
            {
                Kernel.AddPciBridge("0000:00:1c.0", secondaryBus: 2);
                Kernel.AddPciDevice(Sibling, Function(), iommuGroup: 8);
            }
            Kernel.AddPciDevice(address, model ?? Function(), Group);
            Registry = NewRegistry();
        }

        public SimulatedKernel Kernel { get; } = new();

        public string Address { get; }

        public VfioRegistry Registry { get; private set; }

        public bool RegistryDisposed { get; set; }

        public RecordingPciDevice? Device { get; set; }

        /// <summary>What the path holds, released in reverse order at teardown.</summary>
        public List<object> Held { get; } = [];

        public VfioRegistry NewRegistry()
        {
            Registry = new VfioRegistry(Kernel, null, new VfioRegistryOptions { ReleaseRequestInterval = TimeSpan.FromMilliseconds(20) });
            RegistryDisposed = false;
            return Registry;
        }

        public RecordingPciDevice Register(string? address = null)
        {
            var device = new RecordingPciDevice(Registry.FindPci(PciAddress.Parse(address ?? Address)));
            Registry.Register(device);
            if (address is null)
            {
                Device = device;
            }
            return device;
        }

        public T Hold<T>(T resource)
            where T : notnull
        {
            Held.Add(resource);
            return resource;
        }

        /// <summary>The registered device, a new registry and registration when the path took them away.</summary>
        public RecordingPciDevice UsableDevice()
        {
            if (RegistryDisposed)
            {
                NewRegistry();
                Device = null;
            }
            if (Device is { State: VfioDeviceState.Registered })
            {
                return Device;
            }
            if (Device is null && Registry.TryFind(Address, out RecordingPciDevice? probed))
            {
                return probed;
            }
            if (Device is { State: VfioDeviceState.Unregistered or VfioDeviceState.Initialized })
            {
                Device.Dispose();
            }
            return Register();
        }

        public async Task TearDownAsync()
        {
            Kernel.ClearFailures();
            for (int i = Held.Count - 1; i >= 0; i--)
            {
                switch (Held[i])
                {
                    case IAsyncDisposable asyncDisposable:
                        await asyncDisposable.DisposeAsync();
                        break;
                    case IDisposable disposable:
                        disposable.Dispose();
                        break;
                }
            }
            Held.Clear();
            await Registry.DisposeAsync();
            if (Device is { State: VfioDeviceState.Unregistered or VfioDeviceState.Initialized })
            {
                Device.Dispose();
            }
        }
    }

    /// <summary>A PCI function with a BAR, MSI, INTx and a power management reset.</summary>
    internal static PciDeviceModel Function()
    {
        var model = new PciDeviceModel(0x1234, 0x11e8, 0x00ff00);
        model.DefineBar(0, 0x1000);
        model.MsiVectors = 1;
        return model;
    }

    private static async Task Opened(Machine m) => m.Hold(m.Register().Open());

    /// <summary>The device open, with interrupts and a DMA buffer, held until the registry asks for it (as a driver would).</summary>
    private static Task HeldUntilAsked(Machine m)
    {
        var device = m.Register();
        var open = device.Open();
        var msi = device.EnableInterrupts(PciIrq.Msi);
        var buffer = m.Hold(device.AllocateDmaBuffer(64 << 10));
        int released = 0;
        device.WhenReleaseRequested = _ =>
        {
            if (Interlocked.Exchange(ref released, 1) == 0)
            {
                try
                {
                    buffer.Dispose();
                }
                finally
                {
                    msi.Dispose();
                    open.Dispose();
                }
            }
        };
        return Task.CompletedTask;
    }

    private static readonly byte[] SavedState = SaveOnce();

    /// <summary>A device state saved from a migratable device, for the resume path.</summary>
    private static byte[] SaveOnce()
    {
        var kernel = new SimulatedKernel();
        kernel.AddPciDevice(Target, new MigratableDeviceModel(VfioMigrationCapabilities.StopCopy), 6);
        var registry = new VfioRegistry(kernel);
        var device = new RecordingPciDevice(registry.FindPci(PciAddress.Parse(Target)));
        registry.Register(device);
        using var saved = new MemoryStream();
        using (device.Open())
        {
            device.WriteRegion(0, 0, new byte[] { 1, 2, 3, 4 });
            var migration = device.GetMigration();
            migration.SetState(VfioMigrationState.StopCopy);
            migration.SaveAsync(saved).GetAwaiter().GetResult();
            migration.SetState(VfioMigrationState.Running);
        }
        registry.DisposeAsync().AsTask().GetAwaiter().GetResult();
        device.Dispose();
        return saved.ToArray();
    }

    private static IEnumerable<SweepPath> Paths() =>
    [
        new("open", m => { m.Register(); return Task.CompletedTask; }, m => { m.Hold(m.Device!.Open()); return Task.CompletedTask; }),
        new("msi", Opened, async m =>
        {
            var msi = m.Hold(m.Device!.EnableInterrupts(PciIrq.Msi));
            m.Kernel.FindDevice(m.Address)!.Model.RaiseInterrupt(PciIrq.Msi).Should().BeTrue();
            (await msi.WaitAsync(0).AsTask().WaitAsync(Guard)).Should().Be(1);
        }),
        new("msi-x", Opened, async m =>
        {
            var msix = m.Hold(m.Device!.EnableInterrupts(PciIrq.Msix, count: 4));
            m.Kernel.FindDevice(m.Address)!.Model.RaiseInterrupt(PciIrq.Msix, 3).Should().BeTrue();
            (await msix.WaitAsync(3).AsTask().WaitAsync(Guard)).Should().Be(1);
        }),
        new("intx", Opened, m => { m.Hold(m.Device!.EnableInterrupts(PciIrq.Intx)); return Task.CompletedTask; }),
        new("dma", Opened, m => { m.Hold(m.Device!.AllocateDmaBuffer(64 << 10)); return Task.CompletedTask; }),
        new("dma-huge", Opened, m => { m.Hold(m.Device!.AllocateDmaBuffer(2 << 20, pages: DmaPages.Huge)); return Task.CompletedTask; }),
        new("dma-fixed-iova", Opened, m => { m.Hold(m.Device!.AllocateDmaBuffer(64 << 10, iova: 0x4000_0000)); return Task.CompletedTask; }),
        new("region-map", Opened, m => { m.Hold(m.Device!.OpenRegion(0)).Read32(0); return Task.CompletedTask; }),
        new("reset", Opened, m => { m.Device!.Reset(); return Task.CompletedTask; }),
        new("hot-reset", async m =>
        {
            await Opened(m);
            m.Hold(m.Register(Sibling).Open());
        }, m => { m.Device!.HotReset(); return Task.CompletedTask; }),
        new("features", Opened, m =>
        {
            m.Device!.ProbeFeature(VfioFeature.LowPowerEntry, VfioFeatureAccess.Set).Should().BeTrue();
            m.Device.EnterLowPower();
            m.Device.ExitLowPower();
            using (m.Device.EnterLowPowerWithWakeup())
            {
            }
            return Task.CompletedTask;
        }, Repeatable: false),
        new("migration-save", Opened, async m =>
        {
            var migration = m.Device!.GetMigration();
            migration.SetState(VfioMigrationState.StopCopy);
            await migration.SaveAsync(Stream.Null);
            migration.SetState(VfioMigrationState.Running);
        }),
        new("migration-resume", Opened, async m =>
        {
            var migration = m.Device!.GetMigration();
            migration.SetState(VfioMigrationState.Resuming);
            await migration.ResumeAsync(new MemoryStream(SavedState));
            migration.SetState(VfioMigrationState.Running);
        }),
        new("probe", m =>
        {
            m.Registry.AddDriver(new EduDriver());
            return Task.CompletedTask;
        }, async m =>
        {
            var result = await m.Registry.ProbeAsync();
            if (result.Failures.Count > 0)
            {
                result.Registered.Should().BeEmpty("the one device failed: " + result.Failures[0].Error.Message);
                throw result.Failures[0].Error;
            }
            m.Registry.TryFind(PciFunction, out RecordingPciDevice? _).Should().BeTrue("the probe registered the device: {0} registered, {1} removed now", result.Registered.Count, result.Removed.Count);
        }),
        new("close", async m =>
        {
            await Opened(m);
            m.Hold(m.Device!.EnableInterrupts(PciIrq.Msi));
            m.Hold(m.Device.OpenRegion(0));
            m.Hold(m.Device.AllocateDmaBuffer(64 << 10));
        }, m =>
        {
            for (int i = m.Held.Count - 1; i >= 0; i--)
            {
                // What failed to dispose stays held: disposing it again (at teardown) finishes the job.
                ((IDisposable)m.Held[i]).Dispose();
                m.Held.RemoveAt(i);
            }
            return Task.CompletedTask;
        }, Repeatable: false),
        new("unregister", HeldUntilAsked, m => m.Registry.UnregisterAsync(m.Device!), Repeatable: false),
        new("registry-dispose", HeldUntilAsked, async m =>
        {
            m.RegistryDisposed = true;
            await m.Registry.DisposeAsync();
        }, Repeatable: false),
    ];

    /// <summary>The mdev paths: create (and open) on the simulated mtty parent, and remove.</summary>
    private static IEnumerable<(string Name, bool Create)> MdevPaths() => [("mdev-create", true), ("mdev-remove", false)];

    [Fact]
    public async Task EveryCallOfEveryPublicPathFailsTypedNamingItsSubjectLeavingNothingAndTheDeviceUsable()
    {
        var problems = new List<string>();
        int cases = 0, failed = 0, succeeded = 0, paths = 0;
        long calls = 0;
        foreach (var path in Paths())
        {
            paths++;
            long pathCalls = await CountCalls(path);
            calls += pathCalls;
            foreach (int errno in Errnos)
            {
                for (long k = 1; k <= pathCalls; k++)
                {
                    cases++;
                    var m = NewMachine(path.Name);
                    await path.Arrange(m);
                    m.Kernel.FailCall(k, errno);
                    string where = $"{path.Name}, call {k} of {pathCalls}, {Errno.Name(errno)}";
                    Exception? error = await Run(() => path.Act(m), where, problems);
                    if (error is null)
                    {
                        succeeded++;
                    }
                    else
                    {
                        failed++;
                        CheckTyped(error, m, where, problems);
                    }
                    m.Kernel.ClearFailures();
                    await CheckUsableAndClean(m, path.Repeatable ? path.Act : null, where, problems);
                }
            }
        }
        foreach (var (name, create) in MdevPaths())
        {
            paths++;
            long pathCalls = await CountMdevCalls(create);
            calls += pathCalls;
            foreach (int errno in Errnos)
            {
                for (long k = 1; k <= pathCalls; k++)
                {
                    cases++;
                    string where = $"{name}, call {k} of {pathCalls}, {Errno.Name(errno)}";
                    var (kernel, registry, type) = MdevMachine();
                    CreatedMdev? created = create ? null : await type.CreateAsync<MttyDevice>();
                    kernel.FailCall(k, errno);
                    Exception? error = await Run(async () => created = create ? await type.CreateAsync<MttyDevice>() : await RemoveAsync(created!), where, problems);
                    kernel.ClearFailures();
                    if (error is null)
                    {
                        succeeded++;
                    }
                    else
                    {
                        failed++;
                        if (error is not VfioException { Operation.Length: > 0 } vfio
                            || (vfio.Device is null && vfio.GroupId is null && !vfio.Message.Contains("mtty", StringComparison.Ordinal)))
                        {
                            problems.Add($"{where}: {error.GetType().Name} without its call or device: {error.Message}");
                        }
                    }
                    await Run(async () =>
                    {
                        if (created is { IsRemoved: false })
                        {
                            await created.DisposeAsync();
                        }
                        await (await type.CreateAsync<MttyDevice>()).DisposeAsync();
                        await registry.DisposeAsync();
                        kernel.AssertNoLeaks();
                    }, where + ", afterwards", problems, expectSuccess: true);
                }
            }
        }

        int poller = await SweepPollerCalls(problems);
        output.WriteLine($"{paths} paths, {calls} kernel calls, {Errnos.Length} errnos: {cases} cases ({failed} failed typed, {succeeded} succeeded); " +
            $"{poller} poller cases; problems (leaks, hangs, untyped errors, unusable devices): {problems.Count}");
        foreach (string problem in problems.Take(150))
        {
            output.WriteLine(problem);
        }
        problems.Should().BeEmpty();
        cases.Should().BeGreaterThan(500, "every path makes kernel calls, and every call is failed");
        failed.Should().BeGreaterThan(cases / 2, "most failed calls fail their path");
    }

    private static Machine NewMachine(string path) => path switch
    {
        "msi-x" => new Machine(new NvmeDeviceModel()),
        "hot-reset" => new Machine(address: BehindBridge),
        "dma-huge" => new Machine { Kernel = { HugePages = 4 } },
        "migration-save" or "migration-resume" => new Machine(new MigratableDeviceModel(VfioMigrationCapabilities.StopCopy)),
        _ => new Machine(),
    };

    /// <summary>The calls the path makes when nothing fails (its machine torn down clean).</summary>
    private static async Task<long> CountCalls(SweepPath path)
    {
        var m = NewMachine(path.Name);
        await path.Arrange(m);
        long before = m.Kernel.CallCount;
        await path.Act(m).WaitAsync(Guard);
        long calls = m.Kernel.CallCount - before;
        await m.TearDownAsync().WaitAsync(Guard);
        m.Kernel.AssertNoLeaks();
        calls.Should().BePositive($"the path {path.Name} calls the kernel");
        return calls;
    }

    private static (SimulatedKernel Kernel, VfioRegistry Registry, MdevType Type) MdevMachine()
    {
        var kernel = new SimulatedKernel();
        kernel.AddMttyParent();
        var registry = new VfioRegistry(kernel);
        registry.AddDriver(new MttyDriver());
        return (kernel, registry, registry.FindMdevParent("mtty").Type("mtty-1"));
    }

    private static async Task<long> CountMdevCalls(bool create)
    {
        var (kernel, registry, type) = MdevMachine();
        CreatedMdev? created = create ? null : await type.CreateAsync<MttyDevice>();
        long before = kernel.CallCount;
        created = create ? await type.CreateAsync<MttyDevice>() : await RemoveAsync(created!);
        long calls = kernel.CallCount - before;
        if (!created.IsRemoved)
        {
            await created.DisposeAsync();
        }
        await registry.DisposeAsync();
        kernel.AssertNoLeaks();
        return calls;
    }

    private static async Task<CreatedMdev> RemoveAsync(CreatedMdev created)
    {
        await created.DisposeAsync();
        return created;
    }

    /// <summary>Runs <paramref name="action"/> within the guard; returns what it threw, noting a hang (and, when success is expected, any error).</summary>
    private static async Task<Exception?> Run(Func<Task> action, string where, List<string> problems, bool expectSuccess = false)
    {
        var task = Task.Run(action);
        try
        {
            await task.WaitAsync(Guard);
            return null;
        }
        catch (TimeoutException) when (!task.IsCompleted)
        {
            problems.Add($"{where}: HANG (nothing returned within {Guard.TotalSeconds} s)");
            throw new InvalidOperationException(string.Join(Environment.NewLine, problems));
        }
        catch (Exception e)
        {
            if (expectSuccess)
            {
                problems.Add($"{where}: {e.GetType().Name}: {e.Message}");
            }
            return e;
        }
    }

    private static void CheckTyped(Exception error, Machine m, string where, List<string> problems)
    {
        if (error is not VfioException vfio)
        {
            problems.Add($"{where}: untyped {error.GetType().Name}: {error.Message}");
            return;
        }
        if (vfio.Operation.Length == 0)
        {
            problems.Add($"{where}: no kernel call named: {vfio.Message}");
        }
        // A failure to list the bus has no device to name: it names the folder.
        bool named = vfio.Device is not null || vfio.GroupId is not null || vfio.Message.Contains("/sys/bus/pci/devices ", StringComparison.Ordinal)
            || vfio.Message.Contains(m.Address, StringComparison.Ordinal) || vfio.Message.Contains("group " + Group, StringComparison.Ordinal);
        if (!named)
        {
            problems.Add($"{where}: neither device nor group named: {vfio.Message}");
        }
    }

    /// <summary>With the failure cleared: the path again (when it can run twice), the device opened, its config read and a DMA buffer mapped; then teardown leaves nothing.</summary>
    private static async Task CheckUsableAndClean(Machine m, Func<Machine, Task>? again, string where, List<string> problems)
    {
        await Run(async () =>
        {
            if (again is not null)
            {
                await again(m);
            }
            var device = m.UsableDevice();
            using (device.Open())
            {
                device.ReadConfig16(0).Should().Be(device.VendorId);
                device.AllocateDmaBuffer(4096).Dispose();
            }
        }, where + ", once cleared", problems, expectSuccess: true);
        await Run(async () =>
        {
            await m.TearDownAsync();
            m.Kernel.AssertNoLeaks();
        }, where + ", teardown", problems, expectSuccess: true);
    }

    /// <summary>
    /// The poller's own calls (poll, read of the eventfds) failed once each with each errno: the wait
    /// ends with its count or a typed error naming the device, and a set enabled again delivers.
    /// </summary>
    private static async Task<int> SweepPollerCalls(List<string> problems)
    {
        int cases = 0;
        foreach (var kind in new[] { SimulatedCall.Poll, SimulatedCall.Read })
        {
            foreach (int errno in Errnos.Append(Errno.EAGAIN))
            {
                cases++;
                string where = $"poller {kind}, {Errno.Name(errno)}";
                var m = new Machine();
                await Opened(m);
                var model = m.Kernel.FindDevice(PciFunction)!.Model;
                var msi = m.Device!.EnableInterrupts(PciIrq.Msi);
                m.Kernel.FailNextPollerCall(msi, kind, errno);
                model.RaiseInterrupt(PciIrq.Msi).Should().BeTrue();
                var error = await Run(() => msi.WaitAsync(0).AsTask(), where, problems);
                if (error is not null && (error is not VfioException { Operation.Length: > 0 } || !error.Message.Contains(PciFunction, StringComparison.Ordinal)))
                {
                    problems.Add($"{where}: {error.GetType().Name} without its call or device: {error.Message}");
                }
                msi.Dispose();
                await Run(async () =>
                {
                    using var again = m.Device.EnableInterrupts(PciIrq.Msi);
                    model.RaiseInterrupt(PciIrq.Msi).Should().BeTrue();
                    (await again.WaitAsync(0).AsTask().WaitAsync(Guard)).Should().Be(1);
                }, where + ", enabled again", problems, expectSuccess: true);
                await Run(async () =>
                {
                    await m.TearDownAsync();
                    m.Kernel.AssertNoLeaks();
                }, where + ", teardown", problems, expectSuccess: true);
            }
        }
        return cases;
    }

    private sealed class EduDriver() : PciDriver<RecordingPciDevice>("edu", PciMatch.Id(0x1234, 0x11e8))
    {
        protected internal override RecordingPciDevice CreateDevice(PciDeviceContext context) => new(context);
    }
}
