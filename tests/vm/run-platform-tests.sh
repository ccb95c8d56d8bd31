#!/usr/bin/env bash
# Proves vfio-platform on a real kernel: boots the kernel built from source (vfio.config has
# VFIO_PLATFORM, VFIO_NOIOMMU and VIRTIO_MMIO) on QEMU's -M microvm machine (TCG, no KVM needed),
# which describes its virtio-mmio transports as ACPI platform devices (LNRO0005), with a virtio
# entropy device behind one. The machine has no IOMMU, so the kernel runs vfio in unsafe no-IOMMU
# mode (vfio.enable_unsafe_noiommu_mode=1), and vfio-platform, which finds no reset for the device,
# takes it with vfio_platform.reset_required=0. The guest (platform-init.sh) unbinds the transport
# from the kernel's virtio-mmio driver, hands it to vfio-platform through driver_override, and runs
# the platform scenarios of tests/Vfio.Scenarios (PlatformScenarios: discovery by ACPI id, the
# register window, the level-triggered interrupt, random bytes through a virtqueue at physical
# addresses) and the VirtioRngPlatform sample, through the library's real P/Invoke path.
#
# Its kernels (see lib.sh), in the modes this suite runs:
#   vfio   built from Debian's linux-source-7.N with tests/vm/kernel/vfio.config   noiommu
#
# Usage: tests/vm/run-platform-tests.sh [--kernel ID]... [--mode MODE]... [--no-apt] [--fresh]
#                                       [--timeout SECONDS] [--verbose]
#   --kernel ID   run only on kernel ID (env VFIO_VM_KERNELS)
#   --mode MODE   run only in MODE: noiommu, the only mode a machine without an IOMMU has (env VFIO_VM_MODES)
#   --no-apt      never call apt; tools, apt lists and kernels must already be there (env VFIO_VM_NO_APT=1)
#   --fresh       delete this suite's cache in the clone first (env VFIO_VM_FRESH=1)
#   --timeout S   limit for each VM run, boot to power-off (env VFIO_VM_TIMEOUT, default 600)
#   --verbose     show the whole serial console (env VFIO_VM_VERBOSE=1)
#
# Kernels live outside the clone, as run-vm-tests.sh describes; this suite's initramfs and consoles
# are in tests/vm/.cache/platform/ (git-ignored), and the test program is the one the other suites
# run. The output ends with one line per kernel and mode, "KERNEL MODE: N passed, N failed", then
# the total "N passed, N failed"; the exit code is 0 only when nothing failed and every run passed
# scenarios.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="$here/.cache/platform"
suite=platform-tests

. "$here/lib.sh"
parse_options "--kernel --mode --no-apt --fresh --timeout --verbose" "$@"
# microvm has no IOMMU: vfio-platform can take a device only in no-IOMMU mode.
suite_modes=noiommu

[ "$fresh" = 1 ] && rm -rf "$cache"
mkdir -p "$cache"

need_tools

# run_vm MODE: one boot of microvm on $kernel_image. earlyprintk=ttyS0: microvm's console shows
# nothing without it; tsc_early_khz: under TCG on a busy host the TSC calibration fails, and microvm
# has no other clock to fall back on (the boot then hangs). force-legacy=false: virtio-mmio version 2.
run_vm() {
  say "booting (QEMU TCG, microvm, virtio-rng behind virtio-mmio, no IOMMU; limit ${vm_timeout}s)..."
  boot "$kernel_image" "$initrd" "console=ttyS0 earlyprintk=ttyS0 tsc_early_khz=2000000 quiet loglevel=3 panic=-1 vfio.enable_unsafe_noiommu_mode=1 vfio_platform.reset_required=0 vfio_vm_mode=$1" \
    -M microvm -global virtio-mmio.force-legacy=false -device virtio-rng-device
  read_results
  read_sample "platform sample" "VirtioRngPlatform sample"
}

run_matrix "$here/platform-init.sh" vfio
