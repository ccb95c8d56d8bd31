#!/bin/busybox sh
# /init of the mdev VM's initramfs (see run-mdev-tests.sh): loads vfio, mdev and the kernel's mtty
# sample driver, runs the mdev and migration scenarios, the MdevLifecycle sample and (on Linux 6.7
# and later, whose mtty migrates) the Migration sample's mtty round trip against it, then powers off.
# The common setup (mounts, modules, finish/fail) is in init-common.sh, sourced below.
# Lines starting with "vfio-vm:" are read by run-mdev-tests.sh and lib.sh; keep their wording in step.

. /lib/init-common.sh

[ -d /sys/class/mdev_bus/mtty ] || fail "no /sys/class/mdev_bus/mtty after loading mtty.ko"
echo "vfio-vm: mtty types: $(ls /sys/class/mdev_bus/mtty/mdev_supported_types | tr '\n' ' ')"
dmesg -n 1
echo "vfio-vm: running Vfio.VmTests --mdev"
/bin/Vfio.VmTests --mdev --mode "$vm_mode"
echo "vfio-vm: program exited with status $?"
run_program sample --mdev-sample --backend "$vm_backend"
# mtty migrates from Linux 6.7 on (samples/vfio-mdev/mtty.c): the migration sample's round trip.
release="$(uname -r)"
major="${release%%.*}"
minor="${release#*.}"
minor="${minor%%[!0-9]*}"
if [ "$major" -gt 6 ] || { [ "$major" -eq 6 ] && [ "$minor" -ge 7 ]; }; then
  run_program "migration sample" --migration-sample
else
  echo "vfio-vm: migration sample skipped: mtty of Linux $release has no migration"
fi
left="$(ls /sys/bus/mdev/devices | wc -l)"
echo "vfio-vm: mdevs left: $left"
finish
