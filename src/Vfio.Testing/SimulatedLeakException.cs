using System.Globalization;
using System.Text;

namespace Vfio.Testing;

/// <summary>Thrown by <see cref="SimulatedKernel.AssertNoLeaks"/> when descriptors, mappings or DMA mappings are still open.</summary>
public sealed class SimulatedLeakException : Exception
{
    /// <summary>Creates the exception.</summary>
    public SimulatedLeakException()
        : this("Kernel resources leaked.")
    {
    }

    /// <summary>Creates the exception with a message.</summary>
    /// <param name="message">What leaked.</param>
    public SimulatedLeakException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a message and a cause.</summary>
    /// <param name="message">What leaked.</param>
    /// <param name="innerException">The cause.</param>
    public SimulatedLeakException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
