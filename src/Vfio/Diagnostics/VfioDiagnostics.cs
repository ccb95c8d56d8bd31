using System.Globalization;
using Vfio.Interop;
using static Vfio.Interop.Interop;

namespace Vfio;

/// <summary>How much a finding of <see cref="VfioDiagnostics"/> matters.</summary>
public enum DiagnosticSeverity
{
    /// <summary>As it should be.</summary>
    Ok,

    /// <summary>Worth knowing; nothing to fix.</summary>
    Info,

    /// <summary>Works, but something will bite (no isolation, a node a user cannot open, no hugepages).</summary>
    Warning,

    /// <summary>VFIO cannot work this way; the finding says what to do.</summary>
    Error,
}

/// <summary>One thing <see cref="VfioDiagnostics"/> checked.</summary>
/// <param name="Check">What was checked, a stable id ("iommu", "modules", "memlock", "group.7").</param>
/// <param name="Severity">How much it matters.</param>
/// <param name="Found">What was found, with the paths and values read.</param>
/// <param name="Action">What to do, or null when nothing needs doing.</param>
public sealed record DiagnosticFinding(string Check, DiagnosticSeverity Severity, string Found, string? Action = null);

/// <summary>The ways to reach a device through VFIO that the kernel offers.</summary>
[Flags]
public enum VfioBackends
{
    /// <summary>None.</summary>
    None = 0,

    /// <summary>
    /// The legacy container and group files (<c>/dev/vfio/vfio</c>, <c>/dev/vfio/N</c>): the library's
    /// <see cref="VfioBackend.Legacy"/>, for devices without a cdev (and no-IOMMU devices) or when forced.
    /// </summary>
    LegacyContainer = 1,

    /// <summary>
    /// iommufd (<c>/dev/iommu</c>) with device cdevs (<c>/dev/vfio/devices/vfioN</c>), Linux 6.6 and
    /// later: the library's <see cref="VfioBackend.Iommufd"/>, which it chooses for devices with a cdev.
    /// </summary>
    Iommufd = 2,

    /// <summary>vfio's unsafe no-IOMMU mode is on: devices without an IOMMU can be used, with no DMA isolation.</summary>
    UnsafeNoIommu = 4,
}

/// <summary>A hugepage pool (<c>/sys/kernel/mm/hugepages/hugepages-*</c>).</summary>
/// <param name="PageSize">The page size in bytes.</param>
/// <param name="Total">Pages reserved (<c>nr_hugepages</c>).</param>
/// <param name="Free">Pages not in use (<c>free_hugepages</c>).</param>
public sealed record HugePagePool(ulong PageSize, long Total, long Free);

/// <summary>Settings of <see cref="VfioDiagnostics.Run"/>.</summary>
public sealed record VfioDiagnosticsOptions
{
    /// <summary>The DMA memory a driver will map, in bytes: checked against the locked-memory limit and the free hugepages. Null skips those comparisons.</summary>
    public ulong? DmaBytes { get; init; }
}

/// <summary>What <see cref="VfioDiagnostics.Run"/> found: each finding, and the facts it read.</summary>
/// <param name="Findings">Each check's finding, in the order checked.</param>
/// <param name="IommuEnabled">Whether the kernel has an IOMMU on.</param>
/// <param name="Backends">The VFIO interfaces available.</param>
/// <param name="MemoryLockLimit">RLIMIT_MEMLOCK's soft limit in bytes, or null when unlimited.</param>
/// <param name="MemoryLockExempt">Whether this process has CAP_IPC_LOCK, so the limit does not apply to its DMA mappings.</param>
/// <param name="HugePages">The hugepage pools, smallest page first.</param>
public sealed record VfioDiagnosticReport(IReadOnlyList<DiagnosticFinding> Findings, bool IommuEnabled, VfioBackends Backends,
    ulong? MemoryLockLimit, bool MemoryLockExempt, IReadOnlyList<HugePagePool> HugePages)
{
    /// <summary>The most severe finding's severity.</summary>
    public DiagnosticSeverity Worst => Findings.Count == 0 ? DiagnosticSeverity.Ok : Findings.Max(f => f.Severity);
}

