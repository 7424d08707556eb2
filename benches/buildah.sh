#!/usr/bin/env bash
# `buildah bud` of one Containerfile (a Debian base; RUN apt-get install through the host
# network; COPY; USER; a RUN as that user) with berth-runtime and with runc, in the same run,
# alternating. Cold: a fresh buildah storage holding only the base image, so every RUN runs.
# Cached: the same build again with --layers on that storage, so every step is a cache hit and
# the runtime is never started (it measures buildah's cache, the same for both; shown so the
# cold figure can be read against it). The apt steps download from Debian's mirror: network
# time is in the cold figure for both runtimes alike.
#
#   usage: benches/buildah.sh [BERTH_RUNTIME]   (default target/release/berth-runtime)
#   env:   RUNS=3
# Needs root, buildah, runc, debootstrap (the Debian base is made once and cached under
# /var/cache/berth-bench).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
BERTH_RT=$(realpath "${1:-$HERE/../target/release/berth-runtime}")
RUNS=${RUNS:-3}
. "$HERE/lib.sh"
bench_need buildah runc debootstrap
[ -x "$BERTH_RT" ] || { echo "$BERTH_RT missing: cargo build --release -p berth-runtime" >&2; exit 1; }

bench_debian_base

WORK=$(mktemp -d /var/tmp/berth-buildah-bench.XXXXXX)
cleanup() {
    for s in "$WORK"/store-*; do
        [ -d "$s" ] || continue
        buildah --root "$s/root" --runroot "$s/run" rm --all >/dev/null 2>&1 || true
        buildah --root "$s/root" --runroot "$s/run" rmi --all --force >/dev/null 2>&1 || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

CTX="$WORK/context"
mkdir -p "$CTX"
echo "hello from the context" > "$CTX/greeting.txt"
# The Containerfile tests/tests/buildah.rs builds, FROM the base image new_store makes.
cp "$HERE/../tests/tests/fixtures/buildah/Containerfile" "$CTX/Containerfile"

# new_store NAME: a buildah storage holding only the base image; prints its buildah command.
new_store() {
    local s="$WORK/store-$1" b ctr mnt
    mkdir -p "$s"
    b="buildah --root $s/root --runroot $s/run --storage-driver overlay"
    ctr=$($b from -q scratch)
    mnt=$($b mount "$ctr")
    cp -a "$BASE_DIR/." "$mnt/"
    $b config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
    $b commit -q "$ctr" localhost/berth-buildah-base:latest >/dev/null
    $b rm "$ctr" >/dev/null
    echo "$b"
}

declare -A RT=([berth-runtime]=$BERTH_RT [runc]=$(command -v runc))
declare -A COLD CACHED
for i in $(seq "$RUNS"); do
    for name in berth-runtime runc; do
        b=$(new_store "$name-$i")
        bud=($b bud --pull=never --layers --runtime "${RT[$name]}" --network host
             --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 -t localhost/app:bench "$CTX")
        cold=$(timed "${bud[@]}")
        cached=$(timed "${bud[@]}")
        COLD[$name]+="$cold "
        CACHED[$name]+="$cached "
        echo "run $i $name: cold $cold ms, cached $cached ms" >&2
    done
done

printf '%-14s %12s %12s\n' runtime "cold ms" "cached ms"
for name in berth-runtime runc; do
    c=$(tr ' ' '\n' <<<"${COLD[$name]}" | grep . | median)
    k=$(tr ' ' '\n' <<<"${CACHED[$name]}" | grep . | median)
    printf '%-14s %12s %12s\n' "$name" "$c" "$k"
    eval "M_${name//-/_}_cold=$c M_${name//-/_}_cached=$k"
done
awk -v a="$M_berth_runtime_cold" -v b="$M_runc_cold" -v c="$M_berth_runtime_cached" -v d="$M_runc_cached" \
    'BEGIN {printf "ratio berth-runtime/runc: cold %.2fx, cached %.2fx (medians of %d runs)\n", a/b, c/d, '"$RUNS"'}'
