# Shared by the real-kernel suites, run-vm-tests.sh and run-mdev-tests.sh, and by build-kernel.sh,
# which source it (not a program of its own). It holds what they do the same way: the tool check
# and apt install; the cache outside the clone; Debian's packages through private apt state; the
# guest kernels (Debian's, unpacked, and those built from source); the kernel matrix and its
# modes; the one published test program; the initramfs; the QEMU boot; the reading of the serial
# console; and the closing lines.
#
# Before sourcing it, a script sets:
#   suite      the prefix of its messages ("vm-tests", "mdev-tests")
#   here       the folder tests/vm
#   cache      the suite's own cache folder in the clone (logs, initramfs, console)
# The program is shared by both suites: it is published once into tests/vm/.cache/program, keyed
# by a hash of its sources, and whichever suite runs first publishes it for the other. Kernels
# live outside the clone, in $vfio_cache (below), shared by every clone on the machine.

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
  reported=1
  exit 1
}

# A command that fails outside a condition ends the script (set -e) without a word: the ERR trap
# (in functions and subshells too: set -E) notes which and where, and the exit trap below says it
# when the script ends that way, not through die or its closing lines.
reported=0
last_failure=""
set -E
trap 'last_failure="\"$BASH_COMMAND\" failed (exit code $?) at ${BASH_SOURCE[0]##*/} line $LINENO"' ERR

started=$SECONDS
as_root=()
if [ "$(id -u)" -ne 0 ]; then
  as_root=(sudo)
fi

# parse_options "OPTION..." ARG...: reads the suite's arguments, accepting only the options named
# (of --reuse --no-apt --fresh --timeout --verbose --kernel --mode, documented in the suite's
# header, which -h prints), over the defaults from the environment. Sets reuse, no_apt, fresh,
# vm_timeout, verbose, and selected_kernels / selected_modes (space-separated; empty: all).
parse_options() {
  local allowed=" $1 -h --help "
  shift
  reuse="${VFIO_VM_REUSE:-0}"
  no_apt="${VFIO_VM_NO_APT:-0}"
  fresh="${VFIO_VM_FRESH:-0}"
  vm_timeout="${VFIO_VM_TIMEOUT:-600}"
  poweroff_grace="${VFIO_VM_POWEROFF_GRACE:-60}"
  verbose="${VFIO_VM_VERBOSE:-0}"
  selected_kernels="${VFIO_VM_KERNELS:-}"
  selected_modes="${VFIO_VM_MODES:-}"
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
      --kernel) selected_kernels+=" ${2:?--kernel needs a kernel (see --help)}"; shift ;;
      --mode) selected_modes+=" ${2:?--mode needs legacy, legacy-compat or iommufd}"; shift ;;
      -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    esac
    shift
  done
  selected_kernels="${selected_kernels//,/ }"
  selected_modes="${selected_modes//,/ }"
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