/// <summary>
/// Checks what VFIO needs on this machine and says, for each thing, what was found and what to do:
/// the IOMMU, the vfio modules and the interfaces they offer, the locked-memory limit, hugepages,
/// the permissions on the device nodes, and the groups of devices bound to vfio.
/// </summary>
/// <remarks>Reads only; changes nothing. Everything goes through the kernel seam, so it runs on the simulated kernel too.</remarks>
public static class VfioDiagnostics
{
    /// <summary>Runs every check.</summary>
    /// <param name="kernel">The kernel to look at.</param>
    /// <param name="options">Settings; defaults when null.</param>
    public static VfioDiagnosticReport Run(VfioKernel kernel, VfioDiagnosticsOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(kernel);
        return new Checks(kernel, options ?? new VfioDiagnosticsOptions()).Run();
    }

    private sealed class Checks(VfioKernel kernel, VfioDiagnosticsOptions options)
    {
        private readonly SysfsReader _sysfs = new(kernel);
        private readonly List<DiagnosticFinding> _findings = [];
        private string? _release;

        private void Add(string check, DiagnosticSeverity severity, string found, string? action = null) =>
            _findings.Add(new DiagnosticFinding(check, severity, found, action));

        public VfioDiagnosticReport Run()
        {
            var groups = IommuGroupInfo.ReadAll(kernel);
            string? noIommuMode = _sysfs.ReadText(NoIommuParameter);
            bool noIommuParameter = noIommuMode is not null;
            bool unsafeNoIommu = noIommuMode is "Y" or "1";
            bool iommu = CheckIommu(groups, unsafeNoIommu);
            var container = FindContainer();
            CheckModules(container);
            var backends = CheckBackends(iommu, container, noIommuParameter, unsafeNoIommu);
            var (limit, exempt) = CheckMemoryLock();
            var pools = CheckHugePages();
            CheckPermissions();
            CheckGroups(groups);
            return new VfioDiagnosticReport(_findings, iommu, backends, limit, exempt, pools);
        }

        private const string NoIommuParameter = "module/vfio/parameters/enable_unsafe_noiommu_mode";

        // ---- IOMMU ------------------------------------------------------------------------------

        private bool CheckIommu(IReadOnlyList<IommuGroupInfo> groups, bool unsafeNoIommu)
        {
            string[] units = _sysfs.List("class/iommu");
            int realGroups = groups.Count(g => g.Kind == IommuGroupKind.Iommu);
            if (units.Length > 0 || realGroups > 0)
            {
                Add("iommu", DiagnosticSeverity.Ok, string.Create(CultureInfo.InvariantCulture,
                    $"IOMMU on: {(units.Length > 0 ? string.Join(", ", units) : "unnamed")} ({realGroups} IOMMU groups in {kernel.Sys("kernel/iommu_groups")})."));
                return true;
            }
            string none = $"No IOMMU is on: {kernel.Sys("class/iommu")} is empty and there are no IOMMU groups.";
            var severity = unsafeNoIommu ? DiagnosticSeverity.Warning : DiagnosticSeverity.Error;
            string noIommuNote = unsafeNoIommu
                ? " Meanwhile vfio's unsafe no-IOMMU mode is on: devices can be bound, with no DMA isolation."
                : " Without an IOMMU only vfio's unsafe no-IOMMU mode is left (vfio.enable_unsafe_noiommu_mode=1: no DMA isolation, taints the kernel).";
            if (_sysfs.Exists("firmware/acpi/tables/DMAR"))
            {
                Add("iommu", severity, none + " The firmware describes an Intel IOMMU (ACPI DMAR table), but the kernel did not turn it on.",
                    "Add intel_iommu=on to the kernel command line (GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub) and reboot; iommu=pt as well keeps the host's own devices fast.");
            }
            else if (_sysfs.Exists("firmware/acpi/tables/IVRS"))
            {
                Add("iommu", severity, none + " The firmware describes an AMD IOMMU (ACPI IVRS table), but the kernel did not turn it on.",
                    "Remove amd_iommu=off or iommu=off from the kernel command line (the AMD IOMMU is on by default) and reboot.");
            }
            else
            {
                Add("iommu", severity, none + " The firmware describes none either (no ACPI DMAR or IVRS table): this machine has no IOMMU to turn on.",
                    "On bare metal, enable VT-d (Intel) or AMD-Vi/IOMMU in the firmware setup, then boot with intel_iommu=on (Intel). In a virtual machine, give it a virtual IOMMU (QEMU: -M q35 -device intel-iommu,caching-mode=on)." + noIommuNote);
            }
            return false;
        }

