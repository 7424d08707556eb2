#!/usr/bin/env bash
# `podman run --rm busybox true` with berth-runtime vs crun vs runc, alternating in one
# hyperfine run (one podman root, image loaded once); prints medians and ratios to crun.
#   usage: benches/podman.sh [BERTH_RUNTIME_BIN]   env: RUNS=20 WARMUP=3
# crun needs the hybrid cgroup fix: controllers on cgroup2 (hugetlb here) are mounted as v1
# for the duration and put back at exit.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
BERTH=$(realpath "${1:-$HERE/target/release/berth-runtime}")
RUNS=${RUNS:-20}
WARMUP=${WARMUP:-3}
W=$(mktemp -d /tmp/berth-bench-podman.XXXXXX)
P="podman --root $W/root --runroot $W/runroot --tmpdir $W/tmp --cgroup-manager cgroupfs --events-backend file"
FLAGS="run --rm --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024"
MOUNTED=()
cleanup() {
    $P rm -af -t 0 >/dev/null 2>&1 || true
    $P system reset -f >/dev/null 2>&1 || true
    rm -rf "$W"
    for h in /sys/fs/cgroup/*/libpod_parent; do
        [ -d "$h" ] || continue
        rmdir "$h/conmon" 2>/dev/null || true
        rmdir "$h" 2>/dev/null || true
    done
    for c in "${MOUNTED[@]+"${MOUNTED[@]}"}"; do
        for _ in 1 2 3; do
            find "/sys/fs/cgroup/$c" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null || true
            umount "/sys/fs/cgroup/$c" || break
            for _ in $(seq 50); do grep -qw "$c" /sys/fs/cgroup/unified/cgroup.controllers && break 2; sleep 0.1; done
            mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c"
        done
        rmdir "/sys/fs/cgroup/$c" 2>/dev/null || true
        grep -qw "$c" /sys/fs/cgroup/unified/cgroup.controllers || echo "WARNING: $c not back on cgroup2" >&2
    done
}
trap cleanup EXIT
for c in $(cat /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null); do
    mkdir -p "/sys/fs/cgroup/$c" && mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c" && MOUNTED+=("$c")
done

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

hyperfine -N --warmup "$WARMUP" --runs "$RUNS" --export-json "$W/out.json" \
    -n berth-runtime "$P --runtime $BERTH $FLAGS $IMG true" \
    -n crun "$P --runtime $(command -v crun) $FLAGS $IMG true" \
    -n runc "$P --runtime $(command -v runc) $FLAGS $IMG true" >/dev/null
jq -r '(.results[] | select(.command=="crun") | .median) as $c
  | .results[] | "\(.command)\tmedian \(.median*1000|round) ms\tratio to crun \((.median/$c*100|round)/100)"' "$W/out.json"
