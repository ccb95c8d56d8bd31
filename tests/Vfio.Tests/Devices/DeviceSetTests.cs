using Vfio.Testing;

namespace Vfio.Tests.Devices;

/// <summary>
/// Device sets: the functions of a reset domain share one lock and open count, formed as vfio-pci forms
/// them (the slot's set when the slot can be reset, else the bus's, alone on a root bus); hooks run
/// under the lock.
/// </summary>
public class DeviceSetTests : KernelTest
{
    [Fact]
    public void FunctionsOfOneBusBehindABridgeShareTheSetAndItsOpenCount()
    {
        Kernel.AddPciBridge("0000:00:1c.0", secondaryBus: 1);
        AddPci("0000:01:00.0", group: 7);
        AddPci("0000:01:00.1", group: 8);
        var f0 = RegisterPci("0000:01:00.0");
        var f1 = RegisterPci("0000:01:00.1");

        f0.Set.Should().BeSameAs(f1.Set);
        f0.Set.Id.Should().Be("pci-bus:0000:01");
        using (f0.Open())
        using (f1.Open())
        using (f1.Open())
        {
            f0.Set.OpenCount.Should().Be(3);
        }
        f0.Set.OpenCount.Should().Be(0);
    }

    [Fact]
    public void FunctionsOnARootBusAreEachInASetOfTheirOwnEvenInOneSlot()
    {
        // vfio_pci_core_register_device: pci_is_root_bus() -> vfio_assign_device_set(vdev, vdev).
        AddPci("0000:00:04.0", group: 7);
        AddPci("0000:00:04.1", group: 8);
        var f0 = RegisterPci("0000:00:04.0");
        var f1 = RegisterPci("0000:00:04.1");

        f0.Set.Should().NotBeSameAs(f1.Set);
        f0.Set.Id.Should().Be("device:0000:00:04.0");
        f1.Set.Id.Should().Be("device:0000:00:04.1");
        using (f0.Open())
        {
            f1.Set.OpenCount.Should().Be(0);
        }
    }

    [Fact]
    public void FunctionsOfOneBusShareItsSetWhateverTheirSlot()
    {
        // No slot that can be reset: the whole bus is one reset domain (vfio_assign_device_set(vdev, pdev->bus)).
        Kernel.AddPciBridge("0000:00:1c.0", secondaryBus: 2);
        AddPci("0000:02:00.0", group: 7);
        AddPci("0000:02:01.0", group: 8);

        RegisterPci("0000:02:00.0").Set.Should().BeSameAs(RegisterPci("0000:02:01.0").Set);
    }

    [Fact]
    public void FunctionsOfASlotThatCanBeResetShareTheSlotsSetApartFromTheBus()
    {
        // A pciehp slot: pci_probe_reset_slot succeeds, so the slot is the set (vfio_assign_device_set(vdev, pdev->slot)).
        Kernel.AddPciBridge("0000:00:1c.0", secondaryBus: 3, hotplugSlot: true);
        AddPci("0000:03:00.0", group: 7);
        AddPci("0000:03:00.1", group: 8);
        AddPci("0000:03:01.0", group: 9);
        var f0 = RegisterPci("0000:03:00.0");
        var f1 = RegisterPci("0000:03:00.1");
        var other = RegisterPci("0000:03:01.0");

        f0.Set.Should().BeSameAs(f1.Set);
        f0.Set.Id.Should().Be("pci-slot:0000:03:00");
        other.Set.Id.Should().Be("pci-bus:0000:03", "its own slot cannot be reset");
        using var open = f0.Open();
        f0.GetHotResetDependencies().Select(d => d.Address.ToString()).Should().Equal("0000:03:00.0", "0000:03:00.1");
    }