        // ---- Modules ----------------------------------------------------------------------------

        private const string Type1Module = "module/vfio_iommu_type1";

        private void CheckModules(ContainerKind container)
        {
            // vfio_iommu_type1 serves vfio's own container only: iommufd's compatibility container
            // emulates type1 itself, and without any container (CONFIG_VFIO_CONTAINER off, vfio
            // loaded) nothing needs it.
            bool type1Needed = container == ContainerKind.Vfio || (container == ContainerKind.None && !_sysfs.Exists("module/vfio"));
            (string Module, string Path, string Role)[] modules =
            [
                ("vfio", "module/vfio", "the VFIO core"),
                ("vfio-pci", "bus/pci/drivers/vfio-pci", "hands PCI devices to user space"),
                .. type1Needed ? [("vfio_iommu_type1", Type1Module, "the legacy container's IOMMU driver")] : Array.Empty<(string, string, string)>(),
            ];
            var missing = modules.Where(m => !_sysfs.Exists(m.Path)).ToList();
            if (missing.Count == 0)
            {
                Add("modules", DiagnosticSeverity.Ok, container switch
                {
                    ContainerKind.IommufdCompat => $"vfio and vfio-pci are loaded; vfio_iommu_type1 is not needed (and not there: no {kernel.Sys(Type1Module)}): iommufd serves {kernel.Dev("vfio/vfio")} and emulates type1 itself.",
                    _ when !type1Needed => $"vfio and vfio-pci are loaded; vfio_iommu_type1 is not needed without vfio's container{(_sysfs.Exists(Type1Module) ? "" : " (and not there)")}.",
                    _ => "vfio, vfio-pci and vfio_iommu_type1 are loaded.",
                });
                return;
            }
            string found = "Not loaded: " + string.Join(", ", missing.Select(m => $"{m.Module} ({m.Role}; no {kernel.Sys(m.Path)})")) + ".";
            string release = Release();
            string tree = "/lib/modules/" + release;
            if (kernel.Stat(tree, out _) != 0)
            {
                Add("modules", DiagnosticSeverity.Error, found + $" This kernel ({release}) has no module tree ({tree} is missing), so it cannot load them, and they are not built in.",
                    "Boot a kernel built with CONFIG_VFIO, CONFIG_VFIO_PCI and CONFIG_VFIO_IOMMU_TYPE1 (built in, or as modules installed under /lib/modules), e.g. your distribution's standard kernel.");
                return;
            }
            Add("modules", DiagnosticSeverity.Error, found,
                "Load them: modprobe vfio-pci (it brings vfio and vfio_iommu_type1); at every boot: add vfio-pci to /etc/modules-load.d/vfio.conf. If modprobe finds no such module, this kernel was built without CONFIG_VFIO_PCI.");
        }

        private string Release()
        {
            if (_release is null)
            {
                _release = kernel.GetKernelRelease(out string release) == 0 ? release : "unknown";
            }
            return _release;
        }

        // ---- Backends ---------------------------------------------------------------------------

        /// <summary>Who serves <c>/dev/vfio/vfio</c>.</summary>
        private enum ContainerKind
        {
            /// <summary>No such node.</summary>
            None,

            /// <summary>vfio's own container (CONFIG_VFIO_CONTAINER), with its IOMMU drivers (vfio_iommu_type1).</summary>
            Vfio,

