#!/bin/busybox sh
# /init of the DMA benchmark's initramfs (see run-dma-bench.sh): QEMU's edu device at 00:03.0 behind
# the emulated Intel IOMMU, handed to vfio-pci; runs the benchmark program (the library and the C
# program /bin/dma_map_bench, through both backends), then powers off.
# The common setup (mounts, finish/fail, bind_vfio, run_program) is in init-common.sh.
# Lines starting with "vfio-vm:" are read by run-dma-bench.sh and tests/vm/lib.sh.

. /lib/init-common.sh

device=0000:00:03.0
rounds=5
for word in $(cat /proc/cmdline); do
  case "$word" in dmabench_rounds=*) rounds="${word#*=}" ;; esac
done

bind_vfio "$device"
[ -c /dev/iommu ] || fail "no /dev/iommu: the kernel has no iommufd"

dmesg -n 1
run_program "dma bench" --dma-bench "$device" --native /bin/dma_map_bench --rounds "$rounds"
finish
