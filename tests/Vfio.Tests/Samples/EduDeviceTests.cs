using EduDriver;
using Vfio.Testing;

namespace Vfio.Tests.Samples;

/// <summary>The edu sample driver on the simulated kernel, as the driver guide shows it.</summary>
public class EduDeviceTests
{
    [Fact]
    public async Task FactorialCompletesByInterrupt()
    {
        var kernel = new SimulatedKernel();
        kernel.AddPciDevice("0000:00:03.0", new EduDeviceModel(), iommuGroup: 3);
        await using (var registry = new VfioRegistry(kernel))
        {
            registry.AddDriver(new EduPciDriver());
            var edu = (EduDevice)(await registry.ProbeAsync()).Registered.Single();
            using (edu.Open())
            {
                (await edu.ComputeFactorialAsync(5)).Should().Be(120);
            }
        }
        kernel.AssertNoLeaks();
    }

    [Fact]
    public async Task ADmaRoundTripThroughTheDeviceKeepsEveryByte()
    {
        var kernel = new SimulatedKernel();
        kernel.AddPciDevice("0000:00:03.0", new EduDeviceModel(), iommuGroup: 3);
        await using (var registry = new VfioRegistry(kernel))
        {
            registry.AddDriver(new EduPciDriver());
            var edu = (EduDevice)(await registry.ProbeAsync()).Registered.Single();
            using (edu.Open())
            {
                using var source = edu.AllocateDmaBuffer(4096, DmaAccess.DeviceReads);
                using var destination = edu.AllocateDmaBuffer(4096, DmaAccess.DeviceWrites);
                source.Iova.Should().BeLessThan(1UL << 28, "the edu device drives 28 address bits");
                new Random(7).NextBytes(source.Span[..2048]);

                await edu.CopyToDeviceAsync(source, sourceOffset: 0, deviceOffset: 0, count: 2048);
                await edu.CopyFromDeviceAsync(destination, destinationOffset: 0, deviceOffset: 0, count: 2048);

                destination.Span[..2048].ToArray().Should().Equal(source.Span[..2048].ToArray());
            }
        }
        kernel.DmaFaults.Should().BeEmpty();
        kernel.AssertNoLeaks();
    }
}