            /// <summary>
            /// iommufd's compatibility container (CONFIG_IOMMUFD_VFIO_CONTAINER, which needs
            /// CONFIG_VFIO_CONTAINER off): the same node and ioctls, type1 emulated over an IOAS, no
            /// vfio_iommu_type1 at all.
            /// </summary>
            IommufdCompat,
        }

        /// <summary>
        /// Which container <c>/dev/vfio/vfio</c> is, asked of the kernel as the library asks it when it
        /// opens a container (<see cref="VfioContainer.IsServedByIommufd"/>). A node this process cannot
        /// open, or a question the kernel fails, is taken for vfio's own.
        /// </summary>
        private ContainerKind FindContainer()
        {
            string node = kernel.Dev("vfio/vfio");
            if (!Exists(node))
            {
                return ContainerKind.None;
            }
            if (kernel.Open(node, Flags.O_RDWR, out SafeFd fd) != 0)
            {
                return ContainerKind.Vfio;
            }
            using (fd)
            {
                try
                {
                    return VfioContainer.IsServedByIommufd(kernel, fd) ? ContainerKind.IommufdCompat : ContainerKind.Vfio;
                }
                catch (VfioException)
                {
                    return ContainerKind.Vfio;
                }
            }
        }

        private VfioBackends CheckBackends(bool iommu, ContainerKind containerKind, bool noIommuParameter, bool unsafeNoIommu)
        {
            var backends = VfioBackends.None;
            string iommufd = kernel.Dev("iommu");
            bool cdevs = Exists(kernel.Dev("vfio/devices")) || PciFunction.ReadAll(kernel).Any(f => SysfsDiscovery.CdevOf(_sysfs, SysfsDiscovery.PciDir(f.Address)) is not null);
            bool hasIommufd = Exists(iommufd);
            string container = kernel.Dev("vfio/vfio");
            if (containerKind == ContainerKind.IommufdCompat)
            {
                backends |= VfioBackends.LegacyContainer;
                Add("backend.container", DiagnosticSeverity.Ok, $"Legacy container interface: {container}, served by iommufd's compatibility container (CONFIG_IOMMUFD_VFIO_CONTAINER; vfio's own container and vfio_iommu_type1 are not built): it emulates the type1v2 IOMMU over an IOAS for the library's legacy backend (devices without a VFIO cdev, or all when forced), without type1's dirty tracking or mapping limit.");
            }
            else if (containerKind == ContainerKind.Vfio)
            {
                backends |= VfioBackends.LegacyContainer;
                Add("backend.container", DiagnosticSeverity.Ok, $"Legacy container interface: {container} (vfio's own; the library's legacy backend: devices without a VFIO cdev, no-IOMMU devices, or all when forced).");
            }
            else if (_sysfs.Exists("module/vfio"))
            {
                // With iommufd and device cdevs, devices open without the container; only those without a cdev need it.
                Add("backend.container", hasIommufd && cdevs ? DiagnosticSeverity.Warning : DiagnosticSeverity.Error,
                    $"No {container}: vfio is loaded without its legacy container (CONFIG_VFIO_CONTAINER off, and no iommufd compatibility).",
                    hasIommufd && cdevs
                        ? "Devices with a VFIO cdev open through iommufd; no-IOMMU devices and devices without a cdev need a kernel with CONFIG_VFIO_CONTAINER=y (or CONFIG_IOMMUFD_VFIO_CONTAINER=y)."
                        : "Use a kernel with CONFIG_VFIO_CONTAINER=y (or CONFIG_IOMMUFD_VFIO_CONTAINER=y), or one with CONFIG_IOMMUFD and CONFIG_VFIO_DEVICE_CDEV: this library opens devices through the container and group files or through iommufd and the device cdevs.");
            }
            else
            {
                Add("backend.container", DiagnosticSeverity.Error, $"No {container}: vfio is not loaded (see modules).");
            }

            if (hasIommufd)
            {
                if (cdevs)
                {
                    backends |= VfioBackends.Iommufd;
                }
                Add("backend.iommufd", DiagnosticSeverity.Info, $"iommufd: {iommufd} is there; device cdevs (/dev/vfio/devices/vfioN): " +
                    (cdevs ? "yes: the library opens devices that have one through iommufd (its iommufd backend)." : "none seen (bind a device to see whether this kernel has CONFIG_VFIO_DEVICE_CDEV)."));
            }
            else
            {
                Add("backend.iommufd", DiagnosticSeverity.Info, $"No iommufd ({iommufd} is missing): the library opens devices through the legacy container.",
                    cdevs ? "modprobe iommufd to use the device cdevs." : null);
            }

            if (!noIommuParameter)
            {
                Add("backend.noiommu", DiagnosticSeverity.Info, !_sysfs.Exists("module/vfio")
                    ? "Unsafe no-IOMMU mode: unknown until vfio is loaded."
                    : $"Unsafe no-IOMMU mode: this vfio has none ({kernel.Sys(NoIommuParameter)} is missing: built without CONFIG_VFIO_NOIOMMU){(iommu ? ", which an IOMMU makes unneeded" : "")}.");
            }
            else if (unsafeNoIommu)
            {
                backends |= VfioBackends.UnsafeNoIommu;
                Add("backend.noiommu", DiagnosticSeverity.Warning, $"Unsafe no-IOMMU mode is on ({kernel.Sys(NoIommuParameter)} = Y): devices without an IOMMU group can be bound, their DMA unchecked; using one taints the kernel.",
                    iommu ? $"With an IOMMU on, turn it off: echo N > {kernel.Sys(NoIommuParameter)}." : null);
            }
            else
            {
                Add("backend.noiommu", DiagnosticSeverity.Info, $"Unsafe no-IOMMU mode is available and off ({kernel.Sys(NoIommuParameter)} = N).",
                    iommu ? null : $"Only without an IOMMU, and only for trusted devices: echo Y > {kernel.Sys(NoIommuParameter)} (no DMA isolation; needs CAP_SYS_RAWIO).");
            }
            return backends;
        }

