using System.Runtime.InteropServices;
using Vfio.Interop;
using Xunit.Abstractions;

namespace Vfio.Tests.Abi;

public class UapiConformanceTests(ITestOutputHelper output)
{
    [Fact]
    public async Task TheCSharpViewEqualsTheMachinesVfioHeader()
    {
        var model = UapiModel.FromLibrary();

        var report = await UapiConformance.CheckAsync(model);

        await WriteReportAsync(report, "the machine's /usr/include", "abi-conformance.txt");
        report.Problems.Should().BeEmpty("the C# view of <linux/vfio.h> must equal the header ({0})", report.Summary);
        report.Structs.Should().Be(model.Structs.Count - report.AbsentFromHeader.Count(a => a.StartsWith("struct ", StringComparison.Ordinal)));
    }

    [NewerUapiHeadersFact]
    public async Task TheCSharpViewEqualsTheNewerKernelsHeadersWithEveryItemPresent()
    {
        var folder = NewerUapiHeaders.Find(out var reason);
        folder.Should().NotBeNull("{0} is set, so the newer kernel's headers must be there: {1}", NewerUapiHeaders.RequiredVariable, reason);
        var model = UapiModel.FromLibrary();

        var report = await UapiConformance.CheckAsync(model, extraArguments: await UapiConformance.IncludeArgumentsAsync(folder!));

        await WriteReportAsync(report, "linux-libc-dev " + NewerUapiHeaders.Version(folder!), "abi-conformance-newer.txt");
        report.Problems.Should().BeEmpty("the C# view must equal the newer kernel's headers ({0})", report.Summary);
        // Everything the library mirrors exists there, except what that kernel removed.
        report.AbsentFromHeader.Should().OnlyContain(a => a.EndsWith(" (removed)", StringComparison.Ordinal));
        report.Structs.Should().Be(model.Structs.Count);
        report.Fields.Should().Be(model.Structs.Sum(s => s.Fields.Count + (s.FlexibleArray is null ? 0 : 1)));
    }

    [Fact]
    public async Task TheMachinesHeaderHasNoIommufdItems()
    {
        // Debian 12's linux-libc-dev is Linux 6.1: no <linux/iommufd.h> (6.2), no VFIO cdev (6.6).
        var model = UapiModel.FromLibrary();

        var report = await UapiConformance.CheckAsync(model);

        var iommufd = model.Structs.Where(s => s.Name.StartsWith("iommu_", StringComparison.Ordinal)).Select(s => "struct " + s.Name);
        report.AbsentFromHeader.Should().Contain(iommufd).And.Contain(
            ["struct vfio_device_bind_iommufd", "VFIO_DEVICE_BIND_IOMMUFD", "IOMMU_IOAS_MAP", "vfio_pci_dependent_device.devid", "vfio_device_info.pad"]);
        report.AbsentFromHeader.Should().NotContain("VFIO_TYPE1_NESTING_IOMMU (removed)");
    }

    private async Task WriteReportAsync(UapiConformanceReport report, string header, string file)
    {
        var line = $"{report.Summary} against {header}";
        output.WriteLine(line);
        foreach (var item in report.AbsentFromHeader)
        {
            output.WriteLine($"  not in this header: {item}");
        }
        foreach (var item in report.PaddingSkipped)
        {
            output.WriteLine($"  padding, no C counterpart: {item}");
        }
        output.WriteLine($"  header macros not mirrored ({report.HeaderMacrosNotMirrored.Count}): {string.Join(' ', report.HeaderMacrosNotMirrored)}");
        await File.WriteAllTextAsync(Path.Combine(AppContext.BaseDirectory, file), line + "\n");
    }

    [Fact]
    public void TheModelReachesEveryKindOfUapiItem()
    {
        var model = UapiModel.FromLibrary();

        model.Structs.Select(s => s.Name).Should().Contain(
            ["vfio_info_cap_header", "vfio_region_info", "vfio_irq_set", "vfio_bitmap", "vfio_device_feature_mig_state"]);
        model.Constants.Select(c => c.Name).Should().Contain(
            ["VFIO_GET_API_VERSION", "VFIO_REGION_INFO_FLAG_MMAP", "VFIO_PCI_CONFIG_REGION_INDEX", "VFIO_DEVICE_STATE_RUNNING_P2P"]);
        model.Enums.Select(e => e.Name).Should().Equal("vfio_device_mig_state");
        model.Structs.Single(s => s.Name == "vfio_irq_set").FlexibleArray.Should().Be(new UapiFlexibleArray("data", 20, 1));
        model.Structs.Select(s => s.Name).Should().Contain(["iommu_ioas_map", "iommu_hw_info", "vfio_device_bind_iommufd"]);
        model.Constants.Select(c => c.Name).Should().Contain(["IOMMU_IOAS_MAP", "IOMMU_OPTION_RLIMIT_MODE", "VFIO_PCI_HOT_RESET_FLAG_DEV_ID"]);
    }

