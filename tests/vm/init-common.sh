# Sourced by the /init of both VM suites' initramfs (init.sh, mdev-init.sh), which run it as
# /lib/init-common.sh: mounts the kernel's file systems, prints "vfio-vm: init started", defines
# finish (power off) and fail (report a setup failure, power off), and loads the modules listed
# in /lib/modules/load-order. It reads the mode the host boots the guest in (vfio_vm_mode=MODE on
# the kernel command line: legacy, legacy-compat or iommufd) into $vm_mode, exported to the
# programs as VFIO_VM_MODE, and defines run_program for the test program's runs, and
# group_of and bind_vfio for handing a PCI device to vfio-pci.
# Lines starting with "vfio-vm:" are read by tests/vm/lib.sh; keep their wording in step.

/bin/busybox --install -s /bin
export PATH=/bin:/sbin HOME=/tmp TMPDIR=/tmp DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_gcServer=0
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
# The firmware may leave the console mid-line: start the first marker on a line of its own.
echo
echo "vfio-vm: init started"

vm_mode=legacy
for word in $(cat /proc/cmdline); do
  case "$word" in vfio_vm_mode=*) vm_mode="${word#vfio_vm_mode=}" ;; esac
done
export VFIO_VM_MODE="$vm_mode"
echo "vfio-vm: kernel $(uname -r), mode $vm_mode"

finish() {
  echo "vfio-vm: powering off"
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

# group_of ADDRESS: the IOMMU group of a PCI device.
group_of() {
  local link
  link="$(readlink "/sys/bus/pci/devices/$1/iommu_group")" || return 1
  echo "${link##*/}"
}

# bind_vfio ADDRESS: unbinds a PCI device from its driver, binds it to vfio-pci and waits for its
# group's /dev/vfio file; a setup failure (power off) when any step fails.
bind_vfio() {
  local address="$1" dev="/sys/bus/pci/devices/$1" group driver waited=0
  [ -e "$dev/iommu_group" ] || fail "$address has no IOMMU group (is the IOMMU on?)"
  group="$(group_of "$address")"
  if [ -e "$dev/driver" ]; then
    echo "$address" >"$dev/driver/unbind" || fail "unbind $address"
  fi
  echo vfio-pci >"$dev/driver_override" || fail "driver_override of $address"
  echo "$address" >/sys/bus/pci/drivers_probe || fail "drivers_probe $address"
  while [ ! -c "/dev/vfio/$group" ]; do
    [ "$waited" -ge 50 ] && fail "/dev/vfio/$group did not appear after binding $address"
    sleep 0.1
    waited=$((waited + 1))
  done
  driver="$(readlink "$dev/driver")"
  [ "${driver##*/}" = vfio-pci ] || fail "$address is bound to '${driver##*/}', not vfio-pci"
}

# run_program MARKER ARG...: runs the test program framed by "vfio-vm: MARKER begins" and
# "vfio-vm: MARKER exited with status S" (the frame the host prints a sample's output from).
run_program() {
  local marker="$1"
  shift
  echo "vfio-vm: $marker begins"
  /bin/Vfio.VmTests "$@"
  echo "vfio-vm: $marker exited with status $?"
}
