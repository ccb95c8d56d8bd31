using System.Globalization;
using System.Text;

namespace Vfio.Testing;

public sealed partial class SimulatedKernel
{
    /// <summary>The open descriptors, lowest number first.</summary>
    public IReadOnlyList<SimulatedOpenFile> OpenFiles
    {
        get
        {
            using (Enter())
            {
                return [.. Files.All.Select(e => new SimulatedOpenFile(e.Fd, e.File.Kind, e.File.Path))];
            }
        }
    }

    /// <summary>The number of open descriptors of <paramref name="kind"/>.</summary>
    /// <param name="kind">The kind of file.</param>
    public int OpenFileCount(SimulatedFileKind kind)
    {
        using (Enter())
        {
            return Files.All.Count(e => e.File.Kind == kind);
        }
    }

    /// <summary>The number of open descriptors of every kind.</summary>
    public int OpenFileCountTotal
    {
        get
        {
            using (Enter())
            {
                return Files.Count;
            }
        }
    }

    /// <summary>The number of live memory mappings (anonymous memory and mapped device regions).</summary>
    public int MappingCount
    {
        get
        {
            using (Enter())
            {
                return _areas.Count;
            }
        }
    }

    /// <summary>The number of live IOMMU (DMA) mappings over all containers and iommufd IO address spaces.</summary>
    public int DmaMappingCount
    {
        get
        {
            using (Enter())
            {
                return LiveContainersLocked.Sum(c => c.Type1?.Count ?? 0)
                    + IommufdContextsLocked.SelectMany(c => c.Objects).OfType<IoasObject>().Sum(i => i.Areas.Count);
            }
        }
    }

    /// <summary>The number of open eventfd descriptors.</summary>
    public int EventFdCount => OpenFileCount(SimulatedFileKind.EventFd);

    /// <summary>
    /// Throws a <see cref="SimulatedLeakException"/> listing every descriptor (number, kind, path),
    /// memory mapping, DMA mapping and iommufd object (IO address space, bound device, page table) still open.
    /// </summary>
    public void AssertNoLeaks()
    {
        var report = new StringBuilder();
        using (Enter())
        {
            foreach (var (fd, file) in Files.All)
            {
                report.Append(CultureInfo.InvariantCulture, $"  fd {fd}: {file.Kind} {file.Path}\n");
            }
            foreach (var area in _areas.Values)
            {
                report.Append(CultureInfo.InvariantCulture, $"  mapping 0x{area.Address:x} ({area.Length} bytes): {area.Description}\n");
            }
            foreach (var container in LiveContainersLocked)
            {
                foreach (var m in container.Type1?.Mappings ?? [])
                {
                    string groups = string.Join(", ", container.Groups.Select(g => g.Id));
                    report.Append(CultureInfo.InvariantCulture, $"  DMA mapping iova 0x{m.Iova:x} ({m.Size} bytes) -> 0x{m.Vaddr:x}, container of group(s) {groups}\n");
                }
            }
            foreach (var context in IommufdContextsLocked)
            {
                foreach (var obj in context.Objects)
                {
                    report.Append(CultureInfo.InvariantCulture, $"  iommufd {obj.Describe()}\n");
                    foreach (var area in (obj as IoasObject)?.Areas ?? [])
                    {
                        report.Append(CultureInfo.InvariantCulture, $"  DMA mapping iova 0x{area.Iova:x} ({area.Length} bytes) -> 0x{area.UserVa:x}, IOAS {obj.Id}\n");
                    }
                }
            }
        }
        if (report.Length > 0)
        {
            throw new SimulatedLeakException("The simulated kernel still has open resources:\n" + report.ToString().TrimEnd());
        }
    }
}
