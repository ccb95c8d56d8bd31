using System.Text.Json;
using System.Text.Json.Serialization;

namespace Vfio.Cli.Output;

// The documents --json prints, one per command: docs/cli.md describes each field. Their shape is a
// contract: add fields, never rename or remove one without raising Version.

internal static class Schema
{
    /// <summary>The version every document carries; raised when a field changes meaning or goes away.</summary>
    public const int Version = 1;
}

internal sealed record ErrorDocument(int Version, ErrorJson Error);

internal sealed record ErrorJson(string Message, string? Errno, int ExitCode);

internal sealed record FunctionJson(string Address, string Vendor, string Device, string Class, string SubsystemVendor, string Subsystem,
    string? Driver, string? DriverOverride, int? IommuGroup, bool Bridge);

internal sealed record MemberJson(string Name, string? Driver);

internal sealed record GroupJson(int Id, string Kind, bool Viable, string Node, IReadOnlyList<MemberJson> Blocking, IReadOnlyList<FunctionJson> Devices);

internal sealed record ListDocument(int Version, IReadOnlyList<GroupJson> Groups, IReadOnlyList<FunctionJson> Ungrouped);

internal sealed record BoundJson(string Address, int Group, string? OriginalDriver, string? OriginalOverride, bool Changed, string? Driver, string? Record);

internal sealed record BindDocument(int Version, IReadOnlyList<BoundJson> Devices, IReadOnlyList<string> Nodes);

internal sealed record UnboundJson(string Address, string? Driver, bool Restored, string? OriginalDriver, bool Recorded, string? Error);

internal sealed record UnbindDocument(int Version, IReadOnlyList<UnboundJson> Devices, IReadOnlyList<string> Warnings);

internal sealed record IovaRangeJson(string Start, string End);

// Container: for the container interface, who serves /dev/vfio/vfio: "vfio" (vfio's own) or
// "iommufd-compat" (iommufd's compatibility container); null for iommufd.
internal sealed record BackendJson(string Interface, string? Container, string IommuType, string GroupKind, string? GroupNode, string? DeviceNode, uint? Ioas,
    string? LockedMemoryAccounting, IReadOnlyList<ulong> PageSizes, IReadOnlyList<IovaRangeJson> IovaRanges, uint? DmaMappingsAvailable);

internal sealed record DeviceInfoJson(IReadOnlyList<string> Flags, uint Regions, uint Irqs);

internal sealed record SparseAreaJson(string Offset, ulong Size);

internal sealed record RegionTypeJson(string Type, string Subtype);

internal sealed record RegionJson(int Index, string Name, ulong Size, string Offset, IReadOnlyList<string> Flags,
    IReadOnlyList<SparseAreaJson>? SparseAreas, RegionTypeJson? Type, bool MsixMappable, string? Unavailable);

internal sealed record IrqJson(int Index, string Name, uint Count, IReadOnlyList<string> Flags);

internal sealed record CapabilityJson(string Offset, string Id, string Name, int? Version, string? Detail);

internal sealed record ConfigJson(IReadOnlyList<CapabilityJson> Capabilities, IReadOnlyList<CapabilityJson> ExtendedCapabilities);

internal sealed record HotResetDependencyJson(string Address, int Group);

internal sealed record ResetJson(bool FunctionReset, bool HotReset, IReadOnlyList<HotResetDependencyJson> HotResetAffects, string? HotResetUnavailable);

internal sealed record FeatureJson(string Name, int Id, bool Get, bool Set);

internal sealed record MigrationJson(bool Supported, IReadOnlyList<string> Flags);

internal sealed record ShowDocument(int Version, FunctionJson Device, BackendJson Backend, DeviceInfoJson Info, IReadOnlyList<RegionJson> Regions,
    IReadOnlyList<IrqJson> Irqs, ConfigJson Config, ResetJson Reset, IReadOnlyList<FeatureJson> Features, MigrationJson Migration);

internal sealed record FindingJson(string Check, string Severity, string Found, string? Action);

internal sealed record HugePagePoolJson(ulong PageSize, long Total, long Free);

internal sealed record DoctorDocument(int Version, string Worst, bool IommuEnabled, IReadOnlyList<string> Backends, ulong? MemlockLimit,
    bool MemlockExempt, IReadOnlyList<HugePagePoolJson> HugePages, IReadOnlyList<FindingJson> Findings);

internal sealed record MdevTypeJson(string Id, string Name, string? Description, string DeviceApi, int? AvailableInstances);

internal sealed record MdevParentJson(string Name, IReadOnlyList<MdevTypeJson> Types);

internal sealed record MdevJson(string Uuid, string Type, string? Parent, int Group, string? Driver);

internal sealed record MdevListDocument(int Version, IReadOnlyList<MdevParentJson> Parents, IReadOnlyList<MdevJson> Devices);

internal sealed record MdevChangeDocument(int Version, string Uuid, string Type, string? Parent, string Action);

/// <summary>The record <c>vfio bind</c> keeps of a function's original driver, one file per function.</summary>
internal sealed record BindingRecordJson(int Version, string Address, int Group, string? OriginalDriver, string? OriginalOverride,
    DateTimeOffset BoundAt, IReadOnlyList<string> BoundWith);

[JsonSourceGenerationOptions(JsonSerializerDefaults.Web, WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.Never)]
[JsonSerializable(typeof(ErrorDocument))]
[JsonSerializable(typeof(ListDocument))]
[JsonSerializable(typeof(BindDocument))]
[JsonSerializable(typeof(UnbindDocument))]
[JsonSerializable(typeof(ShowDocument))]
[JsonSerializable(typeof(DoctorDocument))]
[JsonSerializable(typeof(MdevListDocument))]
[JsonSerializable(typeof(MdevChangeDocument))]
[JsonSerializable(typeof(BindingRecordJson))]
internal sealed partial class CliJson : JsonSerializerContext;