        private bool Exists(string path) => kernel.Stat(path, out _) == 0;

        // ---- Locked memory ----------------------------------------------------------------------

        private (ulong? Limit, bool Exempt) CheckMemoryLock()
        {
            if (kernel.GetResourceLimit(Flags.RLIMIT_MEMLOCK, out ulong soft, out _) < 0)
            {
                Add("memlock", DiagnosticSeverity.Warning, "Could not read RLIMIT_MEMLOCK.");
                return (null, false);
            }
            bool exempt = kernel.GetCapabilities(out ulong caps) == 0 && (caps & (1UL << Flags.CAP_IPC_LOCK)) != 0;
            ulong? limit = soft == ulong.MaxValue ? null : soft;
            string shown = limit is ulong l ? Bytes(l) : "unlimited";
            string raise = "Raise it for the driver's user: ulimit -l (in its shell), LimitMEMLOCK= (systemd service), memlock in /etc/security/limits.conf; or run it with CAP_IPC_LOCK.";
            if (limit is null)
            {
                Add("memlock", DiagnosticSeverity.Ok, "Locked-memory limit (RLIMIT_MEMLOCK): unlimited.");
            }
            else if (options.DmaBytes is ulong wanted && wanted > limit)
            {
                if (exempt)
                {
                    Add("memlock", DiagnosticSeverity.Info,
                        $"Locked-memory limit (RLIMIT_MEMLOCK): {shown}, below the {Bytes(wanted)} of DMA asked for, but this process has CAP_IPC_LOCK (root), so VFIO does not charge its DMA pins to it.",
                        "A driver run as another user needs the limit raised: " + raise);
                }
                else
                {
                    Add("memlock", DiagnosticSeverity.Error,
                        $"Locked-memory limit (RLIMIT_MEMLOCK): {shown}, below the {Bytes(wanted)} of DMA asked for: VFIO_IOMMU_MAP_DMA will fail with ENOMEM once the pinned memory passes it.",
                        raise);
                }
            }
            else
            {
                Add("memlock", DiagnosticSeverity.Info,
                    $"Locked-memory limit (RLIMIT_MEMLOCK): {shown}{(options.DmaBytes is ulong w ? ", enough for the " + Bytes(w) + " of DMA asked for" : "")}{(exempt ? "; this process has CAP_IPC_LOCK, so it does not apply to it" : "")}. Every DMA buffer is pinned and counts against it.",
                    options.DmaBytes is null ? "Check it against the DMA memory your driver maps (vfio doctor --dma-size SIZE). " + raise : null);
            }
            return (limit, exempt);
        }

