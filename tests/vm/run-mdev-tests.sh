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
# Its cache is tests/vm/.cache/mdev/ (git-ignored). The last line is "N passed, N failed"; the exit
# code is 0 only when nothing failed and at least one scenario passed. Exit code 3 means the
# machine cannot run the suite (no kernel/headers pair in apt, or mtty.ko does not build): the
# reason is printed, and .ci/run treats it as a skip.
#
# The tool check, the program's publication and the boot/result parsing follow run-vm-tests.sh
# (copied, not shared, so that script stays as it is); keep the two in step when one changes.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="$here/.cache/mdev"
project="$here/Vfio.VmTests/Vfio.VmTests.csproj"
program_name="Vfio.VmTests"

no_apt="${VFIO_VM_NO_APT:-0}"
fresh="${VFIO_VM_FRESH:-0}"
vm_timeout="${VFIO_VM_TIMEOUT:-600}"
verbose="${VFIO_VM_VERBOSE:-0}"

while [ $# -gt 0 ]; do
  case "$1" in
    --no-apt) no_apt=1 ;;
    --fresh) fresh=1 ;;
    --timeout) vm_timeout="${2:?--timeout needs a number of seconds}"; shift ;;
    --verbose) verbose=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "run-mdev-tests: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done

say() { echo "mdev-tests: $*"; }
die() {
  echo "mdev-tests: ERROR: $*" >&2
  echo "0 passed, 1 failed"
  exit 1
}
cannot() {
  echo "mdev-tests: SKIP: $*" >&2
  echo "0 passed, 0 failed"
  exit 3
}

started=$SECONDS
as_root=()
[ "$(id -u)" -ne 0 ] && as_root=(sudo)
[ "$fresh" = 1 ] && rm -rf "$cache"
mkdir -p "$cache/downloads"

apt_updated=0
apt_update() {
  if [ "$apt_updated" = 0 ]; then
    say "updating apt's package lists..."
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$cache/apt.log" 2>&1 \
      || { cat "$cache/apt.log" >&2; die "apt-get update failed"; }
    apt_updated=1
  fi
}

missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
command -v cpio >/dev/null || missing+=(cpio)
command -v busybox >/dev/null || missing+=(busybox-static)
command -v make >/dev/null || missing+=(make)
command -v gcc-12 >/dev/null || missing+=(gcc-12)
command -v xz >/dev/null || missing+=(xz-utils)
if [ ${#missing[@]} -gt 0 ]; then
  [ "$no_apt" = 1 ] && die "missing tools (packages: ${missing[*]}) and --no-apt was given"
  apt_update
  say "installing ${missing[*]}..."
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >>"$cache/apt.log" 2>&1 \
    || { tail -n 30 "$cache/apt.log" >&2; die "apt-get install ${missing[*]} failed"; }
fi
command -v dotnet >/dev/null || die "the .NET SDK (dotnet) is not on PATH"

# ---------------------------------------------------------------------------------------------
# Kernel and mtty.ko: the newest N for which apt offers linux-image-6.1.0-N-amd64-unsigned and
# linux-headers-6.1.0-N-amd64 at the same version (mtty.ko's vermagic must match the image's)
# ---------------------------------------------------------------------------------------------
modules=(irqbypass vfio vfio_iommu_type1 mdev mtty)

candidate() { apt-cache policy "$1" 2>/dev/null | sed -n 's/^  Candidate: \([^(].*\)$/\1/p'; }

resolve_kernel() {
  local names n image headers
  names="$(apt-cache pkgnames linux-image-6.1.0- 2>/dev/null || true)"
  for n in $(grep -E '^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$' <<<"$names" | sed -E 's/^linux-image-6\.1\.0-([0-9]+)-.*/\1/' | sort -nr); do
    image="$(candidate "linux-image-6.1.0-$n-amd64-unsigned")"
    headers="$(candidate "linux-headers-6.1.0-$n-amd64")"
    if [ -n "$image" ] && [ "$image" = "$headers" ] && [ "$(candidate "linux-headers-6.1.0-$n-common")" = "$image" ]; then
      echo "$n $image"
      return 0
    fi
  done
  return 1
}

kernel_dir=""
for dir in $(ls -d "$cache"/kernel/*/ 2>/dev/null | sort -V -r); do
  if [ -f "$dir/ready" ]; then kernel_dir="${dir%/}"; break; fi
done

if [ -z "$kernel_dir" ]; then
  [ "$no_apt" = 1 ] && die "no kernel with mtty.ko in $cache/kernel and --no-apt was given"
  found="$(resolve_kernel || true)"
  if [ -z "$found" ]; then
    apt_update
    found="$(resolve_kernel || true)"
  fi
  [ -n "$found" ] || cannot "apt offers no linux-image-6.1.0-N-amd64-unsigned with linux-headers-6.1.0-N-amd64 of the same version"
  read -r n version <<<"$found"
  abi="6.1.0-$n-amd64"
  packages=("linux-image-$abi-unsigned=$version" "linux-headers-$abi=$version" "linux-headers-6.1.0-$n-common=$version"
    "linux-kbuild-6.1=$version" "linux-source-6.1=$version")
  say "fetching ${packages[*]}..."
  for p in "${packages[@]}"; do
    name="${p%%=*}"
    if ! ls "$cache/downloads/${name}_"*.deb >/dev/null 2>&1; then
      (cd "$cache/downloads" && apt-get download -qq "$p" >>"$cache/download.log" 2>&1) \
        || { tail -n 20 "$cache/download.log" >&2; cannot "apt-get download $p failed"; }
    fi
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
  for m in irqbypass vfio vfio_iommu_type1 mdev; do
    ko="$(find "$work/image/lib/modules/$abi/kernel" -name "$m.ko" | head -n 1)"
    [ -n "$ko" ] || die "module $m.ko is not in linux-image-$abi-unsigned"
    cp "$ko" "$kernel_dir/modules/"
  done
  cp "$work/mtty/mtty.ko" "$kernel_dir/modules/"
  rm -rf "$work"
  echo "linux-image-$abi-unsigned $version" >"$kernel_dir/ready"
fi
say "kernel: $(cat "$kernel_dir/ready"), mtty.ko built against its headers"

# ---------------------------------------------------------------------------------------------
# The test program (self-contained single-file, as run-vm-tests.sh publishes it without NativeAOT)
# ---------------------------------------------------------------------------------------------
program_dir="$cache/program"
inputs_hash() {
  (
    cd "$repo"
    find src/Vfio src/Vfio.Testing samples/EduDriver samples/MdevLifecycle tests/Vfio.Scenarios tests/vm/Vfio.VmTests \( -name bin -o -name obj \) -prune -o -type f -print
    ls Directory.Build.props Directory.Packages.props global.json .editorconfig 2>/dev/null
  ) | LC_ALL=C sort | (cd "$repo" && xargs sha256sum) | sha256sum | cut -d' ' -f1
}
hash="$(inputs_hash)"
if [ ! -x "$program_dir/$program_name" ] || [ "$(cat "$program_dir/inputs" 2>/dev/null)" != "$hash" ]; then
  say "publishing the test program (self-contained single-file)..."
  rm -rf "$program_dir"
  timeout 1200 dotnet publish "$project" -c Release -r linux-x64 --nologo --self-contained \
    --artifacts-path "$cache/artifacts" -o "$program_dir" \
    -p:PublishSingleFile=true -p:PublishTrimmed=true -p:PublishReadyToRun=true >"$cache/publish.log" 2>&1 \
    || { tail -n 30 "$cache/publish.log" >&2; die "dotnet publish of $project failed"; }
  echo "$hash" >"$program_dir/inputs"
fi

# ---------------------------------------------------------------------------------------------
# initramfs: busybox, the modules, the program with its C libraries, /init
# ---------------------------------------------------------------------------------------------
initrd="$cache/initramfs.cpio.gz"
initrd_key="$hash $(cat "$kernel_dir/ready") $(sha256sum "$here/mdev-init.sh" | cut -d' ' -f1)"
if [ ! -f "$initrd" ] || [ "$(cat "$initrd.key" 2>/dev/null)" != "$initrd_key" ]; then
  say "building the initramfs..."
  root="$cache/rootfs"
  rm -rf "$root"
  mkdir -p "$root"/{bin,sbin,proc,sys,dev,tmp,lib/modules,run}
  busybox_bin="$(command -v busybox)"
  cp "$busybox_bin" "$root/bin/busybox"
  copy_libs() {
    local lib
    for lib in $(ldd "$1" 2>/dev/null | grep -oE '/[^ ]+' || true); do
      if [ -e "$lib" ] && [ ! -e "$root$lib" ]; then
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
      fi
    done
  }
  copy_libs "$busybox_bin"
  cp "$program_dir/$program_name" "$root/bin/$program_name"
  copy_libs "$program_dir/$program_name"
  gcc_s="$(ldconfig -p 2>/dev/null | grep -m1 -oE '/[^ ]*x86-64[^ ]*/libgcc_s\.so\.1|/[^ ]*/libgcc_s\.so\.1' || true)"
  if [ -n "$gcc_s" ] && [ ! -e "$root$gcc_s" ]; then
    mkdir -p "$root$(dirname "$gcc_s")"
    cp -L "$gcc_s" "$root$gcc_s"
  fi
  [ -e "$root/lib64" ] || ln -s lib "$root/lib64" 2>/dev/null || true
  for m in "${modules[@]}"; do
    cp "$kernel_dir/modules/$m.ko" "$root/lib/modules/"
  done
  printf '%s\n' "${modules[@]}" >"$root/lib/modules/load-order"
  cp "$here/mdev-init.sh" "$root/init"
  chmod +x "$root/init"
  (cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet | gzip -1 >"$initrd.tmp") \
    || die "building the initramfs failed"
  mv "$initrd.tmp" "$initrd"
  echo "$initrd_key" >"$initrd.key"
  rm -rf "$root"
fi

# ---------------------------------------------------------------------------------------------
# Boot: no IOMMU and no PCI device is needed; mtty's groups are emulated
# ---------------------------------------------------------------------------------------------
console="$cache/console.log"
qemu_err="$cache/qemu.err"
rm -f "$console" "$qemu_err"
say "booting (QEMU TCG, mdev + mtty; limit ${vm_timeout}s)..."
boot_started=$SECONDS
set +e
timeout --kill-after=10 "$vm_timeout" qemu-system-x86_64 \
  -M q35 -accel tcg -cpu max -m 2G -smp 2 -nographic -no-reboot -nic none \
  -kernel "$kernel_dir/vmlinuz" -initrd "$initrd" \
  -append "console=ttyS0 quiet loglevel=3 panic=-1" \
  </dev/null >"$console" 2>"$qemu_err"
qemu_rc=$?
set -e
boot_seconds=$((SECONDS - boot_started))
sed -E $'s/\r//g; s/\x1b\\[[0-9;?]*[A-Za-z]//g; s/\x1b[A-Za-z]//g' <"$console" >"$console.txt"
[ "$verbose" = 1 ] && sed 's/^/  | /' "$console.txt"

results="$(grep -E '^(PASS|FAIL) ' "$console.txt" || true)"
passed="$(grep -cE '^PASS ' <<<"$results" || true)"
failed="$(grep -cE '^FAIL ' <<<"$results" || true)"
[ -n "$results" ] && printf '%s\n' "$results"

problem=""
if [ "$qemu_rc" -eq 124 ] || [ "$qemu_rc" -eq 137 ]; then
  problem="guest hung: no power-off within ${vm_timeout}s"
elif [ "$qemu_rc" -ne 0 ]; then
  problem="QEMU failed with exit code $qemu_rc: $(tr '\n' ' ' <"$qemu_err")"
elif ! grep -q 'vfio-vm: init started' "$console.txt"; then
  problem="the guest never reached /init (kernel panic or boot failure)"
elif setup_error="$(grep -m1 'vfio-vm: setup failed' "$console.txt")"; then
  problem="${setup_error#*vfio-vm: }"
elif ! grep -q '^SUMMARY ' "$console.txt"; then
  problem="the test program stopped before its summary"
elif [ "$(grep -m1 '^SUMMARY ' "$console.txt")" != "SUMMARY passed=$passed failed=$failed" ]; then
  problem="the console lost result lines"
elif [ "$passed" -eq 0 ]; then
  problem="no scenario passed"
fi

if grep -q 'vfio-vm: sample begins' "$console.txt"; then
  echo "mdev-tests: the MdevLifecycle sample on the real kernel:"
  sed -n '/vfio-vm: sample begins/,/vfio-vm: sample exited/p' "$console.txt" | sed '1d; $d; s/^/  | /'
  sample_status="$(sed -n 's/.*vfio-vm: sample exited with status \([0-9]*\).*/\1/p' "$console.txt" | head -n 1)"
  if [ -z "$problem" ] && [ "${sample_status:-1}" != 0 ]; then
    problem="the MdevLifecycle sample failed on the real kernel (exit status ${sample_status:-unknown})"
  fi
elif [ -z "$problem" ]; then
  problem="the MdevLifecycle sample did not run"
fi
left="$(sed -n 's/.*vfio-vm: mdevs left: \([0-9]*\).*/\1/p' "$console.txt" | head -n 1)"
if [ -z "$problem" ] && [ "${left:-1}" != 0 ]; then
  problem="${left:-unknown} mdev(s) were left in /sys/bus/mdev/devices at the end"
fi

say "VM ran ${boot_seconds}s; $((SECONDS - started))s in all"
if [ -n "$problem" ]; then
  echo "mdev-tests: ERROR: $problem" >&2
  tail -n 25 "$console.txt" | sed 's/^/  | /' >&2
  [ "$failed" -eq 0 ] && failed=1
  echo "$passed passed, $failed failed"
  exit 1
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
