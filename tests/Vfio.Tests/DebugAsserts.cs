using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;

namespace Vfio.Tests;

/// <summary>A <see cref="Debug.Assert(bool)"/> that failed while the tests ran.</summary>
public sealed class DebugAssertFailedException(string message) : Exception(message);

/// <summary>
/// Makes every failed <see cref="Debug.Assert(bool)"/> of the library and the simulated kernel (the lock
/// rules of <c>LockAssert</c> among them; the tests run a Debug build) fail the run: the assert
/// throws <see cref="DebugAssertFailedException"/> where it fails, and is also recorded, so that one
/// swallowed by a catch on the way (a hook's error handler, a teardown that logs) still fails the
/// test that ends with <see cref="KernelTest"/>'s checks.
/// </summary>
internal static class DebugAsserts
{
    private static readonly ConcurrentQueue<string> s_failures = new();
    private static readonly AsyncLocal<bool> s_expected = new();

    /// <summary>The asserts that failed so far and were not expected, with where they failed.</summary>
    public static IReadOnlyCollection<string> Failures => s_failures;

    [ModuleInitializer]
    [SuppressMessage("Usage", "CA2255", Justification = "The listener must be in place before any test runs, whichever runs first.")]
    internal static void Install() => Trace.Listeners.Insert(0, new Listener());

    /// <summary>Within the returned scope (this async flow only), a failed assert still throws but is not recorded.</summary>
    public static IDisposable Expect()
    {
        s_expected.Value = true;
        return new Scope();
    }

    private sealed class Scope : IDisposable
    {
        public void Dispose() => s_expected.Value = false;
    }

    private sealed class Listener : TraceListener
    {
        public override void Fail(string? message, string? detailMessage)
        {
            if (!s_expected.Value)
            {
                s_failures.Enqueue($"{message} {detailMessage}{Environment.NewLine}{new StackTrace(1, fNeedFileInfo: true)}");
            }
            throw new DebugAssertFailedException("Debug.Assert failed: " + message);
        }

        public override void Write(string? message)
        {
        }

        public override void WriteLine(string? message)
        {
        }
    }
}
