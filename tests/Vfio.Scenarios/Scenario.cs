namespace Vfio.Scenarios;

/// <summary>A named check against a kernel; it passes by completing and fails by throwing.</summary>
/// <param name="Name">A short snake_case name, printed on the result line.</param>
/// <param name="Run">The check.</param>
internal sealed record Scenario(string Name, Func<ScenarioContext, Task> Run)
{
    /// <summary>A scenario that does not wait for anything.</summary>
    public Scenario(string name, Action<ScenarioContext> run)
        : this(name, context =>
        {
            run(context);
            return Task.CompletedTask;
        })
    {
    }
}

/// <summary>Thrown by a scenario whose check did not hold.</summary>
internal sealed class ScenarioFailedException(string message) : Exception(message);

/// <summary>
/// Thrown by a scenario that cannot apply to the machine it runs on (a kernel or mode without what
/// it checks); the message says why. Reported as skipped, never as passed.
/// </summary>
internal sealed class ScenarioSkippedException(string reason) : Exception(reason);
