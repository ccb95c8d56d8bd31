#!/usr/bin/env bash
# NVMe I/O through the library against the kernel's own nvme driver, in one boot of a real Linux 6.1
# kernel under QEMU (TCG, no KVM needed) with an emulated Intel IOMMU and two identically configured
# NVMe controllers (same backing size, same queue limits): 00:04.0 stays on the kernel's nvme driver
# and is driven by fio (Debian's package, with the libraries ldd lists, in the initramfs: engines
# io_uring, io_uring polled and libaio, --direct=1); 00:05.0 is bound to vfio-pci and driven by the
# NVMe sample's load generator through the library (completions polled or by MSI-X). The same
# workloads run on both: 4 KiB random reads and writes at queue depth 1 and 32 over the first 32 MiB,
# a fixed time each after 1 s of warm-up, in rounds that interleave the two sides so that load on a
# shared machine falls on both alike (about 8 minutes of VM time with the defaults).
#
# Usage: benchmarks/vm/run-nvme-bench.sh [--reuse] [--no-apt] [--fresh] [--timeout SECONDS] [--verbose]
#   --reuse       reuse the published program and the initramfs in the cache as they are (env VFIO_VM_REUSE=1)
#   --no-apt      never call apt; the tools (fio among them) and a cached kernel must be there (env VFIO_VM_NO_APT=1)
#   --fresh       delete the benchmark's cache first (env VFIO_VM_FRESH=1)
#   --timeout S   limit for the VM run, boot to power-off (env VFIO_VM_TIMEOUT, default 1200)
#   --verbose     show the whole serial console (env VFIO_VM_VERBOSE=1)
#   env VFIO_NVME_BENCH_SECONDS   measured seconds per run (default 3; each run adds 1 s of warm-up)
#   env VFIO_NVME_BENCH_ROUNDS    rounds (default 5): each runs every workload on every driver, the
#                                 drivers' order rotating; each figure is the run with the median IOPS
#
# Output: the guest's tables (IOPS, p50 and p99 latency per run; where the library's time per I/O
# goes), then, on stdout, one "name: value" line per ratio, as benchmarks/run.sh prints:
#   nvme_qd1_read_iops_ratio    >= 1.0  4 KiB random read, QD1: the library's best mode / the kernel's best engine
#   nvme_qd32_read_iops_ratio   >= 1.0  the same at QD32
#   nvme_qd1_write_iops_ratio   >= 1.0  4 KiB random write, QD1
# Under TCG the guest CPU is emulated, so a ratio compares what each path spends per I/O in guest
# instructions. The exit code is 1 when a run could not produce its figures (or the VM failed),
# never because a ratio missed its target. Kernel, program and tools are shared with tests/vm
# (lib.sh); this benchmark's initramfs and console are in tests/vm/.cache/nvme-bench.
set -euo pipefail

bench="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
here="$(cd "$bench/../../tests/vm" && pwd)"
cache="$here/.cache/nvme-bench"
suite=nvme-bench

. "$here/lib.sh"
: "${VFIO_VM_TIMEOUT:=1200}"
parse_options "--reuse --no-apt --fresh --timeout --verbose" "$@"
seconds="${VFIO_NVME_BENCH_SECONDS:-3}"
rounds="${VFIO_NVME_BENCH_ROUNDS:-5}"
for value in "$seconds" "$rounds"; do
  case "$value" in
    ''|*[!0-9]*|0) echo "run-nvme-bench: VFIO_NVME_BENCH_SECONDS and VFIO_NVME_BENCH_ROUNDS must be positive whole numbers" >&2; exit 2 ;;
  esac
done

bench_cache

need_tools fio=fio
# Debian's 6.1 cloud kernel (its nvme driver built in), as the VM suite's first kernel (lib.sh).
prepare_kernel debian-6.1
say "kernel: $kernel_name"
publish_program "$reuse"
initramfs_programs=("$(command -v fio)")
build_base_initramfs "$bench/nvme-bench-init.sh"
kernel_initramfs debian-6.1

# Two identical backing files, written in full so that neither side's writes allocate blocks.
for disk in kernel vfio; do
  dd if=/dev/zero of="$cache/$disk.img" bs=1M count=64 status=none
done

# tsc=reliable: under TCG the kernel does not trust the emulated TSC and falls back to the HPET,
# where every clock read traps into QEMU (about 2 us); fio and the load generator read the clock
# for every I/O. nvme.poll_queues=1 gives the kernel's controller the poll queue that fio's
# polled io_uring engine (hipri) needs.
say "booting (QEMU TCG, intel-iommu + nvme at 04.0 for the kernel + nvme at 05.0 for vfio-pci; $rounds rounds of $seconds s runs; limit ${vm_timeout}s)..."
boot "$kernel_image" "$initrd" "console=ttyS0 intel_iommu=on quiet loglevel=3 panic=-1 no_timer_check tsc=reliable nvme.poll_queues=1 nvmebench_seconds=$seconds nvmebench_rounds=$rounds" \
  -device intel-iommu,caching-mode=on \
  -drive file="$cache/kernel.img",if=none,id=nkernel,format=raw \
  -device nvme,serial=BENCHKERNEL,drive=nkernel,addr=04.0 \
  -drive file="$cache/vfio.img",if=none,id=nvfio,format=raw \
  -device nvme,serial=BENCHVFIO,drive=nvfio,addr=05.0

boot_problem
grep -m1 'vfio-vm: kernel disk' "$console.txt" | sed "s/^vfio-vm: /$suite: /" || true
read_sample "nvme bench" "NVMe benchmark"

say "VM ran ${boot_seconds}s; $((SECONDS - started))s in all"
bench_figures "nvme bench" 'nvme_[a-z0-9_]+_ratio' nvme_qd1_read_iops_ratio nvme_qd32_read_iops_ratio nvme_qd1_write_iops_ratio
