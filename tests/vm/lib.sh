# Shared by the two real-kernel suites, run-vm-tests.sh and run-mdev-tests.sh, which source it
# (not a program of its own). It holds what both do the same way: the tool check and apt install,
# the search for a kernel already unpacked in a cache, the one published test program both run,
# the initramfs, the QEMU boot and the reading of the serial console.
#
# Before sourcing it, a suite sets:
#   suite      the prefix of its messages ("vm-tests", "mdev-tests")
#   here       the folder tests/vm
#   cache      the suite's own cache folder (logs, kernel, initramfs, console)
# The program is shared by both suites: it is published once into tests/vm/.cache/program, keyed
# by a hash of its sources, and whichever suite runs first publishes it for the other.

repo="$(cd "$here/../.." && pwd)"
shared_cache="$here/.cache"
project="$here/Vfio.VmTests/Vfio.VmTests.csproj"
program_name="Vfio.VmTests"
program_dir="$shared_cache/program"

# Host programs a suite adds to its initramfs (absolute paths), each copied into /bin with the
# libraries ldd lists for it; empty unless the suite sets it after sourcing this file.
initramfs_programs=()

say() { echo "$suite: $*"; }
die() {
  echo "$suite: ERROR: $*" >&2
  echo "0 passed, 1 failed"
  exit 1
}

started=$SECONDS
as_root=()
if [ "$(id -u)" -ne 0 ]; then
  as_root=(sudo)
fi

# parse_options "OPTION..." ARG...: reads the suite's arguments, accepting only the options named
# (of --reuse --no-apt --fresh --timeout --verbose, documented in the suite's header, which -h
# prints), over the defaults from the environment. Sets reuse, no_apt, fresh, vm_timeout, verbose.
parse_options() {
  local allowed=" $1 -h --help "
  shift
  reuse="${VFIO_VM_REUSE:-0}"
  no_apt="${VFIO_VM_NO_APT:-0}"
  fresh="${VFIO_VM_FRESH:-0}"
  vm_timeout="${VFIO_VM_TIMEOUT:-600}"
  verbose="${VFIO_VM_VERBOSE:-0}"
  case "$allowed" in *" --reuse "*) ;; *) reuse=0 ;; esac
  while [ $# -gt 0 ]; do
    case "$allowed" in
      *" $1 "*) ;;
      *) echo "$(basename "$0" .sh): unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    case "$1" in
      --reuse) reuse=1 ;;
      --no-apt) no_apt=1 ;;
      --fresh) fresh=1 ;;
      --timeout) vm_timeout="${2:?--timeout needs a number of seconds}"; shift ;;
      --verbose) verbose=1 ;;
      -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    esac
    shift
  done
}

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

