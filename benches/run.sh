#!/usr/bin/env bash
# `berth run --rm busybox true` (release build, no daemon) against `podman run --rm` with crun,
# alternating in rounds. Both keep their storage on the same disk (/var/tmp and
# /var/lib/containers, ext4 here). Prints medians and the ratio, and notes that the work differs:
# podman also keeps a database of its containers (and an events file) and runs conmon.
#
#   usage: benches/run.sh [BERTH_BIN]   (default target/release/berth)
#   env:   ROUNDS=5 RUNS_PER_ROUND=10 WARMUP=3
# Needs root, hyperfine, jq, podman, crun, skopeo and /bin/busybox (busybox-static).
#
# crun 1.8 refuses a hybrid cgroup layout with controllers on cgroup2 (hugetlb here): for the run
# such controllers are mounted as v1 hierarchies and given back at exit (as lifecycle.sh does).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
BERTH=$(realpath "${1:-$HERE/../target/release/berth}")
ROUNDS=${ROUNDS:-5}
RUNS_PER_ROUND=${RUNS_PER_ROUND:-10}
WARMUP=${WARMUP:-3}
. "$HERE/lib.sh"
bench_need hyperfine jq podman crun skopeo
[ -x "$BERTH" ] || { echo "$BERTH missing: cargo build --release -p berth-cli" >&2; exit 1; }

WORK=$(mktemp -d /var/tmp/berth-run-bench.XXXXXX)
DATA="$WORK/data"
PODMAN_IMAGE=localhost/berth-bench-busybox:latest
PODMAN=(podman --runtime "$(command -v crun)" --cgroup-manager cgroupfs --events-backend file)
cleanup() {
    "${PODMAN[@]}" rmi -f "$PODMAN_IMAGE" >/dev/null 2>&1 || true
    hybrid_restore
    rm -rf "$WORK"
}
trap cleanup EXIT

# ---- the busybox image: built into berth's store, exported to podman via an oci-archive ----
R="$WORK/rootfs"
mkdir -p "$R"/{bin,etc,proc,sys,dev,tmp,root}
install -m 0755 /bin/busybox "$R/bin/busybox"
for a in sh true; do ln -s busybox "$R/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$R/etc/passwd"
printf 'root:x:0:\n' > "$R/etc/group"
"$BERTH" --data-dir "$DATA" image build --from-dir "$R" --tag busybox:latest --cmd /bin/sh \
    --env PATH=/bin >/dev/null
skopeo copy --quiet "oci:$DATA/images:busybox:latest" "oci-archive:$WORK/busybox.tar"
LOADED=$("${PODMAN[@]}" load -q -i "$WORK/busybox.tar" | sed -n 's/^Loaded image[^:]*: //p' | tail -1)
"${PODMAN[@]}" tag "$LOADED" "$PODMAN_IMAGE"

hybrid_to_v1

declare -A CMD=(
    [berth-run]="$BERTH --data-dir $DATA run --rm busybox:latest true"
    [podman-crun]="${PODMAN[*]} run --rm --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 $PODMAN_IMAGE true"
)
NAMES=(berth-run podman-crun)
alternate_rounds "$WORK" berth-run "run --rm busybox true (storage on $(df --output=fstype "$WORK" | tail -1))"
echo "  note: unlike work: podman also records the container in its database (and its events"
echo "  file) and goes through conmon; berth run keeps no database and needs no monitor process."
# berth leaves nothing behind: no container dirs after all those --rm runs.
[ -z "$(ls -A "$DATA/containers" 2>/dev/null)" ] || { echo "berth left containers behind" >&2; exit 1; }
