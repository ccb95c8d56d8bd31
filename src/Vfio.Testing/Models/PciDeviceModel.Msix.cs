using System.Buffers.Binary;

namespace Vfio.Testing;

// The MSI-X table and pending bit array: registers of the function, in its MSI-X BAR, apart from the
// BAR's other registers (as QEMU's msix.c overlays them on the BAR). A reset masks every vector
// (vector control reads 1), as QEMU's msix_reset and real devices do; the host kernel programs a
// vector's message and unmasks it when a driver attaches an eventfd to it, and masks it again when
// the eventfd goes or MSI-X is disabled.
public partial class PciDeviceModel
{
    private const uint VectorMasked = 1;
    private byte[] _msixTable = [];

    private ulong PbaOffset => MsixPbaOffset ?? ((MsixTableOffset + ((ulong)MsixVectors * 16) + 7) & ~7UL);

    private ulong PbaSize => (ulong)((MsixVectors + 63) / 64) * 8;

    /// <summary>The MSI-X table entry of <paramref name="vector"/> as the device holds it: message address, data and vector control.</summary>
    /// <param name="vector">The vector, below <see cref="MsixVectors"/>.</param>
    public (ulong Address, uint Data, uint VectorControl) ReadMsixEntry(int vector)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(vector);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(vector, MsixVectors);
        lock (Gate)
        {
            var entry = _msixTable.AsSpan(vector * 16, 16);
            return (BinaryPrimitives.ReadUInt64LittleEndian(entry), BinaryPrimitives.ReadUInt32LittleEndian(entry[8..]), BinaryPrimitives.ReadUInt32LittleEndian(entry[12..]));
        }
    }

    private void ResetMsixTable()
    {
        _msixTable = new byte[MsixVectors * 16];
        for (int v = 0; v < MsixVectors; v++)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(_msixTable.AsSpan((v * 16) + 12), VectorMasked);
        }
    }

    /// <summary>A read that falls in the MSI-X table or PBA: the device's own registers. The Gate is held.</summary>
    private bool TryReadMsix(int bar, ulong offset, int size, out ulong value)
    {
        value = 0;
        if (MsixVectors == 0 || bar != MsixBar)
        {
            return false;
        }
        if (offset >= MsixTableOffset && offset < MsixTableOffset + (ulong)_msixTable.Length)
        {
            value = ReadStore(_msixTable, offset - MsixTableOffset, size);
            return true;
        }
        // Pending bits: the simulated device holds no message back while a vector is masked, so none is pending.
        return offset >= PbaOffset && offset < PbaOffset + PbaSize;
    }

    /// <summary>A write that falls in the MSI-X table (stored) or PBA (read only). The Gate is held.</summary>
    private bool TryWriteMsix(int bar, ulong offset, int size, ulong value)
    {
        if (MsixVectors == 0 || bar != MsixBar)
        {
            return false;
        }
        if (offset >= MsixTableOffset && offset < MsixTableOffset + (ulong)_msixTable.Length)
        {
            WriteStore(_msixTable, offset - MsixTableOffset, size, value);
            return true;
        }
        return offset >= PbaOffset && offset < PbaOffset + PbaSize;
    }

    /// <summary>
    /// The host kernel programming vector <paramref name="vector"/> (an eventfd attached: message
    /// written, vector unmasked) or letting it go (masked; the message stays). The Gate is held.
    /// </summary>
    internal void ProgramMsixVectorLocked(int vector, bool inUse)
    {
        LockAssert.Held(Gate);
        if (vector >= MsixVectors)
        {
            return;
        }
        var entry = _msixTable.AsSpan(vector * 16, 16);
        if (inUse)
        {
            // The x86 message address and data the host's interrupt domain writes; the values are the host's business.
            BinaryPrimitives.WriteUInt64LittleEndian(entry, 0xfee0_0000UL | ((ulong)vector << 12));
            BinaryPrimitives.WriteUInt32LittleEndian(entry[8..], 0x4000u + (uint)vector);
        }
        uint control = BinaryPrimitives.ReadUInt32LittleEndian(entry[12..]);
        BinaryPrimitives.WriteUInt32LittleEndian(entry[12..], inUse ? control & ~VectorMasked : control | VectorMasked);
    }

    /// <summary>pci_msix_shutdown: every vector masked. The Gate is held.</summary>
    internal void MaskAllMsixVectorsLocked()
    {
        LockAssert.Held(Gate);
        for (int v = 0; v < MsixVectors; v++)
        {
            ProgramMsixVectorLocked(v, inUse: false);
        }
    }
}
