using System.Globalization;
using Vfio.Interop;

namespace Vfio;

/// <summary>
/// Creating and removing mediated devices through sysfs, as Linux 6.1's mdev core defines it
/// (drivers/vfio/mdev/mdev_sysfs.c, mdev_core.c): a UUID written to a type's <c>create</c> makes the
/// device and runs its parent driver's probe, whose failure fails the write; <c>1</c> written to the
/// device's <c>remove</c> removes it, waiting in the kernel while its device file is open.
/// </summary>
internal static class MdevLifecycle
{
    /// <summary>EUSERS: the mdev core's answer when a parent counting instances itself has none left.</summary>
    private const int EUSERS = 87;

    public static async Task<CreatedMdev<TDevice>> CreateAsync<TDevice>(MdevType type, Guid uuid, CancellationToken cancellationToken)
        where TDevice : MdevVfioDevice
    {
        var registry = type.Parent.Registry;
        registry.ThrowIfDisposed();
        // Cancellation is checked before each step that changes something: the create, the
        // registration, the open. Once the mdev exists, a cancellation undoes what was done.
        cancellationToken.ThrowIfCancellationRequested();
        // The driver is chosen before anything is created, so a missing one leaves nothing to undo.
        var driver = registry.Drivers.FirstOrDefault(d => d.HandlesMdevType(type.Id))
            ?? throw new InvalidOperationException(
                $"No driver added to the registry handles mdev type {type.Id}: add an MdevDriver<{typeof(TDevice).Name}> for it with AddDriver before creating the device.");
        string name = uuid.ToString("D", CultureInfo.InvariantCulture);
        CreateDevice(type, uuid);

        // From here the mdev is ours: every failure removes it again.
        VfioDevice? device = null;
        MdevDeviceContext? context = null;
        DeviceReference open = default;
        try
        {
            context = registry.Discovery.DescribeMdev(uuid);
            device = driver.Create(context);
            if (device is not TDevice typed)
            {
                throw new InvalidOperationException(
                    $"Driver {driver.Name} created a {device.GetType().Name} for mdev {name}, not a {typeof(TDevice).Name}.");
            }
            cancellationToken.ThrowIfCancellationRequested();
            registry.Register(device);
            cancellationToken.ThrowIfCancellationRequested();
            open = device.Open();
            var created = new CreatedMdev<TDevice>(type, typed, open);
            registry.CreatedMdevTable.Add(created);
            return created;
        }
        catch (Exception e)
        {
            open.Dispose();
            device ??= context?.Constructed;
            await UndoAsync(registry, type, uuid, device, e).ConfigureAwait(false);
            Log.MdevCreateFailed(registry.Logger, name, type.Id, type.Parent.Name, e);
            throw;
        }
    }

    /// <summary>Creates an mdev and leaves it, nothing registered or opened (MdevType.CreateDevice).</summary>
    public static void CreateDevice(MdevType type, Guid uuid)
    {
        var registry = type.Parent.Registry;
        registry.ThrowIfDisposed();
        string name = uuid.ToString("D", CultureInfo.InvariantCulture);
        Write(registry, type, type.SysfsRelative + "/create", name, uuid);
        Log.MdevCreated(registry.Logger, name, type.Id, type.Parent.Name);
    }

    /// <summary>Unregisters and disposes what creation made of the device, then removes the mdev; failures are logged and attached to the original error.</summary>
    private static async Task UndoAsync(VfioRegistry registry, MdevType type, Guid uuid, VfioDevice? device, Exception error)
    {
        try
        {
            if (device is not null)
            {
                if (device.State == VfioDeviceState.Registered)
                {
                    await registry.UnregisterAsync(device).ConfigureAwait(false);
                }
                device.Dispose();
            }
        }
        catch (Exception undo) when (undo is not OperationCanceledException)
        {
            error.Data["Vfio.UndoError"] = undo.Message;
        }
        try
        {
            Remove(registry, type, uuid);
        }
        catch (VfioException undo)
        {
            error.Data["Vfio.MdevLeft"] = undo.Message;
            Log.MdevRemoveFailed(registry.Logger, uuid.ToString("D", CultureInfo.InvariantCulture), undo);
        }
    }

    /// <summary>Removes an mdev this process created; one already gone counts as removed.</summary>
    public static void Remove(VfioRegistry registry, MdevType type, Guid uuid)
    {
        string name = uuid.ToString("D", CultureInfo.InvariantCulture);
        string dir = SysfsDiscovery.MdevDir(name);
        try
        {
            registry.Sysfs.WriteText(dir + "/remove", "1", new ErrorTarget(Device: name));
        }
        catch (VfioNotFoundException) when (!registry.Sysfs.Exists(dir))
        {
            Log.MdevAlreadyGone(registry.Logger, name);
            return;
        }
        catch (VfioException e)
        {
            throw VfioErrors.Create(e.Errno, $"remove mdev {name} ({type.Id} on {type.Parent.Name})", new ErrorTarget(Device: name),
                "Write 1 to " + registry.Kernel.Sys(dir + "/remove") + " as root to remove it");
        }
        Log.MdevRemoved(registry.Logger, name, type.Id, type.Parent.Name);
    }

    private static void Write(VfioRegistry registry, MdevType type, string path, string value, Guid uuid)
    {
        try
        {
            registry.Sysfs.WriteText(path, value);
        }
        catch (VfioException e)
        {
            throw CreateFailed(registry, type, uuid, e.Errno);
        }
    }

    /// <summary>Says why the kernel refused to create the mdev, and what to do.</summary>
    private static VfioException CreateFailed(VfioRegistry registry, MdevType type, Guid uuid, int errno)
    {
        string name = uuid.ToString("D", CultureInfo.InvariantCulture);
        string operation = $"create mdev {name} of type {type.Id} on {type.Parent.Name}";
        var target = new ErrorTarget(Device: name);
        if (errno == Errno.ENOENT)
        {
            if (!registry.Sysfs.Exists(type.Parent.SysfsRelative))
            {
                return new VfioNotFoundException($"Cannot {operation}: the mdev parent {type.Parent.Name} is gone (no {registry.Kernel.Sys(type.Parent.SysfsRelative)}): its driver was unloaded or its device removed.");
            }
            if (!registry.Sysfs.Exists(type.SysfsRelative))
            {
                return new VfioNotFoundException($"Cannot {operation}: the parent offers no type {type.Id} any more; discover its types again.");
            }
        }
        string? hint = errno switch
        {
            Errno.ENOSPC or EUSERS => $"No instance of {type.Id} is left on {type.Parent.Name} (available_instances: {TryReadAvailable(type)}); remove one of its mdevs first",
            Errno.EEXIST => "An mdev with this UUID exists already (it was not created here and is left alone); pass another UUID, or none for a random one",
            Errno.ENODEV => $"The parent {type.Parent.Name} is being removed",
            Errno.EINVAL => "The kernel refused the UUID or the parent driver's probe refused the device",
            _ => null,
        };
        return VfioErrors.Create(errno, operation, target, hint);
    }

    private static string TryReadAvailable(MdevType type)
    {
        try
        {
            return type.ReadAvailableInstances().ToString(CultureInfo.InvariantCulture);
        }
        catch (VfioException)
        {
            return "unknown";
        }
    }
}