# need_tools [COMMAND=PACKAGE | /FILE=PACKAGE]...: installs the packages of the commands that are
# not on PATH (or of the files that are missing), those every suite needs and the ones given;
# dies when apt may not be used or fails.
need_tools() {
  local pair what missing=()
  for pair in qemu-system-x86_64=qemu-system-x86 cpio=cpio busybox=busybox-static gzip=gzip \
    timeout=coreutils ldd=libc-bin dpkg-deb=dpkg flock=util-linux "$@"; do
    what="${pair%%=*}"
    case "$what" in
      /*) [ -e "$what" ] || missing+=("${pair#*=}") ;;
      *) command -v "$what" >/dev/null || missing+=("${pair#*=}") ;;
    esac
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
# The cache outside the clone: Debian's packages, the kernels unpacked from them and the kernels
# built from source, shared by every clone and worktree on this machine (CI runs in a fresh
# clone, and finds them there). Anything written there appears in one rename of a finished
# folder, so a suite of another clone never sees half of it; long work holds a lock, so a second
# run waits for the first instead of doing the same work twice.
# ---------------------------------------------------------------------------------------------
# (HOME from the user database when the environment has none.)
vfio_cache="${VFIO_CACHE:-${XDG_CACHE_HOME:-${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}/.cache}/vfio-dotnet}"
# At exit (a signal included): stop the build still running in the background, delete the
# temporary folders not published. Those a killed run left behind go after a day.
temporaries=()
background_pid=""
on_exit() {
  local rc=$?
  if [ "$rc" -ne 0 ] && [ "$reported" = 0 ] && [ -n "$last_failure" ]; then
    echo "$suite: ERROR: $last_failure" >&2
    echo "0 passed, 1 failed"
  fi
  [ -n "$background_pid" ] && kill -- "-$background_pid" 2>/dev/null
  rm -rf "${temporaries[@]}"
}
trap on_exit EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
if [ -d "$vfio_cache/tmp" ]; then
  find "$vfio_cache/tmp" -mindepth 1 -maxdepth 1 -mmin +1440 -exec rm -rf {} + 2>/dev/null || true
fi

# cache_temp NAME: sets $temp (a caller's local, if it has one) to a new folder in the outside
# cache (on its file system, so that publish_folder can rename it), deleted at exit unless published.
cache_temp() {
  mkdir -p "$vfio_cache/tmp"
  temp="$(mktemp -d "$vfio_cache/tmp/$1.XXXXXX")"
  temporaries+=("$temp")
}

# publish_folder TEMP FINAL: makes the finished folder TEMP appear as FINAL in one rename; when
# another run published FINAL first, that one stays and TEMP goes.
publish_folder() {
  mkdir -p "$(dirname "$2")"
  mv -T "$1" "$2" 2>/dev/null || rm -rf "$1"
}

# cache_lock NAME / cache_unlock: holds the lock NAME of the outside cache (waiting for it);
# exiting releases it too.
cache_lock() {
  mkdir -p "$vfio_cache/locks"
  exec {lock_fd}>"$vfio_cache/locks/$1"
  if ! flock -n "$lock_fd"; then
    say "waiting for another run that holds the cache lock '$1'..."
    flock "$lock_fd"
  fi
}
cache_unlock() { exec {lock_fd}>&-; }

# ---------------------------------------------------------------------------------------------
# Debian's archive through a private sources list and private apt state in $vfio_cache/apt: the
# suites of other releases (trixie, trixie-backports, sid) are read there, and the machine's own
# apt configuration and lists stay untouched. The archive's address is the one the machine's apt
# uses for its own release (VFIO_DEBIAN_MIRROR overrides it).
# ---------------------------------------------------------------------------------------------
# The suites read, and the security suites (kernel updates of stable releases appear there).
debian_suites=(bookworm trixie trixie-backports sid)
debian_security_suites=(bookworm-security trixie-security)
debian_dir="$vfio_cache/apt"
debian_options=(-o "Dir::Etc::sourcelist=$debian_dir/sources.list" -o Dir::Etc::sourceparts=-
  -o "Dir::State::Lists=$debian_dir/lists" -o "Dir::Cache=$debian_dir/cache"
  -o "APT::Sandbox::User=$(id -un)" -o Acquire::Languages=none
  -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false)
debian_updated=0

# debian_mirror [security]: the address of Debian's archive (or of its security archive) that the
# machine's apt uses; VFIO_DEBIAN_MIRROR and VFIO_DEBIAN_SECURITY_MIRROR override them.
debian_mirror() {
  local release targets
  targets="$(apt-get indextargets --format '$(RELEASE) $(REPO_URI)' 2>/dev/null | sort -u)"
  release="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
  if [ "${1:-}" = security ]; then
    [ -n "${VFIO_DEBIAN_SECURITY_MIRROR:-}" ] && { echo "$VFIO_DEBIAN_SECURITY_MIRROR"; return 0; }
    awk -v r="$release-security" '$1 == r { print $2; exit }' <<<"$targets"
  else
    [ -n "${VFIO_DEBIAN_MIRROR:-}" ] && { echo "$VFIO_DEBIAN_MIRROR"; return 0; }
    awk -v r="$release" '$1 == r { print $2; exit }' <<<"$targets"
  fi
}

# debian_update [force]: fetches the package lists of the private sources (once per run when
# forced, otherwise only when there are none yet).
debian_update() {
  local mirror security release list
  if [ "${1:-}" != force ] && [ -f "$debian_dir/updated" ]; then
    return 0
  fi
  [ "$debian_updated" = 1 ] && return 0
  [ "$no_apt" = 1 ] && die "the private apt lists in $debian_dir are missing or stale and --no-apt was given"
  mirror="$(debian_mirror)"
  [ -n "$mirror" ] || die "found no Debian archive in the machine's apt sources (set VFIO_DEBIAN_MIRROR)"
  security="$(debian_mirror security)"
  cache_lock apt
  if [ "${1:-}" != force ] && [ -f "$debian_dir/updated" ]; then
    # Another run updated them while this one waited for the lock.
    cache_unlock
    return 0
  fi
  mkdir -p "$debian_dir/lists/partial" "$debian_dir/cache/archives/partial"
  list=""
  for release in "${debian_suites[@]}"; do
    list+="deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${mirror%/}/ $release main"$'\n'
  done
  if [ -n "$security" ]; then
    for release in "${debian_security_suites[@]}"; do
      list+="deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${security%/}/ $release main"$'\n'
    done
  else
    say "found no security archive in the machine's apt sources (VFIO_DEBIAN_SECURITY_MIRROR): reading without"
  fi
  printf '%s' "$list" >"$debian_dir/sources.list"
  say "updating the private apt lists (${debian_suites[*]}${security:+ ${debian_security_suites[*]}}) in $debian_dir..."
  apt-get "${debian_options[@]}" update -qq >"$debian_dir/update.log" 2>&1 \
    || { cache_unlock; tail -n 20 "$debian_dir/update.log" >&2; die "apt-get update of the private sources failed"; }
  touch "$debian_dir/updated"
  cache_unlock
  debian_updated=1
}

# debian_candidate PACKAGE: the version the private sources offer, or nothing.
debian_candidate() {
  apt-cache "${debian_options[@]}" policy "$1" 2>/dev/null | sed -n 's/^  Candidate: \([^(].*\)$/\1/p'
}

# debian_newest PREFIX REGEX: the newest (by version sort) package whose name starts with PREFIX,
# matches REGEX and has a candidate; nothing when none does.
debian_newest() {
  local name
  for name in $(apt-cache "${debian_options[@]}" pkgnames "$1" 2>/dev/null | grep -E "$2" | sort -V -r); do
    if [ -n "$(debian_candidate "$name")" ]; then
      echo "$name"
      return 0
    fi
  done
}

# debian_fetch PACKAGE: sets $deb to the .deb of the version the private sources offer, from
# $vfio_cache/debs, downloaded there (through a temporary folder) unless it is there already. When
# the download fails on lists of an earlier run (the archive dropped that version), the lists are
# updated once and the then offered version is downloaded.
debian_fetch() {
  local name="$1" version file temp
  version="$(debian_candidate "$name")"
  [ -n "$version" ] || die "the private apt sources offer no $name"
  file="${name}_${version//:/%3a}_"
  deb="$(ls "$vfio_cache/debs/$file"*.deb 2>/dev/null | head -n 1 || true)"
  [ -n "$deb" ] && return 0
  cache_temp download
  say "downloading $name $version..."
  if ! (cd "$temp" && apt-get "${debian_options[@]}" download -qq "$name=$version" >download.log 2>&1); then
    if [ "$debian_updated" = 0 ]; then
      say "downloading $name $version failed; updating the lists and trying again"
      debian_update force
      debian_fetch "$name"
      return 0
    fi
    tail -n 20 "$temp/download.log" >&2
    die "apt-get download $name=$version failed"
  fi
  mkdir -p "$vfio_cache/debs"
  mv "$temp/$file"*.deb "$vfio_cache/debs/"
  deb="$(ls "$vfio_cache/debs/$file"*.deb | head -n 1)"
}

# ---------------------------------------------------------------------------------------------
# Kernels built from Debian's linux-source-7.N (the newest the private sources offer, 7.2 or
# later), configured from `make tinyconfig` plus the fragments in tests/vm/kernel/ applied with the
# kernel's scripts/config, everything built in. Each build variant is a list of fragments:
#   vfio          vfio.config: VFIO's group and container API with type1, iommufd and the cdev
#   vfio-compat   vfio.config + legacy-compat.config: no VFIO container; /dev/vfio/vfio is
#                 iommufd's compatibility container
# The image is cached as $vfio_cache/kernels/SOURCE_VERSION-CONFIG_HASH/bzImage, keyed by the
# source package's version and the fragments' content.
# ---------------------------------------------------------------------------------------------
kernel_fragments_dir="$here/kernel"

# variant_fragments VARIANT: the fragment files of a build variant, in the order applied.
variant_fragments() {
  case "$1" in
    vfio) echo "$kernel_fragments_dir/vfio.config" ;;
    vfio-compat) echo "$kernel_fragments_dir/vfio.config $kernel_fragments_dir/legacy-compat.config" ;;
    *) die "no kernel build variant '$1' (vfio, vfio-compat)" ;;
  esac
}

# kernel_source_package: sets $source_package and $source_version (the newest linux-source-7.N).
kernel_source_package() {
  debian_update
  source_package="$(debian_newest linux-source- '^linux-source-([7-9]|[1-9][0-9])\.[0-9]+$')"
  if [ -z "$source_package" ] && [ "$debian_updated" = 0 ]; then
    debian_update force
    source_package="$(debian_newest linux-source- '^linux-source-([7-9]|[1-9][0-9])\.[0-9]+$')"
  fi
  [ -n "$source_package" ] || die "the private apt sources offer no linux-source-7.N or newer"
  source_version="$(debian_candidate "$source_package")"
}

# built_kernel_dir VARIANT: prints the cache folder of VARIANT built from the current source.
built_kernel_dir() {
  local hash
  # shellcheck disable=SC2046
  hash="$(cat $(variant_fragments "$1") | sha256sum | cut -c1-12)"
  echo "$vfio_cache/kernels/$source_version-$hash"
}

# apply_fragments CONFIG FRAGMENT...: sets every option of the fragments in CONFIG with
# scripts/config (run in the source tree).
apply_fragments() {
  local config="$1" line name value args=()
  shift
  while IFS= read -r line; do
    if [[ "$line" =~ ^CONFIG_([A-Za-z0-9_]+)=(.*)$ ]]; then
      name="${BASH_REMATCH[1]}"
      value="${BASH_REMATCH[2]}"
      case "$value" in
        y) args+=(--enable "$name") ;;
        m) args+=(--module "$name") ;;
        n) args+=(--disable "$name") ;;
        \"*\") value="${value#\"}"; args+=(--set-str "$name" "${value%\"}") ;;
        *) args+=(--set-val "$name" "$value") ;;
      esac
    elif [[ "$line" =~ ^#\ CONFIG_([A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
      args+=(--disable "${BASH_REMATCH[1]}")
    fi
  done < <(cat "$@")
  scripts/config --file "$config" "${args[@]}"
}

# check_config CONFIG FRAGMENT...: fails naming every option the fragments set to y that is not y
# in CONFIG, and every one they unset that is set (the later fragment's word counts).
check_config() {
  local config="$1" line name missing=() unwanted=()
  declare -A want=()
  shift
  while IFS= read -r line; do
    if [[ "$line" =~ ^CONFIG_([A-Za-z0-9_]+)=y$ ]]; then
      want["${BASH_REMATCH[1]}"]=y
    elif [[ "$line" =~ ^#\ CONFIG_([A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
      want["${BASH_REMATCH[1]}"]=n
    fi
  done < <(cat "$@")
  for name in $(printf '%s\n' "${!want[@]}" | sort); do
    if [ "${want[$name]}" = y ]; then
      grep -qx "CONFIG_$name=y" "$config" || missing+=("$name")
    else
      grep -qE "^CONFIG_$name=[ym]$" "$config" && unwanted+=("$name")
    fi
  done
  if [ ${#missing[@]} -gt 0 ] || [ ${#unwanted[@]} -gt 0 ]; then
    [ ${#missing[@]} -gt 0 ] && say "ERROR: after olddefconfig these options are not =y (a dependency is missing): ${missing[*]}" >&2
    [ ${#unwanted[@]} -gt 0 ] && say "ERROR: after olddefconfig these options are set, though the fragments unset them: ${unwanted[*]}" >&2
    return 1
  fi
  say "config check: all ${#want[@]} options of $(basename -a "$@" | tr '\n' ' ')as the fragments say"
}

# configure_kernel TREE VARIANT: tinyconfig, the variant's fragments, olddefconfig, the check;
# make's output goes to $configure_log ($vfio_cache/logs/configure-SOURCE_VERSION-VARIANT.log).
configure_kernel() {
  local tree="$1" fragments
  fragments="$(variant_fragments "$2")"
  mkdir -p "$vfio_cache/logs"
  configure_log="$vfio_cache/logs/configure-$source_version-$2.log"
  # shellcheck disable=SC2086
  (
    cd "$tree" &&
      make -s tinyconfig >"$configure_log" 2>&1 &&
      apply_fragments .config $fragments &&
      make -s olddefconfig >>"$configure_log" 2>&1 &&
      check_config .config $fragments
  )
}

# unpack_kernel_source DEST: unpacks the source package's tree into DEST/linux.
unpack_kernel_source() {
  local dest="$1" tarball
  debian_fetch "$source_package"
  say "unpacking $source_package $source_version..."
  tarball="$(dpkg-deb -c "$deb" | grep -oE '\./usr/src/linux-source-[0-9.]+\.tar\.xz$' | head -n 1)"
  [ -n "$tarball" ] || die "$deb holds no usr/src/linux-source-*.tar.xz"
  dpkg-deb --fsys-tarfile "$deb" | tar -x -O "$tarball" | tar -xJ -C "$dest" \
    || die "unpacking $tarball from $deb failed"
  mv "$dest"/linux-source-* "$dest/linux"
}

# make_with_progress TREE LOG LABEL TARGET...: runs make in TREE, its output into LOG, printing a
# progress line about once a minute (with the step count of the last such build, when LOG holds
# one); on failure prints the log's tail and dies.
make_with_progress() {
  local tree="$1" log="$2" label="$3" pid start=$SECONDS next rc of=""
  shift 3
  [ -f "$log" ] && of=" of about $(grep -cE '^  (CC|AS|LD|AR)' "$log" || true)"
  # In a process group of its own (set -m), so that an interrupted run stops all of make.
  set -m
  (cd "$tree" && exec make -j"$(nproc)" "$@") >"$log" 2>&1 &
  pid=$!
  set +m
  background_pid=$pid
  next=$((SECONDS + 60))
  while kill -0 "$pid" 2>/dev/null; do
    sleep 2
    if [ "$SECONDS" -ge "$next" ]; then
      say "$label: $(( (SECONDS - start) / 60 )) min, $(grep -cE '^  (CC|AS|LD|AR)' "$log") steps${of} done, now $(grep -E '^  [A-Z]' "$log" | tail -n 1 | awk '{print $2}')"
      next=$((SECONDS + 60))
    fi
  done
  rc=0
  wait "$pid" || rc=$?
  background_pid=""
  if [ "$rc" -ne 0 ]; then
    echo "$suite: the last lines of $log:" >&2
    tail -n 40 "$log" >&2
    die "$label failed (make exit code $rc; whole log: $log)"
  fi
  say "$label: done in $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s"
}

# build_kernels VARIANT...: builds every VARIANT whose image is not in the cache yet, all in one
# source tree (after the first, a variant is an incremental build: make rebuilds only what its
# options touch). Holds the cache's build lock, so a concurrent run waits and then finds them.
build_kernels() {
  local missing=() v tree log temp
  kernel_source_package
  for v in "$@"; do
    [ -f "$(built_kernel_dir "$v")/bzImage" ] || missing+=("$v")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  cache_lock "build-$source_version"
  missing=()
  for v in "$@"; do
    [ -f "$(built_kernel_dir "$v")/bzImage" ] || missing+=("$v")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    need_tools make=make gcc=gcc flex=flex bison=bison bc=bc xz=xz-utils /usr/include/libelf.h=libelf-dev
    cache_temp "build-$source_version"
    tree="$temp/linux"
    unpack_kernel_source "$temp"
    [ "$(debian_candidate "$source_package")" = "$source_version" ] \
      || die "the archive moved $source_package on from $source_version while downloading; the lists are updated now: run again"
    for v in "${missing[@]}"; do
      say "configuring $source_package $source_version, variant $v..."
      configure_kernel "$tree" "$v" || die "configuring variant $v failed or left options out (above; log: $configure_log)"
      mkdir -p "$vfio_cache/logs"
      log="$vfio_cache/logs/build-$source_version-$v.log"
      make_with_progress "$tree" "$log" "building kernel $source_version $v" bzImage
      mkdir -p "$temp/out-$v"
      cp "$tree/arch/x86/boot/bzImage" "$temp/out-$v/bzImage"
      cp "$tree/.config" "$temp/out-$v/config"
      echo "$source_package $source_version $v" >"$temp/out-$v/source"
      publish_folder "$temp/out-$v" "$(built_kernel_dir "$v")"
    done
  fi
  cache_unlock
}

# check_kernel_configs VARIANT...: configures a scratch tree of the current source for each
# VARIANT and runs the check, without building or caching anything.
check_kernel_configs() {
  local temp v
  kernel_source_package
  need_tools make=make gcc=gcc flex=flex bison=bison bc=bc xz=xz-utils /usr/include/libelf.h=libelf-dev
  cache_temp "config-$source_version"
  unpack_kernel_source "$temp"
  for v in "$@"; do
    configure_kernel "$temp/linux" "$v" || die "configuring variant $v failed or left options out (above; log: $configure_log)"
  done
}

# ---------------------------------------------------------------------------------------------
# Debian's cloud kernels, unpacked from their packages into $vfio_cache/kernels/debian/PACKAGE_VERSION/
# (vmlinuz, config when the package has one, modules/ with the VFIO modules decompressed, release)
# ---------------------------------------------------------------------------------------------
# debian_kernel_packages SERIES: prints the packages that hold the newest cloud kernel of SERIES
# (6.1 from bookworm, 6.12 from trixie, 7 from sid or trixie-backports); nothing when none.
# 7.x packaging differs: the image is linux-binary-unsigned-REL (usr/lib/modules/REL/vmlinuz.unsigned)
# and the modules are in linux-modules-REL.
debian_kernel_packages() {
  local binary
  case "$1" in
    6.1) debian_newest linux-image-6.1.0- '^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$' ;;
    6.12) debian_newest linux-image-6.12. '^linux-image-6\.12\.[0-9]+\+deb[0-9]+-cloud-amd64-unsigned$' ;;
    7)
      binary="$(debian_newest linux-binary-unsigned-7. '^linux-binary-unsigned-7\.[0-9]+\.[0-9]+\+deb[0-9]+-cloud-amd64$')"
      [ -n "$binary" ] && echo "$binary linux-modules-${binary#linux-binary-unsigned-}"
      ;;
    *) die "no Debian kernel series '$1' (6.1, 6.12, 7)" ;;
  esac
}

# unpack_modules TREE DEST NAME...: copies each module NAME (.ko, .ko.xz or .ko.zst) from the
# unpacked module tree TREE into DEST as plain NAME.ko, and checks that the modules each one
# depends on (its modinfo "depends") come before it in the list.
unpack_modules() {
  local tree="$1" dest="$2" m ko dep loaded=" "
  shift 2
  for m in "$@"; do
    ko="$(find "$tree" \( -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" \) | head -n 1)"
    [ -n "$ko" ] || die "module $m is not in $tree"
    case "$ko" in
      *.xz) xz -dc "$ko" >"$dest/$m.ko" ;;
      *.zst) zstd -qdc "$ko" >"$dest/$m.ko" ;;
      *) cp "$ko" "$dest/$m.ko" ;;
    esac
    for dep in $(strings -a "$dest/$m.ko" | sed -n 's/^depends=//p' | tr ',' ' '); do
      case "$loaded" in
        *" $dep "* | *" ${dep//_/-} "*) ;;
        *) die "module $m needs $dep, which the load list ($*) does not load before it" ;;
      esac
    done
    loaded+="$m "
  done
}

# debian_kernel ID: sets $kernel_dir to Debian's newest cloud kernel of ID (debian-SERIES), unpacked in
# the cache (downloaded and unpacked first when it is not). When a package of old lists is gone
# from the archive, the lists are updated once and the newest looked up again.
debian_kernel() {
  local id="$1" series="${1#debian-}" packages p dir release temp
  debian_update
  packages="$(debian_kernel_packages "$series")"
  if [ -z "$packages" ]; then
    debian_update force
    packages="$(debian_kernel_packages "$series")"
  fi
  [ -n "$packages" ] || die "the private apt sources offer no Debian $series cloud kernel"
  p="${packages%% *}"
  dir="$vfio_cache/kernels/debian/${p}_$(debian_candidate "$p")"
  if [ ! -f "$dir/vmlinuz" ]; then
    cache_temp "unpack-$series"
    for p in $packages; do
      debian_fetch "$p"
      dpkg-deb -x "$deb" "$temp/root" || die "dpkg-deb -x $deb failed"
    done
    release=""
    for p in "$temp"/root/usr/lib/modules/[0-9]* "$temp"/root/lib/modules/[0-9]*; do
      [ -d "$p" ] && release="${p##*/}" && break
    done
    [ -n "$release" ] || die "no lib/modules/RELEASE in $packages"
    mkdir -p "$temp/out/modules"
    for p in "boot/vmlinuz-$release" "usr/lib/modules/$release/vmlinuz.unsigned" "usr/lib/modules/$release/vmlinuz"; do
      [ -f "$temp/root/$p" ] && { cp "$temp/root/$p" "$temp/out/vmlinuz"; break; }
    done
    [ -f "$temp/out/vmlinuz" ] || die "no kernel image for $release in $packages"
    [ -f "$temp/root/boot/config-$release" ] && cp "$temp/root/boot/config-$release" "$temp/out/config"
    # shellcheck disable=SC2046
    unpack_modules "$temp/root" "$temp/out/modules" $(kernel_module_list "$id")
    echo "$release" >"$temp/out/release"
    echo "$packages" >"$temp/out/packages"
    # A download may have updated the lists: the folder is named after the version unpacked.
    p="${packages%% *}"
    dir="$vfio_cache/kernels/debian/${p}_$(debian_candidate "$p")"
    publish_folder "$temp/out" "$dir"
  fi
  kernel_dir="$dir"
}

