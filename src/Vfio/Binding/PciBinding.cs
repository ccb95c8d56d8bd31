using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio;

/// <summary>
/// PCI functions handed to vfio-pci, and the way back to the drivers they had. Binding follows the
/// kernel's own steps (driver_override, unbind from the current driver, drivers_probe), checks
/// everything it can before it changes anything, and undoes what it changed when a later step fails.
/// Disposing the binding restores the original drivers unless <see cref="Keep"/> was called.
/// </summary>
/// <remarks>
/// <para>
/// Refused with nothing changed: a function that does not exist; vfio-pci not loaded; no IOMMU group
/// (unless vfio's unsafe no-IOMMU mode is on); a bridge; a group whose other members are bound to
/// kernel drivers (named, with their drivers) when <see cref="PciBindOptions.WholeGroup"/> is off, or
/// that cannot become viable even with it; a driver the kernel does not let go of (no <c>unbind</c>
/// file). Once the functions are on vfio-pci the binding waits, bounded and cancellably, for the group
/// node <c>/dev/vfio/N</c> (or the device's cdev <c>/dev/vfio/devices/vfioN</c>) and gives it to the
/// requested owner.
/// </para>
/// <para>
/// Restoring unbinds each function from vfio-pci, puts its driver_override back (clears it), binds the
/// original driver and asks the kernel to probe. A function whose group is open in some process is
/// refused unless <see cref="PciBindOptions.WaitForRelease"/> is set; then the kernel blocks the unbind
/// and asks the process for the device (its REQ interrupt) until it lets go.
/// </para>
/// </remarks>
public sealed class PciBinding : IAsyncDisposable
{
    private const string VfioPci = "vfio-pci";
    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(20);

    private readonly PciBindOptions _options;
    private bool _done;

    private PciBinding(VfioKernel kernel, IReadOnlyList<PciBoundFunction> functions, IReadOnlyList<string> nodes, PciBindOptions options)
    {
        Kernel = kernel;
        Functions = functions;
        Nodes = nodes;
        _options = options;
    }

    /// <summary>The kernel the functions were bound on.</summary>
    public VfioKernel Kernel { get; }

    /// <summary>
    /// Every function the binding concerns, in the order they were bound: those asked for and, with
    /// <see cref="PciBindOptions.WholeGroup"/>, the other members of their groups. Those already on a
    /// vfio driver have <see cref="PciBoundFunction.Changed"/> false and are never restored.
    /// </summary>
    public IReadOnlyList<PciBoundFunction> Functions { get; }

    /// <summary>The device nodes that appeared: group nodes (<c>/dev/vfio/N</c>) and device cdevs (<c>/dev/vfio/devices/vfioN</c>).</summary>
    public IReadOnlyList<string> Nodes { get; }

    /// <summary>
    /// Binds PCI functions to vfio-pci; see the remarks of <see cref="PciBinding"/>. Either every function
    /// ends on vfio-pci with its node present, or the error says why and every function is as before.
    /// </summary>
    /// <param name="kernel">The kernel.</param>
    /// <param name="addresses">The functions to bind.</param>
    /// <param name="options">Settings; defaults when null.</param>
    /// <param name="progress">Told about waits that last longer than <see cref="PciBindOptions.ProgressInterval"/>.</param>
    /// <param name="cancellationToken">Stops waiting for the node; what was bound is then undone.</param>
    /// <returns>The binding; dispose it to restore the original drivers, or <see cref="Keep"/> it.</returns>
    /// <exception cref="VfioNotFoundException">No such function, no IOMMU group, or vfio-pci is not loaded.</exception>
    /// <exception cref="VfioGroupNotViableException">The group has other members on kernel drivers (named) and cannot become viable as asked.</exception>
    /// <exception cref="VfioNotSupportedException">A function is a bridge.</exception>
    /// <exception cref="VfioBusyException">The kernel will not release a function from its driver.</exception>
    /// <exception cref="VfioException">A step failed (the undo's own failures are in the exception's Data).</exception>
    public static async Task<PciBinding> BindAsync(VfioKernel kernel, IEnumerable<PciAddress> addresses, PciBindOptions? options = null,
        IProgress<PciBindingWait>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        ArgumentNullException.ThrowIfNull(addresses);
        options ??= new PciBindOptions();
        var run = new Run(kernel, options, progress);
        var plan = run.Plan([.. addresses.Distinct()]);
        var applied = new List<Step>();
        try
        {
            foreach (var step in plan.Where(s => s.Changed))
            {
                applied.Add(step);
                run.Apply(step);
            }
            var nodes = await run.WaitForNodesAsync(plan, cancellationToken).ConfigureAwait(false);
            run.Chown(nodes);
            var functions = plan.Select(s => new PciBoundFunction(s.Address, run.GroupOf(s.Address), s.Before.Driver, s.Before.DriverOverride, s.Changed)).ToList();
            return new PciBinding(kernel, functions, nodes, options);
        }
        catch (Exception e)
        {
            run.Undo(applied, e);
            throw;
        }
    }

