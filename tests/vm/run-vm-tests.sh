#!/usr/bin/env bash
# Boots a real Linux kernel in QEMU (software emulation, no KVM needed) with an emulated Intel
# IOMMU and two QEMU "edu" PCI devices: one alone in its slot, one sharing a multifunction slot
# (and so its IOMMU group) with an NVMe controller that stays bound to the kernel's nvme driver,
# and two edu functions of one slot behind a PCIe root port (one hot-reset scope).
# It binds both edu functions to vfio-pci and runs the scenarios of tests/Vfio.Scenarios (the
# same suite dotnet test runs on the simulated kernel) through the library's real P/Invoke path,
# then the edu sample's program (samples/EduDriver), whose output it prints between markers, and
# the NVMe sample's program (samples/NvmeDriver) on a second NVMe controller alone in slot 06.0.
#
# Usage: tests/vm/run-vm-tests.sh [--reuse] [--no-apt] [--fresh] [--timeout SECONDS] [--verbose]
#   --reuse       reuse the published program and the initramfs in the cache as they are, without
#                 checking whether the sources changed (env VFIO_VM_REUSE=1)
#   --no-apt      never call apt; the tools and a cached kernel must already be there
#                 (env VFIO_VM_NO_APT=1)
#   --fresh       delete the cache first and start cold (env VFIO_VM_FRESH=1)
#   --timeout S   limit for the VM run, boot to power-off (env VFIO_VM_TIMEOUT, default 600)
#   --verbose     show the whole serial console (env VFIO_VM_VERBOSE=1)
#
# Downloads and built artifacts live in tests/vm/.cache/ (git-ignored). Without --fresh, a kernel
# already in the cache is used as is, and the program is published again only when its sources
# changed; run-mdev-tests.sh runs the same published program. The last line is "N passed,
# N failed"; the exit code is 0 only when nothing failed and at least one scenario passed.
# What both suites do alike (tools, program, initramfs, boot, results) is in lib.sh.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="$here/.cache"
suite=vm-tests

. "$here/lib.sh"
parse_options "--reuse --no-apt --fresh --timeout --verbose" "$@"

if [ "$fresh" = 1 ]; then
  say "deleting the cache ($cache)"
  rm -rf "$cache"
fi
mkdir -p "$cache"

need_tools

# The kernel: the newest linux-image-6.1.0-N-cloud-amd64-unsigned apt offers, trimmed to the
# image and the VFIO modules (lib.sh).
cloud_kernel

publish_program "$reuse"
build_initramfs "$here/init.sh" "$kernel_dir" "${vfio_modules[@]}"

# ---------------------------------------------------------------------------------------------
# Boot
# ---------------------------------------------------------------------------------------------
# The NVMe controller's backing file: a small raw disk, never written by the tests.
nvme_disk="$cache/nvme.img"
[ -f "$nvme_disk" ] || truncate -s 1M "$nvme_disk"
# The NVMe sample's disk: its controller is handed to vfio-pci, and the sample writes to it.
nvme_vfio_disk="$cache/nvme-vfio.img"
[ -f "$nvme_vfio_disk" ] || truncate -s 16M "$nvme_vfio_disk"

# no_timer_check: under host load, TCG can miss the kernel's IO-APIC timer test window, and with
# interrupt remapping on the kernel panics ("timer doesn't work through Interrupt-remapped IO-APIC").
say "booting (QEMU TCG, intel-iommu + edu at 03.0 + edu/nvme at 04.0/04.1 + two edu behind a root port at 05.0 + nvme at 06.0; limit ${vm_timeout}s)..."
boot "$kernel_dir" "console=ttyS0 intel_iommu=on quiet loglevel=3 panic=-1 no_timer_check" \
  -device intel-iommu,caching-mode=on \
  -device edu,addr=03.0 \
  -device edu,addr=04.0,multifunction=on \
  -drive file="$nvme_disk",if=none,id=nvme0,format=raw \
  -device nvme,serial=vfiovm0,drive=nvme0,addr=04.1 \
  -device pcie-root-port,id=rp1,chassis=1,slot=1,addr=05.0 \
  -device edu,bus=rp1,addr=00.0,multifunction=on \
  -device edu,bus=rp1,addr=00.1 \
  -drive file="$nvme_vfio_disk",if=none,id=nvfio,format=raw \
  -device nvme,serial=VFIONVME01,drive=nvfio,addr=06.0

read_results
read_sample sample "edu sample"
read_sample "nvme sample" "NVMe sample"
finish_run
