#!/usr/bin/env bash
# Boots a real Linux kernel in QEMU (software emulation, no KVM needed) with an emulated Intel
# IOMMU and two QEMU "edu" PCI devices: one alone in its slot, one sharing a multifunction slot
# (and so its IOMMU group) with an NVMe controller that stays bound to the kernel's nvme driver.
# It binds both edu functions to vfio-pci and runs the scenarios of tests/Vfio.Scenarios (the
# same suite dotnet test runs on the simulated kernel) through the library's real P/Invoke path,
# then the edu sample's program (samples/EduDriver), whose output it prints between markers.
#
# Usage: tests/vm/run-vm-tests.sh [--reuse] [--no-apt] [--fresh] [--timeout SECONDS] [--verbose]
#   --reuse       reuse the published program and the initramfs in the cache as they are, without
#                 checking whether the sources changed (env VFIO_VM_REUSE=1)
#   --no-apt      never call apt; the tools and a cached kernel must already be there
#                 (env VFIO_VM_NO_APT=1)
#   --fresh       delete the cache first and start cold (env VFIO_VM_FRESH=1)
#   --timeout S   limit for the VM run, boot to power-off (env VFIO_VM_TIMEOUT, default 600)
#   --verbose     show the whole serial console (env VFIO_VM_VERBOSE=1)
#
# Downloads and built artifacts live in tests/vm/.cache/ (git-ignored). Without --fresh, a kernel
# already in the cache is used as is, and the program is published again only when its sources
# changed. The last line is "N passed, N failed"; the exit code is 0 only when nothing failed and
# at least one scenario passed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="$here/.cache"
project="$here/Vfio.VmTests/Vfio.VmTests.csproj"
program_name="Vfio.VmTests"

reuse="${VFIO_VM_REUSE:-0}"
no_apt="${VFIO_VM_NO_APT:-0}"
fresh="${VFIO_VM_FRESH:-0}"
vm_timeout="${VFIO_VM_TIMEOUT:-600}"
verbose="${VFIO_VM_VERBOSE:-0}"

while [ $# -gt 0 ]; do
  case "$1" in
    --reuse) reuse=1 ;;
    --no-apt) no_apt=1 ;;
    --fresh) fresh=1 ;;
    --timeout) vm_timeout="${2:?--timeout needs a number of seconds}"; shift ;;
    --verbose) verbose=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "run-vm-tests: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done

say() { echo "vm-tests: $*"; }
die() {
  echo "vm-tests: ERROR: $*" >&2
  echo "0 passed, 1 failed"
  exit 1
}

started=$SECONDS
as_root=()
if [ "$(id -u)" -ne 0 ]; then
  as_root=(sudo)
fi

if [ "$fresh" = 1 ]; then
  say "deleting the cache ($cache)"
  rm -rf "$cache"
fi
mkdir -p "$cache"

# ---------------------------------------------------------------------------------------------
# Tools from apt
# ---------------------------------------------------------------------------------------------
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
command -v gzip >/dev/null || missing+=(gzip)
command -v timeout >/dev/null || missing+=(coreutils)
command -v ldd >/dev/null || missing+=(libc-bin)
command -v dpkg-deb >/dev/null || missing+=(dpkg)
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
# Kernel: the newest linux-image-6.1.0-N-cloud-amd64-unsigned apt offers, unpacked, trimmed to
# the image and the VFIO modules
# ---------------------------------------------------------------------------------------------
modules=(irqbypass vfio vfio_iommu_type1 vfio_virqfd vfio-pci-core vfio-pci)

resolve_kernel_package() {
  local name names policy
  names="$(apt-cache pkgnames linux-image-6.1.0- 2>/dev/null || true)"
  for name in $(grep -E '^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$' <<<"$names" | sort -t- -k4,4nr); do
    policy="$(apt-cache policy "$name" 2>/dev/null || true)"
    if grep -qE '^  Candidate: [^(]' <<<"$policy"; then
      echo "$name"
      return 0
    fi
  done
  return 1
}

