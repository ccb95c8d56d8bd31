using Vfio.Interop;

namespace Vfio;

/// <summary>
/// A kernel limit stopped a DMA allocation: the type1 IOMMU's mapping limit (<c>dma_entry_limit</c>),
/// the locked-memory limit (<c>RLIMIT_MEMLOCK</c>, <c>ulimit -l</c>) or the pool of free hugepages
/// (<c>nr_hugepages</c>). The message says which limit and how to raise it.
/// </summary>
public class VfioResourceLimitException : VfioException
{
    /// <inheritdoc cref="VfioException(string)"/>
    public VfioResourceLimitException(string message) : base(message)
    {
        Limit = string.Empty;
    }

    /// <inheritdoc cref="VfioException(string, Exception)"/>
    public VfioResourceLimitException(string message, Exception innerException) : base(message, innerException)
    {
        Limit = string.Empty;
    }

    /// <inheritdoc cref="VfioException()"/>
    public VfioResourceLimitException()
    {
        Limit = string.Empty;
    }

    internal VfioResourceLimitException(string message, string limit)
        : base(message)
    {
        Limit = limit;
    }

    internal VfioResourceLimitException(string message, string limit, string operation, int errno, ErrorTarget target)
        : base(message, operation, errno, target)
    {
        Limit = limit;
    }

    /// <summary>The limit's name: <see cref="DmaEntryLimit"/>, <see cref="MemoryLock"/> or <see cref="HugePages"/>.</summary>
    public string Limit { get; }

    /// <summary>The type1 IOMMU driver's <c>dma_entry_limit</c> module parameter: DMA mappings per container.</summary>
    public const string DmaEntryLimit = "dma_entry_limit";

    /// <summary>The locked-memory resource limit (<c>RLIMIT_MEMLOCK</c>, <c>ulimit -l</c>): pinned DMA memory.</summary>
    public const string MemoryLock = "RLIMIT_MEMLOCK";

    /// <summary>The pool of reserved hugepages (<c>/proc/sys/vm/nr_hugepages</c>).</summary>
    public const string HugePages = "nr_hugepages";
}
