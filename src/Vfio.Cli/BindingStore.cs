using System.Text.Json;
using Vfio.Cli.Output;

namespace Vfio.Cli;

/// <summary>
/// The records <c>vfio bind</c> keeps of each function's original driver, one JSON file per function
/// (<c>/run/vfio-dotnet/bindings/0000:00:06.0.json</c>), so that a later process can restore it.
/// <c>/run</c> is a tmpfs: the records go with a reboot, as the bindings do.
/// </summary>
internal sealed class BindingStore(string directory)
{
    public string Directory { get; } = directory;

    public string PathOf(PciAddress address) => Path.Combine(Directory, address + ".json");

    /// <summary>Creates the folder, so that a bind fails before it changes anything when the records cannot be kept.</summary>
    public void EnsureWritable()
    {
        try
        {
            System.IO.Directory.CreateDirectory(Directory);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new IOException($"Cannot keep binding records in {Directory}: {e.Message} Run as root (binding needs root anyway).", e);
        }
    }

    public string Write(BindingRecordJson record)
    {
        string path = PathOf(PciAddress.Parse(record.Address));
        string temporary = path + ".tmp";
        File.WriteAllText(temporary, JsonSerializer.Serialize(record, CliJson.Default.BindingRecordJson));
        File.Move(temporary, path, overwrite: true);
        return path;
    }

    /// <summary>
    /// The record of a function, or null when there is none. A record is trusted only as far as it is
    /// checked: it must be for this function, and its driver names must be driver names (they become
    /// sysfs paths when the function is restored; the library checks them as PciBoundFunction is made).
    /// </summary>
    /// <exception cref="IOException">The record is there but cannot be read, or is not valid (the message says why).</exception>
    public BindingRecordJson? Read(PciAddress address)
    {
        string path = PathOf(address);
        if (!File.Exists(path))
        {
            return null;
        }
        BindingRecordJson record;
        try
        {
            record = JsonSerializer.Deserialize(File.ReadAllText(path), CliJson.Default.BindingRecordJson)
                ?? throw new IOException($"The binding record {path} is empty.");
        }
        catch (JsonException e)
        {
            throw Invalid(path, e.Message, e);
        }
        if (record.Address != address.ToString())
        {
            throw Invalid(path, $"it is for {record.Address}, not {address}", null);
        }
        try
        {
            _ = ToBoundFunction(record, address, record.Group);
        }
        catch (ArgumentException e)
        {
            throw Invalid(path, e.Message, e);
        }
        return record;
    }

    /// <summary>What a record says of its function, as the library restores it.</summary>
    public static PciBoundFunction ToBoundFunction(BindingRecordJson? record, PciAddress address, int groupId) =>
        new(address, groupId, record?.OriginalDriver, record?.OriginalOverride);

    private static IOException Invalid(string path, string why, Exception? inner) =>
        new($"The binding record {path} is not valid ({why}); delete it, and restore the driver by hand.", inner);

    public void Delete(PciAddress address) => File.Delete(PathOf(address));
}
