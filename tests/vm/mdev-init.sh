#!/bin/busybox sh
# /init of the mdev VM's initramfs (see run-mdev-tests.sh): loads vfio, mdev and the kernel's mtty
# sample driver, runs the mdev scenarios and the MdevLifecycle sample against it, then powers off.
# Lines starting with "vfio-vm:" are read by run-mdev-tests.sh; keep their wording in step.

/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
echo
echo "vfio-vm: init started"

finish() {
  sync
  poweroff -f
  sleep 5
  exit 1
}

fail() {
  echo "vfio-vm: setup failed: $*"
  finish
}

while read -r module; do
  insmod "/lib/modules/$module.ko" || fail "insmod $module.ko"
done </lib/modules/load-order

[ -d /sys/class/mdev_bus/mtty ] || fail "no /sys/class/mdev_bus/mtty after loading mtty.ko"
echo "vfio-vm: mtty types: $(ls /sys/class/mdev_bus/mtty/mdev_supported_types | tr '\n' ' ')"
dmesg -n 1

export HOME=/tmp TMPDIR=/tmp DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_gcServer=0
echo "vfio-vm: running Vfio.VmTests --mdev"
/bin/Vfio.VmTests --mdev
echo "vfio-vm: program exited with status $?"
echo "vfio-vm: sample begins"
/bin/Vfio.VmTests --mdev-sample
echo "vfio-vm: sample exited with status $?"
left="$(ls /sys/bus/mdev/devices | wc -l)"
echo "vfio-vm: mdevs left: $left"
finish
