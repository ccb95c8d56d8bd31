using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Vfio.Interop;
using Vfio.Testing;
using static Vfio.Interop.Interop;

namespace Vfio.Tests.Regions;

/// <summary>Register access through a region: whole mappings, sparse mappings, the file, bounds and lifetime.</summary>
public partial class MmioRegionTests : KernelTest
{
    /// <summary>BAR2 is 16 KiB, of which [0, 4K) and [12K, 16K) can be mapped; BAR0 cannot be mapped at all.</summary>
    private static PciDeviceModel SparseModel()
    {
        var model = new PciDeviceModel(0x1234, 0x11e8, 0x00ff00);
        model.DefineBar(0, 0x1000, mappable: false);
        model.DefineBar(2, 0x4000, PciBarKind.Memory64);
        model.DefineSparseMmap(2, new SparseMmapArea(0, 0x1000), new SparseMmapArea(0x3000, 0x1000));
        return model;
    }

    [Fact]
    public void ASparseRegionMapsEachAreaAndReachesTheRestThroughTheFile()
    {
        AddPci(model: SparseModel());
        var device = RegisterPci();
        using var open = device.Open();
        int mappings = Kernel.MappingCount;

        using var bar2 = device.OpenRegion(2);

        bar2.IsMapped.Should().BeTrue();
        bar2.MappedAreas.Should().Equal(new SparseMmapArea(0, 0x1000), new SparseMmapArea(0x3000, 0x1000));
        Kernel.MappingCount.Should().Be(mappings + 2, "one mapping per sparse area");

        long calls = Kernel.CallCount;
        bar2.Write32(0x10, 0x11111111);
        bar2.Write64(0x3ff8, 0x2222222233333333);
        bar2.Read32(0x10).Should().Be(0x11111111);
        bar2.Read64(0x3ff8).Should().Be(0x2222222233333333);
        Kernel.CallCount.Should().Be(calls, "accesses inside the areas go through their mappings");

        bar2.Write16(0x2000, 0x4444);
        bar2.Read16(0x2000).Should().Be(0x4444);
        Kernel.CallCount.Should().Be(calls + 2, "accesses between the areas are a pwrite and a pread");

        // The same register seen both ways: written through the second area's mapping, read with pread.
        bar2.Write8(0x3000, 0x5a);
        Kernel.CallCount.Should().Be(calls + 2);
        Span<byte> b = stackalloc byte[1];
        device.ReadRegion(2, 0x3000, b);
        b[0].Should().Be(0x5a, "the mapped area and the file reach the same register");
    }

    [Fact]
    public void ARegionThatCannotBeMappedGoesThroughTheFile()
    {
        AddPci(model: SparseModel());
        var device = RegisterPci();
        using var open = device.Open();
        int mappings = Kernel.MappingCount;

        using var bar0 = device.OpenRegion(0);

        bar0.IsMapped.Should().BeFalse();
        bar0.MappedAreas.Should().BeEmpty();
        Kernel.MappingCount.Should().Be(mappings);
        bar0.Write32(0x20, 0xcafe);
        bar0.Read32(0x20).Should().Be(0xcafe);
    }

    [Fact]
    public void DisposingASparseRegionUnmapsEveryAreaAndReleasesItsReference()
    {
        AddPci(model: SparseModel());
        var device = RegisterPci();
        using var open = device.Open();
        int mappings = Kernel.MappingCount;
        int references = device.ReferenceCount;

        var bar2 = device.OpenRegion(2);
        device.ReferenceCount.Should().Be(references + 1, "a region holds a device reference");
        bar2.Dispose();

        Kernel.MappingCount.Should().Be(mappings);
        device.ReferenceCount.Should().Be(references);
        bar2.Invoking(r => r.Read32(0)).Should().Throw<ObjectDisposedException>();
        bar2.Invoking(r => r.Read32(0x2000)).Should().Throw<ObjectDisposedException>();
    }

    [Fact]
    public void ClosingTheDeviceUnmapsTheSparseAreasOfARegionStillOpen()
    {
        AddPci(model: SparseModel());
        var device = RegisterPci();
        var open = device.Open();
        var bar2 = device.OpenRegion(2);

        open.Dispose();

        bar2.IsLive.Should().BeFalse();
        Kernel.MappingCount.Should().Be(0);
        device.ReferenceCount.Should().Be(1, "only the registration is left");
        bar2.Dispose();
    }

