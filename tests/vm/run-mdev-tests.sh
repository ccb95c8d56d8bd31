#!/usr/bin/env bash
# Proves the mediated device lifecycle and migration v2 on a real kernel: boots a kernel with
# VFIO_MDEV and the kernel's mtty sample driver in QEMU (TCG, no KVM needed) and runs the mdev
# scenarios of tests/Vfio.Scenarios (MdevScenarios: create, open, region access, remove, the errors
# of creation; MigrationScenarios: migration between two mtty cards, every arc, the data files'
# rules, a failed resume, cancelled transfers, DMA logging) and the MdevLifecycle sample in the guest,
# then, where mtty migrates (Linux 6.7 and later), the Migration sample's mtty round trip, through
# the library's real P/Invoke path. On 6.1 the migration scenarios check that the library reports
# migration as not supported and skip.
#
# Its kernels (see lib.sh), each in its modes:
#   debian-6.1-mdev  Debian bookworm's non-cloud 6.1 kernel (the cloud kernel has no VFIO_MDEV)
#                    with mtty.ko built here from linux-source-6.1 against the headers of exactly
#                    that kernel                                          legacy
#   vfio             built from Debian's linux-source-7.N with mtty built in  legacy (iommufd with --mode)
#   vfio-compat      the same on iommufd's compatibility container        legacy-compat
#
# Usage: tests/vm/run-mdev-tests.sh [--kernel ID]... [--mode MODE]... [--no-apt] [--fresh]
#                                   [--timeout SECONDS] [--verbose]
#   --kernel ID   run only on kernel ID (repeat it, or give a comma list; env VFIO_VM_KERNELS)
#   --mode MODE   run only in MODE: legacy, legacy-compat or iommufd (env VFIO_VM_MODES)
#   --no-apt      never call apt; tools, apt lists and kernels must already be there (env VFIO_VM_NO_APT=1)
#   --fresh       delete this suite's cache in the clone first (env VFIO_VM_FRESH=1)
#   --timeout S   limit for each VM run, boot to power-off (env VFIO_VM_TIMEOUT, default 600)
#   --verbose     show the whole serial console (env VFIO_VM_VERBOSE=1)
#
# Kernels live outside the clone, as run-vm-tests.sh describes; this suite's initramfs and
# consoles are in tests/vm/.cache/mdev/ (git-ignored), and the test program is the one
# run-vm-tests.sh runs, published once into tests/vm/.cache/program for both suites and again
# only when its sources change (--fresh leaves it there). The output ends with one line per
# kernel and mode, "KERNEL MODE: N passed, N failed", then the total "N passed, N failed"; the
# exit code is 0 only when nothing failed and every run passed scenarios.
#
# Kernels, the program's publication, the initramfs and the boot/result reading are shared with
# run-vm-tests.sh through lib.sh.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="$here/.cache/mdev"
suite=mdev-tests

. "$here/lib.sh"
# One boot per kernel unless --mode asks for more: the legacy modes by default. The iommufd backend
# is proven on PCI devices by run-vm-tests.sh; --mode iommufd runs mtty's devices through it too
# (their bind makes an emulated "access" to the iommufd).
parse_options "--kernel --mode --no-apt --fresh --timeout --verbose" "$@"
# mtty needs no IOMMU: a machine without one (mode noiommu) would prove nothing more.
suite_modes="legacy legacy-compat iommufd"
[ -n "$selected_modes" ] || selected_modes="legacy legacy-compat"

[ "$fresh" = 1 ] && rm -rf "$cache"
mkdir -p "$cache"

need_tools

# run_vm MODE: one boot on $kernel_image in MODE. No IOMMU and no PCI device is needed: mtty's
# groups are emulated.
run_vm() {
  local left
  say "booting (QEMU TCG, mdev + mtty; limit ${vm_timeout}s)..."
  boot "$kernel_image" "$initrd" "console=ttyS0 quiet loglevel=3 panic=-1 vfio_vm_mode=$1"
  read_results
  read_sample sample "MdevLifecycle sample"
  # The guest runs the Migration sample where mtty migrates (6.7 and later): $id is run_matrix's kernel.
  case "$id" in
    debian-6.1-mdev)
      if [ -z "$problem" ] && ! grep -q 'vfio-vm: migration sample skipped' "$console.txt"; then
        problem="the guest did not say it skipped the Migration sample on 6.1"
      fi
      ;;
    *) read_sample "migration sample" "Migration sample (mtty round trip)" ;;
  esac
  left="$(sed -n 's/.*vfio-vm: mdevs left: \([0-9]*\).*/\1/p' "$console.txt" | head -n 1)"
  if [ -z "$problem" ] && [ "${left:-1}" != 0 ]; then
    problem="${left:-unknown} mdev(s) were left in /sys/bus/mdev/devices at the end"
  fi
}

run_matrix "$here/mdev-init.sh" debian-6.1-mdev vfio vfio-compat
