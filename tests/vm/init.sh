#!/bin/busybox sh
# /init of the VM integration tests' initramfs (see run-vm-tests.sh): loads the VFIO modules,
# binds QEMU's edu devices to vfio-pci and runs the test program against them, then the edu
# sample's program, then the NVMe sample's program on an NVMe controller taken from the kernel's
# nvme driver, then powers off.
# The common setup (mounts, modules, finish/fail) is in init-common.sh, sourced below.
# Lines starting with "vfio-vm:" are read by run-vm-tests.sh and lib.sh; keep their wording in step.

. /lib/init-common.sh

# Mode noiommu boots another machine (no IOMMU, edu and NVMe only): its steps are in noiommu-init.sh,
# which powers off at its end.
if [ "$vm_mode" = noiommu ]; then
  . /lib/noiommu-init.sh
fi

vendor_id=0x1234
device_id=0x11e8

# Two edu functions: one alone in its IOMMU group, one sharing its slot's group with an NVMe
# controller that stays bound to the kernel's nvme driver (which makes that group not viable).
address=""
group=""
shared_address=""
shared_group=""
for dev in /sys/bus/pci/devices/*; do
  if [ "$(cat "$dev/vendor")" = "$vendor_id" ] && [ "$(cat "$dev/device")" = "$device_id" ]; then
    candidate="${dev##*/}"
    # Functions behind a bridge are the hot-reset pair, found below.
    case "$candidate" in 0000:00:*) ;; *) continue ;; esac
    candidate_group="$(group_of "$candidate")" || fail "$candidate has no IOMMU group (is the IOMMU on?)"
    members="$(ls "/sys/kernel/iommu_groups/$candidate_group/devices" | wc -l)"
    if [ "$members" -eq 1 ] && [ -z "$address" ]; then
      address="$candidate"
      group="$candidate_group"
    elif [ "$members" -gt 1 ] && [ -z "$shared_address" ]; then
      shared_address="$candidate"
      shared_group="$candidate_group"
    fi
  fi
done
[ -n "$address" ] || fail "no PCI device $vendor_id:$device_id (edu) alone in its IOMMU group"
[ -n "$shared_address" ] || fail "no edu function sharing its IOMMU group with another device"
for member in $(ls "/sys/kernel/iommu_groups/$shared_group/devices"); do
  [ "$member" = "$shared_address" ] && continue
  driver="$(readlink "/sys/bus/pci/devices/$member/driver" 2>/dev/null || true)"
  [ -n "$driver" ] || fail "$member (in group $shared_group with $shared_address) is bound to no host driver"
  echo "vfio-vm: $member shares group $shared_group with $shared_address and is bound to ${driver##*/}"
done
bind_vfio "$address"
bind_vfio "$shared_address"

# Two edu functions of one slot behind a PCIe root port: one reset scope for a hot reset. An edu
# function alone on the bus behind another root port is bound too (the reset scenarios find it).
reset_args=""
reset_group=""
for dev in /sys/bus/pci/devices/*; do
  candidate="${dev##*/}"
  case "$candidate" in 0000:00:*) continue ;; esac
  if [ "$(cat "$dev/vendor")" = "$vendor_id" ] && [ "$(cat "$dev/device")" = "$device_id" ]; then
    bind_vfio "$candidate"
    if [ "$(ls -d /sys/bus/pci/devices/"${candidate%:*}":* | wc -l)" -eq 1 ]; then
      echo "vfio-vm: $candidate is alone on its bus"
      continue
    fi
    reset_group="$(group_of "$candidate")"
    reset_args="$reset_args --hot-reset-device $candidate"
  fi
done
[ -n "$reset_args" ] || fail "no edu function behind a root port"
echo "vfio-vm: hot-reset pair:$reset_args (group $reset_group: $(ls "/sys/kernel/iommu_groups/$reset_group/devices" | tr '\n' ' '))"

# The functions the config-space and reset scenarios compare with the simulation: ivshmem-plain
# (1af4:1110, no reset method; its BAR2 is shared memory, for the bulk copy scenarios too) and a
# modern virtio-rng (1af4:1044, vendor-specific capabilities).
shm_address=""
for dev in /sys/bus/pci/devices/*; do
  ids="$(cat "$dev/vendor"):$(cat "$dev/device")"
  case "$ids" in
    0x1af4:0x1110|0x1af4:0x1044)
      bind_vfio "${dev##*/}"
      echo "vfio-vm: $ids at ${dev##*/} bound to vfio-pci"
      [ "$ids" = 0x1af4:0x1044 ] || shm_address="${dev##*/}"
      ;;
  esac
done
[ -n "$shm_address" ] || fail "no PCI device 0x1af4:0x1110 (ivshmem)"

# The NVMe controller alone in its IOMMU group (the other one shares the edu function's slot):
# bound to the built-in nvme driver at boot, handed to vfio-pci for the NVMe sample.
nvme_address=""
for dev in /sys/bus/pci/devices/*; do
  [ "$(cat "$dev/class")" = 0x010802 ] || continue
  candidate="${dev##*/}"
  candidate_group="$(group_of "$candidate")" || continue
  if [ "$(ls "/sys/kernel/iommu_groups/$candidate_group/devices" | wc -l)" -eq 1 ]; then
    nvme_address="$candidate"
    break
  fi
done
[ -n "$nvme_address" ] || fail "no NVMe controller (class 0x010802) alone in its IOMMU group"

# The vfio tool: bind the controller away from nvme, show it, give it back (cli-init.sh).
dmesg -n 1
. /lib/cli-init.sh
cli_steps "$nvme_address" "$shared_address"
bind_vfio "$nvme_address"

# Kernel messages would interleave with the program's lines on the serial console.
dmesg -n 1
echo "vfio-vm: running Vfio.VmTests on $address (group $group), $shared_address (group $shared_group, not viable)"
/bin/Vfio.VmTests --mode "$vm_mode" --device "$address" --group "$group" --not-viable-device "$shared_address" --not-viable-group "$shared_group" \
  $reset_args --hot-reset-group "$reset_group" --shared-memory-device "$shm_address"
echo "vfio-vm: program exited with status $?"
run_program sample --sample "$address" --backend "$vm_backend"
run_program "nvme sample" --nvme-sample "$nvme_address" --backend "$vm_backend"
finish
