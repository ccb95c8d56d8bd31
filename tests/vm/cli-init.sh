# Sourced by /init of the VM suite (init.sh) as /lib/cli-init.sh: the vfio tool on the real kernel.
# cli_steps NVME_ADDRESS NOT_VIABLE_ADDRESS runs the tool as a user would (doctor, list, bind, show,
# unbind --restore) on an NVMe controller that the kernel's nvme driver holds, and checks that nvme
# has it again afterwards, its block device back. Each check prints a PASS or FAIL line, which
# run-vm-tests.sh counts with the scenarios'; the transcript is framed by "vfio-vm: cli begins" and
# "vfio-vm: cli exited with status N" (N: the checks that failed).
# The tool is the test program's --cli mode (the same code as the packed vfio tool), behind /bin/vfio.

cli_failed=0

cli_check() {
  local name="$1" ok="$2" detail="$3"
  if [ "$ok" = 0 ]; then
    echo "PASS cli-$name"
  else
    echo "FAIL cli-$name: $detail"
    cli_failed=$((cli_failed + 1))
  fi
}

# cli_run ARG...: runs vfio ARG..., showing the command and its output; sets $cli_rc and $cli_out.
cli_run() {
  echo "# vfio $*"
  cli_out="$(/bin/vfio "$@" 2>&1)"
  cli_rc=$?
  [ -n "$cli_out" ] && echo "$cli_out"
  echo "# (exit code $cli_rc)"
}

driver_of() {
  local link
  link="$(readlink "/sys/bus/pci/devices/$1/driver" 2>/dev/null)" || return 0
  echo "${link##*/}"
}

# block_device ADDRESS: the first namespace block device of the NVMe controller at ADDRESS (nvme1n1), or nothing.
block_device() {
  local ctrl ns
  for ctrl in /sys/bus/pci/devices/$1/nvme/nvme*; do
    for ns in "$ctrl"/nvme*n*; do
      [ -e "$ns" ] && { echo "${ns##*/}"; return 0; }
    done
  done
}

cli_steps() {
  local address="$1" not_viable="$2" group block waited ok
  printf '#!/bin/sh\nexec /bin/Vfio.VmTests --cli "$@"\n' >/bin/vfio
  chmod +x /bin/vfio
  group="$(readlink "/sys/bus/pci/devices/$address/iommu_group")"
  group="${group##*/}"
  # The namespace shows up a moment after nvme probed the controller at boot.
  waited=0
  while [ -z "$(block_device "$address")" ] && [ "$waited" -lt 100 ]; do sleep 0.1; waited=$((waited + 1)); done
  block="$(block_device "$address")"
  echo "vfio-vm: cli begins"
  echo "# $address is on $(driver_of "$address") with block device /dev/${block:-none}"

  # What the kernel has, in any mode: /dev/vfio/vfio is iommufd's compatibility container where the
  # kernel says so when it is first opened ("IOMMUFD is providing /dev/vfio/vfio, not VFIO.", once per
  # boot, iommufd/main.c; on the vfio-compat kernel, in modes legacy-compat and iommufd alike), vfio's
  # own elsewhere. iommufd and the device cdevs where /dev/iommu exists (the kernels built from
  # source), none on Debian's.
  : <>/dev/vfio/vfio
  if dmesg | grep -q 'IOMMUFD is providing /dev/vfio/vfio'; then
    container_line='backend.container .*served by iommufd.s compatibility container'; container_kind="iommufd's compatibility container"
    show_container_line="Backend: *legacy container: iommufd's compatibility container, emulating the type1v2 IOMMU"
  else
    container_line='backend.container .*(vfio.s own'; container_kind="vfio's own container"
    show_container_line='Backend: *legacy container with the type1v2 IOMMU'
  fi
  echo "# /dev/vfio/vfio is $container_kind"

  if [ -c /dev/iommu ]; then
    iommufd_line='backend.iommufd .*/dev/iommu is there; device cdevs [^:]*: yes'; iommufd_kind="iommufd with the device cdevs"
  else
    iommufd_line='backend.iommufd .*No iommufd'; iommufd_kind="no iommufd"
  fi
  cli_run doctor
  echo "$cli_out" | grep -q '^\[ok *\] iommu ' && echo "$cli_out" | grep -q '^\[ok *\] modules ' \
    && echo "$cli_out" | grep -q "^\[ok *\] $container_line" && echo "$cli_out" | grep -q "^\[info *\] $iommufd_line"
  cli_check doctor $? "doctor did not find the IOMMU, the modules, $container_kind and $iommufd_kind as they are"

  cli_run list --class 0108
  echo "$cli_out" | grep -qE "$address +1b36:0010 +010802 +nvme"
  cli_check list $? "list did not show $address on nvme"

  cli_run bind "$not_viable"
  ok=1
  [ "$cli_rc" = 1 ] && echo "$cli_out" | grep -q "is bound to nvme" && ok=0
  cli_check bind-refuses-group "$ok" "bind of $not_viable, whose group has a device on nvme, was not refused naming it (exit $cli_rc)"

  cli_run bind "$address"
  ok=1
  [ "$cli_rc" = 0 ] && [ "$(driver_of "$address")" = vfio-pci ] && [ -c "/dev/vfio/$group" ] \
    && [ -f "/run/vfio-dotnet/bindings/$address.json" ] && [ -z "$(block_device "$address")" ] && ok=0
  cli_check bind "$ok" "after bind: exit $cli_rc, driver '$(driver_of "$address")', /dev/vfio/$group $( [ -c "/dev/vfio/$group" ] && echo present || echo missing)"

  # The backend of the mode: the legacy container's type1v2 (vfio's or iommufd's emulation of it),
  # or iommufd's IOAS through the cdev.
  cli_run show "$address" --backend "$vm_backend"
  case "$vm_backend" in iommufd) backend_line='Backend: *iommufd, IOAS' ;; *) backend_line="$show_container_line" ;; esac
  ok=1
  [ "$cli_rc" = 0 ] && echo "$cli_out" | grep -q 'BAR0' && echo "$cli_out" | grep -q 'MSI-X' \
    && echo "$cli_out" | grep -q "$backend_line" && ok=0
  cli_check show "$ok" "show of $address through the $vm_backend backend failed or did not show '$backend_line' (exit $cli_rc)"

  # The legacy container as show sees it in every mode: on the vfio-compat kernel in mode iommufd too,
  # it names iommufd's compatibility container (its --json says which container serves the node).
  if [ "$vm_backend" = iommufd ]; then
    cli_run show "$address" --backend legacy
    ok=1
    [ "$cli_rc" = 0 ] && echo "$cli_out" | grep -q "$show_container_line" && ok=0
    cli_check show-container "$ok" "show of $address through the legacy container did not show '$show_container_line' (exit $cli_rc)"
  fi

  cli_run unbind --restore "$address"
  waited=0
  while [ -z "$(block_device "$address")" ] && [ "$waited" -lt 150 ]; do sleep 0.1; waited=$((waited + 1)); done
  block="$(block_device "$address")"
  ok=1
  [ "$cli_rc" = 0 ] && [ "$(driver_of "$address")" = nvme ] && [ -n "$block" ] && [ -b "/dev/$block" ] \
    && [ ! -e "/run/vfio-dotnet/bindings/$address.json" ] && ok=0
  echo "# $address is on $(driver_of "$address") with block device /dev/${block:-none}"
  cli_check restore "$ok" "after unbind --restore: exit $cli_rc, driver '$(driver_of "$address")', block device '${block:-none}'"

  echo "vfio-vm: cli exited with status $cli_failed"
}