    [Fact]
    public void AFailedAreaMappingUnmapsTheAreasAlreadyMapped()
    {
        AddPci(model: SparseModel());
        var device = RegisterPci();
        using var open = device.Open();
        int mappings = Kernel.MappingCount;
        int references = device.ReferenceCount;
        // GET_REGION_INFO twice (size, then chain), the first area's mmap, then the second area's mmap fails.
        Kernel.FailCall(4, Errno.ENOMEM);

        var e = device.Invoking(d => d.OpenRegion(2)).Should().Throw<VfioException>().Which;

        e.Operation.Should().Be("mmap");
        e.RegionIndex.Should().Be(2);
        Kernel.MappingCount.Should().Be(mappings, "the first area was unmapped again");
        device.ReferenceCount.Should().Be(references);
    }

    [Theory]
    [InlineData(0x1000UL, 4)]
    [InlineData(0xffcUL, 8)]
    [InlineData(0x2UL, 4)]
    [InlineData(ulong.MaxValue, 1)]
    public void AnAccessOutsideTheRegionOrMisalignedIsRefused(ulong offset, int size)
    {
        using var small = OverMemory(0x1000);

        Action access = size switch
        {
            1 => () => small.Read8(offset),
            4 => () => small.Read32(offset),
            _ => () => small.Write64(offset, 0),
        };

        access.Should().Throw<ArgumentOutOfRangeException>().WithMessage($"*{size}-byte access*");
    }

    [Fact]
    public void AnAccessWiderThanTheWholeRegionIsRefused()
    {
        using var tiny = OverMemory(4);

        tiny.Invoking(r => r.Read64(0)).Should().Throw<ArgumentOutOfRangeException>().WithMessage("*8-byte access at 0x0 is outside region 0 of test memory (0x4 bytes)*");
        tiny.Invoking(r => r.Write64(0, 1)).Should().Throw<ArgumentOutOfRangeException>();
        tiny.Read32(0).Should().Be(0);
    }

    [Fact]
    public void ARegionOverMemoryReadsAndWritesEveryWidth()
    {
        using var region = OverMemory(0x1000);

        region.Write8(1, 0xab);
        region.Write16(2, 0xcdef);
        region.Write32(4, 0x01234567);
        region.Write64(8, 0x89abcdef01234567);

        region.Read8(1).Should().Be(0xab);
        region.Read16(2).Should().Be(0xcdef);
        region.Read32(4).Should().Be(0x01234567);
        region.Read64(8).Should().Be(0x89abcdef01234567);
        region.Read32(0).Should().Be(0xcdefab00, "little-endian bytes 0 to 3");
    }

    /// <summary>
    /// A region over real anonymous memory of this process: what the fast path reaches. A revoked one
    /// keeps its range (all-ones) until it is collected, so it is not the simulated kernel's to count.
    /// </summary>
    private static MmioRegion OverMemory(nuint length)
    {
        VfioKernel.Linux.Mmap(null, length, Flags.PROT_READ | Flags.PROT_WRITE, Flags.MAP_SHARED, 0, out var mapping).Should().Be(0);
        return MmioRegion.OverMemory(mapping, "test memory");
    }

    /// <summary>A function whose reset runs <see cref="DuringReset"/> while the kernel resets it.</summary>
    private sealed class ObservedResetModel() : PciDeviceModel(0x1234, 0x11e8, 0x00ff00)
    {
        public Action? DuringReset { get; set; }

        protected override void OnReset()
        {
            DuringReset?.Invoke();
            base.OnReset();
        }
    }

    /// <summary>BAR0: 16 KiB, mappable whole; the function has power management.</summary>
    private (ObservedResetModel Model, RecordingPciDevice Device, DeviceReference Open, MmioRegion Bar0) MappedBar0(bool noSoftReset = false)
    {
        var model = new ObservedResetModel { PowerManagementNoSoftReset = noSoftReset };
        model.DefineBar(0, 0x4000);
        AddPci(model: model);
        var device = RegisterPci();
        var open = device.Open();
        var bar0 = device.OpenRegion(0);
        bar0.IsMapped.Should().BeTrue();
        return (model, device, open, bar0);
    }

