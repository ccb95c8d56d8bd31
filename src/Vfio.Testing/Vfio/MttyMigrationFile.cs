using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio.Testing;

/// <summary>
/// A data file of mtty's migration (an <c>anon_inode</c> "mtty_mig" opened with <c>stream_open</c>):
/// read-only with <c>mtty_save_fops</c> for saving, write-only with <c>mtty_resume_fops</c> for
/// resuming. Neither has a poll operation, so poll reports it ready at once (the VFS's default
/// mask), and reads never wait. Its contents are the model's, guarded by the model's lock.
/// </summary>
internal sealed unsafe class MttyMigrationFile(SimulatedKernel kernel, MttyDeviceModel model, bool saving)
    : MigrationStreamFile(kernel, "anon_inode:mtty_mig", saving, model.MigrationDataSize)
{
    // mtty_disable_file
    public void Disable()
    {
        Disabled = true;
        Length = 0;
        Position = 0;
    }

    public void Seek(long position) => Position = position;

    protected override long SaveRead(Span<byte> buffer) => model.SaveRead(this, buffer);

    protected override long ResumeWrite(ReadOnlySpan<byte> buffer) => model.ResumeWrite(this, buffer);

    // mtty_precopy_ioctl on the saving file; the resuming file has no ioctl.
    protected override bool HasPreCopyInfo => Saving;

    protected override int PreCopyInfo(vfio_precopy_info* info)
    {
        int r = model.PreCopyInfo(this, out ulong initial);
        if (r < 0)
        {
            return r;
        }
        // Copied back from argsz to dirty_bytes: the caller's flags come back as they were (the
        // kernel leaves them alone unless the caller opted in to VFIO_DEVICE_FEATURE_MIG_PRECOPY_INFOv2).
        info->initial_bytes = initial;
        info->dirty_bytes = 0;
        return 0;
    }

    // No poll operation: DEFAULT_POLLMASK.
    public override short PollEvents(short events) => (short)(events & (Flags.POLLIN | Flags.POLLOUT));
}
