namespace Vfio.Testing;

/// <summary>A node of the simulated sysfs tree: a folder, an attribute or a symbolic link.</summary>
internal abstract class SysfsNode(string name)
{
    public string Name { get; } = name;

    public SysfsDirectory? Parent { get; set; }

    /// <summary>A positive errno every access to this node fails with (a test's permission setting), or 0.</summary>
    public int AccessError { get; set; }

    /// <summary>The path from the sysfs root, without a leading slash ("" for the root).</summary>
    public string RelativePath => Parent is null ? string.Empty
        : Parent.Parent is null ? Name
        : Parent.RelativePath + "/" + Name;
}

/// <summary>A sysfs folder.</summary>
internal sealed class SysfsDirectory(string name) : SysfsNode(name)
{
    private readonly SortedDictionary<string, SysfsNode> _children = new(StringComparer.Ordinal);

    public IEnumerable<string> Names => _children.Keys;

    public SysfsNode? Child(string name) => _children.GetValueOrDefault(name);

    public T Add<T>(T node)
        where T : SysfsNode
    {
        node.Parent = this;
        _children[node.Name] = node;
        return node;
    }

    /// <summary>The sub-folder <paramref name="name"/>, created when missing.</summary>
    public SysfsDirectory Directory(string name) =>
        _children.GetValueOrDefault(name) as SysfsDirectory ?? Add(new SysfsDirectory(name));

    public SysfsAttribute Attribute(string name, Func<string>? show, Func<string, int>? store = null) =>
        Add(new SysfsAttribute(name, show, store));

    /// <summary>A binary attribute (bin_attribute, as a PCI function's <c>config</c>): its bytes are read outside the kernel lock.</summary>
    public SysfsAttribute BinaryAttribute(string name, Func<byte[]> read) => Add(new SysfsAttribute(name, null, null) { Binary = read });

    public SysfsLink Link(string name, string target) => Add(new SysfsLink(name, target));

    public void Remove(string name) => _children.Remove(name);
}

/// <summary>
/// A sysfs attribute: <see cref="Show"/> produces its text, <see cref="Store"/> takes a write and
/// returns 0 or a negative errno. A missing callback makes the attribute write-only or read-only.
/// </summary>
internal sealed class SysfsAttribute(string name, Func<string>? show, Func<string, int>? store) : SysfsNode(name)
{
    public Func<string>? Show { get; } = show;

    public Func<string, int>? Store { get; } = store;

    /// <summary>A binary attribute's read: called without the kernel lock (it may take a device model's lock).</summary>
    public Func<byte[]>? Binary { get; init; }

    public bool Readable => Show is not null || Binary is not null;
}

/// <summary>A symbolic link; <see cref="Target"/> is a path from the sysfs root.</summary>
internal sealed class SysfsLink(string name, string target) : SysfsNode(name)
{
    public string Target { get; } = target;

    /// <summary>The target relative to the link's folder, as the kernel writes sysfs links.</summary>
    public string RelativeTarget
    {
        get
        {
            string[] from = Parent!.RelativePath.Split('/', StringSplitOptions.RemoveEmptyEntries);
            string[] to = Target.Split('/', StringSplitOptions.RemoveEmptyEntries);
            int common = 0;
            while (common < from.Length && common < to.Length && from[common] == to[common])
            {
                common++;
            }
            var parts = Enumerable.Repeat("..", from.Length - common).Concat(to.Skip(common));
            return string.Join('/', parts);
        }
    }
}
