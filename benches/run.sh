#!/usr/bin/env bash
# `berth run --rm busybox true` (release build, no daemon) against `podman run --rm` with crun,
# alternating in rounds. Both keep their storage on the same disk (/var/tmp and
# /var/lib/containers, ext4 here). Prints medians and the ratio.
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
for tool in hyperfine jq podman crun skopeo; do
    command -v "$tool" >/dev/null || { echo "$tool missing: run scripts/setup.sh" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
[ -x "$BERTH" ] || { echo "$BERTH missing: cargo build --release -p berth-cli" >&2; exit 1; }

WORK=$(mktemp -d /var/tmp/berth-run-bench.XXXXXX)
DATA="$WORK/data"
PODMAN_IMAGE=localhost/berth-bench-busybox:latest
PODMAN=(podman --runtime "$(command -v crun)" --cgroup-manager cgroupfs --events-backend file)
MOUNTED=()
cleanup() {
    "${PODMAN[@]}" rmi -f "$PODMAN_IMAGE" >/dev/null 2>&1 || true
    local c try
    for c in "${MOUNTED[@]+"${MOUNTED[@]}"}"; do
        # Parents both left in the moved hierarchy (berth's /berth, podman's libpod_parent)
        # would keep it alive after umount: remove the empty directories first.
        for try in 1 2 3 4 5; do
            find "/sys/fs/cgroup/$c" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null || true
            umount "/sys/fs/cgroup/$c" 2>/dev/null || break
            for _ in $(seq 50); do
                grep -qw "$c" /sys/fs/cgroup/unified/cgroup.controllers && break 2
                sleep 0.1
            done
            mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c" || break
        done
        rmdir "/sys/fs/cgroup/$c" 2>/dev/null || true
        grep -qw "$c" /sys/fs/cgroup/unified/cgroup.controllers \
            || echo "WARNING: $c is not back on cgroup2" >&2
    done
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

UNIFIED=/sys/fs/cgroup/unified/cgroup.controllers
if [ -f "$UNIFIED" ] && [ -n "$(tr -d ' \n' < "$UNIFIED")" ]; then
    for c in $(cat "$UNIFIED"); do
        mkdir -p "/sys/fs/cgroup/$c"
        mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c"
        MOUNTED+=("$c")
    done
    echo "note: moved [${MOUNTED[*]}] from cgroup2 to v1 for crun; restored at exit" >&2
fi

declare -A CMD=(
    [berth-run]="$BERTH --data-dir $DATA run --rm busybox:latest true"
    [podman-crun]="${PODMAN[*]} run --rm --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 $PODMAN_IMAGE true"
)
NAMES=(berth-run podman-crun)
for n in "${NAMES[@]}"; do
    ${CMD[$n]} || { echo "$n failed its sanity run" >&2; exit 1; }
done

for round in $(seq "$ROUNDS"); do
    args=()
    for n in "${NAMES[@]}"; do args+=(-n "$n" "${CMD[$n]}"); done
    hyperfine -N --style none --warmup "$WARMUP" --runs "$RUNS_PER_ROUND" \
        --export-json "$WORK/round-$round.json" "${args[@]}" >/dev/null
done
jq -s '[.[].results[]] | group_by(.command)
       | map({name: .[0].command, times: (map(.times) | add)})
       | map(. + {median: (.times | sort | .[(length / 2 | floor)]), runs: (.times | length)})' \
    "$WORK"/round-*.json > "$WORK/summary.json"
B=$(jq -r '.[] | select(.name=="berth-run") | .median' "$WORK/summary.json")
echo "run --rm busybox true, $ROUNDS alternating rounds (storage on $(df --output=fstype "$WORK" | tail -1)):"
jq -r --argjson b "$B" '.[] | "  \(.name)\tmedian \(.median*1000*100|round/100) ms\truns \(.runs)\t\(if .name == "berth-run" then "(reference)" else "berth run is \((.median/$b)*100|round/100)x faster" end)"' \
    "$WORK/summary.json"
# berth leaves nothing behind: no container dirs after all those --rm runs.
[ -z "$(ls -A "$DATA/containers" 2>/dev/null)" ] || { echo "berth left containers behind" >&2; exit 1; }
