using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using Vfio;

namespace NvmeDriver;

/// <summary>How a queue pair learns that the controller completed commands.</summary>
public enum NvmeCompletionMode
{
    /// <summary>An MSI-X message on the queue's vector (the completion queue is created with interrupts enabled).</summary>
    Interrupt,

    /// <summary>The driver polls the completion queue's phase tags; the controller sends no interrupt.</summary>
    Polling,
}

/// <summary>One completion queue entry, decoded.</summary>
/// <param name="Result">Dword 0: the command-specific result.</param>
/// <param name="SubmissionHead">How far the controller has consumed the submission queue.</param>
/// <param name="SubmissionQueueId">The submission queue the command came from.</param>
/// <param name="CommandId">The command identifier the driver gave the command.</param>
/// <param name="Status">The status field.</param>
public readonly record struct NvmeCompletion(uint Result, ushort SubmissionHead, ushort SubmissionQueueId, ushort CommandId, NvmeStatus Status);

/// <summary>
/// A submission queue and its completion queue in DMA memory, with their doorbells: the admin queue
/// pair (id 0) or an I/O queue pair. Up to <see cref="Capacity"/> commands are in flight at once,
/// each known by a command identifier from 0 to <see cref="Capacity"/> - 1; an I/O pair keeps one
/// PRP list page per identifier, so a transfer of any size up to <see cref="PrpList.MaxTransferBytes"/>
/// needs no allocation.
/// </summary>
/// <remarks>
/// <para>
/// Two ways to use it. <see cref="ReadAsync"/> and <see cref="WriteAsync"/> run one command and
/// wait for it, one at a time. The I/O path runs many commands at once, allocating nothing:
/// <see cref="TrySubmitRead"/> / <see cref="TrySubmitWrite"/> write entries at the tail,
/// <see cref="RingSubmissionDoorbell"/> tells the controller of all of them in one register write,
/// <see cref="TryTakeCompletion"/> takes the entries the controller posted (phase tag), and
/// <see cref="RingCompletionDoorbell"/> hands their slots back in one write. Completions are found
/// by polling (<see cref="HasCompletion"/>) or by waiting for the queue's MSI-X vector
/// (<see cref="WaitForInterruptAsync"/>).
/// </para>
/// <para>
/// Each doorbell is a register write, which costs a VM exit when the controller is emulated or
/// passed through to a virtual machine. The head doorbell only tells the controller that it has
/// room in the completion queue, so it can wait: with <see cref="CompletionsPerDoorbell"/> above 1
/// it is written once per that many completions taken, as DPDK batches a NIC's receive tail
/// (rx_free_thresh). The controller never finds the queue full for it: before ringing the
/// submission doorbell, the pair writes the head first whenever the entries taken and not yet
/// handed back and the commands in flight could fill the completion queue.
/// </para>
/// <para>A queue pair has one user at a time: the I/O path is not thread-safe, and the two ways must not be mixed.</para>
/// </remarks>
public sealed class NvmeQueuePair : IDisposable
{
    private const int SubmissionEntrySize = 64;
    private const int CompletionEntrySize = 16;

    private readonly NvmeController _controller;
    private readonly MmioRegion _bar0;
    private readonly ulong _submissionDoorbell;
    private readonly ulong _completionDoorbell;
    private readonly DmaBuffer? _prpLists;
    private readonly ushort[] _freeIds;
    private readonly bool[] _inFlight;
    private int _freeCount;
    private int _tail;
    private int _rungTail;
    private int _head;
    private int _taken;
    private bool _phase = true;

