#!/usr/bin/env bash
# Builds the debian:bookworm base image: a debootstrap --variant=minbase bookworm userland with
# what the sample apps and the tests need (curl, python3-minimal, redis-server for the stateful
# service test; python3-pyflakes, which brings the full python3 standard library
# (libpython3.11-stdlib: http.server, json, unittest) for examples/pipeline), made into an image with
# `berth image build --from-dir`. Real services need it: their programs resolve names through
# glibc's NSS, which busybox's static binaries cannot use.
#   usage: debian-base.sh [--rootfs-only]
#     --rootfs-only  only make sure the cached root filesystem exists and print its path as the
#                    last line (the tests share it this way: tests/src/debian.rs)
# Environment:
#   BERTH_DATA_DIR      the image store (default /var/lib/berth)
#   BERTH_DEBIAN_CACHE  where the root filesystem is cached (default $BERTH_DATA_DIR/cache/debian-bookworm)
#   BERTH               the berth binary (default target/release/berth, else berth on PATH)
#   DEBIAN_MIRROR       default http://deb.debian.org/debian (apt's proxy reaches it)
# The cache holds rootfs/ and a stamp naming the recipe, written last: a run that crashed
# mid-debootstrap leaves no stamp, so the next run starts over instead of trusting a half-made
# tree. A second run reuses the cache and builds the image only if it is missing or was built
# from another recipe (its org.berth.debian-base label).
set -euo pipefail
source "$(dirname "$0")/as-root.sh" "$0" "$@"

ROOTFS_ONLY=0
case "${1:-}" in
  "") ;;
  --rootfs-only) ROOTFS_ONLY=1 ;;
  *) echo "debian-base.sh: unknown argument '$1' (usage: debian-base.sh [--rootfs-only])" >&2; exit 2 ;;
esac

SUITE=bookworm
PACKAGES=python3-minimal,curl,redis-server,libpython3.11-stdlib,python3-pyflakes
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
TAG=debian:$SUITE
# Names everything that makes the tree: a change here invalidates the cache and the image.
RECIPE="debootstrap --variant=minbase --include=$PACKAGES $SUITE $MIRROR; /etc/hosts localhost"
DATA_DIR=${BERTH_DATA_DIR:-/var/lib/berth}
CACHE=${BERTH_DEBIAN_CACHE:-$DATA_DIR/cache/debian-$SUITE}
ROOTFS=$CACHE/rootfs
STAMP=$CACHE/stamp

for tool in debootstrap flock jq; do
  command -v "$tool" >/dev/null || { echo "debian-base.sh: $tool is missing: run scripts/setup.sh" >&2; exit 1; }
done

mkdir -p "$CACHE"
# Parallel runs (the tests) wait for one build instead of racing on the same tree.
exec 9>"$CACHE/lock"
flock 9

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$RECIPE" ] && [ -x "$ROOTFS/usr/bin/curl" ]; then
  echo "== debian $SUITE root filesystem: cache hit ($ROOTFS)"
else
  if [ -f "$STAMP" ]; then
    echo "== debian $SUITE root filesystem: the recipe changed, rebuilding $ROOTFS"
  elif [ -e "$ROOTFS" ] || [ -e "$ROOTFS.partial" ]; then
    echo "== debian $SUITE root filesystem: an unfinished build (no stamp) is removed"
  fi
  rm -f "$STAMP"
  rm -rf "$ROOTFS" "$ROOTFS.partial"
  echo "== debootstrap --variant=minbase --include=$PACKAGES $SUITE into $ROOTFS (a few minutes)"
  if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS.partial" "$MIRROR" \
      >"$CACHE/debootstrap.log" 2>&1; then
    tail -20 "$CACHE/debootstrap.log" >&2
    rm -rf "$ROOTFS.partial"
    echo "debian-base.sh: debootstrap failed (full log: $CACHE/debootstrap.log)" >&2
    exit 1
  fi
  # debootstrap writes no /etc/hosts (an installer's job): give localhost its usual addresses.
  printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$ROOTFS.partial/etc/hosts"
  mv "$ROOTFS.partial" "$ROOTFS"
  echo "$RECIPE" >"$STAMP.tmp"
  mv "$STAMP.tmp" "$STAMP"
  echo "== debian $SUITE root filesystem ready ($(du -sh "$ROOTFS" | cut -f1))"
fi

if [ "$ROOTFS_ONLY" = 1 ]; then
  echo "$ROOTFS"
  exit 0
fi

if [ -z "${BERTH:-}" ]; then
  BERTH=$(cd "$(dirname "$0")/.." && pwd)/target/release/berth
  [ -x "$BERTH" ] || BERTH=$(command -v berth || true)
fi
[ -n "$BERTH" ] && [ -x "$BERTH" ] || { echo "debian-base.sh: no berth binary: build it (cargo build --release -p berth-cli) or set BERTH" >&2; exit 1; }
export BERTH_DATA_DIR=$DATA_DIR

label=$("$BERTH" image inspect "$TAG" -o json 2>/dev/null | jq -r '.config.config.Labels["org.berth.debian-base"] // ""' || true)
if [ "$label" = "$RECIPE" ]; then
  echo "== image $TAG: already in $DATA_DIR"
  exit 0
fi
echo "== building image $TAG from $ROOTFS"
"$BERTH" image build --from-dir "$ROOTFS" --tag "$TAG" --label "org.berth.debian-base=$RECIPE" \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd /bin/bash
