#!/bin/busybox sh
# /init of the NVMe benchmark's initramfs (see run-nvme-bench.sh): two identical QEMU NVMe
# controllers, 00:04.0 left on the kernel's built-in nvme driver and 00:05.0 handed to vfio-pci;
# runs the benchmark program (fio on the first, the library on the second), then powers off.
# The common setup (mounts, modules, finish/fail, bind_vfio, run_program) is in init-common.sh.
# Lines starting with "vfio-vm:" are read by run-nvme-bench.sh and tests/vm/lib.sh.

. /lib/init-common.sh

kernel_nvme=0000:00:04.0
vfio_nvme=0000:00:05.0
seconds=3
rounds=5
for word in $(cat /proc/cmdline); do
  case "$word" in
    nvmebench_seconds=*) seconds="${word#*=}" ;;
    nvmebench_rounds=*) rounds="${word#*=}" ;;
  esac
done

# The kernel's block device for the first controller (nvme enumerates asynchronously at boot).
disk=""
waited=0
while [ -z "$disk" ]; do
  disk="$(ls -d /sys/bus/pci/devices/$kernel_nvme/nvme/nvme*/nvme*n1 2>/dev/null | head -n 1)"
  disk="${disk##*/}"
  if [ -z "$disk" ] || [ ! -b "/dev/$disk" ]; then
    disk=""
    [ "$waited" -ge 100 ] && fail "no block device for the NVMe controller at $kernel_nvme"
    sleep 0.1
    waited=$((waited + 1))
  fi
done
# fio's polled io_uring engine needs poll queues (nvme.poll_queues on the kernel command line).
[ "$(cat "/sys/block/$disk/queue/io_poll")" = 1 ] || fail "/dev/$disk has no poll queues (io_poll is 0)"
echo "vfio-vm: kernel disk /dev/$disk at $kernel_nvme ($(cat /sys/block/$disk/size) sectors, queues: $(ls /sys/block/$disk/mq | wc -l), clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource))"

bind_vfio "$vfio_nvme"

dmesg -n 1
run_program "nvme bench" --nvme-bench "$vfio_nvme" --kernel-disk "/dev/$disk" --seconds "$seconds" --warm-up 1 --rounds "$rounds"
finish
