#!/usr/bin/env bash
# Builds the guest kernels of the real-kernel suites from Debian's linux-source-7.N (the newest the
# archive offers, 7.2 or later), configured from `make tinyconfig` plus the fragments in
# tests/vm/kernel/, into the cache outside the clone. The suites call the same code when a kernel
# they run is missing; this script only builds (or checks) ahead of them.
#
# Usage: tests/vm/build-kernel.sh [--variant vfio|vfio-compat]... [--check-config] [--no-apt]
#   --variant V      the build to make (default: both): vfio (VFIO's container with type1, iommufd
#                    and the VFIO cdev) or vfio-compat (no VFIO container: iommufd's compatibility
#                    container is /dev/vfio/vfio)
#   --check-config   only configure a scratch tree and check that every option the fragments set
#                    ended up so (no build; fails naming the options that did not)
#   --no-apt         never call apt; lists, package and tools must already be there
#
# Cache: ${VFIO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vfio-dotnet}/kernels/SOURCE_VERSION-HASH/bzImage
# (HASH: of the fragments' content); build logs in its logs/. A cold build takes about 16 minutes
# on 2 idle cores (about 30 on a busy machine); the second variant, built in the same tree, under a
# minute more.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="$here/.cache"
suite=build-kernel
. "$here/lib.sh"

variants=()
check_only=0
no_apt="${VFIO_VM_NO_APT:-0}"
while [ $# -gt 0 ]; do
  case "$1" in
    --variant) variants+=("${2:?--variant needs vfio or vfio-compat}"); shift ;;
    --check-config) check_only=1 ;;
    --no-apt) no_apt=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-kernel: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done
[ ${#variants[@]} -gt 0 ] || variants=(vfio vfio-compat)
for v in "${variants[@]}"; do variant_fragments "$v" >/dev/null; done
mkdir -p "$cache"

if [ "$check_only" = 1 ]; then
  check_kernel_configs "${variants[@]}"
  exit 0
fi
build_kernels "${variants[@]}"
for v in "${variants[@]}"; do
  say "$v: $(built_kernel_dir "$v")/bzImage ($(du -h "$(built_kernel_dir "$v")/bzImage" | cut -f1))"
done