    [Fact]
    public void ClearingMemorySpaceMakesAMappedRegionReadAllOnesUntilItIsSetAgain()
    {
        var (_, device, open, bar0) = MappedBar0();
        using (open)
        using (bar0)
        {
            bar0.Write32(0x10, 0x12345678);

            device.UpdateCommand(PciCommand.None, clear: PciCommand.MemorySpace);

            bar0.IsSuspended.Should().BeTrue();
            bar0.Read32(0x10).Should().Be(0xffffffff, "a read of a device that does not decode is all-ones");
            bar0.Read8(0x10).Should().Be(0xff);
            bar0.Read64(0x10).Should().Be(ulong.MaxValue);
            bar0.Write32(0x10, 0); // dropped: it neither faults nor reaches the device
            device.UpdateCommand(PciCommand.MemorySpace);
            bar0.IsSuspended.Should().BeFalse();
            bar0.Read32(0x10).Should().Be(0x12345678, "the register is reachable again and the dropped write never reached it");
        }
    }

    [Fact]
    public void AnyConfigWriteThatTurnsMemoryOffSuspendsMappedRegionsAndOneThatTurnsItOnResumesThem()
    {
        var (_, device, open, bar0) = MappedBar0();
        using (open)
        using (bar0)
        {
            bar0.Write32(0, 0xcafe);
            ushort command = device.ReadConfig16(PciConfig.Command);

            device.WriteConfig8(PciConfig.Command, (byte)(command & ~PciConfig.CommandMemory));
            bar0.Read32(0).Should().Be(0xffffffff);
            device.WriteConfig16(PciConfig.Command, command);
            bar0.Read32(0).Should().Be(0xcafe);

            Span<byte> header = stackalloc byte[8];
            device.ReadRegion(PciVfioDevice.ConfigRegion, 0, header);
            header[4] &= unchecked((byte)~PciConfig.CommandMemory);
            device.WriteRegion(PciVfioDevice.ConfigRegion, 0, header);
            bar0.Read32(0).Should().Be(0xffffffff);
            device.WriteConfig32(PciConfig.Command, command);
            bar0.Read32(0).Should().Be(0xcafe);
        }
    }

    [Fact]
    public void PuttingTheFunctionInD3MakesMappedRegionsReadAllOnesUntilItIsBackInD0()
    {
        // With No_Soft_Reset set, D3hot to D0 keeps the function's registers (clear, it resets them).
        var (model, device, open, bar0) = MappedBar0(noSoftReset: true);
        using (open)
        using (bar0)
        {
            bar0.Write32(4, 0x600d);
            device.TryFindCapability(PciCapabilityId.PowerManagement, out var capability).Should().BeTrue();
            int pm = capability.Offset;

            device.WriteConfig16(pm + 4, 3);

            model.PowerState.Should().Be(PciPowerState.D3Hot);
            bar0.Read32(4).Should().Be(0xffffffff);
            device.WriteConfig16(pm + 4, 0);
            bar0.Read32(4).Should().Be(0x600d);
        }
    }

    [Fact]
    public void LowPowerMakesMappedRegionsReadAllOnesUntilItIsLeft()
    {
        var (_, device, open, bar0) = MappedBar0();
        using (open)
        using (bar0)
        {
            bar0.Write32(8, 0x1234);

            device.EnterLowPower();

            bar0.IsSuspended.Should().BeTrue();
            bar0.Read32(8).Should().Be(0xffffffff);
            device.ExitLowPower();
            bar0.Read32(8).Should().Be(0x1234);
            device.SetFeature(VfioFeature.LowPowerEntry, []);
            bar0.Read32(8).Should().Be(0xffffffff, "the generic feature call is gated the same way");
            device.SetFeature(VfioFeature.LowPowerExit, []);
            bar0.Read32(8).Should().Be(0x1234);
        }
    }

    [Fact]
    public void AMappedRegionReadsAllOnesWhileItsDeviceResetsAndIsMappedBackAfter()
    {
        var (model, device, open, bar0) = MappedBar0();
        using (open)
        using (bar0)
        {
            bar0.Write32(0x20, 0x77);
            int mappings = Kernel.MappingCount;
            uint? during = null;
            model.DuringReset = () =>
            {
                during = bar0.Read32(0x20);
                model.DuringReset = null; // the close resets the device too
            };

            device.Reset();

            during.Should().Be(0xffffffff, "while the device resets, its memory does not answer");
            bar0.IsSuspended.Should().BeFalse();
            bar0.Read32(0x20).Should().Be(0, "the reset cleared the device's registers");
            bar0.Write32(0x20, 0x88);
            bar0.Read32(0x20).Should().Be(0x88);
            Kernel.MappingCount.Should().Be(mappings);
        }
    }

