#!/usr/bin/env bash
# Builds and runs the performance benchmarks of Vfio for .NET.
#
# Usage: benchmarks/run.sh [all | METRIC...]      (no argument: all benchmarks)
#        benchmarks/run.sh --list                 (the benchmarks and their targets)
#
# Output: one "name: value" line per metric on stdout, nothing else (build logs go to stderr).
# The script exits non-zero if a build or a benchmark fails; it does not fail on a missed target,
# because a shared machine can slow one run down. Read the results against these targets
# (docs: benchmarks/README.md, design: "Performance budget" in the architecture notes):
#
#   ioctl_overhead_ratio          <= 1.10  seam ioctl time / C ioctl time, same ioctl, same fd, same process
#   ioctl_c_ns                    context  ns per FIONREAD from C in the benchmark's process (the syscall's own cost here)
#   ioctl_csharp_ns               context  ns per FIONREAD through VfioKernel.Linux.Ioctl
#   ioctl_alloc_bytes_per_call    == 0     managed bytes allocated per ioctl through the seam
#   ioctl_c_process_ns            context  the C loop as a single-threaded process of its own
#   ioctl_c_threaded_process_ns   context  ... with one idle thread beside it (what a second thread costs a syscall)
#   ioctl_vs_single_thread_process_ratio  context  seam time / the single-threaded C process's
#   ioctl_bare_pinvoke_ns         context  the same FIONREAD, P/Invoke on a raw fd, no SetLastError
#   ioctl_setlasterror_ns         context  ... plus SetLastError
#   ioctl_libc_import_ns          context  ... plus SafeHandle marshalling (the seam minus its virtual call)
#   safehandle_addref_release_ns  context  the SafeHandle reference count alone, no syscall
#   irq_wake_ratio                >= 0.5   eventfd wake-ups/s through InterruptSet.WaitAsync / a C blocking-read loop
#   irq_csharp_wakes_per_s        context  ping-pong wake-ups per second through the library
#   irq_c_wakes_per_s             context  the same from C
#   irq_alloc_bytes_per_event     == 0     managed bytes allocated per interrupt, every thread counted (slope between batch sizes)
#   iova_translate_mops           >= 10    million host-to-IOVA translations per CPU-second of the translating thread, 64 K live DMA mappings (fastest 64 K batch per round, median of 15 rounds)
#   iova_translate_slowest_mops   context  the slowest of those rounds
#   iova_translate_sustained_mops context  whole rounds of a million lookups over their CPU time (cache evictions by other work included)
#   iova_translate_wall_mops      context  the fastest batch by wall-clock time (lower on a loaded machine)
#   binary_search_64k_mops        context  Array.BinarySearch over the 64 K starts, same lookups (for comparison)
#   iova_translate_2threads_mops  context  two threads translating at once, wall-clock (lock-free reads)
#   dma_map_us                    context  allocate + map one 4 KiB DMA buffer (simulated kernel)
#   mmio_overhead_ratio           <= 1.2   MmioRegion 32-bit write + dependent read-back / raw pointer loop, same mapping
#   mmio_raw_ns, mmio_typed_ns    context  ns per write + read pair, raw and through MmioRegion
#   mmio_independent_ratio        context  the same with independent accesses (throughput-bound worst case)
#   mmio_hoisted_ns, mmio_hoisted_ratio context the region's check with its bound and base in locals (what hoisting would buy)
#   mmio_c_raw_ns, mmio_c_checked_ns context the same loop in C: raw, and through a bounds-checked region struct
#   mmio_c_checked_ratio          context  what C pays for the same check: C checked / C raw
#   mmio_typed_vs_c_checked_ratio context  MmioRegion / the checked C loop
#   mmio_copy_ratio               <= 1.2   4 KiB copied in and out through MmioRegion.Write/Read / the same copies in C (volatile aligned 8-byte accesses)
#   mmio_copy_ns, mmio_copy_c_ns  context  ns per 4 KiB copy in + copy out, C# and C
#   mmio_copy_gbps                context  bytes moved per ns by the bulk copies (cached memory)
#   mmio_copy_vs_write32_speedup  context  a loop of Write32/Read32 over the buffer / the bulk copies
#   mmio_copy_vs_write8_speedup   context  a loop of Write8/Read8 over the buffer / the bulk copies
#   device_ref_pair_ns            < 20     ns per uncontended VfioDevice.TryGet + DeviceReference.Dispose
#   device_ref_alloc_bytes_per_pair context managed bytes per pair (the reference every copy shares)
#
# The ratio is the median over rounds of (fastest C# batch / fastest C batch), the two sides run
# back to back in each round; ns values are medians over rounds of the fastest batch. Background
# load moves them less than it moves a single timing, but a ratio a little above target on a busy
# machine is worth a second run. Subtracting the context lines from each other shows where the
# seam's time goes when the ratio is off target.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$here/.build"
native="$out/native"
mkdir -p "$native"

gcc -O2 -Wall -Wextra -Werror -o "$native/ioctl_loop" "$here/native/ioctl_loop.c" >&2
gcc -O2 -Wall -Wextra -Werror -pthread -DIOCTL_LOOP_IDLE_THREAD -o "$native/ioctl_loop_threaded" "$here/native/ioctl_loop.c" >&2
gcc -O2 -Wall -Wextra -Werror -shared -fPIC -DIOCTL_LOOP_LIBRARY -o "$native/libioctl_loop.so" "$here/native/ioctl_loop.c" >&2
gcc -O2 -Wall -Wextra -Werror -pthread -o "$native/irq_wake_loop" "$here/native/irq_wake_loop.c" >&2
gcc -O2 -Wall -Wextra -Werror -DMMIO_CHECKED=0 -o "$native/mmio_loop_raw" "$here/native/mmio_loop.c" >&2
gcc -O2 -Wall -Wextra -Werror -DMMIO_CHECKED=1 -o "$native/mmio_loop_checked" "$here/native/mmio_loop.c" >&2
gcc -O2 -Wall -Wextra -Werror -o "$native/mmio_copy" "$here/native/mmio_copy.c" >&2

dotnet build "$here/Vfio.Benchmarks/Vfio.Benchmarks.csproj" -c Release -o "$out/bin" \
  --nologo -v quiet -clp:ErrorsOnly >&2

dotnet "$out/bin/Vfio.Benchmarks.dll" --native-dir "$native" "$@"
