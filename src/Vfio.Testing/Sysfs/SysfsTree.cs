using Vfio.Interop;

namespace Vfio.Testing;

/// <summary>The simulated sysfs: a tree of folders, attributes and links, resolved as the VFS resolves paths.</summary>
internal sealed class SysfsTree
{
    private const int MaxLinkDepth = 40;

    public SysfsDirectory Root { get; } = new(string.Empty);

    /// <summary>The folder at <paramref name="relativePath"/>, created with its parents when missing.</summary>
    public SysfsDirectory Directory(string relativePath)
    {
        var dir = Root;
        foreach (string part in relativePath.Split('/', StringSplitOptions.RemoveEmptyEntries))
        {
            dir = dir.Directory(part);
        }
        return dir;
    }

    /// <summary>Removes the node at <paramref name="relativePath"/> (and everything below it) when present.</summary>
    public void Remove(string relativePath)
    {
        int slash = relativePath.LastIndexOf('/');
        string parent = slash < 0 ? string.Empty : relativePath[..slash];
        if (Resolve(parent, followLast: true, out var node) == 0 && node is SysfsDirectory dir)
        {
            dir.Remove(relativePath[(slash + 1)..]);
        }
    }

    /// <summary>
    /// Resolves a path relative to the root. Links met on the way are followed; the last one only when
    /// <paramref name="followLast"/>. Returns 0 or a negative errno (ENOENT, ENOTDIR, ELOOP, or a
    /// node's access error).
    /// </summary>
    public int Resolve(string relativePath, bool followLast, out SysfsNode node) =>
        Resolve(Root, relativePath, followLast, 0, out node);

    private int Resolve(SysfsDirectory start, string path, bool followLast, int depth, out SysfsNode node)
    {
        node = Root;
        if (depth > MaxLinkDepth)
        {
            return -40; // ELOOP
        }
        SysfsNode current = start;
        string[] parts = path.Split('/', StringSplitOptions.RemoveEmptyEntries);
        for (int i = 0; i < parts.Length; i++)
        {
            if (current is not SysfsDirectory dir)
            {
                return -Errno.ENOTDIR;
            }
            if (dir.AccessError != 0)
            {
                return -dir.AccessError;
            }
            string part = parts[i];
            if (part == ".")
            {
                continue;
            }
            if (part == "..")
            {
                current = dir.Parent ?? dir;
                continue;
            }
            var child = dir.Child(part);
            if (child is null)
            {
                return -Errno.ENOENT;
            }
            bool last = i == parts.Length - 1;
            if (child is SysfsLink link && (!last || followLast))
            {
                if (link.AccessError != 0)
                {
                    return -link.AccessError;
                }
                int r = Resolve(Root, link.Target, followLast: true, depth + 1, out child);
                if (r != 0)
                {
                    return r;
                }
            }
            current = child;
        }
        node = current;
        return 0;
    }
}
