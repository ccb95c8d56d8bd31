# Sourced by init.sh in mode noiommu (see run-vm-tests.sh): a q35 machine without an IOMMU, vfio in
# unsafe no-IOMMU mode (vfio.enable_unsafe_noiommu_mode=1 on the command line). Binds the edu device
# and the NVMe controller to vfio-pci, which gives each a no-IOMMU group (/dev/vfio/noiommu-N; there
# is no iommu_group before), reserves hugepages (a DMA buffer of more than one page must be
# physically contiguous), runs the no-IOMMU scenarios, then the edu and NVMe samples, and powers off.
# Lines starting with "vfio-vm:" are read by run-vm-tests.sh and lib.sh; keep their wording in step.

# bind_noiommu ADDRESS: hands a PCI device to vfio-pci and prints its no-IOMMU group; a setup
# failure when any step fails.
bind_noiommu() {
  local address="$1" dev="/sys/bus/pci/devices/$1" group driver waited=0
  [ -e "$dev/iommu_group" ] && fail "$address has an IOMMU group before vfio-pci took it: is there an IOMMU?"
  if [ -e "$dev/driver" ]; then
    echo "$address" >"$dev/driver/unbind" || fail "unbind $address"
  fi
  echo vfio-pci >"$dev/driver_override" || fail "driver_override of $address"
  echo "$address" >/sys/bus/pci/drivers_probe || fail "drivers_probe $address (is vfio in no-IOMMU mode?)"
  group="$(group_of "$address")" || fail "$address has no group after binding to vfio-pci"
  while [ ! -c "/dev/vfio/noiommu-$group" ]; do
    [ "$waited" -ge 50 ] && fail "/dev/vfio/noiommu-$group did not appear after binding $address"
    sleep 0.1
    waited=$((waited + 1))
  done
  driver="$(readlink "$dev/driver")"
  [ "${driver##*/}" = vfio-pci ] || fail "$address is bound to '${driver##*/}', not vfio-pci"
  echo "$group"
}

[ "$(cat /sys/module/vfio/parameters/enable_unsafe_noiommu_mode)" = Y ] || fail "vfio is not in unsafe no-IOMMU mode"
edu=""
nvme=""
for dev in /sys/bus/pci/devices/*; do
  if [ "$(cat "$dev/vendor")" = 0x1234 ] && [ "$(cat "$dev/device")" = 0x11e8 ]; then
    edu="${dev##*/}"
  elif [ "$(cat "$dev/class")" = 0x010802 ]; then
    nvme="${dev##*/}"
  fi
done
[ -n "$edu" ] || fail "no edu device"
[ -n "$nvme" ] || fail "no NVMe controller"
edu_group="$(bind_noiommu "$edu")"
nvme_group="$(bind_noiommu "$nvme")"
echo "vfio-vm: no-IOMMU groups: $edu in noiommu-$edu_group, $nvme in noiommu-$nvme_group ($(cat "/sys/kernel/iommu_groups/$edu_group/name"))"
# The samples' buffers of more than one page come from the 2 MiB pool (the scenarios set their own).
echo 32 >/proc/sys/vm/nr_hugepages || fail "reserving hugepages"
echo "vfio-vm: hugepages: $(cat /proc/sys/vm/nr_hugepages) reserved"

dmesg -n 1
echo "vfio-vm: running Vfio.VmTests --noiommu on $edu (group $edu_group)"
/bin/Vfio.VmTests --noiommu --mode "$vm_mode" --device "$edu" --group "$edu_group"
echo "vfio-vm: program exited with status $?"
run_program sample --sample "$edu"
run_program "nvme sample" --nvme-sample "$nvme"
finish
