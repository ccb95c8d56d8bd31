using System.Runtime.InteropServices;

namespace Vfio.Interop;

/// <summary>One capability in an INFO ioctl's chain: its id, version and where it starts in the buffer.</summary>
internal readonly record struct CapabilityEntry(ushort Id, ushort Version, int Offset);

/// <summary>
/// The INFO ioctls' shared protocol: the caller's argsz says how big its buffer is; when the kernel
/// needs more room for capabilities it raises argsz and the caller retries with a bigger buffer.
/// The capability chain is then walked with every offset checked, so a malformed chain (a cycle,
/// an offset outside the buffer, a truncated header) is an error rather than a loop or an
/// out-of-bounds read.
/// </summary>
internal static unsafe class InfoQuery
{
    private const int MaxAttempts = 4;
    private const int MaxSize = 1 << 20;

    /// <summary>Runs an INFO ioctl whose struct starts with argsz, growing the buffer as asked.</summary>
    /// <returns>The buffer, exactly as long as the kernel's final argsz (or the struct, if smaller).</returns>
    public static byte[] Run<T>(VfioKernel kernel, SafeFd fd, nuint request, T initial, string operation, ErrorTarget target)
        where T : unmanaged
    {
        int size = sizeof(T);
        for (int attempt = 0; attempt < MaxAttempts; attempt++)
        {
            var buffer = new byte[size];
            MemoryMarshal.Write(buffer, in initial);
            MemoryMarshal.Write(buffer, (uint)size);
            int rc;
            fixed (byte* p = buffer)
            {
                rc = kernel.Ioctl(fd, request, p);
            }
            VfioErrors.Check(rc, operation, target);
            uint needed = MemoryMarshal.Read<uint>(buffer);
            if (needed <= size)
            {
                return buffer;
            }
            if (needed > MaxSize)
            {
                throw new VfioException($"{operation} ({target}) asked for a {needed}-byte buffer, more than the {MaxSize} bytes the library allows.");
            }
            size = (int)needed;
        }
        throw new VfioException($"{operation} ({target}) kept asking for a bigger buffer after {MaxAttempts} attempts.");
    }

    /// <summary>Walks a capability chain that starts at <paramref name="firstOffset"/> (0: none).</summary>
    public static List<CapabilityEntry> Chain(ReadOnlySpan<byte> buffer, uint firstOffset, int fixedSize, string what, ErrorTarget target = default)
    {
        var caps = new List<CapabilityEntry>();
        var seen = new HashSet<uint>();
        int headerSize = sizeof(vfio_info_cap_header);
        uint offset = firstOffset;
        while (offset != 0)
        {
            if (offset < fixedSize)
            {
                throw Malformed(what, $"a capability at offset {offset} overlaps the {fixedSize}-byte info struct", target);
            }
            if ((long)offset + headerSize > buffer.Length)
            {
                throw Malformed(what, $"a capability header at offset {offset} runs past the {buffer.Length}-byte buffer", target);
            }
            if (!seen.Add(offset))
            {
                throw Malformed(what, $"the chain loops back to offset {offset}", target);
            }
            var header = MemoryMarshal.Read<vfio_info_cap_header>(buffer[(int)offset..]);
            caps.Add(new CapabilityEntry(header.id, header.version, (int)offset));
            offset = header.next;
        }
        return caps;
    }

    /// <summary>Reads a capability struct, checking that it (and <paramref name="trailingBytes"/> after it) fits in the buffer.</summary>
    public static T Read<T>(ReadOnlySpan<byte> buffer, CapabilityEntry cap, string what, long trailingBytes = 0, ErrorTarget target = default)
        where T : unmanaged
    {
        if (cap.Offset + (long)sizeof(T) + trailingBytes > buffer.Length)
        {
            throw Malformed(what, $"capability {cap.Id} at offset {cap.Offset} is truncated", target);
        }
        return MemoryMarshal.Read<T>(buffer[cap.Offset..]);
    }

    /// <summary>The error for a malformed chain; <paramref name="target"/> fills the exception's device, group and region.</summary>
    public static VfioException Malformed(string what, string why, ErrorTarget target = default) =>
        new($"The kernel returned a malformed capability chain for {what}: {why}.", "capability chain", 0, target);
}
