#!/usr/bin/env bash
# Boots a real Linux kernel in QEMU (software emulation, no KVM needed) with an emulated Intel
# IOMMU and two QEMU "edu" PCI devices: one alone in its slot, one sharing a multifunction slot
# (and so its IOMMU group) with an NVMe controller that stays bound to the kernel's nvme driver,
# and two edu functions of one slot behind a PCIe root port (one hot-reset scope); for the config
# space and reset scenarios also an ivshmem-plain at 07.0 (no reset method; BAR2 is 1 MiB of
# shared memory, for the bulk copy scenarios too), a modern virtio-rng (vendor-specific
# capabilities) and an edu function alone behind a second root port (a bus reset of its own).
# It binds the edu functions and those three to vfio-pci and runs the scenarios of tests/Vfio.Scenarios (the
# same suite dotnet test runs on the simulated kernel) through the library's real P/Invoke path,
# then the edu sample's program (samples/EduDriver), whose output it prints between markers, and
# the NVMe sample's program (samples/NvmeDriver) on a second NVMe controller alone in slot 06.0.
# Before that sample, the vfio tool (src/Vfio.Cli, cli-init.sh) binds that controller away from the
# host nvme driver, shows it and gives it back, and checks that nvme has it again (its block device).
# In mode noiommu it boots another machine: no IOMMU, vfio in unsafe no-IOMMU mode, the edu device
# and an NVMe controller in no-IOMMU groups; the no-IOMMU scenarios, then the edu and NVMe samples.
#
# It runs on each kernel of a matrix, and on each kernel in each of its modes (see lib.sh):
#   debian-6.1   Debian bookworm's 6.1 cloud kernel                  legacy
#   debian-6.12  Debian trixie's 6.12 cloud kernel                   legacy
#   debian-7     the newest 7.x cloud kernel of sid/trixie-backports legacy
#   vfio         built from Debian's linux-source-7.N (newest, 7.2 or later) with
#                tests/vm/kernel/vfio.config: everything built in      legacy, iommufd, noiommu
#   vfio-compat  the same without VFIO's container: /dev/vfio/vfio is iommufd's
#                compatibility container (kernel/legacy-compat.config)  legacy-compat, iommufd
#
# Usage: tests/vm/run-vm-tests.sh [--kernel ID]... [--mode MODE]... [--reuse] [--no-apt] [--fresh]
#                                 [--timeout SECONDS] [--verbose]
#   --kernel ID   run only on kernel ID (repeat it, or give a comma list; env VFIO_VM_KERNELS)
#   --mode MODE   run only in MODE: legacy, legacy-compat, iommufd or noiommu (env VFIO_VM_MODES)
#   --reuse       reuse the published program and the initramfs in the cache as they are, without
#                 checking whether the sources changed (env VFIO_VM_REUSE=1)
#   --no-apt      never call apt; the tools, the apt lists and the kernels must already be there
#                 (env VFIO_VM_NO_APT=1)
#   --fresh       delete the suite's cache in the clone first (the kernels outside stay)
#                 (env VFIO_VM_FRESH=1)
#   --timeout S   limit for each VM run, boot to power-off (env VFIO_VM_TIMEOUT, default 600)
#                 (a guest that printed "vfio-vm: powering off" and then hangs in its kernel's
#                 shutdown is stopped after VFIO_VM_POWEROFF_GRACE seconds, default 60, with a
#                 warning: its results are complete)
#   --verbose     show the whole serial console (env VFIO_VM_VERBOSE=1)
#
# Kernels live outside the clone, shared by every clone on the machine, in
# ${VFIO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vfio-dotnet}: Debian's packages (fetched with apt
# through private sources and apt state there, the machine's own apt configuration untouched),
# the kernels unpacked from them, and the kernels built from source (a cold build takes about
# 16 minutes on 2 idle cores; tests/vm/build-kernel.sh builds them ahead). The program, initramfs and
# consoles are in tests/vm/.cache/ (git-ignored); the program is published again only when its
# sources changed, and run-mdev-tests.sh runs the same one.
#
# The output ends with one line per kernel and mode, "KERNEL MODE: N passed, N failed" (for
# example "linux-6.1.0-50-cloud legacy: 59 passed, 0 failed"), then the total "N passed,
# N failed"; ", N skipped" follows where scenarios that do not apply to a kernel or mode skipped
# (each SKIP line says why). The exit code is 0 only when nothing failed and every run passed
# scenarios. What the suites do alike (kernels, program, initramfs, boot, results) is in lib.sh.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="$here/.cache"
suite=vm-tests

