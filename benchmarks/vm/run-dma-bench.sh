#!/usr/bin/env bash
# DMA map + unmap and device open-to-ready through the library against the same system calls from C,
# once per backend (the legacy container with type1, and iommufd with the device cdev), in one boot
# of the kernel built from source (tests/vm/lib.sh, kernel "vfio": both APIs) under QEMU (TCG, no KVM
# needed) with an emulated Intel IOMMU and QEMU's edu device at 00:03.0 bound to vfio-pci. The C side
# is benchmarks/native/dma_map_bench.c, built here against a 7.x kernel's uAPI headers
# (tests/abi/fetch-uapi-headers.sh) and run in the guest as a process of its own; the library side is
# the test program (tests/vm/Vfio.VmTests, DmaBench.cs). Rounds alternate which side runs first.
#
# Usage: benchmarks/vm/run-dma-bench.sh [--reuse] [--no-apt] [--fresh] [--timeout SECONDS] [--verbose]
#   --reuse       reuse the published program and the initramfs in the cache as they are (env VFIO_VM_REUSE=1)
#   --no-apt      never call apt; the tools, the headers and a cached kernel must be there (env VFIO_VM_NO_APT=1)
#   --fresh       delete the benchmark's cache first (env VFIO_VM_FRESH=1)
#   --timeout S   limit for the VM run, boot to power-off (env VFIO_VM_TIMEOUT, default 900)
#   --verbose     show the whole serial console (env VFIO_VM_VERBOSE=1)
#   env VFIO_DMA_BENCH_ROUNDS   rounds (default 5); each ratio is the median of the per-round ratios
#
# Output: the guest's table (per round and backend: open, 4 KiB and 2 MiB map + unmap, library and C)
# and the calls the library made for each, then, on stdout, "name: value" lines as benchmarks/run.sh
# prints them:
#   dma_map_ratio_legacy, dma_map_ratio_iommufd        <= 1.10  4 KiB + 2 MiB map + unmap, library / C
#   dma_map_4k_ratio_*, dma_map_2m_ratio_*              context  each size alone
#   device_open_ratio_legacy, device_open_ratio_iommufd context  open-to-ready + close, library / C
#   dma_map_*_us_*, device_open_*us_*                   context  the times behind them (median rounds)
# Under TCG the guest CPU is emulated: a ratio compares guest instructions. The exit code is 1 when a
# run could not produce its figures (or the VM failed), never because a ratio missed its target.
set -euo pipefail

bench="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
here="$(cd "$bench/../../tests/vm" && pwd)"
cache="$here/.cache/dma-bench"
suite=dma-bench

. "$here/lib.sh"
: "${VFIO_VM_TIMEOUT:=900}"
parse_options "--reuse --no-apt --fresh --timeout --verbose" "$@"
rounds="${VFIO_DMA_BENCH_ROUNDS:-5}"
case "$rounds" in
  ''|*[!0-9]*|0) echo "run-dma-bench: VFIO_DMA_BENCH_ROUNDS must be a positive whole number" >&2; exit 2 ;;
esac

bench_cache

need_tools gcc=gcc
headers="$(bash "$here/../abi/fetch-uapi-headers.sh")" || die "no 7.x uAPI headers for the C side (tests/abi/fetch-uapi-headers.sh)"
gcc -O2 -Wall -Wextra -Werror -I"$headers" -I"$headers/x86_64-linux-gnu" \
  -o "$cache/dma_map_bench" "$bench/../native/dma_map_bench.c" || die "building benchmarks/native/dma_map_bench.c failed"

# The kernel built from source with both APIs: VFIO's container with type1, and iommufd with the cdev.
prepare_kernel vfio
say "kernel: $kernel_name"
publish_program "$reuse"
initramfs_programs=("$cache/dma_map_bench")
build_base_initramfs "$bench/dma-bench-init.sh"
kernel_initramfs vfio

say "booting (QEMU TCG, intel-iommu + edu at 03.0; $rounds rounds; limit ${vm_timeout}s)..."
boot "$kernel_image" "$initrd" "console=ttyS0 intel_iommu=on quiet loglevel=3 panic=-1 no_timer_check tsc=reliable dmabench_rounds=$rounds" \
  -device intel-iommu,caching-mode=on \
  -device edu,addr=03.0

boot_problem
read_sample "dma bench" "DMA map and device open benchmark"

say "VM ran ${boot_seconds}s; $((SECONDS - started))s in all"
bench_figures "dma bench" '(dma_map|device_open)_[a-z0-9_]+' dma_map_ratio_legacy dma_map_ratio_iommufd device_open_ratio_legacy device_open_ratio_iommufd