    [Fact]
    public void ARegionOpenedWhileMemorySpaceIsOffStartsSuspended()
    {
        var (_, device, open, bar0) = MappedBar0();
        using (open)
        {
            bar0.Dispose();
            device.UpdateCommand(PciCommand.None, clear: PciCommand.MemorySpace);

            using var again = device.OpenRegion(0);

            again.IsSuspended.Should().BeTrue();
            again.Read32(0).Should().Be(0xffffffff);
            device.UpdateCommand(PciCommand.MemorySpace);
            again.IsSuspended.Should().BeFalse();
            again.Read32(0).Should().Be(0);
        }
    }

    [Fact]
    public void AFailedMunmapIsReportedAndTheNextDisposeUnmapsAgain()
    {
        var (_, device, open, bar0) = MappedBar0();
        using (open)
        {
            int mappings = Kernel.MappingCount;
            Kernel.FailNext(SimulatedCall.Munmap, Errno.EINVAL);

            var error = bar0.Invoking(b => b.Dispose()).Should().Throw<VfioException>().Which;

            error.Operation.Should().Be("munmap");
            error.Errno.Should().Be(Errno.EINVAL);
            error.RegionIndex.Should().Be(0);
            error.Message.Should().Contain(device.Name);
            Logs.Named("RegionUnmapFailed").Should().ContainSingle();
            Kernel.MappingCount.Should().Be(mappings, "the mapping is still there, and the books say so");
            bar0.IsLive.Should().BeFalse();
            bar0.Dispose();
            Kernel.MappingCount.Should().Be(mappings - 1);
        }
    }

    [Fact]
    public void AFailedMunmapAtCloseIsLoggedAndTheRegionsDisposeUnmapsIt()
    {
        var (_, device, open, bar0) = MappedBar0();
        Kernel.FailNext(SimulatedCall.Munmap, Errno.EINVAL);

        open.Dispose();

        device.IsOpen.Should().BeFalse();
        Logs.Named("RegionUnmapFailed").Should().ContainSingle();
        Kernel.MappingCount.Should().Be(1, "the region's mapping, all-ones in place, no longer holding the device");
        Kernel.OpenFileCount(SimulatedFileKind.Device).Should().Be(0);
        bar0.Dispose();
        Kernel.MappingCount.Should().Be(0);
    }

    [Fact]
    public void AccessesRacingMemorySpaceResetAndCloseOfASimulatedDeviceNeverFault()
    {
        // The simulated kernel throws SimulatedFaultException wherever Linux would kill the process
        // (a mapped BAR touched while memory space is off), so any such access the library let through
        // fails the round. Two threads access the register until the device closes; a third turns
        // memory space off (until an access has met it), on, and resets; the fourth closes the device.
        using var race = new Race(seed: 1005, Guard, 400, 400, 400, 20_000);
        int allOnes = 0;
        for (int round = 0; round < 150; round++)
        {
            var (_, device, open, bar0) = MappedBar0Again(round);
            bar0.Write32(0x100, 0x5a5a5a5a);
            var failures = new List<Exception>();
            int roundAllOnes = 0;
            void Access()
            {
                while (true)
                {
                    try
                    {
                        uint value = bar0.Read32(0x100);
                        if (value == 0xffffffff)
                        {
                            Interlocked.Increment(ref roundAllOnes);
                        }
                        else if (value is not (0x5a5a5a5a or 0))
                        {
                            throw new InvalidOperationException($"read 0x{value:x}, which nobody wrote");
                        }
                        bar0.Write32(0x100, 0x5a5a5a5a);
                    }
                    catch (ObjectDisposedException)
                    {
                        return; // the device closed
                    }
                    catch (Exception e)
                    {
                        lock (failures)
                        {
                            failures.Add(e);
                        }
                        return;
                    }
                }
            }

            race.Round(
                Access,
                Access,
                () =>
                {
                    try
                    {
                        device.UpdateCommand(PciCommand.None, clear: PciCommand.MemorySpace);
                        SpinWait.SpinUntil(() => Volatile.Read(ref roundAllOnes) > 0 || !device.IsOpen, Guard);
                        device.UpdateCommand(PciCommand.MemorySpace);
                        device.Reset();
                    }
                    catch (Exception e) when (e is InvalidOperationException or VfioException && !device.IsOpen)
                    {
                        // The close won: the device is not open any more.
                    }
                },
                open.Dispose);

            failures.Should().BeEmpty($"round {round} must never fault nor read a value nobody wrote");
            allOnes += roundAllOnes;
            bar0.Dispose();
        }
        allOnes.Should().BePositive("reads met memory space off in the rounds where it came before the close");
    }