. "$here/lib.sh"
parse_options "--kernel --mode --reuse --no-apt --fresh --timeout --verbose" "$@"

if [ "$fresh" = 1 ]; then
  say "deleting the cache ($cache)"
  rm -rf "$cache"
fi
mkdir -p "$cache"

need_tools

# The NVMe controller's backing file: a small raw disk, never written by the tests.
nvme_disk="$cache/nvme.img"
[ -f "$nvme_disk" ] || truncate -s 1M "$nvme_disk"
# The NVMe sample's disk: its controller is handed to vfio-pci, and the sample writes to it.
nvme_vfio_disk="$cache/nvme-vfio.img"
[ -f "$nvme_vfio_disk" ] || truncate -s 16M "$nvme_vfio_disk"

# run_vm MODE: one boot of the suite's machine on $kernel_image in MODE.
# no_timer_check: under host load, TCG can miss the kernel's IO-APIC timer test window, and with
# interrupt remapping on the kernel panics ("timer doesn't work through Interrupt-remapped IO-APIC").
run_vm() {
  if [ "$1" = noiommu ]; then
    run_noiommu_vm
    return
  fi
  say "booting (QEMU TCG, intel-iommu + edu at 03.0 + edu/nvme at 04.0/04.1 + two edu behind a root port at 05.0 + nvme at 06.0 + ivshmem-plain at 07.0 + virtio-rng at 08.0 + an edu alone behind a root port at 09.0; limit ${vm_timeout}s)..."
  boot "$kernel_image" "$initrd" "console=ttyS0 intel_iommu=on quiet loglevel=3 panic=-1 no_timer_check vfio_vm_mode=$1" \
    -device intel-iommu,caching-mode=on \
    -device edu,addr=03.0 \
    -device edu,addr=04.0,multifunction=on \
    -drive file="$nvme_disk",if=none,id=nvme0,format=raw \
    -device nvme,serial=vfiovm0,drive=nvme0,addr=04.1 \
    -device pcie-root-port,id=rp1,chassis=1,slot=1,addr=05.0 \
    -device edu,bus=rp1,addr=00.0,multifunction=on \
    -device edu,bus=rp1,addr=00.1 \
    -drive file="$nvme_vfio_disk",if=none,id=nvfio,format=raw \
    -device nvme,serial=VFIONVME01,drive=nvfio,addr=06.0 \
    -object memory-backend-ram,id=shm0,size=1M -device ivshmem-plain,memdev=shm0,addr=07.0 \
    -device virtio-rng-pci,disable-legacy=on,iommu_platform=on,addr=08.0 \
    -device pcie-root-port,id=rp2,chassis=2,slot=2,addr=09.0 \
    -device edu,bus=rp2,addr=00.0
  read_results
  read_sample sample "edu sample"
  read_sample "nvme sample" "NVMe sample"
  read_sample cli "vfio tool (bind, show, unbind --restore)"
}

# run_noiommu_vm: mode noiommu's machine: q35 without an IOMMU, vfio in unsafe no-IOMMU mode, the edu
# device at 03.0 and an NVMe controller at 06.0 (noiommu-init.sh). 256 MiB of memory: a device without
# an IOMMU sees physical addresses, and edu's DMA reaches only the first 256 MiB (its 28-bit mask).
run_noiommu_vm() {
  say "booting (QEMU TCG, no IOMMU, 256 MiB, edu at 03.0 + nvme at 06.0; limit ${vm_timeout}s)..."
  vm_memory=256M boot "$kernel_image" "$initrd" "console=ttyS0 quiet loglevel=3 panic=-1 no_timer_check vfio.enable_unsafe_noiommu_mode=1 vfio_vm_mode=noiommu" \
    -device edu,addr=03.0 \
    -drive file="$nvme_vfio_disk",if=none,id=nvfio,format=raw \
    -device nvme,serial=VFIONVME01,drive=nvfio,addr=06.0
  read_results
  read_sample sample "edu sample (no-IOMMU)"
  read_sample "nvme sample" "NVMe sample (no-IOMMU)"
}

run_matrix "$here/init.sh" debian-6.1 debian-6.12 debian-7 vfio vfio-compat
