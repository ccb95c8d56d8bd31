#!/usr/bin/env bash
# Provides the uAPI headers (<linux/vfio.h>, <linux/iommufd.h>) of the newest 7.x kernel Debian
# offers, for the ABI conformance test (tests/Vfio.Tests/Abi), which checks the C# view against them
# as well as against the machine's own (6.1) headers. Prints the include folder on stdout (progress
# goes to stderr); the test finds it there through VFIO_UAPI_HEADERS, or in the cache by itself.
#
# The headers come from Debian's linux-libc-dev (sid or trixie-backports), fetched with apt through
# a private sources list and private apt state, so the machine's own apt configuration stays
# untouched, and unpacked into a cache outside the clone (CI runs in a fresh clone each time):
#   ${VFIO_UAPI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vfio-dotnet/headers}/<version>/usr/include
# A version already in the cache is used without touching the network; --refresh asks apt whether a
# newer one exists. Exit 0 with the folder printed, or non-zero with the reason on stderr.
set -euo pipefail

usage() { sed -n '2,12s/^# \{0,1\}//p' "$0"; }
refresh=0
for arg in "$@"; do
  case "$arg" in
    --refresh) refresh=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "fetch-uapi-headers: unknown argument $arg" >&2; usage >&2; exit 2 ;;
  esac
done

root="${VFIO_UAPI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vfio-dotnet/headers}"
suites=(sid trixie-backports)
min_major=7
say() { echo "fetch-uapi-headers: $*" >&2; }

# newest_cached: the newest cached version (major >= min_major) that has <linux/iommufd.h>.
newest_cached() {
  local dir version
  for dir in "$root"/*/usr/include/linux/iommufd.h; do
    [ -f "$dir" ] || continue
    version="${dir#"$root"/}"
    version="${version%%/*}"
    [ "${version%%.*}" -ge "$min_major" ] 2>/dev/null && echo "$version"
  done | sort -V | tail -n 1
}

cached="$(newest_cached)"
if [ -n "$cached" ] && [ "$refresh" = 0 ]; then
  say "using the cached linux-libc-dev $cached"
  echo "$root/$cached/usr/include"
  exit 0
fi

for tool in apt-get apt-cache dpkg-deb; do
  command -v "$tool" >/dev/null || { say "needs $tool (Debian's apt and dpkg)"; exit 1; }
done
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -f "$keyring" ] || { say "needs $keyring (apt-get install debian-archive-keyring)"; exit 1; }

# Private apt state: its own sources list, package lists and download cache, nothing of the machine's.
state="$root/apt"
mkdir -p "$state/lists/partial" "$state/cache/archives/partial"
: >"$state/sources.list"
for suite in "${suites[@]}"; do
  echo "deb [signed-by=$keyring] http://deb.debian.org/debian $suite main" >>"$state/sources.list"
done
apt_options=(
  -o "Dir::Etc::sourcelist=$state/sources.list" -o Dir::Etc::sourceparts=-
  -o "Dir::State::Lists=$state/lists" -o "Dir::Cache=$state/cache"
  -o "Dir::State::status=/dev/null" -o "APT::Sandbox::User=$(id -un)"
)

say "asking apt for linux-libc-dev in ${suites[*]}..."
if ! apt-get "${apt_options[@]}" update -qq >"$state/update.log" 2>&1; then
  tail -n 20 "$state/update.log" >&2
  if [ -n "$cached" ]; then
    say "apt-get update failed; keeping the cached linux-libc-dev $cached"
    echo "$root/$cached/usr/include"
    exit 0
  fi
  say "apt-get update failed and nothing is cached"
  exit 1
fi
version="$(apt-cache "${apt_options[@]}" madison linux-libc-dev | awk -F'|' '{gsub(/ /, "", $2); print $2}' |
  awk -F. -v min="$min_major" '$1 + 0 >= min' | sort -V | tail -n 1)"
if [ -z "$version" ]; then
  say "apt offers no linux-libc-dev ${min_major}.x in ${suites[*]}"
  exit 1
fi
if [ -f "$root/$version/usr/include/linux/iommufd.h" ]; then
  say "the newest, linux-libc-dev $version, is cached already"
  echo "$root/$version/usr/include"
  exit 0
fi

work="$(mktemp -d "$root/.fetch.XXXXXX")"
trap 'rm -rf "$work"' EXIT
say "downloading linux-libc-dev $version..."
(cd "$work" && apt-get "${apt_options[@]}" download -qq "linux-libc-dev=$version" >"$work/download.log" 2>&1) \
  || { tail -n 20 "$work/download.log" >&2; say "apt-get download linux-libc-dev=$version failed"; exit 1; }
dpkg-deb -x "$work"/linux-libc-dev_*.deb "$work/tree"
for header in linux/vfio.h linux/iommufd.h; do
  [ -f "$work/tree/usr/include/$header" ] || { say "linux-libc-dev $version has no $header"; exit 1; }
done
# Atomic: a concurrent run that got there first wins, and a reader never sees half a tree.
if ! mv -T "$work/tree" "$root/$version" 2>/dev/null; then
  [ -f "$root/$version/usr/include/linux/iommufd.h" ] || { say "could not move the headers to $root/$version"; exit 1; }
fi
say "linux-libc-dev $version unpacked in $root/$version"
echo "$root/$version/usr/include"