        // ---- Hugepages --------------------------------------------------------------------------

        private List<HugePagePool> CheckHugePages()
        {
            var pools = new List<HugePagePool>();
            foreach (string name in _sysfs.List("kernel/mm/hugepages"))
            {
                const string Prefix = "hugepages-";
                if (!name.StartsWith(Prefix, StringComparison.Ordinal) || !name.EndsWith("kB", StringComparison.Ordinal)
                    || !ulong.TryParse(name.AsSpan(Prefix.Length, name.Length - Prefix.Length - 2), NumberStyles.None, CultureInfo.InvariantCulture, out ulong kib))
                {
                    continue;
                }
                string dir = "kernel/mm/hugepages/" + name;
                pools.Add(new HugePagePool(kib * 1024, Count(dir + "/nr_hugepages"), Count(dir + "/free_hugepages")));
            }
            pools.Sort((a, b) => a.PageSize.CompareTo(b.PageSize));
            if (pools.Count == 0)
            {
                Add("hugepages", DiagnosticSeverity.Info, $"No hugepage pools ({kernel.Sys("kernel/mm/hugepages")} is empty): DMA buffers use 4 KiB pages.");
                return pools;
            }
            string shown = string.Join(", ", pools.Select(p => string.Create(CultureInfo.InvariantCulture, $"{Bytes(p.PageSize)}: {p.Free} free of {p.Total}")));
            ulong freeBytes = pools.Aggregate(0UL, (sum, p) => sum + (p.PageSize * (ulong)Math.Max(0, p.Free)));
            var small = pools[0];
            string reserve = string.Create(CultureInfo.InvariantCulture,
                $"To back DMA buffers with hugepages (DmaPages.Huge), reserve some: echo N > {kernel.Sys("kernel/mm/hugepages/hugepages-" + (small.PageSize / 1024) + "kB/nr_hugepages")} (or vm.nr_hugepages in /etc/sysctl.d).");
            if (options.DmaBytes is ulong wanted && freeBytes < wanted)
            {
                Add("hugepages", DiagnosticSeverity.Warning, $"Free hugepages: {shown}: less than the {Bytes(wanted)} of DMA asked for; hugepage DMA buffers fall back to 4 KiB pages.", reserve);
            }
            else
            {
                Add("hugepages", freeBytes == 0 ? DiagnosticSeverity.Info : DiagnosticSeverity.Ok, $"Free hugepages: {shown}.", freeBytes == 0 ? reserve : null);
            }
            return pools;
        }

        private long Count(string attribute) =>
            long.TryParse(_sysfs.ReadText(attribute), NumberStyles.None, CultureInfo.InvariantCulture, out long n) ? n : 0;

        // ---- Permissions ------------------------------------------------------------------------