    internal NvmeQueuePair(NvmeController controller, MmioRegion bar0, int id, int entries, NvmeCompletionMode completion, int vector, int doorbellStride, bool prpLists)
    {
        _controller = controller;
        _bar0 = bar0;
        Id = id;
        Entries = entries;
        Completion = completion;
        Vector = completion == NvmeCompletionMode.Interrupt ? vector : -1;
        _submissionDoorbell = Doorbell(id, completion: false, doorbellStride);
        _completionDoorbell = Doorbell(id, completion: true, doorbellStride);
        _freeIds = new ushort[Capacity];
        _inFlight = new bool[Capacity];
        for (int i = 0; i < Capacity; i++)
        {
            // Handed out lowest first: a stack, so the top is the lowest free identifier.
            _freeIds[i] = (ushort)(Capacity - 1 - i);
        }
        _freeCount = Capacity;
        var buffers = new List<DmaBuffer>(3);
        try
        {
            Submissions = Allocate(buffers, (ulong)entries * SubmissionEntrySize, DmaAccess.DeviceReads);
            Completions = Allocate(buffers, (ulong)entries * CompletionEntrySize, DmaAccess.DeviceWrites);
            if (prpLists)
            {
                _prpLists = Allocate(buffers, (ulong)Capacity * PrpList.PageSize, DmaAccess.DeviceReads);
            }
        }
        catch
        {
            foreach (var buffer in buffers)
            {
                buffer.Dispose();
            }
            throw;
        }
        Submissions.Span.Clear();
        Completions.Span.Clear();

        DmaBuffer Allocate(List<DmaBuffer> made, ulong length, DmaAccess access)
        {
            var buffer = controller.AllocateDmaBuffer(length, access);
            made.Add(buffer);
            return buffer;
        }
    }

    /// <summary>The queue pair's id: 0 for the admin queues, 1 or more for I/O queues.</summary>
    public int Id { get; }

    /// <summary>Entries in each of the two queues.</summary>
    public int Entries { get; }

    /// <summary>How many commands can be in flight at once: <see cref="Entries"/> - 1 (a full queue keeps one entry empty).</summary>
    public int Capacity => Entries - 1;

    /// <summary>How completions are found.</summary>
    public NvmeCompletionMode Completion { get; }

    /// <summary>The MSI-X vector of the completion queue, or -1 when it is polled.</summary>
    public int Vector { get; }

    /// <summary>How many commands are submitted and not yet taken from the completion queue.</summary>
    public int InFlight => Capacity - _freeCount;

