using Vfio.Interop;

namespace Vfio.Testing;

/// <summary>
/// A migration data session of <see cref="MigratableDeviceModel"/>, as the vendor drivers create
/// one: the whole stream of a STOP_COPY session is there at once (reads end with 0), a PRE_COPY
/// session gives a new record when the state changed and ENOMSG when nothing is there now.
/// </summary>
internal sealed unsafe class MigrationDataFile(SimulatedKernel kernel, MigratableDeviceModel model, bool saving)
    : MigrationStreamFile(kernel, saving ? "anon_inode:[vfio_mig_save]" : "anon_inode:[vfio_mig_resume]", saving, 0)
{
    /// <summary>All data is there: reads end with 0 (STOP_COPY).</summary>
    public bool Complete { get; set; }

    /// <summary>The state changed since the last record (PRE_COPY).</summary>
    public bool Dirty { get; set; }

    /// <summary>Where the initial PRE_COPY data ends.</summary>
    public long InitialEnd { get; set; }

    public void Disable() => Disabled = true;

    protected override long SaveRead(Span<byte> buffer) => model.SessionRead(this, buffer);

    protected override long ResumeWrite(ReadOnlySpan<byte> buffer) => model.SessionWrite(this, buffer);

    protected override bool HasPreCopyInfo => (model.Capabilities & VfioMigrationCapabilities.PreCopy) != 0;

    protected override int PreCopyInfo(vfio_precopy_info* info)
    {
        int r = model.SessionPreCopyInfo(this, out ulong initial, out ulong dirty);
        if (r < 0)
        {
            return r;
        }
        info->flags = 0;
        info->initial_bytes = initial;
        info->dirty_bytes = dirty;
        return 0;
    }

    public override short PollEvents(short events) => model.SessionPoll(this, events);
}