# need_tools [COMMAND=PACKAGE]...: installs the packages of the commands that are not on PATH,
# those every suite needs and the ones given; dies when apt may not be used or fails.
need_tools() {
  local pair missing=()
  for pair in qemu-system-x86_64=qemu-system-x86 cpio=cpio busybox=busybox-static gzip=gzip \
    timeout=coreutils ldd=libc-bin dpkg-deb=dpkg "$@"; do
    command -v "${pair%%=*}" >/dev/null || missing+=("${pair#*=}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    [ "$no_apt" = 1 ] && die "missing tools (packages: ${missing[*]}) and --no-apt was given"
    apt_update
    say "installing ${missing[*]}..."
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >>"$cache/apt.log" 2>&1 \
      || { tail -n 30 "$cache/apt.log" >&2; die "apt-get install ${missing[*]} failed"; }
  fi
  command -v dotnet >/dev/null || die "the .NET SDK (dotnet) is not on PATH"
}

# ---------------------------------------------------------------------------------------------
# Kernel: the newest one unpacked in $cache/kernel/VERSION/ (vmlinuz, modules/, and a file
# "ready" naming its package, written last)
# ---------------------------------------------------------------------------------------------
cached_kernel() {
  local dir
  for dir in $(ls -d "$cache"/kernel/*/ 2>/dev/null | sort -V -r); do
    if [ -f "$dir/ready" ]; then
      echo "${dir%/}"
      return 0
    fi
  done
}

# kernel_abis FLAVOUR: the N of every linux-image-6.1.0-N-FLAVOUR-unsigned apt knows, newest first.
kernel_abis() {
  apt-cache pkgnames linux-image-6.1.0- 2>/dev/null \
    | sed -nE "s/^linux-image-6\.1\.0-([0-9]+)-$1-unsigned\$/\1/p" | sort -nr || true
}

# candidate PACKAGE: the version apt would install, or nothing when it has none.
candidate() { apt-cache policy "$1" 2>/dev/null | sed -n 's/^  Candidate: \([^(].*\)$/\1/p'; }

# resolve_with_apt FUNCTION: sets $resolved to what FUNCTION prints (it asks apt-cache which
# packages apt offers); when it prints nothing, updates apt's lists once and asks again.
resolve_with_apt() {
  resolved="$("$1" || true)"
  if [ -z "$resolved" ]; then
    apt_update
    resolved="$("$1" || true)"
  fi
}

# fetch_deb PACKAGE[=VERSION]: sets $deb to the package's .deb in $cache/downloads, downloaded
# unless one is there already; fails (with apt's last words on stderr) when the download does.
fetch_deb() {
  local name="${1%%=*}"
  mkdir -p "$cache/downloads"
  deb="$(ls "$cache/downloads/${name}_"*.deb 2>/dev/null | head -n 1 || true)"
  if [ -z "$deb" ]; then
    (cd "$cache/downloads" && apt-get download -qq "$1" >>"$cache/download.log" 2>&1) \
      || { tail -n 20 "$cache/download.log" >&2; return 1; }
    deb="$(ls "$cache/downloads/${name}_"*.deb | head -n 1)"
  fi
}

# copy_modules TREE DEST NAME...: copies NAME.ko from the unpacked module tree TREE into DEST.
copy_modules() {
  local tree="$1" dest="$2" m ko
  shift 2
  for m in "$@"; do
    ko="$(find "$tree" -name "$m.ko" | head -n 1)"
    [ -n "$ko" ] || die "module $m.ko is not in $tree"
    cp "$ko" "$dest/"
  done
}

# The VFIO modules of Debian's 6.1 kernels, in the order busybox insmod loads them.
vfio_modules=(irqbypass vfio vfio_iommu_type1 vfio_virqfd vfio-pci-core vfio-pci)

# newest_cloud_kernel: the newest linux-image-6.1.0-N-cloud-amd64-unsigned package apt can install.
newest_cloud_kernel() {
  local n
  for n in $(kernel_abis cloud-amd64); do
    if [ -n "$(candidate "linux-image-6.1.0-$n-cloud-amd64-unsigned")" ]; then
      echo "linux-image-6.1.0-$n-cloud-amd64-unsigned"
      return 0
    fi
  done
  return 1
}

# cloud_kernel: sets $kernel_dir to Debian's 6.1 cloud kernel (its nvme driver built in), unpacked
# in the shared cache ($shared_cache/kernel/VERSION: vmlinuz, config and the VFIO modules) by
# whichever suite ran first; downloads the newest apt offers when none is there.
cloud_kernel() {
  local cache="$shared_cache" package unpacked version
  kernel_dir="$(cached_kernel)"
  if [ -z "$kernel_dir" ]; then
    [ "$no_apt" = 1 ] && die "no kernel in $cache/kernel and --no-apt was given"
    resolve_with_apt newest_cloud_kernel
    package="$resolved"
    [ -n "$package" ] || die "apt offers no linux-image-6.1.0-N-cloud-amd64-unsigned package"
    say "fetching kernel $package..."
    fetch_deb "$package" || die "apt-get download $package failed"
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
    copy_modules "$unpacked/lib/modules/$version/kernel" "$kernel_dir/modules" "${vfio_modules[@]}"
    rm -rf "$unpacked"
    echo "$package" >"$kernel_dir/ready"
  fi
  say "kernel: $(cat "$kernel_dir/ready") ($(basename "$kernel_dir"))"
}

# ---------------------------------------------------------------------------------------------
# The test program, published for linux-x64 once for both suites: NativeAOT when the toolchain
# is available, self-contained single-file otherwise
# ---------------------------------------------------------------------------------------------
inputs_hash() {
  (
    cd "$repo"
    find src/Vfio src/Vfio.Testing samples/EduDriver samples/NvmeDriver samples/MdevLifecycle samples/Common \
      tests/Vfio.Scenarios tests/vm/Vfio.VmTests \( -name bin -o -name obj \) -prune -o -type f -print
    ls Directory.Build.props Directory.Packages.props global.json .editorconfig 2>/dev/null
  ) | LC_ALL=C sort | (cd "$repo" && xargs sha256sum) | sha256sum | cut -d' ' -f1
}

publish() {
  local out="$1" log="$2"
  shift 2
  rm -rf "$out"
  timeout 1200 dotnet publish "$project" -c Release -r linux-x64 --nologo \
    --artifacts-path "$shared_cache/artifacts" -o "$out" "$@" >"$log" 2>&1
}

# publish_program REUSE: publishes the program into $program_dir unless it is there for the
# current sources (or, with REUSE=1, there at all).
publish_program() {
  local reuse="$1" need=1 hash mode="" reason sdk
  mkdir -p "$shared_cache"
  if [ -x "$program_dir/$program_name" ] && [ -f "$program_dir/inputs" ]; then
    if [ "$reuse" = 1 ] || [ "$(cat "$program_dir/inputs")" = "$(inputs_hash)" ]; then
      need=0
    fi
  fi
  if [ "$need" = 1 ]; then
    hash="$(inputs_hash)"
    sdk="$(dotnet --version)"
    if [ ! -f "$shared_cache/aot-unavailable-$sdk" ]; then
      say "publishing the test program (NativeAOT)..."
      if publish "$program_dir" "$shared_cache/publish-aot.log" -p:VmTestsAot=true; then
        mode=aot
      else
        reason="$(grep -m1 -oE 'error [A-Z]*[0-9]*:.*|error :.*' "$shared_cache/publish-aot.log" || true)"
        say "NativeAOT publish failed (${reason:-see $shared_cache/publish-aot.log}); using self-contained single-file"
        touch "$shared_cache/aot-unavailable-$sdk"
      fi
    fi
    if [ -z "$mode" ]; then
      say "publishing the test program (self-contained single-file)..."
      publish "$program_dir" "$shared_cache/publish.log" --self-contained \
        -p:PublishSingleFile=true -p:PublishTrimmed=true -p:PublishReadyToRun=true \
        || { tail -n 30 "$shared_cache/publish.log" >&2; die "dotnet publish of $project failed"; }
      mode=single-file
    fi
    echo "$mode" >"$program_dir/mode"
    echo "$hash" >"$program_dir/inputs"
  fi
  [ -x "$program_dir/$program_name" ] || die "the published program $program_dir/$program_name is missing"
  say "program: $(cat "$program_dir/mode" 2>/dev/null || echo unknown) build, $(du -h "$program_dir/$program_name" | cut -f1)"
}

# ---------------------------------------------------------------------------------------------
# initramfs: busybox, the modules, the program with the C libraries it links, /init (the suite's
# init script) and /lib/init-common.sh, which it sources
# ---------------------------------------------------------------------------------------------
# build_initramfs INIT KERNEL_DIR MODULE...: sets $initrd, rebuilt only when the program, the
# kernel, the guest scripts or the programs in $initramfs_programs changed.
build_initramfs() {
  local init="$1" kernel_dir="$2" key root busybox_bin gcc_s m extra
  shift 2
  initrd="$cache/initramfs.cpio.gz"
  key="$(cat "$program_dir/inputs") $(basename "$kernel_dir") $(cat "$kernel_dir/ready")"
  key="$key $(cat "$init" "$here/init-common.sh" | sha256sum | cut -d' ' -f1)"
  if [ ${#initramfs_programs[@]} -gt 0 ]; then
    key="$key $(sha256sum "${initramfs_programs[@]}" | sha256sum | cut -d' ' -f1)"
  fi
  if [ -f "$initrd" ] && [ "$(cat "$initrd.key" 2>/dev/null)" = "$key" ]; then
    return 0
  fi
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
  for extra in "${initramfs_programs[@]}"; do
    cp -L "$extra" "$root/bin/$(basename "$extra")"
    copy_libs "$extra"
  done
  # glibc loads libgcc_s at run time (unwinding, thread cancellation) without ldd listing it.
  gcc_s="$(ldconfig -p 2>/dev/null | grep -m1 -oE '/[^ ]*x86-64[^ ]*/libgcc_s\.so\.1|/[^ ]*/libgcc_s\.so\.1' || true)"
  if [ -n "$gcc_s" ] && [ ! -e "$root$gcc_s" ]; then
    mkdir -p "$root$(dirname "$gcc_s")"
    cp -L "$gcc_s" "$root$gcc_s"
  fi
  [ -e "$root/lib64" ] || ln -s lib "$root/lib64" 2>/dev/null || true
  for m in "$@"; do
    cp "$kernel_dir/modules/$m.ko" "$root/lib/modules/"
  done
  printf '%s\n' "$@" >"$root/lib/modules/load-order"
  cp "$here/init-common.sh" "$root/lib/init-common.sh"
  cp "$init" "$root/init"
  chmod +x "$root/init"
  (cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet | gzip -1 >"$initrd.tmp") \
    || die "building the initramfs failed"
  mv "$initrd.tmp" "$initrd"
  echo "$key" >"$initrd.key"
  rm -rf "$root"
}

# ---------------------------------------------------------------------------------------------
# Boot and results
# ---------------------------------------------------------------------------------------------
# boot KERNEL_DIR APPEND QEMU_ARG...: runs QEMU (TCG) until the guest powers off or $vm_timeout
# passes; sets $console, $qemu_rc and $boot_seconds and leaves the console's text in $console.txt.
boot() {
  local kernel_dir="$1" append="$2" qemu_err="$cache/qemu.err" boot_started=$SECONDS
  shift 2
  console="$cache/console.log"
  rm -f "$console" "$qemu_err"
  set +e
  timeout --kill-after=10 "$vm_timeout" qemu-system-x86_64 \
    -M q35 -accel tcg -cpu max -m 2G -smp 2 -nographic -no-reboot -nic none \
    "$@" \
    -kernel "$kernel_dir/vmlinuz" -initrd "$initrd" \
    -append "$append" \
    </dev/null >"$console" 2>"$qemu_err"
  qemu_rc=$?
  set -e
  boot_seconds=$((SECONDS - boot_started))
  # The text of the serial console without carriage returns and terminal escape sequences.
  sed -E $'s/\r//g; s/\x1b\\[[0-9;?]*[A-Za-z]//g; s/\x1b[A-Za-z]//g' <"$console" >"$console.txt"

  if [ "$verbose" = 1 ]; then
    sed 's/^/  | /' "$console.txt"
  fi

  if [ ! -s "$console" ] && [ "$qemu_rc" -ne 124 ] && [ "$qemu_rc" -ne 137 ]; then
    cat "$qemu_err" >&2
    die "QEMU did not start (exit code $qemu_rc)"
  fi
}

# boot_problem: sets $problem to what went wrong with QEMU, the kernel or the guest's setup (""
# when nothing did).
boot_problem() {
  local setup_error
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
    problem="QEMU failed with exit code $qemu_rc: $(tr '\n' ' ' <"$cache/qemu.err")"
  elif ! grep -q 'vfio-vm: init started' "$console.txt"; then
    problem="the guest never reached /init (kernel panic or boot failure)"
  elif setup_error="$(grep -m1 'vfio-vm: setup failed' "$console.txt")"; then
    problem="${setup_error#*vfio-vm: }"
  fi
}

# read_results: prints the PASS/FAIL lines of the console, sets $passed and $failed, and sets
# $problem to what went wrong with the guest or the test program ("" when nothing did).
read_results() {
  local results status summary
  results="$(grep -E '^(PASS|FAIL) ' "$console.txt" || true)"
  passed="$(grep -cE '^PASS ' <<<"$results" || true)"
  failed="$(grep -cE '^FAIL ' <<<"$results" || true)"
  [ -n "$results" ] && printf '%s\n' "$results"

  boot_problem
  if [ -n "$problem" ]; then
    return 0
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
}

# read_sample MARKER NAME: prints the output the guest framed with "vfio-vm: MARKER begins" and
# "vfio-vm: MARKER exited with status S", and sets $problem (unless already set) when the sample
# did not run or exited with a status other than 0.
read_sample() {
  local marker="$1" name="$2" status
  if grep -q "vfio-vm: $marker begins" "$console.txt"; then
    echo "$suite: the $name on the real kernel:"
    sed -n "/vfio-vm: $marker begins/,/vfio-vm: $marker exited/p" "$console.txt" | sed '1d; $d; s/^/  | /'
    status="$(sed -n "s/.*vfio-vm: $marker exited with status \([0-9]*\).*/\1/p" "$console.txt" | head -n 1)"
    if [ -z "$problem" ] && [ "${status:-1}" != 0 ]; then
      problem="the $name failed on the real kernel (exit status ${status:-unknown})"
    fi
  elif [ -z "$problem" ]; then
    problem="the $name did not run"
  fi
}

# finish_run: the closing lines; exits 0 only when nothing failed and at least one scenario passed.
finish_run() {
  say "VM ran ${boot_seconds}s; $((SECONDS - started))s in all"
  if [ -n "$problem" ]; then
    echo "$suite: ERROR: $problem" >&2
    echo "$suite: last lines of the serial console ($console.txt):" >&2
    tail -n 25 "$console.txt" | sed 's/^/  | /' >&2
    [ "$failed" -eq 0 ] && failed=1
    echo "$passed passed, $failed failed"
    exit 1
  fi
  echo "$passed passed, $failed failed"
  if [ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]; then
    exit 0
  fi
  exit 1
}