    [Fact]
    public void AStructThatGrewIsExpectedAtItsOlderSizeWhereItsNewerFieldsAreAbsent()
    {
        var model = UapiModel.FromLibrary();

        var at66 = model.Present(new HashSet<string> { "IOMMU_HWPT_ALLOC", "VFIO_DEVICE_BIND_IOMMUFD", "VFIO_DEVICE_ATTACH_IOMMUFD_PT" }, out var absent);
        var at611 = model.Present(new HashSet<string> { "IOMMU_HWPT_ALLOC", "IOMMU_HWPT_GET_DIRTY_BITMAP", "IOMMU_FAULT_QUEUE_ALLOC" }, out _);

        // 6.6's iommu_hwpt_alloc ended at __reserved; 6.7 added 16 bytes, 6.11 eight more.
        at66.Structs.Single(s => s.Name == "iommu_hwpt_alloc").Size.Should().Be(24);
        at611.Structs.Single(s => s.Name == "iommu_hwpt_alloc").Size.Should().Be(48);
        // A u64 field's removal leaves a u32 tail, unpadded: vfio_device_bind_iommufd was 16 bytes.
        at66.Structs.Single(s => s.Name == "vfio_device_bind_iommufd").Size.Should().Be(16);
        at66.Structs.Single(s => s.Name == "vfio_device_attach_iommufd_pt").Size.Should().Be(12);
        at66.Structs.Single(s => s.Name == "vfio_device_info").Size.Should().Be(20);
        absent.Should().Contain(["iommu_hwpt_alloc.fault_id", "vfio_device_bind_iommufd.token_uuid_ptr"]);
    }

    [Fact]
    public void ARemovedItemIsCheckedOnlyWhereItsReplacementIsUndefined()
    {
        var model = UapiModel.FromLibrary();

        var older = model.Present(new HashSet<string>(), out var absentFromOlder);
        var newer = model.Present(new HashSet<string> { "__VFIO_RESERVED_TYPE1_NESTING_IOMMU" }, out var absentFromNewer);

        older.Constants.Select(c => c.Name).Should().Contain("VFIO_TYPE1_NESTING_IOMMU");
        absentFromOlder.Should().NotContain(a => a.StartsWith("VFIO_TYPE1_NESTING_IOMMU", StringComparison.Ordinal));
        newer.Constants.Select(c => c.Name).Should().NotContain("VFIO_TYPE1_NESTING_IOMMU");
        absentFromNewer.Should().Contain("VFIO_TYPE1_NESTING_IOMMU (removed)");
    }

    [Fact]
    public void ItemsFromNewerHeadersAreCheckedExactlyWhereTheHeaderDefinesTheirGuard()
    {
        var model = UapiModel.FromLibrary();

        var older = model.Present(new HashSet<string>(), out var absentFromOlder);
        var newer = model.Present(new HashSet<string> { "VFIO_MIGRATION_PRE_COPY" }, out var absentFromNewer);

        older.Constants.Select(c => c.Name).Should().NotContain("VFIO_DEVICE_STATE_PRE_COPY");
        absentFromOlder.Should().Contain("VFIO_DEVICE_STATE_PRE_COPY");
        newer.Constants.Select(c => c.Name).Should().Contain(["VFIO_DEVICE_STATE_PRE_COPY", "VFIO_DEVICE_STATE_PRE_COPY_P2P", "VFIO_MIGRATION_PRE_COPY"]);
        absentFromNewer.Should().NotContain("VFIO_DEVICE_STATE_PRE_COPY").And.Contain("struct vfio_device_feature_mig_data_size");
    }