    /// <summary>A fresh function per round, at its own address.</summary>
    private (PciDeviceModel Model, RecordingPciDevice Device, DeviceReference Open, MmioRegion Bar0) MappedBar0Again(int round)
    {
        var model = new PciDeviceModel(0x1234, 0x11e8, 0x00ff00);
        model.DefineBar(0, 0x4000);
        string address = $"0000:{1 + (round / 32):x2}:{round % 32:x2}.0";
        AddPci(address, group: 100 + round, model: model);
        var device = RegisterPci(address);
        var open = device.Open();
        return (model, device, open, device.OpenRegion(0));
    }

    // ---- On real mappings of this machine: a fault here kills the test process ------------------

    [Fact]
    public void AccessesRacingTheRevokeOfARealMappingNeverFault()
    {
        // Anonymous memory stands in for a BAR: revoking the region is what its device's close does,
        // on whatever thread closes the device, while other threads may be inside an access. The
        // accessors run until the revoke makes them throw ObjectDisposedException.
        using var race = new Race(seed: 1006, Guard, 200, 200, 200, 3000);
        var failures = new List<string>();
        int allOnes = 0;
        for (int round = 0; round < 300; round++)
        {
            VfioKernel.Linux.Mmap(null, 0x10000, Flags.PROT_READ | Flags.PROT_WRITE, Flags.MAP_SHARED, 0, out var mapping).Should().Be(0);
            var region = MmioRegion.OverMemory(mapping, "anonymous memory");
            Fill(region, Valid);

            race.Round(
                () => Hammer(region, 1, failures, ref allOnes, null),
                () => Hammer(region, 2, failures, ref allOnes, null),
                () => Hammer(region, 3, failures, ref allOnes, null),
                () => ((IDeviceResource)region).Revoke());

            failures.Should().BeEmpty($"round {round}");
            region.Dispose();
        }
    }

    [Fact]
    public void AccessesRacingSuspendAndResumeOfARealFileMappingNeverFault()
    {
        // A memfd stands in for a BAR, and truncating it is what vfio-pci does to a BAR while memory
        // space is off or a reset runs: a touch of the old mapping would be SIGBUS. The region must
        // have put all-ones in place before, and map the file back after. The BAR stays gone until an
        // access has met it; the accessors run until the round's suspension is over.
        using var race = new Race(seed: 1007, Guard, 200, 200, 200, 3000);
        var failures = new List<string>();
        int allOnes = 0;
        VfioKernel.Linux.MemFd("bar", out var bar).Should().Be(0);
        using (bar)
        {
            Truncate(bar, 0x10000);
            using var region = MmioRegion.OverFile(VfioKernel.Linux, bar, 0, 0x10000, "memfd BAR");
            for (int round = 0; round < 100; round++)
            {
                Fill(region, Valid);
                var over = new StrongBox<bool>();
                int before = Volatile.Read(ref allOnes);
                race.Round(
                    () => Hammer(region, 1, failures, ref allOnes, over),
                    () => Hammer(region, 2, failures, ref allOnes, over),
                    () => Hammer(region, 3, failures, ref allOnes, over),
                    () =>
                    {
                        region.Suspend();
                        Truncate(bar, 0);
                        SpinWait.SpinUntil(() => Volatile.Read(ref allOnes) > before, Guard);
                        Truncate(bar, 0x10000);
                        FillFile(bar, 0x10000, Valid);
                        region.Resume();
                        Volatile.Write(ref over.Value, true);
                    });
                failures.Should().BeEmpty($"round {round}");
                Volatile.Read(ref allOnes).Should().BeGreaterThan(before, $"round {round}: the accesses met the suspension");
            }
        }
    }

