using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace Vfio;

/// <summary>
/// Lock rules that check themselves, the .NET form of the kernel's <c>lockdep_assert_held</c>: a method
/// that requires a lock (every <c>*Locked</c> method) states it with <see cref="Held(Lock, string, string)"/>,
/// and a method that must not run under one (it makes syscalls) with <see cref="NotHeld(Lock, string, string)"/>.
/// The checks are compiled into Debug builds only (the test runs); a Release build calls nothing.
/// </summary>
internal static class LockAssert
{
    /// <summary>Fails (Debug builds) unless the calling thread holds <paramref name="lock"/>.</summary>
    [Conditional("DEBUG")]
    public static void Held(Lock @lock, [CallerArgumentExpression(nameof(@lock))] string name = "", [CallerMemberName] string caller = "") =>
        Debug.Assert(@lock.IsHeldByCurrentThread, $"{caller} requires {name} to be held by the calling thread.");

    /// <summary>Fails (Debug builds) unless the calling thread holds the monitor of <paramref name="monitor"/>.</summary>
    [Conditional("DEBUG")]
    public static void Held(object monitor, [CallerArgumentExpression(nameof(monitor))] string name = "", [CallerMemberName] string caller = "") =>
        Debug.Assert(Monitor.IsEntered(monitor), $"{caller} requires {name} to be held by the calling thread.");

    /// <summary>Fails (Debug builds) when the calling thread holds <paramref name="lock"/>: the caller makes syscalls or takes locks that come before it.</summary>
    [Conditional("DEBUG")]
    public static void NotHeld(Lock @lock, [CallerArgumentExpression(nameof(@lock))] string name = "", [CallerMemberName] string caller = "") =>
        Debug.Assert(!@lock.IsHeldByCurrentThread, $"{caller} must not run under {name}.");
}