# debian_mdev_kernel: sets $kernel_dir to Debian's newest non-cloud 6.1 kernel (it has VFIO_MDEV;
# the cloud kernel does not) with the kernel's mtty sample, built from linux-source-6.1 against the
# headers of exactly that kernel (mtty.ko's vermagic must match the image's): the newest N for
# which the private sources offer linux-image-6.1.0-N-amd64-unsigned, linux-headers-6.1.0-N-amd64
# and linux-headers-6.1.0-N-common at one version.
debian_mdev_kernel() {
  local name n version="" abi p dir work magic temp
  debian_update
  for name in $(apt-cache "${debian_options[@]}" pkgnames linux-image-6.1.0- 2>/dev/null \
    | grep -E '^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$' | sort -V -r); do
    n="${name#linux-image-6.1.0-}"
    n="${n%%-*}"
    version="$(debian_candidate "$name")"
    if [ -n "$version" ] && [ "$(debian_candidate "linux-headers-6.1.0-$n-amd64")" = "$version" ] \
      && [ "$(debian_candidate "linux-headers-6.1.0-$n-common")" = "$version" ]; then
      break
    fi
    version=""
  done
  [ -n "$version" ] || die "the private apt sources offer no linux-image-6.1.0-N-amd64-unsigned with linux-headers-6.1.0-N-amd64 of the same version"
  abi="6.1.0-$n-amd64"
  dir="$vfio_cache/kernels/debian/linux-image-$abi-unsigned_${version}+mtty"
  if [ ! -f "$dir/vmlinuz" ]; then
    need_tools make=make gcc-12=gcc-12 xz=xz-utils strings=binutils
    cache_temp "mtty-$abi"
    work="$temp"
    mkdir -p "$work/image" "$work/headers" "$work/mtty" "$work/out/modules"
    for p in "linux-image-$abi-unsigned" "linux-headers-$abi" "linux-headers-6.1.0-$n-common" linux-kbuild-6.1 linux-source-6.1; do
      debian_fetch "$p"
      case "$p" in
        linux-image-*) dpkg-deb -x "$deb" "$work/image" ;;
        linux-source-*) p="$deb" ;;
        *) dpkg-deb -x "$deb" "$work/headers" ;;
      esac
    done
    [ "$(debian_candidate linux-source-6.1)" = "$version" ] || die "linux-source-6.1 is not at $version, the version of linux-image-$abi-unsigned"
    # The headers' Makefile includes the common tree by its installed absolute path: point it here.
    sed -i "s|include /usr/src/|include $work/headers/usr/src/|" "$work/headers/usr/src/linux-headers-$abi/Makefile"
    say "extracting samples/vfio-mdev/mtty.c from linux-source-6.1 $version..."
    dpkg-deb --fsys-tarfile "$deb" | tar -x -O ./usr/src/linux-source-6.1.tar.xz \
      | tar -xJ -O linux-source-6.1/samples/vfio-mdev/mtty.c >"$work/mtty/mtty.c" \
      || die "linux-source-6.1 $version has no samples/vfio-mdev/mtty.c"
    echo 'obj-m := mtty.o' >"$work/mtty/Kbuild"
    say "building mtty.ko against linux-headers-$abi..."
    make -C "$work/headers/usr/src/linux-headers-$abi" M="$work/mtty" CC=gcc-12 modules >"$work/build.log" 2>&1 \
      || { tail -n 30 "$work/build.log" >&2; die "mtty.ko does not build against linux-headers-$abi"; }
    magic="$(strings "$work/mtty/mtty.ko" | sed -n 's/^vermagic=\([^ ]*\).*/\1/p' | head -n 1)"
    [ "$magic" = "$abi" ] || die "mtty.ko has vermagic '$magic', not $abi"
    cp "$work/mtty/mtty.ko" "$work/image/lib/modules/$abi/"
    cp "$work/image/boot/vmlinuz-$abi" "$work/out/vmlinuz"
    cp "$work/image/boot/config-$abi" "$work/out/config"
    # shellcheck disable=SC2046
    unpack_modules "$work/image/lib/modules/$abi" "$work/out/modules" $(kernel_module_list debian-6.1-mdev)
    echo "$abi" >"$work/out/release"
    echo "linux-image-$abi-unsigned=$version linux-source-6.1=$version (samples/vfio-mdev/mtty.c)" >"$work/out/packages"
    publish_folder "$work/out" "$dir"
  fi
  kernel_dir="$dir"
}

