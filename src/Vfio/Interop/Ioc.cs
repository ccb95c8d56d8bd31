namespace Vfio.Interop;

/// <summary>
/// The kernel's ioctl number encoding (include/uapi/asm-generic/ioctl.h), computed as the
/// <c>_IOC</c> macros compute it rather than pasted as numbers.
/// </summary>
internal static class Ioc
{
    private const int NRBITS = 8;
    private const int TYPEBITS = 8;
    private const int SIZEBITS = 14;
    private const int NRSHIFT = 0;
    private const int TYPESHIFT = NRSHIFT + NRBITS;
    private const int SIZESHIFT = TYPESHIFT + TYPEBITS;
    private const int DIRSHIFT = SIZESHIFT + SIZEBITS;

    public const uint NONE = 0;
    public const uint WRITE = 1;
    public const uint READ = 2;

    public static nuint _IOC(uint dir, uint type, uint nr, uint size) =>
        (dir << DIRSHIFT) | (type << TYPESHIFT) | (nr << NRSHIFT) | (size << SIZESHIFT);

    public static nuint _IO(uint type, uint nr) => _IOC(NONE, type, nr, 0);

    public static nuint _IOR(uint type, uint nr, uint size) => _IOC(READ, type, nr, size);

    public static nuint _IOW(uint type, uint nr, uint size) => _IOC(WRITE, type, nr, size);

    public static nuint _IOWR(uint type, uint nr, uint size) => _IOC(READ | WRITE, type, nr, size);
}
