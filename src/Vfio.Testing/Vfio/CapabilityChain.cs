using System.Runtime.InteropServices;
using Vfio.Interop;

namespace Vfio.Testing;

/// <summary>
/// An INFO ioctl's capability chain as Linux 6.1 builds it (vfio_info_cap_add): the capabilities
/// follow the info struct in the order added, each right after the previous one with no padding
/// (6.1 does not align them to 8 bytes; later kernels do, so readers must not rely on either), and
/// each header's <c>next</c> is an offset from the start of the info struct (0 ends the chain).
/// </summary>
internal sealed class CapabilityChain
{
    private readonly List<byte[]> _capabilities = [];

    public int Size => _capabilities.Sum(c => c.Length);

    public bool IsEmpty => _capabilities.Count == 0;

    /// <summary>Adds a capability: its fixed part (starting with the header) and the array that follows it.</summary>
    public void Add<T>(T capability, ushort id, ushort version, ReadOnlySpan<byte> trailing = default)
        where T : unmanaged
    {
        int fixedSize = Marshal.SizeOf<T>();
        int size = fixedSize + trailing.Length;
        byte[] bytes = new byte[size];
        MemoryMarshal.Write(bytes, in capability);
        trailing.CopyTo(bytes.AsSpan(fixedSize));
        var header = new vfio_info_cap_header { id = id, version = version, next = 0 };
        MemoryMarshal.Write(bytes, in header);
        _capabilities.Add(bytes);
    }

    /// <summary>Writes the chain at <paramref name="infoSize"/> bytes past <paramref name="info"/>, offsets from <paramref name="info"/>.</summary>
    public unsafe void WriteAfter(byte* info, int infoSize)
    {
        int offset = infoSize;
        for (int i = 0; i < _capabilities.Count; i++)
        {
            byte[] cap = _capabilities[i];
            int next = i == _capabilities.Count - 1 ? 0 : offset + cap.Length;
            var span = new Span<byte>(info + offset, cap.Length);
            cap.CopyTo(span);
            ref var header = ref MemoryMarshal.AsRef<vfio_info_cap_header>(span);
            header.next = (uint)next;
            offset += cap.Length;
        }
    }
}
