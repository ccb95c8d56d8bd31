using System.Globalization;
using System.Text;

namespace Vfio.Testing;

/// <summary>An open file descriptor of the simulated kernel.</summary>
/// <param name="Fd">The descriptor number.</param>
/// <param name="Kind">What it refers to.</param>
/// <param name="Path">The path it was opened from, or the kernel's name for an anonymous file.</param>
public sealed record SimulatedOpenFile(int Fd, SimulatedFileKind Kind, string Path);
