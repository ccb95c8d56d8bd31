using System.Globalization;
using Microsoft.Extensions.Logging;

namespace Vfio;

/// <summary>
/// The mdevs a registry created and has not removed yet: the only ones it ever removes, when it is
/// disposed. Creation adds one once its device is registered and open; removal takes it out.
/// </summary>
internal sealed class CreatedMdevTable
{
    // Guards _created. A leaf: no other lock is taken and no syscall is made while it is held.
    private readonly Lock _lock = new();
    private readonly List<CreatedMdev> _created = [];

    /// <summary>A snapshot of the mdevs created and not removed.</summary>
    public IReadOnlyList<CreatedMdev> All
    {
        get
        {
            lock (_lock)
            {
                return [.. _created];
            }
        }
    }

    public void Add(CreatedMdev mdev)
    {
        lock (_lock)
        {
            _created.Add(mdev);
        }
    }

    public void Remove(CreatedMdev mdev)
    {
        lock (_lock)
        {
            _created.Remove(mdev);
        }
    }

    /// <summary>
    /// Removes every mdev still here (closed, unregistered, disposed, removed); a failure is logged and
    /// the rest go on. A cancellation stops it, leaving the mdevs not yet removed here.
    /// </summary>
    public async Task RemoveAllAsync(ILogger logger, CancellationToken cancellationToken)
    {
        foreach (var mdev in All)
        {
            try
            {
                await mdev.RemoveAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (VfioException e)
            {
                Log.MdevRemoveFailed(logger, mdev.Uuid.ToString("D", CultureInfo.InvariantCulture), e);
            }
        }
    }
}