    [Fact]
    public void EveryUapiStructIsBlittableWithTheSameSizeManagedAndNative()
    {
        var structs = typeof(VfioUapi).Assembly.GetTypes()
            .Where(t => t.Namespace == "Vfio.Interop" && t.IsValueType && !t.IsEnum && UapiModel.IsUapiName(t.Name));

        foreach (var t in structs)
        {
            Marshal.SizeOf(t).Should().Be(UapiModel.SizeOf(t), $"{t.Name} must marshal as it is laid out");
        }
    }

    [Fact]
    public async Task GccNamesEveryDeliberateMismatch()
    {
        var model = UapiModel.FromLibrary();
        var wrong = model with
        {
            Structs = model.Structs.Select(s => s.Name switch
            {
                "vfio_region_info" => s with { Size = s.Size + 8 },
                "vfio_irq_set" => s with { Fields = s.Fields.Select(f => f.Name == "count" ? f with { Offset = f.Offset + 4 } : f).ToList() },
                "vfio_iommu_type1_info_cap_iova_range" => s with { FlexibleArray = s.FlexibleArray! with { ElementSize = 8 } },
                _ => s,
            }).ToList(),
            Constants = model.Constants.Select(c => c.Name switch
            {
                "VFIO_GET_API_VERSION" => c with { CLiteral = "15205ull" },
                "VFIO_REGION_INFO_FLAG_MMAP" => c with { CLiteral = "8u" },
                _ => c,
            }).Append(new UapiConstant("VFIO_NO_SUCH_MACRO", "1", null)).ToList(),
        };

        var report = await UapiConformance.CheckAsync(wrong);

        output.WriteLine(string.Join('\n', report.Problems));
        report.Problems.Should().HaveCount(6);
        report.Problems.Should().ContainSingle(p => p.StartsWith("sizeof(struct vfio_region_info) is", StringComparison.Ordinal));
        report.Problems.Should().ContainSingle(p => p.StartsWith("offsetof(struct vfio_irq_set, count) is 20", StringComparison.Ordinal));
        report.Problems.Should().ContainSingle(p => p.StartsWith("sizeof(vfio_iommu_type1_info_cap_iova_range.iova_ranges[0]) is 8", StringComparison.Ordinal));
        report.Problems.Should().ContainSingle(p => p.StartsWith("VFIO_GET_API_VERSION is 15205 (0x3B65)", StringComparison.Ordinal));
        report.Problems.Should().ContainSingle(p => p.StartsWith("VFIO_REGION_INFO_FLAG_MMAP is 8", StringComparison.Ordinal));
        report.Problems.Should().ContainSingle(p => p.StartsWith("VFIO_NO_SUCH_MACRO is 1 in C#: ", StringComparison.Ordinal) && p.Contains("undeclared", StringComparison.Ordinal));
    }

    [Fact]
    public async Task PaddingFieldsAreSkippedByNameAndReported()
    {
        var model = UapiModel.From([typeof(vfio_iommu_type1_info)], [], []);

        var report = await UapiConformance.CheckAsync(model);

        report.Problems.Should().BeEmpty();
        report.Fields.Should().Be(4);
        report.PaddingSkipped.Should().Equal("vfio_iommu_type1_info.pad");
    }

    [Fact]
    public async Task AMissingCompilerFailsWithTheInstallHint()
    {
        var act = () => UapiConformance.CheckAsync(UapiModel.FromLibrary(), gcc: "/nonexistent/gcc");

        (await act.Should().ThrowAsync<InvalidOperationException>()).WithMessage("*install gcc and linux-libc-dev*");
    }

    [Fact]
    public async Task AMissingHeaderFailsWithTheInstallHint()
    {
        // -nostdinc hides /usr/include, as on a machine without linux-libc-dev.
        var act = () => UapiConformance.CheckAsync(UapiModel.FromLibrary(), extraArguments: ["-nostdinc"]);

        (await act.Should().ThrowAsync<InvalidOperationException>()).WithMessage("*vfio.h*install gcc and linux-libc-dev*");
    }

    /// <summary>
    /// vfio_iommu_type1_info with its C tail padding spelled out; this header has no <c>pad</c> member,
    /// so the check passes only if the padding field is skipped.
    /// </summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct vfio_iommu_type1_info
    {
        public uint argsz;
        public uint flags;
        public ulong iova_pgsizes;
        public uint cap_offset;
        [Padding] public uint pad;
    }
}
