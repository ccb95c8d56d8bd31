using System.Globalization;
using Vfio.Interop;

namespace Vfio.Scenarios;

/// <summary>Assertions for scenarios; each failure throws <see cref="ScenarioFailedException"/>.</summary>
internal static class Check
{
    /// <summary>A seam result: non-negative passes through, a negative errno fails naming the operation.</summary>
    public static int Ok(int rc, string operation)
    {
        if (rc < 0)
        {
            throw new ScenarioFailedException(operation + " failed with " + Errno.Name(-rc) + " (" + Errno.Describe(-rc) + ")");
        }
        return rc;
    }

    /// <summary>A seam result that must be exactly the negative of <paramref name="errno"/>.</summary>
    public static void Fails(int rc, int errno, string operation)
    {
        if (rc != -errno)
        {
            string got = rc < 0 ? Errno.Name(-rc) : "success (" + rc.ToString(CultureInfo.InvariantCulture) + ")";
            throw new ScenarioFailedException(operation + " should fail with " + Errno.Name(errno) + " but gave " + got);
        }
    }

    public static void Equal<T>(T expected, T actual, string what)
        where T : IEquatable<T>
    {
        if (!expected.Equals(actual))
        {
            throw new ScenarioFailedException(FormattableString.Invariant($"{what}: expected {Show(expected)}, got {Show(actual)}"));
        }
    }

    public static void True(bool condition, string what)
    {
        if (!condition)
        {
            throw new ScenarioFailedException(what);
        }
    }

    public static void FlagsSet(uint flags, uint expected, string what)
    {
        if ((flags & expected) != expected)
        {
            throw new ScenarioFailedException(FormattableString.Invariant($"{what}: flags 0x{flags:x} lack 0x{expected & ~flags:x}"));
        }
    }

    /// <summary>Runs <paramref name="action"/> and returns the exception of type <typeparamref name="TException"/> it must throw.</summary>
    public static TException Throws<TException>(Action action, string what)
        where TException : Exception
    {
        try
        {
            action();
        }
        catch (TException e)
        {
            return e;
        }
        throw new ScenarioFailedException(what + " should throw " + typeof(TException).Name + " but did not");
    }

    /// <summary>Awaits <paramref name="action"/> and returns the exception of type <typeparamref name="TException"/> it must throw.</summary>
    public static async Task<TException> ThrowsAsync<TException>(Func<Task> action, string what)
        where TException : Exception
    {
        try
        {
            await action().ConfigureAwait(false);
        }
        catch (TException e)
        {
            return e;
        }
        throw new ScenarioFailedException(what + " should throw " + typeof(TException).Name + " but did not");
    }

    private static string Show<T>(T value) => value switch
    {
        ushort u => "0x" + u.ToString("x4", CultureInfo.InvariantCulture),
        uint u => "0x" + u.ToString("x", CultureInfo.InvariantCulture),
        ulong u => "0x" + u.ToString("x", CultureInfo.InvariantCulture),
        _ => Convert.ToString(value, CultureInfo.InvariantCulture) ?? "null",
    };
}