    [Fact]
    public void AccessesRacingTheCloseOfARealFileMappingNeverFault()
    {
        using var race = new Race(seed: 1008, Guard, 200, 200, 200, 3000);
        var failures = new List<string>();
        int allOnes = 0;
        for (int round = 0; round < 200; round++)
        {
            VfioKernel.Linux.MemFd("bar", out var bar).Should().Be(0);
            using (bar)
            {
                Truncate(bar, 0x10000);
                var region = MmioRegion.OverFile(VfioKernel.Linux, bar, 0, 0x10000, "memfd BAR");
                Fill(region, Valid);
                race.Round(
                    () => Hammer(region, 1, failures, ref allOnes, null),
                    () => Hammer(region, 2, failures, ref allOnes, null),
                    () => Hammer(region, 3, failures, ref allOnes, null),
                    () =>
                    {
                        ((IDeviceResource)region).Revoke();
                        Truncate(bar, 0); // the device is gone: its old mapping would be SIGBUS
                    });
                failures.Should().BeEmpty($"round {round}");
                region.Dispose();
            }
        }
    }

    private const uint Valid = 0x5a5a5a5a;

    private static void Fill(MmioRegion region, uint value)
    {
        for (ulong offset = 0; offset < region.Size; offset += 4)
        {
            region.Write32(offset, value);
        }
    }

    private static void FillFile(SafeFd fd, int length, uint value)
    {
        var bytes = new byte[length];
        MemoryMarshal.Cast<byte, uint>(bytes.AsSpan()).Fill(value);
        VfioKernel.Linux.PWrite(fd, bytes, 0).Should().Be(length);
    }

    /// <summary>
    /// Reads and writes every width, and copies unaligned ranges in and out, all over the region until
    /// it is revoked (ObjectDisposedException, the only exception allowed) or, when <paramref name="over"/>
    /// is given, until it says the round is over; records any value that is neither one written nor all-ones.
    /// </summary>
    private static void Hammer(MmioRegion region, int seed, List<string> failures, ref int allOnes, StrongBox<bool>? over)
    {
        var random = new Random(seed);
        Span<byte> copy = stackalloc byte[21];
        Span<byte> valid = stackalloc byte[21];
        valid.Fill(0x5a);
        while (over is null || !Volatile.Read(ref over.Value))
        {
            ulong offset = (ulong)random.Next(0x10000 / 8) * 8;
            try
            {
                ulong copyAt = Math.Min(offset, 0x10000 - 32) + 3;
                region.Read(copyAt, copy);
                region.Write(copyAt, valid);
                if (copy.ContainsAnyExcept((byte)0x5a, (byte)0xff))
                {
                    lock (failures)
                    {
                        failures.Add($"0x{copyAt:x}: copied {Convert.ToHexString(copy)}");
                    }
                }
                uint word = region.Read32(offset);
                ulong wide = region.Read64(offset);
                byte narrow = region.Read8(offset + 1);
                region.Write32(offset + 4, Valid);
                region.Write64(offset, ((ulong)Valid << 32) | Valid);
                if (word == uint.MaxValue && wide == ulong.MaxValue && narrow == 0xff)
                {
                    Interlocked.Increment(ref allOnes);
                }
                else if ((word != Valid && word != uint.MaxValue) || (narrow != 0x5a && narrow != 0xff)
                    || ((uint)wide != Valid && (uint)wide != uint.MaxValue) || ((uint)(wide >> 32) != Valid && (uint)(wide >> 32) != uint.MaxValue))
                {
                    lock (failures)
                    {
                        failures.Add($"0x{offset:x}: read 0x{word:x8}, 0x{wide:x16}, 0x{narrow:x2}");
                    }
                }
            }
            catch (ObjectDisposedException)
            {
                return;
            }
        }
    }

    private static void Truncate(SafeFd fd, long length) =>
        TestLibc.ftruncate(fd.Value, length).Should().Be(0, "ftruncate of the memfd to {0} bytes", length);

    private static partial class TestLibc
    {
        [LibraryImport("libc", SetLastError = true)]
        internal static partial int ftruncate(int fd, long length);
    }
}