    /// <summary>Restores the original drivers of the functions this binding changed (the unchanged ones stay on vfio); see <see cref="RestoreAsync(VfioKernel, IEnumerable{PciBoundFunction}, PciBindOptions?, IProgress{PciBindingWait}?, CancellationToken)"/>.</summary>
    /// <param name="progress">Told about waits for a process to release a device.</param>
    /// <param name="cancellationToken">Stops waiting for a release (the kernel keeps its unbind pending).</param>
    /// <returns>The functions as they are afterwards.</returns>
    public async Task<IReadOnlyList<PciFunction>> RestoreAsync(IProgress<PciBindingWait>? progress = null, CancellationToken cancellationToken = default)
    {
        _done = true;
        return await RestoreAsync(Kernel, Functions.Where(f => f.Changed).Reverse(), _options, progress, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Leaves the functions on vfio-pci: disposing the binding will not restore them. Restore later with <see cref="Functions"/>.</summary>
    public void Keep() => _done = true;

    /// <summary>Restores the original drivers unless the binding was kept or restored already.</summary>
    public async ValueTask DisposeAsync()
    {
        if (!_done)
        {
            await RestoreAsync().ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Gives functions back to their original drivers: unbinds each from vfio-pci, restores its
    /// driver_override (clears it), binds the original driver and asks the kernel to probe. A function
    /// whose original driver is unknown (null) gets whatever driver the probe finds for it.
    /// </summary>
    /// <param name="kernel">The kernel.</param>
    /// <param name="functions">The functions, as a <see cref="PciBinding"/> recorded them (restored in this order).</param>
    /// <param name="options">Settings (<see cref="PciBindOptions.WaitForRelease"/>); defaults when null.</param>
    /// <param name="progress">Told about waits for a process to release a device.</param>
    /// <param name="cancellationToken">Stops waiting for a release (the kernel keeps its unbind pending).</param>
    /// <returns>The functions as they are afterwards.</returns>
    /// <exception cref="VfioBusyException">A function's group is open in some process and <see cref="PciBindOptions.WaitForRelease"/> is off.</exception>
    /// <exception cref="VfioException">A function could not be restored; the others were still tried, and the message names each failure.</exception>
    public static Task<IReadOnlyList<PciFunction>> RestoreAsync(VfioKernel kernel, IEnumerable<PciBoundFunction> functions, PciBindOptions? options = null,
        IProgress<PciBindingWait>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        ArgumentNullException.ThrowIfNull(functions);
        var run = new Run(kernel, options ?? new PciBindOptions(), progress);
        return run.ReleaseAllAsync([.. functions], restore: true, cancellationToken);
    }

    /// <summary>
    /// Unbinds functions from vfio-pci and clears a driver_override of vfio-pci, leaving them without a
    /// driver (functions not on a vfio driver are left as they are).
    /// </summary>
    /// <param name="kernel">The kernel.</param>
    /// <param name="addresses">The functions.</param>
    /// <param name="options">Settings (<see cref="PciBindOptions.WaitForRelease"/>); defaults when null.</param>
    /// <param name="progress">Told about waits for a process to release a device.</param>
    /// <param name="cancellationToken">Stops waiting for a release (the kernel keeps its unbind pending).</param>
    /// <returns>The functions as they are afterwards.</returns>
    /// <exception cref="VfioNotFoundException">No such function.</exception>
    /// <exception cref="VfioBusyException">A function's group is open in some process and <see cref="PciBindOptions.WaitForRelease"/> is off.</exception>
    public static Task<IReadOnlyList<PciFunction>> UnbindAsync(VfioKernel kernel, IEnumerable<PciAddress> addresses, PciBindOptions? options = null,
        IProgress<PciBindingWait>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        ArgumentNullException.ThrowIfNull(addresses);
        var list = addresses.Distinct().Select(a => PciFunction.Read(kernel, a)).ToList();
        var run = new Run(kernel, options ?? new PciBindOptions(), progress);
        return run.ReleaseAllAsync([.. list.Select(f => new PciBoundFunction(f.Address, f.IommuGroup ?? -1, null, null))], restore: false, cancellationToken);
    }

    /// <summary>One function of a bind: what it was, and whether it is to be moved.</summary>
    private sealed record Step(PciFunction Before, bool Changed)
    {
        public PciAddress Address => Before.Address;

        public bool OverrideWritten { get; set; }

        public bool Unbound { get; set; }

        public bool Probed { get; set; }
    }

    /// <summary>The work of one call: the kernel, its sysfs, the settings and the log.</summary>
    private sealed class Run(VfioKernel kernel, PciBindOptions options, IProgress<PciBindingWait>? progress)
    {
        private readonly SysfsReader _sysfs = new(kernel);
        private readonly ILogger _logger = (options.LoggerFactory ?? NullLoggerFactory.Instance).CreateLogger<PciBinding>();

        private static string Dir(PciAddress address) => SysfsDiscovery.PciDir(address);

        // A driver's folder: the driver's name (read from a link, or kept in a record) is checked first.
        private static string DriverDir(string driver) => KernelNames.Join("bus/pci/drivers", KernelNameKind.Driver, driver);

        public int GroupOf(PciAddress address) => SysfsDiscovery.TryReadGroup(_sysfs, Dir(address)).Id ?? -1;

        // ---- Bind: check everything first ------------------------------------------------------

        public List<Step> Plan(List<PciAddress> addresses)
        {
            if (addresses.Count == 0)
            {
                throw new ArgumentException("No PCI function to bind.", nameof(addresses));
            }
            var targets = addresses.Select(a => PciFunction.Read(kernel, a)).ToList();
            if (!_sysfs.Exists(DriverDir(VfioPci)))
            {
                throw new VfioNotFoundException(
                    $"Cannot bind {Names(targets)}: vfio-pci is not loaded (no {kernel.Sys(DriverDir(VfioPci))}). Load it with `modprobe vfio-pci` (`vfio doctor` checks the rest).");
            }
            bool noIommu = _sysfs.ReadText("module/vfio/parameters/enable_unsafe_noiommu_mode") is "Y" or "1";
            var steps = new List<Step>();
            var seen = new HashSet<PciAddress>();
            foreach (var target in targets)
            {
                if (target.IsBridge)
                {
                    throw new VfioNotSupportedException(string.Create(CultureInfo.InvariantCulture,
                        $"Cannot bind {target.Address}: it is a PCI bridge (class {target.ClassCode:x6}), which vfio-pci does not take; bind the devices behind it instead."));
                }
                if (target.IommuGroup is null && !noIommu)
                {
                    throw new VfioNotFoundException(
                        $"Cannot bind {target.Address}: it has no IOMMU group, so vfio-pci cannot take it. Turn the IOMMU on (intel_iommu=on or amd_iommu=on on the kernel command line; `vfio doctor` says which), or, without DMA isolation, load vfio with enable_unsafe_noiommu_mode=1.");
                }
                if (seen.Add(target.Address))
                {
                    steps.Add(new Step(target, !target.IsBoundToVfio));
                }
            }
            foreach (int group in targets.Where(t => t.IommuGroup is not null).Select(t => t.IommuGroup!.Value).Distinct().ToList())
            {
                PlanGroup(group, targets, steps, seen);
            }
            foreach (var step in steps.Where(s => s.Changed && s.Before.Driver is not null))
            {
                string driver = step.Before.Driver!;
                if (!_sysfs.Exists(DriverDir(driver) + "/unbind"))
                {
                    throw new VfioBusyException(
                        $"Cannot bind {step.Address}: the kernel will not release it from {driver}, which has no unbind file ({kernel.Sys(DriverDir(driver))}: a driver built with suppress_bind_attrs). Nothing was changed.");
                }
            }
            return steps;
        }

        /// <summary>Checks one group of the targets and, with WholeGroup, adds its other members.</summary>
        private void PlanGroup(int groupId, List<PciFunction> targets, List<Step> steps, HashSet<PciAddress> seen)
        {
            var group = IommuGroupInfo.Read(_sysfs, groupId);
            var others = group.Members.Where(m => !targets.Any(t => t.Address.ToString() == m.Name)).ToList();
            var blocking = others.Where(m => m.BlocksGroup).ToList();
            string asked = Names(targets.Where(t => t.IommuGroup == groupId));
            if (!options.WholeGroup)
            {
                if (blocking.Count > 0)
                {
                    var named = blocking.Select(m => $"{m.Name} is bound to {m.Driver}").ToList();
                    throw new VfioGroupNotViableException(
                        $"Cannot bind {asked}: IOMMU group {groupId} would not be viable, because {string.Join(", ", named)}. " +
                        "Bind the whole group (vfio bind --group, PciBindOptions.WholeGroup) or unbind those devices first. Nothing was changed.",
                        groupId, named);
                }
                return;
            }
            var stuck = new List<string>();
            foreach (var member in others)
            {
                if (!PciAddress.TryParse(member.Name, CultureInfo.InvariantCulture, out var address))
                {
                    if (member.BlocksGroup)
                    {
                        stuck.Add($"{member.Name} (not a PCI function) is bound to {member.Driver}");
                    }
                    continue;
                }
                var function = PciFunction.Read(kernel, address);
                if (function.IsBridge)
                {
                    if (function.BlocksGroup)
                    {
                        stuck.Add($"the bridge {member.Name} is bound to {member.Driver}, and vfio-pci cannot take a bridge");
                    }
                    continue;
                }
                if (seen.Add(address))
                {
                    steps.Add(new Step(function, !function.IsBoundToVfio));
                }
            }
            if (stuck.Count > 0)
            {
                throw new VfioGroupNotViableException(
                    $"Cannot bind {asked}: IOMMU group {groupId} cannot become viable: {string.Join("; ", stuck)}. Unbind those devices first. Nothing was changed.",
                    groupId, stuck);
            }
        }

        private static string Names(IEnumerable<PciFunction> functions) => string.Join(", ", functions.Select(f => f.Address.ToString()));

        // ---- Bind: the changes, and their undo --------------------------------------------------

        public void Apply(Step step)
        {
            var address = step.Address;
            var target = new ErrorTarget(Device: address.ToString());
            _sysfs.WriteText(Dir(address) + "/driver_override", VfioPci, target);
            step.OverrideWritten = true;
            if (step.Before.Driver is { } driver)
            {
                _sysfs.WriteText(DriverDir(driver) + "/unbind", address.ToString(), target);
                step.Unbound = true;
                if (_sysfs.ReadLinkName(Dir(address) + "/driver") is { } still)
                {
                    throw new VfioBusyException($"The kernel did not release {address} from {still}: it is still bound after the unbind.");
                }
            }
            _sysfs.WriteText("bus/pci/drivers_probe", address.ToString(), target);
            step.Probed = true;
            string? now = _sysfs.ReadLinkName(Dir(address) + "/driver");
            if (now != VfioPci)
            {
                throw new VfioException(
                    $"vfio-pci did not take {address} (it is {(now is null ? "bound to no driver" : "bound to " + now)} after drivers_probe): the kernel log (dmesg) says why.");
            }
            BindingLog.Bound(_logger, address.ToString(), step.Before.Driver ?? "no driver");
        }

        /// <summary>Puts back every applied step, last first; failures are logged and added to the error's Data.</summary>
        public void Undo(List<Step> applied, Exception error)
        {
            for (int i = applied.Count - 1; i >= 0; i--)
            {
                var step = applied[i];
                try
                {
                    string address = step.Address.ToString();
                    var target = new ErrorTarget(Device: address);
                    if ((step.Probed || step.Unbound) && _sysfs.ReadLinkName(Dir(step.Address) + "/driver") == VfioPci)
                    {
                        _sysfs.WriteText(DriverDir(VfioPci) + "/unbind", address, target);
                    }
                    if (step.OverrideWritten)
                    {
                        _sysfs.WriteText(Dir(step.Address) + "/driver_override", step.Before.DriverOverride ?? "\n", target);
                    }
                    if (step.Unbound && step.Before.Driver is { } original && BindOriginal(step.Address, original) is { } bindError)
                    {
                        throw bindError;
                    }
                    BindingLog.Undone(_logger, address, step.Before.Driver ?? "no driver");
                }
                catch (VfioException undo)
                {
                    error.Data["Vfio.UndoError." + step.Address] = undo.Message;
                    BindingLog.UndoFailed(_logger, step.Address.ToString(), undo);
                }
            }
        }

        /// <summary>Binds a function to a driver by its bind file, falling back to a probe; returns the bind's error, if any.</summary>
        private VfioException? BindOriginal(PciAddress address, string driver)
        {
            var target = new ErrorTarget(Device: address.ToString());
            VfioException? failed = null;
            if (_sysfs.Exists(DriverDir(driver) + "/bind"))
            {
                try
                {
                    _sysfs.WriteText(DriverDir(driver) + "/bind", address.ToString(), target);
                }
                catch (VfioException e)
                {
                    failed = e;
                }
            }
            if (_sysfs.ReadLinkName(Dir(address) + "/driver") is null)
            {
                _sysfs.WriteText("bus/pci/drivers_probe", address.ToString(), target);
            }
            return failed;
        }

        // ---- Bind: the nodes --------------------------------------------------------------------

        /// <summary>
        /// Waits until each group of the plan has its node, or each asked device its cdev; returns the
        /// nodes present. Polls: devtmpfs (and udev) create the nodes after the probe returned.
        /// </summary>
        public async Task<List<string>> WaitForNodesAsync(List<Step> plan, CancellationToken cancellationToken)
        {
            var started = Stopwatch.GetTimestamp();
            var nextReport = options.ProgressInterval;
            while (true)
            {
                var nodes = new List<string>();
                var missing = new List<string>();
                foreach (var group in plan.GroupBy(s => GroupOf(s.Address)))
                {
                    var (_, kind) = SysfsDiscovery.TryReadGroup(_sysfs, Dir(group.First().Address));
                    string node = IommuGroup.NodePathFor(kernel, group.Key, kind ?? IommuGroupKind.Iommu);
                    var cdevs = group.Select(s => CdevOf(s.Address)).ToList();
                    bool groupNode = Exists(node);
                    if (groupNode)
                    {
                        nodes.Add(node);
                    }
                    nodes.AddRange(cdevs.Where(c => c is not null && Exists(c)).Select(c => c!));
                    if (!groupNode && (cdevs.Any(c => c is null) || !cdevs.All(c => Exists(c!))))
                    {
                        missing.Add(node);
                    }
                }
                if (missing.Count == 0)
                {
                    return nodes;
                }
                var elapsed = Stopwatch.GetElapsedTime(started);
                if (elapsed >= nextReport)
                {
                    progress?.Report(new PciBindingWait(string.Join(", ", missing) + " to appear", elapsed, options.NodeTimeout));
                    nextReport = elapsed + options.ProgressInterval;
                }
                if (elapsed >= options.NodeTimeout)
                {
                    throw new VfioNotFoundException(string.Create(CultureInfo.InvariantCulture,
                        $"{string.Join(", ", missing)} did not appear within {options.NodeTimeout.TotalSeconds:0.#} s of binding to vfio-pci: is devtmpfs mounted on {kernel.DevRoot}, or does an udev rule remove it? Nothing was kept."));
                }
                await Task.Delay(PollInterval, cancellationToken).ConfigureAwait(false);
            }
        }

        /// <summary>The device's cdev (<c>/dev/vfio/devices/vfioN</c>) when the kernel gives it one, else null.</summary>
        private string? CdevOf(PciAddress address) =>
            SysfsDiscovery.CdevOf(_sysfs, Dir(address)) is { } name ? kernel.Dev(KernelNames.Join("vfio/devices", KernelNameKind.Cdev, name)) : null;

        private bool Exists(string path) => kernel.Stat(path, out _) == 0;

        public void Chown(List<string> nodes)
        {
            if (options.NodeUserId is null && options.NodeGroupId is null)
            {
                return;
            }
            foreach (string node in nodes)
            {
                int rc = kernel.Chown(node, options.NodeUserId ?? -1, options.NodeGroupId ?? -1);
                if (rc < 0)
                {
                    VfioErrors.Throw(-rc, "chown " + node, hint: -rc == Errno.EPERM ? "Changing a node's owner needs root (CAP_CHOWN)" : null);
                }
                BindingLog.NodeOwned(_logger, node, options.NodeUserId ?? -1, options.NodeGroupId ?? -1);
            }
        }

        // ---- Restore and unbind -----------------------------------------------------------------

        public async Task<IReadOnlyList<PciFunction>> ReleaseAllAsync(List<PciBoundFunction> functions, bool restore, CancellationToken cancellationToken)
        {
            var failures = new List<string>();
            VfioBusyException? busy = null;
            foreach (var function in functions)
            {
                try
                {
                    await ReleaseAsync(function, restore, cancellationToken).ConfigureAwait(false);
                }
                catch (VfioBusyException e)
                {
                    busy ??= e;
                    failures.Add(e.Message);
                }
                catch (VfioException e)
                {
                    failures.Add(e.Message);
                }
            }
            if (failures.Count == 1 && busy is not null)
            {
                throw busy;
            }
            if (failures.Count > 0)
            {
                throw new VfioException(string.Join(" ", failures));
            }
            return [.. functions.Select(f => PciFunction.Read(kernel, f.Address))];
        }

        private async Task ReleaseAsync(PciBoundFunction function, bool restore, CancellationToken cancellationToken)
        {
            var address = function.Address;
            var current = PciFunction.Read(kernel, address);
            var target = new ErrorTarget(Device: address.ToString());
            if (current.IsBoundToVfio)
            {
                await UnbindFromVfioAsync(current, cancellationToken).ConfigureAwait(false);
            }
            else if (!restore)
            {
                return; // not on vfio: nothing to unbind
            }
            if (restore || current.DriverOverride == VfioPci)
            {
                _sysfs.WriteText(Dir(address) + "/driver_override", restore ? function.OriginalOverride ?? "\n" : "\n", target);
            }
            if (!restore)
            {
                BindingLog.Unbound(_logger, address.ToString());
                return;
            }
            VfioException? bindError = null;
            string? original = function.OriginalDriver is { } o && !KernelDrivers.IsVfio(o) ? o : null;
            if (_sysfs.ReadLinkName(Dir(address) + "/driver") is null)
            {
                if (original is null)
                {
                    _sysfs.WriteText("bus/pci/drivers_probe", address.ToString(), target);
                }
                else
                {
                    bindError = await BindOriginalAsync(function, original, cancellationToken).ConfigureAwait(false);
                }
            }
            string? now = _sysfs.ReadLinkName(Dir(address) + "/driver");
            BindingLog.Restored(_logger, address.ToString(), now ?? "no driver");
            if (original is not null && now != original)
            {
                if (bindError is VfioBusyException busy)
                {
                    throw busy;
                }
                string why = bindError is not null ? bindError.Message.TrimEnd('.')
                    : !_sysfs.Exists(DriverDir(original)) ? $"{original} is not loaded (modprobe it)"
                    : "the probe did not bind it (dmesg says why)";
                throw new VfioException($"Could not give {address} back to {original}: it is bound to {now ?? "no driver"}; {why}.");
            }
        }

        /// <summary>
        /// Binds the original driver back. A driver that uses the DMA API cannot probe while user space
        /// still owns the group's DMA (EBUSY): the process that held the device may close the group a
        /// moment after the device, so the bind is retried, bounded by the node timeout.
        /// </summary>
        private async Task<VfioException?> BindOriginalAsync(PciBoundFunction function, string driver, CancellationToken cancellationToken)
        {
            var started = Stopwatch.GetTimestamp();
            var nextReport = options.ProgressInterval;
            while (true)
            {
                var error = BindOriginal(function.Address, driver);
                if (error is not { Errno: Errno.EBUSY })
                {
                    return error;
                }
                var elapsed = Stopwatch.GetElapsedTime(started);
                if (elapsed >= nextReport)
                {
                    progress?.Report(new PciBindingWait($"IOMMU group {function.GroupId} to be released so that {driver} can take {function.Address} back", elapsed, options.NodeTimeout));
                    nextReport = elapsed + options.ProgressInterval;
                }
                if (elapsed >= options.NodeTimeout)
                {
                    return new VfioBusyException(string.Create(CultureInfo.InvariantCulture,
                        $"{driver} cannot take {function.Address} back: a process still holds IOMMU group {function.GroupId} attached to a VFIO container (EBUSY for {elapsed.TotalSeconds:0.#} s). Close it, then restore again."), error);
                }
                await Task.Delay(PollInterval, cancellationToken).ConfigureAwait(false);
            }
        }

        /// <summary>
        /// Unbinds a function from its vfio driver. A function whose group some process has open is
        /// refused unless WaitForRelease; then the kernel blocks the write until the process lets go
        /// (it signals the device's REQ interrupt meanwhile), and progress is reported.
        /// </summary>
        private async Task UnbindFromVfioAsync(PciFunction function, CancellationToken cancellationToken)
        {
            string address = function.Address.ToString();
            string? holder = GroupHolder(function);
            if (holder is not null && !options.WaitForRelease)
            {
                throw new VfioBusyException(
                    $"{address} is in use: {holder}. The kernel would block the unbind until that process closes the device. Stop its driver first, or unbind with --wait (PciBindOptions.WaitForRelease) to have the kernel ask it for the device.");
            }
            string file = DriverDir(function.Driver!) + "/unbind";
            var write = Task.Factory.StartNew(() => _sysfs.WriteText(file, address, new ErrorTarget(Device: address)),
                CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
            var started = Stopwatch.GetTimestamp();
            while (!write.IsCompleted)
            {
                await Task.WhenAny(write, Task.Delay(options.ProgressInterval, cancellationToken)).ConfigureAwait(false);
                if (write.IsCompleted)
                {
                    break;
                }
                cancellationToken.ThrowIfCancellationRequested();
                progress?.Report(new PciBindingWait(
                    $"the process holding {address} to release it (the kernel asked it through the device's REQ interrupt)",
                    Stopwatch.GetElapsedTime(started), null));
            }
            await write.ConfigureAwait(false);
        }

        /// <summary>Who holds the function's group open ("group 7 is open in another process"), or null when nobody does.</summary>
        private string? GroupHolder(PciFunction function)
        {
            if (function.IommuGroup is not int group)
            {
                return null;
            }
            string node = IommuGroup.NodePathFor(kernel, group, function.GroupKind ?? IommuGroupKind.Iommu);
            int rc = kernel.Open(node, Flags.O_RDWR, out var fd);
            if (rc == 0)
            {
                fd.Dispose();
                return null;
            }
            return rc == -Errno.EBUSY
                ? string.Create(CultureInfo.InvariantCulture, $"its group {group} is open ({node}) in a process that may be using it")
                : null;
        }
    }
}
