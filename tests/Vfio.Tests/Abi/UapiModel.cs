using System.Globalization;
using System.Reflection;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Vfio.Interop;

namespace Vfio.Tests.Abi;

/// <summary>One C# field of a uAPI struct, as laid out by the runtime; <see cref="Guard"/> for a field a struct grew.</summary>
internal sealed record UapiField(string Name, int Offset, int Size, string? Guard = null);

/// <summary>A flexible array member: its elements start at <see cref="Offset"/> (the C# struct's size).</summary>
internal sealed record UapiFlexibleArray(string Name, int Offset, int ElementSize);

/// <summary>A uAPI struct as the C# side lays it out.</summary>
internal sealed record UapiStruct(
    string Name,
    int Size,
    IReadOnlyList<UapiField> Fields,
    UapiFlexibleArray? FlexibleArray,
    IReadOnlyList<string> PaddingFields,
    string? Guard,
    int Alignment = 1);

/// <summary>A C enum type mirrored as a C# enum (its values are checked as constants).</summary>
internal sealed record UapiEnum(string Name, int Size, string? Guard);

/// <summary>
/// A constant, ioctl number or enum value; <see cref="CLiteral"/> is its C# value written as C.
/// <see cref="Guard"/> names the macro that must be defined for it to be checked, or, with a leading
/// <c>!</c>, the macro whose definition means a later header removed it.
/// </summary>
internal sealed record UapiConstant(string Name, string CLiteral, string? Guard);

