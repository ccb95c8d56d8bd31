#!/bin/busybox sh
# /init of the platform VM's initramfs (see run-platform-tests.sh): QEMU's microvm with a virtio-mmio
# transport (ACPI LNRO0005) carrying a virtio entropy device. Hands the transport from the kernel's
# virtio-mmio driver to vfio-platform (driver_override; no-IOMMU mode, reset_required=0), runs the
# platform scenarios and the VirtioRngPlatform sample against it, then powers off.
# The common setup (mounts, modules, finish/fail) is in init-common.sh, sourced below.
# Lines starting with "vfio-vm:" are read by run-platform-tests.sh and lib.sh; keep their wording in step.

. /lib/init-common.sh

name=""
for dev in /sys/bus/platform/devices/LNRO0005:*; do
  [ -e "$dev" ] && name="${dev##*/}" && break
done
[ -n "$name" ] || fail "no virtio-mmio transport (ACPI LNRO0005) on the platform bus: $(ls /sys/bus/platform/devices | tr '\n' ' ')"
dev="/sys/bus/platform/devices/$name"
[ "$(cat /sys/module/vfio/parameters/enable_unsafe_noiommu_mode)" = Y ] || fail "vfio is not in unsafe no-IOMMU mode"
[ "$(cat /sys/module/vfio_platform/parameters/reset_required)" = N ] || fail "vfio_platform's reset_required is not N"
driver="$(readlink "$dev/driver" 2>/dev/null || true)"
echo "vfio-vm: $name ($(cat "$dev/modalias")) is bound to ${driver##*/}"
if [ -n "$driver" ]; then
  echo "$name" >"$dev/driver/unbind" || fail "unbind $name from ${driver##*/}"
fi
echo vfio-platform >"$dev/driver_override" || fail "driver_override of $name"
echo "$name" >/sys/bus/platform/drivers_probe || fail "drivers_probe $name"
group="$(readlink "$dev/iommu_group")" || fail "$name has no group after binding to vfio-platform"
group="${group##*/}"
waited=0
while [ ! -c "/dev/vfio/noiommu-$group" ]; do
  [ "$waited" -ge 50 ] && fail "/dev/vfio/noiommu-$group did not appear after binding $name"
  sleep 0.1
  waited=$((waited + 1))
done
driver="$(readlink "$dev/driver")"
[ "${driver##*/}" = vfio-platform ] || fail "$name is bound to '${driver##*/}', not vfio-platform"
echo "vfio-vm: $name bound to vfio-platform in no-IOMMU group $group ($(cat "/sys/kernel/iommu_groups/$group/name"))"

dmesg -n 1
echo "vfio-vm: running Vfio.VmTests --platform on $name (group $group)"
/bin/Vfio.VmTests --platform --mode "$vm_mode" --device "$name" --group "$group"
echo "vfio-vm: program exited with status $?"
run_program "platform sample" --platform-sample
finish