# ---------------------------------------------------------------------------------------------
# The kernel matrix: every kernel a suite can run on, by id, and the modes each runs it in
#   debian-6.1       Debian bookworm's 6.1 cloud kernel
#   debian-6.12      Debian trixie's 6.12 cloud kernel
#   debian-7         the newest 7.x cloud kernel of sid or trixie-backports
#   debian-6.1-mdev  Debian bookworm's non-cloud 6.1 kernel (VFIO_MDEV) with mtty.ko built for it
#   vfio             built from linux-source-7.N with kernel/vfio.config (mtty built in)
#   vfio-compat      the same with kernel/legacy-compat.config on top
# Modes: legacy (VFIO's container with type1), legacy-compat (the same uAPI on iommufd's
# compatibility container), iommufd (the device cdev bound to /dev/iommu), noiommu (no IOMMU at
# all, vfio in unsafe no-IOMMU mode: groups /dev/vfio/noiommu-N). The guest reads its
# mode from the kernel command line (vfio_vm_mode=MODE) and hands it to the test program.
# ---------------------------------------------------------------------------------------------
declare -A kernel_modes=(
  [debian-6.1]=legacy [debian-6.12]=legacy [debian-7]=legacy [debian-6.1-mdev]=legacy
  # The kernel built with both APIs runs each scenario through the library's two backends: the
  # legacy one and the iommufd one (the device cdev bound to /dev/iommu), and in no-IOMMU mode on a
  # machine without an IOMMU; run-mdev-tests.sh keeps it to the first. vfio-compat runs the legacy
  # backend on iommufd's compatibility container, and the iommufd backend beside it: the scenarios
  # that open /dev/vfio/vfio themselves and the cli step ask the kernel which container that is
  # (the library's detection; the kernel's "IOMMUFD is providing /dev/vfio/vfio" message), not the mode.
  [vfio]="legacy iommufd noiommu" [vfio-compat]="legacy-compat iommufd"
)
# A suite whose machine has no use for some modes sets suite_modes (after sourcing this file) to
# the modes it runs; matrix then leaves the others out. Empty: every mode of each kernel.

