using System.Collections.Concurrent;
using Vfio.Testing;
using Xunit.Abstractions;

namespace Vfio.Tests.Sweeps;

/// <summary>
/// Seeded, bounded stress on one device: unregistering, opening and closing, interrupts, register
/// access and resets from their own threads at once, round after round (each round a new
/// registration). Each worker does a fixed number of iterations; the spread of their starts comes
/// from the seed (<see cref="Race"/>). Nothing may fault, hang, throw an untyped error or leak.
/// Longer runs: tests/stress/run-stress.sh (VFIO_STRESS_ROUNDS).
/// </summary>
public sealed class DeviceStressTests(ITestOutputHelper output) : KernelTest
{
    private const int Iterations = 4;

    /// <summary>Rounds of the default run; the stress script raises it.</summary>
    private static int Rounds => int.TryParse(Environment.GetEnvironmentVariable("VFIO_STRESS_ROUNDS"), out int rounds) && rounds > 0 ? rounds : 60;

    [Fact]
    public void UnregisterOpenCloseInterruptsRegisterAccessAndResetRaceWithoutHangFaultOrLeak()
    {
        var sim = AddPci(model: FaultSweepTests.Function());
        var model = sim.Model;
        var failures = new ConcurrentQueue<string>();
        var counts = new ConcurrentDictionary<string, int>();
        void Count(string what) => counts.AddOrUpdate(what, 1, (_, n) => n + 1);

        // Every outcome a racing caller may see: done, or refused with a typed error while the device
        // is being unregistered or closed. Anything else is a failure.
        void Work(string name, RecordingPciDevice device, Action<DeviceReference> body)
        {
            for (int i = 0; i < Iterations; i++)
            {
                try
                {
                    using var open = device.Open();
                    body(open);
                    Count(name);
                }
                catch (InvalidOperationException e) when (e.Message.Contains("not registered", StringComparison.Ordinal) || e.Message.Contains("unregister", StringComparison.Ordinal))
                {
                    Count(name + " refused");
                    return;
                }
                catch (Exception e)
                {
                    failures.Enqueue($"{name}: {e.GetType().Name}: {e.Message}");
                    return;
                }
            }
        }

        using var race = new Race(seed: 2026, Guard, 3000, 3000, 3000, 3000, 3_000_000);
        for (int round = 0; round < Rounds; round++)
        {
            var device = RegisterPci();
            race.Round(
                () => Work("open/close", device, _ => device.ReadConfig16(0)),
                () => Work("interrupt", device, _ =>
                {
                    using var msi = device.EnableInterrupts(PciIrq.Msi);
                    model.RaiseInterrupt(PciIrq.Msi).Should().BeTrue();
                    msi.WaitAsync(0).AsTask().Wait(Guard).Should().BeTrue("a raised interrupt is delivered");
                }),
                () => Work("register access", device, _ =>
                {
                    using var bar0 = device.OpenRegion(0);
                    for (int j = 0; j < 50; j++)
                    {
                        bar0.Write32(0x04, (uint)j + 1);
                        uint value = bar0.Read32(0x04);
                        value.Should().Match(v => v == (uint)j + 1 || v == 0 || v == 0xffffffff,
                            "what was written, 0 after a reset between, all-ones while a reset has memory off");
                    }
                }),
                () => Work("reset", device, _ => device.Reset()),
                () =>
                {
                    try
                    {
                        Registry.UnregisterAsync(device).Wait(Guard).Should().BeTrue("unregistering ends once every worker let go");
                        Count("unregister");
                    }
                    catch (Exception e)
                    {
                        failures.Enqueue($"unregister: {e.GetType().Name}: {e.Message}");
                    }
                });

            failures.Should().BeEmpty($"round {round}");
            device.State.Should().Be(VfioDeviceState.Unregistered, $"round {round}");
            device.Dispose();
            Kernel.AssertNoLeaks();
            Registry.Groups.Should().BeEmpty();
        }

        output.WriteLine($"{race.Rounds} rounds: " + string.Join(", ", counts.OrderBy(c => c.Key, StringComparer.Ordinal).Select(c => $"{c.Key} {c.Value}")));
        counts.GetValueOrDefault("unregister").Should().Be(Rounds);
        counts.GetValueOrDefault("interrupt").Should().BePositive("some interrupts race the others before the unregistration");
        counts.GetValueOrDefault("reset").Should().BePositive();
        counts.GetValueOrDefault("register access").Should().BePositive();
    }
}
