namespace Vfio.Interop;

/// <summary>
/// Marks a uAPI struct whose C definition ends in a flexible array member (<c>__u8 data[]</c>,
/// <c>struct vfio_iova_range iova_ranges[]</c>). The C# struct has no field for it: its size equals
/// C's <c>sizeof</c>, and the array's elements follow the struct in the caller's buffer, starting
/// at <c>sizeof(struct)</c>. The ABI test proves that offset and the element size against the header.
/// </summary>
[AttributeUsage(AttributeTargets.Struct, AllowMultiple = false, Inherited = false)]
internal sealed class FlexibleArrayAttribute(string name, Type elementType) : Attribute
{
    /// <summary>The C name of the flexible array member.</summary>
    public string Name { get; } = name;

    /// <summary>The C# type of one element.</summary>
    public Type ElementType { get; } = elementType;
}

/// <summary>
/// Marks a field that exists only on the C# side (explicit padding the C compiler adds implicitly),
/// so it has no <c>offsetof</c> in the header. The ABI test skips it by name, and says so.
/// </summary>
[AttributeUsage(AttributeTargets.Field, AllowMultiple = false, Inherited = false)]
internal sealed class PaddingAttribute : Attribute;

/// <summary>
/// Marks a struct, field, constant or enum value that appeared in a later uAPI header
/// (<c>&lt;linux/vfio.h&gt;</c>, <c>&lt;linux/iommufd.h&gt;</c>) than the oldest one the library supports.
/// The ABI test checks it only where <see cref="GuardMacro"/> is defined by the header it compiles
/// against, and reports it as absent otherwise. A struct that grew keeps its newest layout here with
/// the newer fields marked: against an older header the test drops them and expects the size of what
/// is left (rounded to the struct's alignment), as the C compiler lays the older struct out.
/// </summary>
[AttributeUsage(AttributeTargets.Struct | AttributeTargets.Field, AllowMultiple = false, Inherited = false)]
internal sealed class UapiSinceAttribute(string kernelVersion, string guardMacro) : Attribute
{
    /// <summary>The first kernel whose uAPI header has the item, e.g. "6.2".</summary>
    public string KernelVersion { get; } = kernelVersion;

    /// <summary>A macro the header defines exactly when it has the item.</summary>
    public string GuardMacro { get; } = guardMacro;
}

/// <summary>
/// Marks a constant a later uAPI header removed (or renamed to a reserved name). The ABI test checks it
/// only where <see cref="ReplacementMacro"/> is not defined by the header it compiles against, and
/// reports it as removed otherwise.
/// </summary>
[AttributeUsage(AttributeTargets.Field, AllowMultiple = false, Inherited = false)]
internal sealed class UapiRemovedAttribute(string kernelVersion, string replacementMacro) : Attribute
{
    /// <summary>The first kernel whose uAPI header lacks the item, e.g. "6.13".</summary>
    public string KernelVersion { get; } = kernelVersion;

    /// <summary>A macro the header defines exactly when the item is gone (its reserved replacement).</summary>
    public string ReplacementMacro { get; } = replacementMacro;
}