    /// <summary>
    /// How many taken completions <see cref="RingCompletionDoorbell"/> lets accumulate before it writes
    /// the head doorbell; 1 (the default) writes it whenever something was taken.
    /// </summary>
    public int CompletionsPerDoorbell
    {
        get;
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(value, 1);
            field = value;
        }
    } = 1;

    /// <summary>The command identifier the next submission takes, or -1 when the queue pair is full.</summary>
    public int NextCommandId => _freeCount == 0 ? -1 : _freeIds[_freeCount - 1];

    /// <summary>The submission queue's memory (64-byte entries).</summary>
    public DmaBuffer Submissions { get; }

    /// <summary>The completion queue's memory (16-byte entries).</summary>
    public DmaBuffer Completions { get; }

    internal SemaphoreSlim Gate { get; } = new(1, 1);

    /// <summary>True when the controller has posted an entry at the completion queue's head.</summary>
    public bool HasCompletion
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => PhaseMatches(StatusDword(Completions.Span.Slice(_head * CompletionEntrySize, CompletionEntrySize)));
    }

    /// <summary>
    /// Writes a READ of <paramref name="blocks"/> blocks from <paramref name="lba"/> into
    /// <paramref name="destination"/> at <paramref name="offset"/> at the submission queue's tail.
    /// The controller learns of it at the next <see cref="RingSubmissionDoorbell"/>.
    /// </summary>
    /// <param name="ns">The namespace.</param>
    /// <param name="lba">The first block.</param>
    /// <param name="blocks">How many blocks (1 to 65536).</param>
    /// <param name="destination">The buffer, mapped for the device to write.</param>
    /// <param name="offset">Where in the buffer the data goes; a multiple of 4.</param>
    /// <param name="commandId">The command's identifier, which its completion carries.</param>
    /// <returns>False, with nothing written, when <see cref="Capacity"/> commands are in flight.</returns>
    public bool TrySubmitRead(NvmeNamespace ns, ulong lba, int blocks, DmaBuffer destination, ulong offset, out ushort commandId) =>
        TrySubmit(Transfer(NvmeOpcode.Read, ns, lba, blocks), destination, offset, blocks * ns.BlockSize, out commandId);

    /// <summary>Writes a WRITE of <paramref name="blocks"/> blocks from <paramref name="source"/> at <paramref name="offset"/> to <paramref name="lba"/>; see <see cref="TrySubmitRead"/>.</summary>
    /// <param name="ns">The namespace.</param>
    /// <param name="lba">The first block.</param>
    /// <param name="blocks">How many blocks (1 to 65536).</param>
    /// <param name="source">The data, mapped for the device to read.</param>
    /// <param name="offset">Where in the buffer the data starts; a multiple of 4.</param>
    /// <param name="commandId">The command's identifier, which its completion carries.</param>
    /// <returns>False, with nothing written, when <see cref="Capacity"/> commands are in flight.</returns>
    public bool TrySubmitWrite(NvmeNamespace ns, ulong lba, int blocks, DmaBuffer source, ulong offset, out ushort commandId) =>
        TrySubmit(Transfer(NvmeOpcode.Write, ns, lba, blocks), source, offset, blocks * ns.BlockSize, out commandId);

    /// <summary>
    /// Tells the controller of every entry written since the last ring: one write of the tail to the
    /// submission queue's doorbell (preceded by the completion queue's head when the controller could
    /// otherwise run out of room to complete them).
    /// </summary>
    public void RingSubmissionDoorbell()
    {
        if (_tail != _rungTail)
        {
            if (_taken + InFlight > Capacity)
            {
                WriteHead();
            }
            // The entries must be in memory before the controller learns of them.
            Interlocked.MemoryBarrier();
            _bar0.Write32(_submissionDoorbell, (uint)_tail);
            _rungTail = _tail;
        }
    }

    /// <summary>
    /// Takes the entry at the completion queue's head when the controller has posted it (its phase
    /// tag matches this pass over the queue), and frees its command identifier.
    /// </summary>
    /// <param name="completion">The entry.</param>
    /// <returns>False when the controller has posted nothing new.</returns>
    /// <exception cref="InvalidOperationException">The controller completed an identifier that was not in flight.</exception>
    public bool TryTakeCompletion(out NvmeCompletion completion)
    {
        var entry = Completions.Span.Slice(_head * CompletionEntrySize, CompletionEntrySize);
        uint dw3 = StatusDword(entry);
        if (!PhaseMatches(dw3))
        {
            completion = default;
            return false;
        }
        // The volatile read of the phase tag orders the reads of the rest of the entry after it.
        completion = new NvmeCompletion(
            BinaryPrimitives.ReadUInt32LittleEndian(entry),
            BinaryPrimitives.ReadUInt16LittleEndian(entry[8..]),
            BinaryPrimitives.ReadUInt16LittleEndian(entry[10..]),
            (ushort)dw3,
            new NvmeStatus((ushort)(dw3 >> 17)));
        ushort id = (ushort)dw3;
        if (id >= _inFlight.Length || !_inFlight[id])
        {
            ThrowUnknownCompletion(id);
        }
        _inFlight[id] = false;
        _freeIds[_freeCount++] = id;
        if (++_head == Entries)
        {
            _head = 0;
            _phase = !_phase;
        }
        _taken++;
        return true;
    }

    /// <summary>
    /// Hands the completion queue's taken entries back to the controller, one write of the head to
    /// its doorbell, once <see cref="CompletionsPerDoorbell"/> of them have accumulated.
    /// </summary>
    public void RingCompletionDoorbell()
    {
        if (_taken >= CompletionsPerDoorbell)
        {
            WriteHead();
        }
    }

    /// <summary>Waits for the completion queue's MSI-X vector to fire; returns how many times it fired since the last wait.</summary>
    /// <param name="cancellationToken">Stops waiting.</param>
    /// <exception cref="InvalidOperationException">The queue pair is polled.</exception>
    public ValueTask<ulong> WaitForInterruptAsync(CancellationToken cancellationToken = default) =>
        Vector < 0
            ? throw new InvalidOperationException($"Queue pair {Id} of {_controller.Name} is polled: it has no interrupt to wait for.")
            : _controller.Interrupts.WaitAsync(Vector, cancellationToken);

    /// <summary>READ: runs one command and waits for it; see <see cref="TrySubmitRead"/>.</summary>
    /// <param name="ns">The namespace.</param>
    /// <param name="lba">The first block.</param>
    /// <param name="blocks">How many blocks.</param>
    /// <param name="destination">The buffer, mapped for the device to write.</param>
    /// <param name="offset">Where in the buffer the data goes; a multiple of 4.</param>
    /// <param name="cancellationToken">Stops waiting.</param>
    /// <exception cref="NvmeCommandException">The controller completed the command with an error status.</exception>
    public Task ReadAsync(NvmeNamespace ns, ulong lba, int blocks, DmaBuffer destination, ulong offset = 0, CancellationToken cancellationToken = default) =>
        ExecuteAsync("READ", Transfer(NvmeOpcode.Read, ns, lba, blocks), destination, offset, blocks * ns.BlockSize, cancellationToken);

    /// <summary>WRITE: runs one command and waits for it; see <see cref="TrySubmitWrite"/>.</summary>
    /// <param name="ns">The namespace.</param>
    /// <param name="lba">The first block.</param>
    /// <param name="blocks">How many blocks.</param>
    /// <param name="source">The data, mapped for the device to read.</param>
    /// <param name="offset">Where in the buffer the data starts; a multiple of 4.</param>
    /// <param name="cancellationToken">Stops waiting.</param>
    /// <exception cref="NvmeCommandException">The controller completed the command with an error status.</exception>
    public Task WriteAsync(NvmeNamespace ns, ulong lba, int blocks, DmaBuffer source, ulong offset = 0, CancellationToken cancellationToken = default) =>
        ExecuteAsync("WRITE", Transfer(NvmeOpcode.Write, ns, lba, blocks), source, offset, blocks * ns.BlockSize, cancellationToken);

    /// <summary>Frees the queues' memory. Delete the queues on the controller first (<see cref="NvmeController.DeleteIoQueuePairAsync"/>), or disable it.</summary>
    public void Dispose()
    {
        Submissions.Dispose();
        Completions.Dispose();
        _prpLists?.Dispose();
        Gate.Dispose();
    }

    /// <inheritdoc/>
    public override string ToString() => $"queue pair {Id} of {_controller.Name} ({Entries} entries, {(Vector < 0 ? "polled" : $"MSI-X vector {Vector}")})";

    /// <summary>
    /// Submits one command, rings the doorbell and waits for its completion: by interrupt, or by
    /// polling with a yield between looks. One such command at a time per queue pair.
    /// </summary>
    /// <param name="name">The command's name, for logs and errors.</param>
    /// <param name="command">The command; its data pointers are filled from <paramref name="data"/> when given.</param>
    /// <param name="data">The data buffer, or null when the command carries its own pointers (or none).</param>
    /// <param name="offset">Where the data starts in <paramref name="data"/>.</param>
    /// <param name="length">The data's length.</param>
    /// <param name="cancellationToken">Stops waiting.</param>
    internal async Task<NvmeCompletion> ExecuteAsync(string name, SubmissionEntry command, DmaBuffer? data, ulong offset, int length, CancellationToken cancellationToken)
    {
        await Gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (!TrySubmit(command, data, offset, length, out ushort id))
            {
                throw new InvalidOperationException($"{name}: {this} is full; it has {InFlight} commands in flight from the I/O path.");
            }
            RingSubmissionDoorbell();
            NvmeLog.Submitted(_controller.DriverLogger, _controller.Name, name, Id, id);
            while (true)
            {
                if (TryTakeCompletion(out var completion))
                {
                    RingCompletionDoorbell();
                    if (completion.CommandId != id)
                    {
                        throw new InvalidOperationException($"{name} on queue {Id} of {_controller.Name}: the controller completed command {completion.CommandId}, not {id}.");
                    }
                    NvmeLog.Completed(_controller.DriverLogger, _controller.Name, name, Id, id, completion.Status.Value);
                    if (!completion.Status.IsSuccess)
                    {
                        throw new NvmeCommandException(name, Id, completion.Status);
                    }
                    return completion;
                }
                if ((_controller.ReadStatus() & NvmeController.CstsFatal) != 0)
                {
                    throw new InvalidOperationException($"The NVMe controller {_controller.Name} reported a fatal status while running {name}.");
                }
                if (Vector < 0)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    await Task.Yield();
                }
                else
                {
                    await WaitForInterruptAsync(cancellationToken).ConfigureAwait(false);
                }
            }
        }
        finally
        {
            Gate.Release();
        }
    }

    /// <summary>
    /// Writes <paramref name="command"/> at the tail under the lowest free identifier, with PRP1 and
    /// PRP2 for <paramref name="length"/> bytes of <paramref name="data"/> (a PRP list in the
    /// identifier's list page when needed). Checks everything before taking the identifier.
    /// </summary>
    internal bool TrySubmit(SubmissionEntry command, DmaBuffer? data, ulong offset, int length, out ushort commandId)
    {
        if (_freeCount == 0)
        {
            commandId = 0;
            return false;
        }
        ushort id = _freeIds[_freeCount - 1];
        if (data is not null)
        {
            Span<byte> list = default;
            ulong listIova = 0;
            if (PrpList.NeedsList(offset, length))
            {
                if (_prpLists is null)
                {
                    throw new InvalidOperationException($"A {length}-byte transfer needs a PRP list; {this} has no PRP list pages.");
                }
                list = _prpLists.Span.Slice(id * PrpList.PageSize, PrpList.PageSize);
                listIova = _prpLists.Iova + ((ulong)id * PrpList.PageSize);
            }
            (command.Prp1, command.Prp2) = PrpList.Build(data, offset, length, list, listIova);
        }
        command.Write(Submissions.Span.Slice(_tail * SubmissionEntrySize, SubmissionEntrySize), id);
        _freeCount--;
        _inFlight[id] = true;
        if (++_tail == Entries)
        {
            _tail = 0;
        }
        commandId = id;
        return true;
    }

    private void WriteHead()
    {
        _bar0.Write32(_completionDoorbell, (uint)_head);
        _taken = 0;
    }

    private static SubmissionEntry Transfer(byte opcode, NvmeNamespace ns, ulong lba, int blocks)
    {
        ArgumentNullException.ThrowIfNull(ns);
        ArgumentOutOfRangeException.ThrowIfLessThan(blocks, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(blocks, 65536);
        return new SubmissionEntry(opcode)
        {
            NamespaceId = ns.NamespaceId,
            Cdw10 = (uint)lba,
            Cdw11 = (uint)(lba >> 32),
            Cdw12 = (uint)(blocks - 1),
        };
    }

    private static ulong Doorbell(int queueId, bool completion, int stride) =>
        NvmeController.DoorbellBase + ((ulong)((2 * queueId) + (completion ? 1 : 0)) * (ulong)stride);

    /// <summary>Dword 3 of a completion entry (command identifier, phase tag, status), read once, before the rest.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint StatusDword(Span<byte> entry) => Volatile.Read(ref Unsafe.As<byte, uint>(ref entry[12]));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool PhaseMatches(uint dw3) => ((dw3 >> 16) & 1) == (_phase ? 1u : 0u);

    private void ThrowUnknownCompletion(ushort id) =>
        throw new InvalidOperationException($"The NVMe controller {_controller.Name} completed command {id} on queue {Id}, which is not in flight.");
}

