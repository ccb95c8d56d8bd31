using System.Globalization;

namespace Vfio.VmTests;

/// <summary>The benchmarks' command lines: <c>--name value</c> pairs.</summary>
internal static class OptionPairs
{
    /// <summary>Hands each pair to <paramref name="take"/>; false for an odd count or a pair it refuses.</summary>
    public static bool Read(IReadOnlyList<string> args, Func<string, string, bool> take)
    {
        if (args.Count % 2 != 0)
        {
            return false;
        }
        for (int i = 0; i < args.Count; i += 2)
        {
            if (!take(args[i], args[i + 1]))
            {
                return false;
            }
        }
        return true;
    }

    /// <summary>A positive whole number.</summary>
    public static bool Positive(string value, out int result) => int.TryParse(value, CultureInfo.InvariantCulture, out result) && result > 0;
}