/// <summary>Everything the C# side claims about <c>&lt;linux/vfio.h&gt;</c> and <c>&lt;linux/iommufd.h&gt;</c>.</summary>
internal sealed record UapiModel(
    IReadOnlyList<UapiStruct> Structs,
    IReadOnlyList<UapiEnum> Enums,
    IReadOnlyList<UapiConstant> Constants)
{
    /// <summary>The C struct prefixes of the mirrored headers.</summary>
    public static readonly string[] StructPrefixes = ["vfio_", "iommu_"];

    /// <summary>
    /// Reads the model from the library by reflection: every <c>vfio_*</c> and <c>iommu_*</c> struct and
    /// enum in <c>Vfio.Interop</c> and every const or static readonly field of <see cref="VfioUapi"/> and
    /// <see cref="IommufdUapi"/>, so that nothing added there can escape the check.
    /// </summary>
    public static UapiModel FromLibrary()
    {
        var types = typeof(VfioUapi).Assembly.GetTypes()
            .Where(t => t.Namespace == "Vfio.Interop" && t.IsValueType && IsUapiName(t.Name))
            .OrderBy(t => t.Name, StringComparer.Ordinal)
            .ToList();
        var constants = new[] { typeof(VfioUapi), typeof(IommufdUapi) }
            .SelectMany(t => t.GetFields(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static))
            .Where(f => f.IsLiteral || f.IsInitOnly)
            .OrderBy(f => f.Name, StringComparer.Ordinal);
        return From(types.Where(t => !t.IsEnum), types.Where(t => t.IsEnum), constants);
    }

    /// <summary>Whether a type name is a C struct name of a mirrored header.</summary>
    public static bool IsUapiName(string name) => StructPrefixes.Any(p => name.StartsWith(p, StringComparison.Ordinal));

    public static UapiModel From(IEnumerable<Type> structs, IEnumerable<Type> enums, IEnumerable<FieldInfo> constants)
    {
        var enumList = enums.ToList();
        var constantList = constants.Select(ConstantOf).ToList();
        foreach (var e in enumList)
        {
            foreach (var member in e.GetFields(BindingFlags.Public | BindingFlags.Static))
            {
                constantList.Add(new UapiConstant(
                    member.Name,
                    CLiteral(Convert.ChangeType(member.GetRawConstantValue(), Enum.GetUnderlyingType(e), CultureInfo.InvariantCulture)!),
                    GuardOf(member)));
            }
        }
        return new UapiModel(
            structs.Select(StructOf).ToList(),
            enumList.Select(e => new UapiEnum(e.Name, SizeOf(Enum.GetUnderlyingType(e)), GuardOf(e))).ToList(),
            constantList);
    }

    /// <summary>
    /// The model restricted to what the header defines: items whose guard macro it lacks (or, for
    /// removed items, whose replacement it defines) are dropped and listed in <paramref name="absent"/>.
    /// A struct whose newer fields are dropped is expected at the size of the fields left, rounded up
    /// to its alignment, as C lays out the older struct.
    /// </summary>
    public UapiModel Present(ISet<string> headerMacros, out IReadOnlyList<string> absent)
    {
        bool Has(string? guard) => guard switch
        {
            null => true,
            ['!', .. var replacement] => !headerMacros.Contains(replacement),
            _ => headerMacros.Contains(guard),
        };
        var present = Structs.Where(s => Has(s.Guard)).ToList();
        absent = Structs.Where(s => !Has(s.Guard)).Select(s => "struct " + s.Name)
            .Concat(present.SelectMany(s => s.Fields.Where(f => !Has(f.Guard)).Select(f => $"{s.Name}.{f.Name}")))
            .Concat(Enums.Where(e => !Has(e.Guard)).Select(e => "enum " + e.Name))
            .Concat(Constants.Where(c => !Has(c.Guard)).Select(c => c.Guard![0] == '!' ? c.Name + " (removed)" : c.Name))
            .ToList();
        return new UapiModel(
            present.Select(s => s.Fields.All(f => Has(f.Guard)) ? s : Older(s, s.Fields.Where(f => Has(f.Guard)).ToList())).ToList(),
            Enums.Where(e => Has(e.Guard)).ToList(),
            Constants.Where(c => Has(c.Guard)).ToList());
    }

    private static UapiStruct Older(UapiStruct s, List<UapiField> fields)
    {
        int end = fields.Count == 0 ? 0 : fields.Max(f => f.Offset + f.Size);
        int size = (end + s.Alignment - 1) / s.Alignment * s.Alignment;
        return s with { Size = size, Fields = fields, FlexibleArray = s.FlexibleArray is { } flex ? flex with { Offset = size } : null };
    }

    private static UapiStruct StructOf(Type t)
    {
        var fields = new List<UapiField>();
        var padding = new List<string>();
        foreach (var f in t.GetFields(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance))
        {
            if (f.GetCustomAttribute<PaddingAttribute>() is not null)
            {
                padding.Add(f.Name);
                continue;
            }
            fields.Add(new UapiField(f.Name, (int)Marshal.OffsetOf(t, f.Name), SizeOf(f.FieldType), GuardOf(f)));
        }
        fields.Sort((a, b) => a.Offset.CompareTo(b.Offset));
        int size = SizeOf(t);
        var flex = t.GetCustomAttribute<FlexibleArrayAttribute>() is { } fa
            ? new UapiFlexibleArray(fa.Name, size, SizeOf(fa.ElementType))
            : null;
        return new UapiStruct(t.Name, size, fields, flex, padding, GuardOf(t), AlignOf(t));
    }

    /// <summary>
    /// The alignment C gives a struct of these fields: the largest alignment among its members, where
    /// a primitive aligns to its size (every uAPI 64-bit member is <c>__aligned_u64</c>) and an array
    /// (a C# fixed buffer) to its element.
    /// </summary>
    public static int AlignOf(Type t)
    {
        if (t.IsEnum)
        {
            t = Enum.GetUnderlyingType(t);
        }
        if (t.IsPrimitive || t.IsPointer)
        {
            return SizeOf(t);
        }
        var fields = t.GetFields(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance);
        if (t.GetCustomAttribute<UnsafeValueTypeAttribute>() is not null && fields.Length == 1)
        {
            return AlignOf(fields[0].FieldType); // a fixed buffer's generated struct: its element
        }
        return fields.Select(f => f.GetCustomAttribute<FixedBufferAttribute>()?.ElementType ?? f.FieldType)
            .Select(AlignOf)
            .DefaultIfEmpty(1)
            .Max();
    }

    private static UapiConstant ConstantOf(FieldInfo f)
    {
        object value = (f.IsLiteral ? f.GetRawConstantValue() : f.GetValue(null))
            ?? throw new InvalidOperationException($"{f.Name} has no value");
        return new UapiConstant(f.Name, CLiteral(value), GuardOf(f));
    }

    private static string? GuardOf(MemberInfo m) =>
        m.GetCustomAttribute<UapiSinceAttribute>()?.GuardMacro
        ?? (m.GetCustomAttribute<UapiRemovedAttribute>() is { } removed ? "!" + removed.ReplacementMacro : null);

    /// <summary>The value as a C literal of matching signedness and width.</summary>
    public static string CLiteral(object value) => value switch
    {
        byte or ushort or sbyte or short or int => Convert.ToInt64(value, CultureInfo.InvariantCulture).ToString(CultureInfo.InvariantCulture),
        uint v => v.ToString(CultureInfo.InvariantCulture) + "u",
        long v => v.ToString(CultureInfo.InvariantCulture) + "ll",
        ulong v => v.ToString(CultureInfo.InvariantCulture) + "ull",
        nuint v => ((ulong)v).ToString(CultureInfo.InvariantCulture) + "ull",
        nint v => ((long)v).ToString(CultureInfo.InvariantCulture) + "ll",
        char v => ((int)v).ToString(CultureInfo.InvariantCulture),
        _ => throw new NotSupportedException($"constant of type {value.GetType()} has no C literal form"),
    };

    /// <summary>Size of a field's type as the runtime lays it out (pointers included).</summary>
    public static int SizeOf(Type t)
    {
        if (t.IsPointer || t == typeof(nint) || t == typeof(nuint))
        {
            return IntPtr.Size;
        }
        if (t.IsEnum)
        {
            t = Enum.GetUnderlyingType(t);
        }
        return (int)typeof(Unsafe).GetMethod(nameof(Unsafe.SizeOf))!.MakeGenericMethod(t).Invoke(null, null)!;
    }
}