        private void CheckPermissions()
        {
            var nodes = new List<string>();
            string vfio = kernel.Dev("vfio");
            bool folder = kernel.ListDirectory(vfio, out string[] names) == 0;
            if (folder)
            {
                nodes.AddRange(names.Where(n => n != "devices" && KernelNames.IsValid(KernelNameKind.Device, n)).Select(n => vfio + "/" + n));
                if (kernel.ListDirectory(vfio + "/devices", out string[] cdevs) == 0)
                {
                    nodes.AddRange(cdevs.Where(n => KernelNames.IsValid(KernelNameKind.Cdev, n)).Select(n => vfio + "/devices/" + n));
                }
            }
            if (Exists(kernel.Dev("iommu")))
            {
                nodes.Add(kernel.Dev("iommu"));
            }
            if (nodes.Count == 0)
            {
                Add("permissions", DiagnosticSeverity.Info, $"No VFIO device nodes ({(folder ? vfio + " is empty" : "no " + vfio)}): nothing to check yet.");
                return;
            }
            var denied = new List<string>();
            var shown = new List<string>();
            foreach (string node in nodes)
            {
                string mode = kernel.Stat(node, out var status) == 0 ? Describe(status) : "?";
                shown.Add(node + " " + mode);
                if (kernel.Access(node, Flags.R_OK | Flags.W_OK) != 0)
                {
                    denied.Add(node + " (" + mode + ")");
                }
            }
            if (denied.Count == 0)
            {
                Add("permissions", DiagnosticSeverity.Ok, $"This process can open every VFIO node: {string.Join(", ", shown)}.");
            }
            else
            {
                Add("permissions", DiagnosticSeverity.Warning, $"This process cannot open {string.Join(", ", denied)} for reading and writing.",
                    "Run the driver as root, or give the nodes to its user: vfio bind ADDRESS --uid UID --gid GID (at each bind), or an udev rule such as SUBSYSTEM==\"vfio\", OWNER=\"driveruser\" in /etc/udev/rules.d/.");
            }
        }

        /// <summary>"crw------- 0:0", as ls shows the type and bits, with numeric owner.</summary>
        private static string Describe(FileStatus status)
        {
            char type = status.IsCharacterDevice ? 'c' : status.IsDirectory ? 'd' : '-';
            var bits = new char[9];
            const string Letters = "rwxrwxrwx";
            for (int i = 0; i < 9; i++)
            {
                bits[i] = (status.Permissions & (1u << (8 - i))) != 0 ? Letters[i] : '-';
            }
            return string.Create(CultureInfo.InvariantCulture, $"{type}{new string(bits)} {status.UserId}:{status.GroupId}");
        }

        // ---- Groups -----------------------------------------------------------------------------

        private void CheckGroups(IReadOnlyList<IommuGroupInfo> groups)
        {
            var used = groups.Where(g => g.HasVfioMember).ToList();
            if (used.Count == 0)
            {
                Add("groups", DiagnosticSeverity.Info, "No device is bound to vfio.", "Bind one: vfio bind ADDRESS (vfio list shows the devices and their groups).");
                return;
            }
            foreach (var group in used)
            {
                string check = "group." + group.Id.ToString(CultureInfo.InvariantCulture);
                string members = string.Join(", ", group.Members);
                string node = group.NodePath(kernel);
                if (!group.IsViable)
                {
                    string blocking = string.Join(", ", group.BlockingMembers.Select(m => $"{m.Name} is bound to {m.Driver}"));
                    Add(check, DiagnosticSeverity.Error, $"Group {group.Id} ({members}) is not viable: {blocking}. Opening {node} works, but the group cannot be attached to a container.",
                        $"Bind the rest of the group to vfio-pci (vfio bind --group {group.Members.First(m => m.Driver is not null && KernelDrivers.IsVfio(m.Driver)).Name}) or unbind those devices.");
                }
                else if (group.Kind == IommuGroupKind.NoIommu)
                {
                    Add(check, DiagnosticSeverity.Warning, $"Group {group.Id} ({members}) is a no-IOMMU group ({node}): usable, with no DMA isolation.");
                }
                else
                {
                    Add(check, DiagnosticSeverity.Ok, $"Group {group.Id} ({members}) is viable: {node}.");
                }
            }
        }

        internal static string Bytes(ulong bytes) => bytes switch
        {
            >= 1UL << 30 when bytes % (1UL << 30) == 0 => (bytes >> 30).ToString(CultureInfo.InvariantCulture) + " GiB",
            >= 1UL << 20 when bytes % (1UL << 20) == 0 => (bytes >> 20).ToString(CultureInfo.InvariantCulture) + " MiB",
            >= 1UL << 10 when bytes % (1UL << 10) == 0 => (bytes >> 10).ToString(CultureInfo.InvariantCulture) + " KiB",
            _ => bytes.ToString(CultureInfo.InvariantCulture) + " bytes",
        };
    }
}
