#!/usr/bin/env bash
# `podman run --rm busybox true` with berth-runtime vs crun vs runc as podman's runtime,
# alternating in rounds (one podman root, image loaded once); prints medians and ratios.
#   usage: benches/podman.sh [BERTH_RUNTIME_BIN]   (default target/release/berth-runtime)
#   env:   ROUNDS=5 RUNS_PER_ROUND=6 WARMUP=2
# Needs root, hyperfine, jq, podman, conmon, crun, runc, umoci, skopeo, busybox-static.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BERTH=$(realpath "${1:-$HERE/../target/release/berth-runtime}")
ROUNDS=${ROUNDS:-5}
RUNS_PER_ROUND=${RUNS_PER_ROUND:-6}
WARMUP=${WARMUP:-2}
. "$HERE/lib.sh"
bench_need hyperfine jq podman conmon crun runc umoci skopeo
[ -x "$BERTH" ] || { echo "$BERTH missing: cargo build --release -p berth-runtime" >&2; exit 1; }

W=$(mktemp -d /tmp/berth-bench-podman.XXXXXX)
P="podman --root $W/root --runroot $W/runroot --tmpdir $W/tmp --cgroup-manager cgroupfs --events-backend file"
FLAGS="run --rm --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024"
cleanup() {
    $P rm -af -t 0 >/dev/null 2>&1 || true
    $P system reset -f >/dev/null 2>&1 || true
    rm -rf "$W"
    hybrid_restore
}
trap cleanup EXIT
hybrid_to_v1

# A busybox image as an oci-archive, loaded once.
mkdir -p "$W/img" && cd "$W/img"
umoci init --layout L >/dev/null && umoci new --image L:latest >/dev/null
umoci unpack --image L:latest B >/dev/null
mkdir -p B/rootfs/bin && cp /bin/busybox B/rootfs/bin/ && ln -s busybox B/rootfs/bin/true
umoci repack --image L:latest B >/dev/null
umoci config --image L:latest --config.cmd /bin/true --architecture amd64 --os linux >/dev/null
skopeo copy -q oci:L:latest "oci-archive:$W/bb.tar:localhost/bench-busybox:latest"
$P load -q -i "$W/bb.tar" >/dev/null
IMG=localhost/bench-busybox:latest

declare -A CMD=(
    [berth-runtime]="$P --runtime $BERTH $FLAGS $IMG true"
    [crun]="$P --runtime $(command -v crun) $FLAGS $IMG true"
    [runc]="$P --runtime $(command -v runc) $FLAGS $IMG true"
)
NAMES=(berth-runtime crun runc)
alternate_rounds "$W" berth-runtime "podman run --rm busybox true"
