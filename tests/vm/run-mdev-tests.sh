#!/usr/bin/env bash
# Proves the mediated device lifecycle on a real kernel: boots Debian's non-cloud Linux 6.1 kernel
# (it has VFIO_MDEV; the cloud kernel of run-vm-tests.sh does not) in QEMU (TCG, no KVM needed)
# with vfio, vfio_iommu_type1, mdev and the kernel's mtty sample driver, built here from
# linux-source-6.1 against the headers of exactly that kernel. In the guest it runs the mdev
# scenarios of tests/Vfio.Scenarios (MdevScenarios: create, open, region access, remove, the
# errors of creation) and the MdevLifecycle sample, through the library's real P/Invoke path.
#
# Usage: tests/vm/run-mdev-tests.sh [--no-apt] [--fresh] [--timeout SECONDS] [--verbose]
#   --no-apt      never call apt; tools, kernel and mtty.ko must already be in the cache (env VFIO_VM_NO_APT=1)
#   --fresh       delete this suite's cache first (env VFIO_VM_FRESH=1)
#   --timeout S   limit for the VM run, boot to power-off (env VFIO_VM_TIMEOUT, default 600)
#   --verbose     show the whole serial console (env VFIO_VM_VERBOSE=1)
#
# Its cache is tests/vm/.cache/mdev/ (git-ignored); the test program is the one run-vm-tests.sh
# runs, published once into tests/vm/.cache/program for both suites and again only when its
# sources change (--fresh leaves it there). The last line is "N passed, N failed"; the exit
# code is 0 only when nothing failed and at least one scenario passed. Exit code 3 means the
# machine cannot run the suite (no kernel/headers pair in apt, or mtty.ko does not build): the
# reason is printed, and .ci/run treats it as a skip.
#
# The tool check, the program's publication, the initramfs and the boot/result reading are
# shared with run-vm-tests.sh through lib.sh.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="$here/.cache/mdev"
suite=mdev-tests

. "$here/lib.sh"
parse_options "--no-apt --fresh --timeout --verbose" "$@"

cannot() {
  echo "mdev-tests: SKIP: $*" >&2
  echo "0 passed, 0 failed"
  exit 3
}

[ "$fresh" = 1 ] && rm -rf "$cache"
mkdir -p "$cache/downloads"

need_tools make=make gcc-12=gcc-12 xz=xz-utils

# ---------------------------------------------------------------------------------------------
# Kernel and mtty.ko: the newest N for which apt offers linux-image-6.1.0-N-amd64-unsigned and
# linux-headers-6.1.0-N-amd64 at the same version (mtty.ko's vermagic must match the image's)
# ---------------------------------------------------------------------------------------------
modules=(irqbypass vfio vfio_iommu_type1 mdev mtty)

resolve_kernel() {
  local n image headers
  for n in $(kernel_abis amd64); do
    image="$(candidate "linux-image-6.1.0-$n-amd64-unsigned")"
    headers="$(candidate "linux-headers-6.1.0-$n-amd64")"
    if [ -n "$image" ] && [ "$image" = "$headers" ] && [ "$(candidate "linux-headers-6.1.0-$n-common")" = "$image" ]; then
      echo "$n $image"
      return 0
    fi
  done
  return 1
}

kernel_dir="$(cached_kernel)"

if [ -z "$kernel_dir" ]; then
  [ "$no_apt" = 1 ] && die "no kernel with mtty.ko in $cache/kernel and --no-apt was given"
  resolve_with_apt resolve_kernel
  found="$resolved"
  [ -n "$found" ] || cannot "apt offers no linux-image-6.1.0-N-amd64-unsigned with linux-headers-6.1.0-N-amd64 of the same version"
  read -r n version <<<"$found"
  abi="6.1.0-$n-amd64"
  packages=("linux-image-$abi-unsigned=$version" "linux-headers-$abi=$version" "linux-headers-6.1.0-$n-common=$version"
    "linux-kbuild-6.1=$version" "linux-source-6.1=$version")
  say "fetching ${packages[*]}..."
  for p in "${packages[@]}"; do
    fetch_deb "$p" || cannot "apt-get download $p failed"
  done
  deb() { ls "$cache/downloads/${1}_"*.deb | head -n 1; }
  work="$cache/work"
  rm -rf "$work"
  mkdir -p "$work/image" "$work/headers" "$work/mtty"
  dpkg-deb -x "$(deb "linux-image-$abi-unsigned")" "$work/image"
  for name in "linux-headers-$abi" "linux-headers-6.1.0-$n-common" linux-kbuild-6.1; do
    dpkg-deb -x "$(deb "$name")" "$work/headers"
  done
  # The headers' Makefile includes the common tree by its installed absolute path: point it here.
  sed -i "s|include /usr/src/|include $work/headers/usr/src/|" "$work/headers/usr/src/linux-headers-$abi/Makefile"
  say "extracting samples/vfio-mdev/mtty.c from linux-source-6.1 $version..."
  dpkg-deb --fsys-tarfile "$(deb linux-source-6.1)" | tar -x -O ./usr/src/linux-source-6.1.tar.xz \
    | tar -xJ -O linux-source-6.1/samples/vfio-mdev/mtty.c >"$work/mtty/mtty.c" \
    || cannot "linux-source-6.1 $version has no samples/vfio-mdev/mtty.c"
  echo 'obj-m := mtty.o' >"$work/mtty/Kbuild"
  say "building mtty.ko against linux-headers-$abi..."
  make -C "$work/headers/usr/src/linux-headers-$abi" M="$work/mtty" CC=gcc-12 modules >"$cache/build.log" 2>&1 \
    || { tail -n 30 "$cache/build.log" >&2; cannot "mtty.ko does not build against linux-headers-$abi (see $cache/build.log)"; }
  magic="$(strings "$work/mtty/mtty.ko" | sed -n 's/^vermagic=\([^ ]*\).*/\1/p' | head -n 1)"
  [ "$magic" = "$abi" ] || die "mtty.ko has vermagic '$magic', not $abi"
  kernel_dir="$cache/kernel/$abi"
  rm -rf "$kernel_dir"
  mkdir -p "$kernel_dir/modules"
  cp "$work/image/boot/vmlinuz-$abi" "$kernel_dir/vmlinuz"
  copy_modules "$work/image/lib/modules/$abi/kernel" "$kernel_dir/modules" irqbypass vfio vfio_iommu_type1 mdev
  cp "$work/mtty/mtty.ko" "$kernel_dir/modules/"
  rm -rf "$work"
  echo "linux-image-$abi-unsigned $version" >"$kernel_dir/ready"
fi
say "kernel: $(cat "$kernel_dir/ready"), mtty.ko built against its headers"

publish_program "$reuse"
build_initramfs "$here/mdev-init.sh" "$kernel_dir" "${modules[@]}"

# ---------------------------------------------------------------------------------------------
# Boot: no IOMMU and no PCI device is needed; mtty's groups are emulated
# ---------------------------------------------------------------------------------------------
say "booting (QEMU TCG, mdev + mtty; limit ${vm_timeout}s)..."
boot "$kernel_dir" "console=ttyS0 quiet loglevel=3 panic=-1"

read_results
read_sample sample "MdevLifecycle sample"
left="$(sed -n 's/.*vfio-vm: mdevs left: \([0-9]*\).*/\1/p' "$console.txt" | head -n 1)"
if [ -z "$problem" ] && [ "${left:-1}" != 0 ]; then
  problem="${left:-unknown} mdev(s) were left in /sys/bus/mdev/devices at the end"
fi
finish_run