# kernel_module_list ID: the modules the guest loads for kernel ID, in load order (insmod, so
# dependencies first; unpack_modules checks that). vfio_virqfd is a module of its own in 6.1 and
# part of vfio.ko from 6.2 on; the kernels built here have everything built in.
kernel_module_list() {
  case "$1" in
    debian-6.1) echo irqbypass vfio vfio_iommu_type1 vfio_virqfd vfio-pci-core vfio-pci ;;
    debian-6.12|debian-7) echo irqbypass vfio vfio_iommu_type1 vfio-pci-core vfio-pci ;;
    debian-6.1-mdev) echo irqbypass vfio vfio_iommu_type1 mdev mtty ;;
    vfio|vfio-compat) ;;
    *) die "no kernel '$1'" ;;
  esac
}

# prepare_kernel ID: makes kernel ID ready in the cache (download and unpack, or build) and sets
# kernel_image, kernel_name (as the closing lines show it) and kernel_modules (its .ko files, in
# load order).
prepare_kernel() {
  local m
  case "$1" in
    debian-6.1|debian-6.12|debian-7) debian_kernel "$1" ;;
    debian-6.1-mdev) debian_mdev_kernel ;;
    vfio|vfio-compat) build_kernels "$1"; kernel_dir="$(built_kernel_dir "$1")" ;;
    *) die "no kernel '$1'" ;;
  esac
  case "$1" in
    vfio|vfio-compat)
      kernel_image="$kernel_dir/bzImage"
      # The version the kernel's configuration was made for, from its first lines.
      kernel_name="linux-$(sed -n 's|^# Linux/[^ ]* \([^ ]*\) Kernel Configuration$|\1|p' "$kernel_dir/config")-$1"
      ;;
    *)
      kernel_image="$kernel_dir/vmlinuz"
      kernel_name="linux-$(sed 's/-amd64$//' "$kernel_dir/release")"
      ;;
  esac
  kernel_modules=()
  for m in $(kernel_module_list "$1"); do
    kernel_modules+=("$kernel_dir/modules/$m.ko")
  done
}

