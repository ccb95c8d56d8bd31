#!/bin/busybox sh
# /init of the VM integration tests' initramfs (see run-vm-tests.sh): loads the VFIO modules,
# binds QEMU's edu device to vfio-pci and runs the test program against it, then powers off.
# Lines starting with "vfio-vm:" are read by run-vm-tests.sh; keep their wording in step.

/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
# The firmware may leave the console mid-line: start the first marker on a line of its own.
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

vendor_id=0x1234
device_id=0x11e8
address=""
for dev in /sys/bus/pci/devices/*; do
  if [ "$(cat "$dev/vendor")" = "$vendor_id" ] && [ "$(cat "$dev/device")" = "$device_id" ]; then
    address="${dev##*/}"
    break
  fi
done
[ -n "$address" ] || fail "no PCI device $vendor_id:$device_id (edu)"

dev="/sys/bus/pci/devices/$address"
[ -e "$dev/iommu_group" ] || fail "$address has no IOMMU group (is the IOMMU on?)"
group="$(readlink "$dev/iommu_group")"
group="${group##*/}"

if [ -e "$dev/driver" ]; then
  echo "$address" >"$dev/driver/unbind" || fail "unbind $address"
fi
echo vfio-pci >"$dev/driver_override" || fail "driver_override of $address"
echo "$address" >/sys/bus/pci/drivers_probe || fail "drivers_probe $address"

waited=0
while [ ! -c "/dev/vfio/$group" ]; do
  [ "$waited" -ge 50 ] && fail "/dev/vfio/$group did not appear after binding $address"
  sleep 0.1
  waited=$((waited + 1))
done
driver="$(readlink "$dev/driver")"
[ "${driver##*/}" = vfio-pci ] || fail "$address is bound to '${driver##*/}', not vfio-pci"

# Kernel messages would interleave with the program's lines on the serial console.
dmesg -n 1

export HOME=/tmp TMPDIR=/tmp DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_gcServer=0
echo "vfio-vm: running Vfio.VmTests on $address (group $group)"
/bin/Vfio.VmTests --device "$address" --group "$group"
echo "vfio-vm: program exited with status $?"
finish
