namespace Vfio.VmTests;

/// <summary>A named check against a kernel; it passes by returning and fails by throwing.</summary>
/// <param name="Name">A short snake_case name, printed on the result line.</param>
/// <param name="Run">The check.</param>
internal sealed record Scenario(string Name, Action<ScenarioContext> Run);

/// <summary>Thrown by a scenario whose check did not hold.</summary>
internal sealed class ScenarioFailedException(string message) : Exception(message);
