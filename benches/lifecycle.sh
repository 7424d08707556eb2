#!/usr/bin/env bash
# Container lifecycle benchmark: `RUNTIME run` (create + start + wait + delete) of /bin/true in
# a busybox bundle, for berth-runtime, runc and crun, alternating in rounds so that load from
# elsewhere on the machine falls on all three alike. Prints medians, ratios and peak RSS.
#
#   usage: benches/lifecycle.sh [BERTH_RUNTIME_BIN]   (default target/release/berth-runtime)
#   env:   ROUNDS=6 RUNS_PER_ROUND=10 WARMUP=3 RSS_RUNS=10 BUNDLE_PARENT=/dev/shm
# Needs root, hyperfine, jq, /usr/bin/time, runc, crun and /bin/busybox (busybox-static).
#
# crun 1.8 refuses a "hybrid" cgroup layout with controllers attached to cgroup2 (hugetlb sits
# there on this VM): for the duration of the run each such controller is mounted as a v1
# hierarchy and given back at exit (the same workaround as shared/bench/lifecycle.sh).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
BERTH=${1:-$HERE/../target/release/berth-runtime}
BERTH=$(realpath "$BERTH")
ROUNDS=${ROUNDS:-6}
RUNS_PER_ROUND=${RUNS_PER_ROUND:-10}
WARMUP=${WARMUP:-3}
RSS_RUNS=${RSS_RUNS:-10}
BUNDLE_PARENT=${BUNDLE_PARENT:-/dev/shm}
RUNC=$(command -v runc)
CRUN=$(command -v crun)
. "$HERE/lib.sh"
bench_need hyperfine jq runc crun
[ -x "$BERTH" ] || { echo "$BERTH missing: cargo build --release -p berth-runtime" >&2; exit 1; }

WORK=$(mktemp -d "$BUNDLE_PARENT/berth-bench.XXXXXX")
cleanup() {
    for rt in "$BERTH" "$RUNC" "$CRUN"; do
        for id in bench-berth bench-runc bench-crun rss; do "$rt" delete -f "$id" >/dev/null 2>&1 || true; done
    done
    hybrid_restore
    rm -rf "$WORK"
}
trap cleanup EXIT

hybrid_to_v1

# ---- busybox bundle, config from `berth-runtime spec` (runc's defaults) ----
B="$WORK/bundle"
mkdir -p "$B/rootfs"/{bin,etc,proc,sys,dev,tmp,root}
install -m 0755 /bin/busybox "$B/rootfs/bin/busybox"
for a in sh true; do ln -s busybox "$B/rootfs/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$B/rootfs/etc/passwd"
"$BERTH" spec --bundle "$B"
jq '.process.args=["/bin/true"] | .process.terminal=false' "$B/config.json" > "$B/c.json"
mv "$B/c.json" "$B/config.json"
echo "bundle on $(df --output=fstype "$B" | tail -1): $B" >&2

declare -A CMD=(
    [berth-runtime]="$BERTH run --bundle $B bench-berth"
    [runc]="$RUNC run --bundle $B bench-runc"
    [crun]="$CRUN run --bundle $B bench-crun"
)
NAMES=(berth-runtime runc crun)
alternate_rounds "$WORK" berth-runtime "lifecycle of /bin/true (run = create+start+wait+delete)"

# ---- peak RSS of the runtime process (largest of it and the children it waited for) ----
if [ "$RSS_RUNS" -gt 0 ]; then
    for n in "${NAMES[@]}"; do
        cmd=${CMD[$n]% *}
        for _ in $(seq "$RSS_RUNS"); do
            /usr/bin/time -f '%M' -a -o "$WORK/rss-$n" $cmd rss >/dev/null
        done
        sort -n "$WORK/rss-$n" | awk -v n="$n" '{a[NR]=$1} END {printf "  %s peak RSS: median %d KiB (min %d, max %d, n=%d)\n", n, a[int((NR+1)/2)], a[1], a[NR], NR}'
    done
fi