    [Fact]
    public void AHotplugSlotWhoseDriverCannotResetItLeavesItsFunctionsInTheBussSet()
    {
        // QEMU's q35 root ports on Debian 6.1: the slot is acpiphp's, which has no reset_slot, so
        // pci_probe_reset_slot fails and vfio-pci forms the bus's set (seen in the VM: pci-bus:0000:01).
        Kernel.AddPciBridge("0000:00:1c.0", secondaryBus: 1);
        var slot = Kernel.Sysfs.Directory("bus/pci/slots/0");
        slot.Attribute("address", () => "0000:01:00\n");
        Kernel.Sysfs.Directory("module/acpiphp");
        slot.Link("module", "module/acpiphp");
        AddPci("0000:01:00.0", group: 7);
        AddPci("0000:01:00.1", group: 8);

        RegisterPci("0000:01:00.0").Set.Id.Should().Be("pci-bus:0000:01");
        RegisterPci("0000:01:00.1").Set.Id.Should().Be("pci-bus:0000:01");
    }

    [Fact]
    public void AVirtualFunctionIsInASetOfItsOwn()
    {
        Kernel.AddPciBridge("0000:00:1c.0", secondaryBus: 1);
        AddPci("0000:01:00.0", group: 7);
        var vf = AddPci("0000:01:00.1", group: 8);
        Kernel.Sysfs.Directory(vf.SysfsRelative).Link("physfn", "devices/pci0000:00/0000:00:1c.0/0000:01:00.0");

        RegisterPci("0000:01:00.1").Set.Id.Should().Be("device:0000:01:00.1");
        RegisterPci("0000:01:00.0").Set.Id.Should().Be("pci-bus:0000:01");
    }

    [Fact]
    public void TheFirstOpenHookRunsUnderTheSetLock()
    {
        AddPci("0000:00:04.0", group: 7);
        var f0 = RegisterPci("0000:00:04.0");
        bool held = false;
        bool othersLockedOut = false;
        f0.DuringFirstOpen = () =>
        {
            held = f0.Set.Lock.IsHeldByCurrentThread;
            var other = new Thread(() =>
            {
                if (f0.Set.Lock.TryEnter())
                {
                    f0.Set.Lock.Exit();
                    return;
                }
                othersLockedOut = true;
            });
            other.Start();
            other.Join(Guard).Should().BeTrue();
        };

        using (f0.Open())
        {
            held.Should().BeTrue();
            othersLockedOut.Should().BeTrue();
        }
    }

    [Fact]
    public async Task HooksRunOnceUnderConcurrentOpensOfTheSetsFunctions()
    {
        Kernel.AddPciBridge("0000:00:1c.0", secondaryBus: 1);
        AddPci("0000:01:00.0", group: 7);
        AddPci("0000:01:00.1", group: 7);
        var functions = new[] { RegisterPci("0000:01:00.0"), RegisterPci("0000:01:00.1") };
        const int Threads = 8;
        const int Rounds = 25;
        int inHook = 0;
        int overlaps = 0;
        foreach (var f in functions)
        {
            f.DuringFirstOpen = () =>
            {
                if (Interlocked.Increment(ref inHook) != 1)
                {
                    Interlocked.Increment(ref overlaps);
                }
                Thread.Yield();
                Interlocked.Decrement(ref inHook);
            };
        }
        using var opened = new Barrier(Threads);
        using var closed = new Barrier(Threads);
        var errors = new System.Collections.Concurrent.ConcurrentQueue<Exception>();

        var workers = Enumerable.Range(0, Threads).Select(t => Task.Factory.StartNew(() =>
        {
            try
            {
                for (int round = 0; round < Rounds; round++)
                {
                    var reference = functions[t % 2].Open();
                    opened.SignalAndWait(Guard).Should().BeTrue();
                    reference.Dispose();
                    closed.SignalAndWait(Guard).Should().BeTrue();
                }
            }
            catch (Exception e)
            {
                errors.Enqueue(e);
                opened.RemoveParticipant();
                closed.RemoveParticipant();
            }
        }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default)).ToArray();

        await Task.WhenAll(workers).WaitAsync(Guard);
        errors.Should().BeEmpty();
        overlaps.Should().Be(0, "first-open hooks of one set never run at once");
        foreach (var f in functions)
        {
            f.FirstOpens.Should().Be(Rounds, "one first open per round, however many threads opened");
            f.LastCloses.Should().Be(Rounds);
            f.IsOpen.Should().BeFalse();
        }
        Kernel.OpenFileCountTotal.Should().Be(0);
        Kernel.FindDevice("0000:01:00.0")!.IsOpen.Should().BeFalse();
    }
}