kernel_dir=""
for dir in $(ls -d "$cache"/kernel/*/ 2>/dev/null | sort -V -r); do
  if [ -f "$dir/ready" ]; then
    kernel_dir="${dir%/}"
    break
  fi
done

if [ -z "$kernel_dir" ]; then
  [ "$no_apt" = 1 ] && die "no kernel in $cache/kernel and --no-apt was given"
  package="$(resolve_kernel_package || true)"
  if [ -z "$package" ]; then
    apt_update
    package="$(resolve_kernel_package || true)"
  fi
  [ -n "$package" ] || die "apt offers no linux-image-6.1.0-N-cloud-amd64-unsigned package"
  say "fetching kernel $package..."
  mkdir -p "$cache/downloads"
  deb="$(ls "$cache/downloads/${package}_"*.deb 2>/dev/null | head -n 1 || true)"
  if [ -z "$deb" ]; then
    (cd "$cache/downloads" && apt-get download -qq "$package" >"$cache/download.log" 2>&1) \
      || { cat "$cache/download.log" >&2; die "apt-get download $package failed"; }
    deb="$(ls "$cache/downloads/${package}_"*.deb | head -n 1)"
  fi
  unpacked="$cache/unpacked"
  rm -rf "$unpacked"
  dpkg-deb -x "$deb" "$unpacked" || die "dpkg-deb -x $deb failed"
  version="$(ls "$unpacked/lib/modules" | head -n 1)"
  [ -n "$version" ] && [ -f "$unpacked/boot/vmlinuz-$version" ] || die "no kernel image in $deb"
  kernel_dir="$cache/kernel/$version"
  rm -rf "$kernel_dir"
  mkdir -p "$kernel_dir/modules"
  cp "$unpacked/boot/vmlinuz-$version" "$kernel_dir/vmlinuz"
  cp "$unpacked/boot/config-$version" "$kernel_dir/config" 2>/dev/null || true
  for m in "${modules[@]}"; do
    ko="$(find "$unpacked/lib/modules/$version/kernel" -name "$m.ko" | head -n 1)"
    [ -n "$ko" ] || die "module $m.ko is not in $deb"
    cp "$ko" "$kernel_dir/modules/"
  done
  rm -rf "$unpacked"
  echo "$package" >"$kernel_dir/ready"
fi
say "kernel: $(cat "$kernel_dir/ready") ($(basename "$kernel_dir"))"

# ---------------------------------------------------------------------------------------------
# The test program, published for linux-x64: NativeAOT when the toolchain is available,
# self-contained single-file otherwise
# ---------------------------------------------------------------------------------------------
program_dir="$cache/program"
inputs_hash() {
  (
    cd "$repo"
    find src/Vfio src/Vfio.Testing samples/EduDriver tests/Vfio.Scenarios tests/vm/Vfio.VmTests \( -name bin -o -name obj \) -prune -o -type f -print
    ls Directory.Build.props Directory.Packages.props global.json .editorconfig 2>/dev/null
  ) | LC_ALL=C sort | (cd "$repo" && xargs sha256sum) | sha256sum | cut -d' ' -f1
}

publish() {
  local out="$1" log="$2"
  shift 2
  rm -rf "$out"
  timeout 1200 dotnet publish "$project" -c Release -r linux-x64 --nologo \
    --artifacts-path "$cache/artifacts" -o "$out" "$@" >"$log" 2>&1
}

need_publish=1
if [ -x "$program_dir/$program_name" ] && [ -f "$program_dir/inputs" ]; then
  if [ "$reuse" = 1 ] || [ "$(cat "$program_dir/inputs")" = "$(inputs_hash)" ]; then
    need_publish=0
  fi
fi

sdk="$(dotnet --version)"
if [ "$need_publish" = 1 ]; then
  hash="$(inputs_hash)"
  mode=""
  if [ ! -f "$cache/aot-unavailable-$sdk" ]; then
    say "publishing the test program (NativeAOT)..."
    if publish "$program_dir" "$cache/publish-aot.log" -p:VmTestsAot=true; then
      mode=aot
    else
      reason="$(grep -m1 -oE 'error [A-Z]*[0-9]*:.*|error :.*' "$cache/publish-aot.log" || true)"
      say "NativeAOT publish failed (${reason:-see $cache/publish-aot.log}); using self-contained single-file"
      touch "$cache/aot-unavailable-$sdk"
    fi
  fi
  if [ -z "$mode" ]; then
    say "publishing the test program (self-contained single-file)..."
    publish "$program_dir" "$cache/publish.log" --self-contained \
      -p:PublishSingleFile=true -p:PublishTrimmed=true -p:PublishReadyToRun=true \
      || { tail -n 30 "$cache/publish.log" >&2; die "dotnet publish of $project failed"; }
    mode=single-file
  fi
  echo "$mode" >"$program_dir/mode"
  echo "$hash" >"$program_dir/inputs"
fi
[ -x "$program_dir/$program_name" ] || die "the published program $program_dir/$program_name is missing"
say "program: $(cat "$program_dir/mode" 2>/dev/null || echo unknown) build, $(du -h "$program_dir/$program_name" | cut -f1)"

# ---------------------------------------------------------------------------------------------
# initramfs: busybox, the VFIO modules, the program with the C libraries it links, /init
# ---------------------------------------------------------------------------------------------
initrd="$cache/initramfs.cpio.gz"
initrd_key="$(cat "$program_dir/inputs") $(basename "$kernel_dir") $(sha256sum "$here/init.sh" | cut -d' ' -f1)"
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
  # glibc loads libgcc_s at run time (unwinding, thread cancellation) without ldd listing it.
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
  cp "$here/init.sh" "$root/init"
  chmod +x "$root/init"
  (cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet | gzip -1 >"$initrd.tmp") \
    || die "building the initramfs failed"
  mv "$initrd.tmp" "$initrd"
  echo "$initrd_key" >"$initrd.key"
  rm -rf "$root"
fi

# ---------------------------------------------------------------------------------------------
# Boot
# ---------------------------------------------------------------------------------------------
console="$cache/console.log"
qemu_err="$cache/qemu.err"
rm -f "$console" "$qemu_err"
# The NVMe controller's backing file: a small raw disk, never written by the tests.
nvme_disk="$cache/nvme.img"
[ -f "$nvme_disk" ] || truncate -s 1M "$nvme_disk"

say "booting (QEMU TCG, intel-iommu + edu at 03.0 + edu/nvme at 04.0/04.1; limit ${vm_timeout}s)..."
boot_started=$SECONDS
set +e
timeout --kill-after=10 "$vm_timeout" qemu-system-x86_64 \
  -M q35 -accel tcg -cpu max -m 2G -smp 2 -nographic -no-reboot -nic none \
  -device intel-iommu,caching-mode=on \
  -device edu,addr=03.0 \
  -device edu,addr=04.0,multifunction=on \
  -drive file="$nvme_disk",if=none,id=nvme0,format=raw \
  -device nvme,serial=vfiovm0,drive=nvme0,addr=04.1 \
  -kernel "$kernel_dir/vmlinuz" -initrd "$initrd" \
  -append "console=ttyS0 intel_iommu=on no_timer_check quiet loglevel=3 panic=-1" \
  </dev/null >"$console" 2>"$qemu_err"
qemu_rc=$?
set -e
boot_seconds=$((SECONDS - boot_started))
# The text of the serial console without carriage returns and terminal escape sequences.
sed -E $'s/\r//g; s/\x1b\\[[0-9;?]*[A-Za-z]//g; s/\x1b[A-Za-z]//g' <"$console" >"$console.txt"

if [ "$verbose" = 1 ]; then
  sed 's/^/  | /' "$console.txt"
fi

show_console_tail() {
  echo "vm-tests: last lines of the serial console ($console.txt):" >&2
  tail -n 25 "$console.txt" | sed 's/^/  | /' >&2
}

if [ ! -s "$console" ] && [ "$qemu_rc" -ne 124 ] && [ "$qemu_rc" -ne 137 ]; then
  cat "$qemu_err" >&2
  die "QEMU did not start (exit code $qemu_rc)"
fi

results="$(grep -E '^(PASS|FAIL) ' "$console.txt" || true)"
passed="$(grep -cE '^PASS ' <<<"$results" || true)"
failed="$(grep -cE '^FAIL ' <<<"$results" || true)"
[ -n "$results" ] && printf '%s\n' "$results"

problem=""
if [ "$qemu_rc" -eq 124 ] || [ "$qemu_rc" -eq 137 ]; then
  if ! grep -q 'vfio-vm: init started' "$console.txt"; then
    problem="guest hung: the kernel did not reach /init within ${vm_timeout}s"
  elif grep -q 'vfio-vm: running ' "$console.txt" && ! grep -q 'vfio-vm: program exited' "$console.txt"; then
    problem="guest hung: the test program did not finish within ${vm_timeout}s"
  else
    problem="guest hung: QEMU did not power off within ${vm_timeout}s"
  fi
elif [ "$qemu_rc" -ne 0 ]; then
  problem="QEMU failed with exit code $qemu_rc: $(tr '\n' ' ' <"$qemu_err")"
elif ! grep -q 'vfio-vm: init started' "$console.txt"; then
  problem="the guest never reached /init (kernel panic or boot failure)"
elif setup_error="$(grep -m1 'vfio-vm: setup failed' "$console.txt")"; then
  problem="${setup_error#*vfio-vm: }"
elif ! grep -q 'vfio-vm: program exited' "$console.txt"; then
  problem="the guest stopped before the test program finished"
else
  status="$(sed -n 's/.*vfio-vm: program exited with status \([0-9]*\).*/\1/p' "$console.txt" | head -n 1)"
  if ! grep -q '^SUMMARY ' "$console.txt"; then
    problem="the test program crashed (exit status ${status:-unknown}) before its summary"
  elif [ "${status:-1}" -ge 128 ]; then
    problem="the test program crashed (exit status $status)"
  elif [ "$passed" -eq 0 ] && [ "$failed" -eq 0 ]; then
    problem="the test program printed no result lines"
  else
    summary="$(grep -m1 '^SUMMARY ' "$console.txt")"
    if [ "$summary" != "SUMMARY passed=$passed failed=$failed" ]; then
      problem="the console lost result lines (program said '${summary#SUMMARY }', console shows passed=$passed failed=$failed)"
    fi
  fi
fi

if grep -q 'vfio-vm: sample begins' "$console.txt"; then
  echo "vm-tests: the edu sample on the real kernel:"
  sed -n '/vfio-vm: sample begins/,/vfio-vm: sample exited/p' "$console.txt" | sed '1d; $d; s/^/  | /'
  sample_status="$(sed -n 's/.*vfio-vm: sample exited with status \([0-9]*\).*/\1/p' "$console.txt" | head -n 1)"
  if [ -z "$problem" ] && [ "${sample_status:-1}" != 0 ]; then
    problem="the edu sample failed on the real kernel (exit status ${sample_status:-unknown})"
  fi
elif [ -z "$problem" ]; then
  problem="the edu sample did not run"
fi

say "VM ran ${boot_seconds}s; $((SECONDS - started))s in all"
if [ -n "$problem" ]; then
  echo "vm-tests: ERROR: $problem" >&2
  show_console_tail
  [ "$failed" -eq 0 ] && failed=1
  echo "$passed passed, $failed failed"
  exit 1
fi
echo "$passed passed, $failed failed"
if [ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]; then
  exit 0
fi
exit 1