/// <summary>The opcodes the driver uses.</summary>
internal static class NvmeOpcode
{
    public const byte DeleteIoSq = 0x00;
    public const byte CreateIoSq = 0x01;
    public const byte DeleteIoCq = 0x04;
    public const byte CreateIoCq = 0x05;
    public const byte Identify = 0x06;
    public const byte Write = 0x01;
    public const byte Read = 0x02;
}

/// <summary>A 64-byte submission queue entry.</summary>
internal struct SubmissionEntry(byte opcode)
{
    public byte Opcode { get; } = opcode;

    public uint NamespaceId { get; init; }

    public ulong Prp1 { get; set; }

    public ulong Prp2 { get; set; }

    public uint Cdw10 { get; init; }

    public uint Cdw11 { get; init; }

    public uint Cdw12 { get; init; }

    public readonly void Write(Span<byte> entry, ushort commandId)
    {
        entry.Clear();
        entry[0] = Opcode;
        BinaryPrimitives.WriteUInt16LittleEndian(entry[2..], commandId);
        BinaryPrimitives.WriteUInt32LittleEndian(entry[4..], NamespaceId);
        BinaryPrimitives.WriteUInt64LittleEndian(entry[24..], Prp1);
        BinaryPrimitives.WriteUInt64LittleEndian(entry[32..], Prp2);
        BinaryPrimitives.WriteUInt32LittleEndian(entry[40..], Cdw10);
        BinaryPrimitives.WriteUInt32LittleEndian(entry[44..], Cdw11);
        BinaryPrimitives.WriteUInt32LittleEndian(entry[48..], Cdw12);
    }
}