# matrix KERNEL_ID...: sets $runs to the lines "ID MODE" of each of the suite's kernels and each
# of its modes, keeping those --kernel and --mode selected; dies when a selection names nothing
# the suite runs.
matrix() {
  local id mode ids=" $* " any=0
  runs=""
  for id in $selected_kernels; do
    case "$ids" in *" $id "*) ;; *) die "this suite runs no kernel '$id' (it runs: $*)" ;; esac
  done
  for id in "$@"; do
    [ -z "$selected_kernels" ] || [[ " $selected_kernels " == *" $id "* ]] || continue
    for mode in ${kernel_modes[$id]}; do
      [ -z "${suite_modes:-}" ] || [[ " $suite_modes " == *" $mode "* ]] || continue
      [ -z "$selected_modes" ] || [[ " $selected_modes " == *" $mode "* ]] || continue
      runs+="$id $mode"$'\n'
      any=1
    done
  done
  [ "$any" = 1 ] || die "no kernel of this suite runs in mode(s)$selected_modes (modes: $(for id in "$@"; do echo "$id=${kernel_modes[$id]// /,}"; done | tr '\n' ' ')${suite_modes:+; this suite runs only $suite_modes})"
}

# run_matrix INIT KERNEL_ID...: runs the suite on each kernel and mode of the matrix: prepares
# every kernel first (downloads, builds), then for each kernel builds its initramfs (the suite's
# INIT, the program, the kernel's modules) and, per mode, calls the suite's function run_vm MODE,
# which boots (boot) and reads the results (read_results, read_sample, setting $problem).
# Ends with the closing lines (finish_matrix).
run_matrix() {
  local init="$1" id mode runs built=()
  shift
  matrix "$@"
  for id in $(cut -d' ' -f1 <<<"$runs" | uniq); do
    case "$id" in vfio|vfio-compat) built+=("$id") ;; esac
  done
  [ ${#built[@]} -gt 0 ] && build_kernels "${built[@]}"
  publish_program "$reuse"
  build_base_initramfs "$init"
  closing=()
  total_passed=0
  total_failed=0
  total_skipped=0
  vm_seconds=0
  while read -r id mode; do
    [ -n "$id" ] || continue
    prepare_kernel "$id"
    kernel_initramfs "$id"
    say "kernel $kernel_name ($id), mode $mode:"
    console="$cache/console-$id-$mode.log"
    run_vm "$mode"
    record_run "$mode"
  done <<<"$runs"
  finish_matrix
}

# ---------------------------------------------------------------------------------------------
# The test program, published for linux-x64 once for both suites: NativeAOT when the toolchain
# is available, self-contained single-file otherwise
# ---------------------------------------------------------------------------------------------
inputs_hash() {
  (
    cd "$repo"
    find src/Vfio src/Vfio.Testing src/Vfio.Cli samples/EduDriver samples/NvmeDriver samples/MdevLifecycle samples/Migration samples/VirtioRngPlatform samples/Common \
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

# aot_toolchain_key: what a NativeAOT publish depends on besides the sources: the SDK and the
# package feeds it restores the ILCompiler packs from. A failed NativeAOT publish is remembered
# under this key only, so a new SDK or feed tries NativeAOT again.
aot_toolchain_key() {
  { dotnet --version; dotnet nuget list source --format short 2>/dev/null || true; env | grep -E '^NUGET_' | LC_ALL=C sort || true; } |
    sha256sum | cut -c1-16
}

# publish_program REUSE: publishes the program into $program_dir unless it is there for the
# current sources (or, with REUSE=1, there at all).
publish_program() {
  local reuse="$1" need=1 hash mode="" reason marker
  mkdir -p "$shared_cache"
  if [ -x "$program_dir/$program_name" ] && [ -f "$program_dir/inputs" ]; then
    if [ "$reuse" = 1 ] || [ "$(cat "$program_dir/inputs")" = "$(inputs_hash)" ]; then
      need=0
    fi
  fi
  if [ "$need" = 1 ]; then
    hash="$(inputs_hash)"
    rm -f "$shared_cache"/aot-unavailable-* # markers keyed on the SDK version alone (older scripts)
    marker="$shared_cache/aot-failed-$(aot_toolchain_key)"
    if [ -f "$marker" ]; then
      say "NativeAOT publish skipped: it failed with this SDK ($(dotnet --version)) and these feeds: $(cat "$marker"); delete $marker to retry"
    else
      say "publishing the test program (NativeAOT)..."
      if publish "$program_dir" "$shared_cache/publish-aot.log" -p:VmTestsAot=true; then
        mode=aot
      else
        reason="$(grep -m1 -oE 'error [A-Z]*[0-9]*:.*|error :.*' "$shared_cache/publish-aot.log" || true)"
        say "NativeAOT publish failed (${reason:-see $shared_cache/publish-aot.log}); using self-contained single-file"
        echo "${reason:-see $shared_cache/publish-aot.log}" >"$marker"
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
  say "program: $(cat "$program_dir/mode" 2>/dev/null || echo unknown) publish$([ "$need" = 0 ] && echo ", reused for these sources"), $(du -h "$program_dir/$program_name" | cut -f1)"
}

# ---------------------------------------------------------------------------------------------
# initramfs: a base archive (busybox, the program with the C libraries it links, /init (the
# suite's init script) and /lib/init-common.sh, which it sources, with /lib/cli-init.sh and
# /lib/noiommu-init.sh, which init.sh sources), and per kernel a second archive
# appended to it with the kernel's modules and their load order (the kernel unpacks both)
# ---------------------------------------------------------------------------------------------
# build_base_initramfs INIT: sets $base_initrd, rebuilt only when the program or the guest scripts
# changed.
build_base_initramfs() {
  local init="$1" key root busybox_bin gcc_s extra
  base_initrd="$cache/initramfs-base.cpio.gz"
  key="$(cat "$program_dir/inputs") $(cat "$init" "$here/init-common.sh" "$here/cli-init.sh" "$here/noiommu-init.sh" | sha256sum | cut -d' ' -f1)"
  if [ ${#initramfs_programs[@]} -gt 0 ]; then
    key="$key $(sha256sum "${initramfs_programs[@]}" | sha256sum | cut -d' ' -f1)"
  fi
  if [ -f "$base_initrd" ] && [ "$(cat "$base_initrd.key" 2>/dev/null)" = "$key" ]; then
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
  cp "$here/init-common.sh" "$root/lib/init-common.sh"
  cp "$here/cli-init.sh" "$root/lib/cli-init.sh"
  cp "$here/noiommu-init.sh" "$root/lib/noiommu-init.sh"
  cp "$init" "$root/init"
  chmod +x "$root/init"
  pack_cpio "$root" "$base_initrd.tmp" || die "building the initramfs failed"
  mv "$base_initrd.tmp" "$base_initrd"
  echo "$key" >"$base_initrd.key"
  rm -rf "$root"
}

# pack_cpio ROOT FILE: packs the folder ROOT as a gzip'ed newc cpio archive (an initramfs).
pack_cpio() {
  (cd "$1" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet | gzip -1) >"$2"
}

# kernel_initramfs ID: sets $initrd to the base initramfs with kernel ID's modules appended
# ($kernel_modules; /lib/modules/load-order lists them, and is empty for a kernel without any).
kernel_initramfs() {
  local root="$cache/modules-root" m
  initrd="$cache/initramfs-$1.cpio.gz"
  rm -rf "$root"
  mkdir -p "$root/lib/modules"
  : >"$root/lib/modules/load-order"
  for m in "${kernel_modules[@]}"; do
    cp "$m" "$root/lib/modules/"
    basename "$m" .ko >>"$root/lib/modules/load-order"
  done
  pack_cpio "$root" "$cache/modules.cpio.gz" || die "packing the modules of $1 failed"
  cat "$base_initrd" "$cache/modules.cpio.gz" >"$initrd"
  rm -rf "$root" "$cache/modules.cpio.gz"
}

# ---------------------------------------------------------------------------------------------
# Boot and results
# ---------------------------------------------------------------------------------------------
# boot IMAGE INITRD APPEND QEMU_ARG...: runs QEMU (TCG, q35 unless a QEMU_ARG says -M, with
# ${vm_memory:-2G} of memory) until the guest powers off or $vm_timeout passes; sets $qemu_rc and
# $boot_seconds, writes the serial console to $console (default $cache/console.log) and its text
# to $console.txt.
boot() {
  local image="$1" initramfs="$2" append="$3" qemu_err="$cache/qemu.err" boot_started=$SECONDS machine=(-M q35)
  shift 3
  [[ " $* " == *" -M "* ]] && machine=()
  console="${console:-$cache/console.log}"
  rm -f "$console" "$qemu_err"
  set +e
  timeout --kill-after=10 "$vm_timeout" qemu-system-x86_64 \
    "${machine[@]}" -accel tcg -cpu max -m "${vm_memory:-2G}" -smp 2 -nographic -no-reboot -nic none \
    "$@" \
    -kernel "$image" -initrd "$initramfs" \
    -append "$append" \
    </dev/null >"$console" 2>"$qemu_err" &
  local qemu_pid=$! finished_at=""
  # Once the guest says it powers off, everything it had to say is on the console: a guest
  # kernel that then hangs in its shutdown is stopped after $poweroff_grace seconds instead of
  # holding the run until $vm_timeout (boot_problem reports it apart from a hung test).
  while kill -0 "$qemu_pid" 2>/dev/null; do
    if [ -z "$finished_at" ] && grep -q 'vfio-vm: powering off' "$console" 2>/dev/null; then
      finished_at=$SECONDS
    fi
    if [ -n "$finished_at" ] && [ $((SECONDS - finished_at)) -ge "$poweroff_grace" ]; then
      pkill -TERM -P "$qemu_pid" 2>/dev/null || true
      kill -TERM "$qemu_pid" 2>/dev/null || true
      break
    fi
    sleep 1
  done
  wait "$qemu_pid"
  qemu_rc=$?
  poweroff_stuck=0
  if [ -n "$finished_at" ] && [ $((SECONDS - finished_at)) -ge "$poweroff_grace" ] && [ "$qemu_rc" -ne 0 ]; then
    poweroff_stuck=1
  fi
  set -e
  boot_seconds=$((SECONDS - boot_started))
  vm_seconds=$((${vm_seconds:-0} + boot_seconds))
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
  if [ "${poweroff_stuck:-0}" = 1 ]; then
    # Not a failure of what ran: the guest finished and said so; its kernel did not complete the
    # power-off (seen once under heavy host load). Said loudly, counted as nothing.
    echo "$suite: WARNING: the guest finished but its kernel did not power off within ${poweroff_grace}s; QEMU was stopped" >&2
  elif [ "$qemu_rc" -eq 124 ] || [ "$qemu_rc" -eq 137 ]; then
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

# read_results: prints the PASS/FAIL/SKIP lines of the console, sets $passed, $failed and
# $skipped, and sets $problem to what went wrong with the guest or the test program ("" when
# nothing did).
read_results() {
  local results status summary
  results="$(grep -E '^(PASS|FAIL|SKIP) ' "$console.txt" || true)"
  passed="$(grep -cE '^PASS ' <<<"$results" || true)"
  failed="$(grep -cE '^FAIL ' <<<"$results" || true)"
  skipped="$(grep -cE '^SKIP ' <<<"$results" || true)"
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
      # The program's summary counts its own lines; other guest steps (cli-init.sh) print theirs outside its frame.
      framed="$(sed -n '/vfio-vm: running /,/vfio-vm: program exited/p' "$console.txt" | grep -E '^(PASS|FAIL|SKIP) ' || true)"
      framed="passed=$(grep -cE '^PASS ' <<<"$framed" || true) failed=$(grep -cE '^FAIL ' <<<"$framed" || true) skipped=$(grep -cE '^SKIP ' <<<"$framed" || true)"
      if [ "$summary" != "SUMMARY $framed" ]; then
        problem="the console lost result lines (program said '${summary#SUMMARY }', console shows $framed)"
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

# The benchmarks in a VM (benchmarks/vm/run-*-bench.sh) share these two.
# bench_cache: after parse_options, empties the benchmark's $cache with --fresh, and makes it.
bench_cache() {
  if [ "$fresh" = 1 ]; then
    say "deleting the cache ($cache)"
    rm -rf "$cache"
  fi
  mkdir -p "$cache"
}

# bench_figures MARKER REGEX NAME...: prints on stdout the guest's "name: value" lines between
# "vfio-vm: MARKER begins" and its exit line whose name matches REGEX (extended, anchored at the
# start); exits 1, with the console's last lines, when the boot had a problem or a NAME is missing.
bench_figures() {
  local marker="$1" regex="$2" figures name
  shift 2
  figures="$(sed -n "/vfio-vm: $marker begins/,/vfio-vm: $marker exited/p" "$console.txt" \
    | grep -E "^($regex): [0-9.]+" | sed -E 's/^([a-z0-9_]+: [0-9.]+).*/\1/' || true)"
  for name in "$@"; do
    if ! grep -q "^$name: " <<<"$figures"; then
      [ -n "$problem" ] || problem="the benchmark printed no $name"
    fi
  done
  [ -n "$figures" ] && printf '%s\n' "$figures"
  if [ -n "$problem" ]; then
    echo "$suite: ERROR: $problem" >&2
    echo "$suite: last lines of the serial console ($console.txt):" >&2
    tail -n 25 "$console.txt" | sed 's/^/  | /' >&2
    exit 1
  fi
}

# record_run MODE: after a run's read_results (and read_sample), reports its problem with the
# console's last lines, and adds the closing line "KERNEL MODE: N passed, N failed" (", N skipped"
# when some were) of $kernel_name to the totals. A run with a problem counts at least one failure.
record_run() {
  local line
  say "VM ran ${boot_seconds}s"
  if [ -n "$problem" ]; then
    echo "$suite: ERROR: $kernel_name $1: $problem" >&2
    echo "$suite: last lines of the serial console ($console.txt):" >&2
    tail -n 25 "$console.txt" | sed 's/^/  | /' >&2
    [ "$failed" -eq 0 ] && failed=1
  elif [ "$passed" -eq 0 ]; then
    failed=$((failed + 1))
    echo "$suite: ERROR: $kernel_name $1: no scenario passed" >&2
  fi
  line="$kernel_name $1: $passed passed, $failed failed"
  [ "$skipped" -gt 0 ] && line+=", $skipped skipped"
  closing+=("$line")
  total_passed=$((total_passed + passed))
  total_failed=$((total_failed + failed))
  total_skipped=$((total_skipped + skipped))
}

# finish_matrix: the closing lines, one per kernel and mode, then the total "N passed, N failed"
# (", N skipped" when some were); exits 0 only when nothing failed.
finish_matrix() {
  local total
  say "VMs ran ${vm_seconds}s; $((SECONDS - started))s in all"
  printf '%s\n' "${closing[@]}"
  total="$total_passed passed, $total_failed failed"
  [ "$total_skipped" -gt 0 ] && total+=", $total_skipped skipped"
  echo "$total"
  reported=1
  [ "$total_failed" -eq 0 ] && [ "$total_passed" -gt 0 ]
  exit $?
}
