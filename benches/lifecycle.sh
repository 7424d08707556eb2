#!/usr/bin/env bash
# Container lifecycle benchmark of berth-runtime, crun and runc on one busybox bundle whose
# process is /bin/true, in one run:
#   steps  `RT create`, `RT start`, `RT state` until stopped, `RT delete`: four or more runtime
#          calls, as a supervisor makes them (one /bin/sh runs the sequence, alike for all)
#   run    `RT run` (create + start + wait + delete in one call)
# The three runtimes alternate in rounds, so that load from elsewhere on the machine falls on
# all alike. Prints the median time of each (and its minimum) and the ratios of the medians
# berth/crun and berth/runc (below 1: berth-runtime is faster), then the median peak RSS of
# `run` and the same ratios.
#
#   usage: benches/lifecycle.sh [BERTH_RUNTIME_BIN]
#          default target/runtime/berth-runtime, built first when missing with the project's
#          recipe for the runtime binary (see [profile.runtime] in Cargo.toml)
#   env:   ROUNDS=6 RUNS_PER_ROUND=10 WARMUP=3 RSS_RUNS=10 BUNDLE_PARENT=/dev/shm
# Needs root, hyperfine, jq, /usr/bin/time, runc, crun and /bin/busybox (busybox-static).
#
# crun 1.8 refuses a "hybrid" cgroup layout with controllers attached to cgroup2 (hugetlb sits
# there on this VM): for the duration of the run each such controller is mounted as a v1
# hierarchy and given back at exit (lib.sh's hybrid_to_v1 / hybrid_restore).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/.." && pwd)
ROUNDS=${ROUNDS:-6}
RUNS_PER_ROUND=${RUNS_PER_ROUND:-10}
WARMUP=${WARMUP:-3}
RSS_RUNS=${RSS_RUNS:-10}
BUNDLE_PARENT=${BUNDLE_PARENT:-/dev/shm}
. "$HERE/lib.sh"
bench_need hyperfine jq runc crun
[ -x /usr/bin/time ] || { echo "/usr/bin/time missing: run scripts/setup.sh" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "/bin/busybox missing: run scripts/setup.sh" >&2; exit 1; }
RUNC=$(command -v runc)
CRUN=$(command -v crun)

if [ $# -ge 1 ]; then
    BERTH=$1
else
    BERTH=$TOP/target/runtime/berth-runtime
    if [ ! -x "$BERTH" ]; then
        echo "building $BERTH (profile runtime, static-pie)" >&2
        (cd "$TOP" && cargo rustc --profile runtime -p berth-runtime --bin berth-runtime \
            -- -C target-feature=+crt-static)
    fi
fi
[ -x "$BERTH" ] || { echo "$BERTH missing or not executable" >&2; exit 1; }
BERTH=$(realpath "$BERTH")

WORK=$(mktemp -d "$BUNDLE_PARENT/berth-bench.XXXXXX")
ROOTS="$WORK/state"
cleanup() {
    local rt id
    for rt in berth:"$BERTH" runc:"$RUNC" crun:"$CRUN"; do
        for id in lc-run lc-steps lc-rss lc-sanity; do
            "${rt#*:}" --root "$ROOTS/${rt%%:*}" delete -f "$id" >/dev/null 2>&1 || true
        done
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
echo "berth-runtime: $BERTH ($(ldd "$BERTH" 2>&1 | grep -q "statically linked" && echo static || echo dynamic))" >&2
echo "crun: $("$CRUN" --version | head -1); runc: $("$RUNC" --version | head -1)" >&2

# One state root per runtime, private to this run.
declare -A RT=([berth-runtime]="$BERTH --root $ROOTS/berth" [runc]="$RUNC --root $ROOTS/runc"
    [crun]="$CRUN --root $ROOTS/crun")
NAMES=(berth-runtime crun runc)

# create, start, poll state until stopped (in the shell, no extra processes), delete.
STEPS="$WORK/steps.sh"
cat > "$STEPS" <<'EOF'
#!/bin/sh
set -e
B=$1 ID=$2; shift 2
"$@" create --bundle "$B" "$ID"
"$@" start "$ID"
while :; do
    case $("$@" state "$ID") in
        *'"status": "stopped"'* | *'"status":"stopped"'*) break ;;
    esac
done
"$@" delete "$ID"
EOF
chmod +x "$STEPS"

# Every runtime must leave nothing behind, in either mode.
for n in "${NAMES[@]}"; do
    ${RT[$n]} run --bundle "$B" lc-sanity
    /bin/sh "$STEPS" "$B" lc-sanity ${RT[$n]}
    if ${RT[$n]} state lc-sanity >/dev/null 2>&1; then
        echo "$n left container lc-sanity behind" >&2
        exit 1
    fi
done

# summarize DIR: "name median_seconds min_seconds" per runtime, from alternate_rounds'
# summary.json. The minimum is printed beside the median: on a loaded machine it is the run
# that waited least for a CPU.
summarize() { jq -r '.[] | "\(.name) \(.median) \(.times | min)"' "$1/summary.json"; }

# ratios TITLE UNIT FILE: prints each median and berth-runtime's ratio to crun and runc.
ratios() {
    local title=$1 unit=$2 file=$3
    echo "$title"
    awk -v unit="$unit" '
        { v[$1] = $2; m[$1] = $3; order[NR] = $1 }
        END {
            b = v["berth-runtime"]
            for (i = 1; i <= NR; i++) {
                n = order[i]
                if (unit == "ms") printf "  %-14s median %8.2f ms (min %6.2f)", n, v[n] * 1000, m[n] * 1000
                else printf "  %-14s median %8d KiB", n, v[n]
                if (n != "berth-runtime") printf "   berth-runtime/%s = %.2fx", n, b / v[n]
                printf "\n"
            }
        }' "$file"
}

mkdir -p "$WORK/steps" "$WORK/run"
declare -A CMD
for n in "${NAMES[@]}"; do CMD[$n]="/bin/sh $STEPS $B lc-steps ${RT[$n]}"; done
alternate_rounds "$WORK/steps" berth-runtime steps >/dev/null
summarize "$WORK/steps" > "$WORK/steps.txt"
for n in "${NAMES[@]}"; do CMD[$n]="${RT[$n]} run --bundle $B lc-run"; done
alternate_rounds "$WORK/run" berth-runtime run >/dev/null

runs=$((ROUNDS * RUNS_PER_ROUND))
echo "lifecycle of /bin/true, $ROUNDS alternating rounds of $RUNS_PER_ROUND runs ($runs per median):"
ratios "create + start + state until stopped + delete (separate calls, from one /bin/sh):" ms \
    "$WORK/steps.txt"
summarize "$WORK/run" > "$WORK/run.txt"
ratios "run (create + start + wait + delete in one call):" ms "$WORK/run.txt"

# ---- peak RSS of `run`: the largest of the runtime process and the children it waited for
# (its container init, a fork of it until the exec) ----
if [ "$RSS_RUNS" -gt 0 ]; then
    : > "$WORK/rss.txt"
    for n in "${NAMES[@]}"; do
        for _ in $(seq "$RSS_RUNS"); do
            /usr/bin/time -f '%M' -a -o "$WORK/rss-$n" ${RT[$n]} run --bundle "$B" lc-rss >/dev/null
        done
        sort -n "$WORK/rss-$n" | awk -v n="$n" '{a[NR]=$1} END {print n, a[int((NR+1)/2)]}' >> "$WORK/rss.txt"
    done
    ratios "peak RSS of run, median of $RSS_RUNS:" KiB "$WORK/rss.txt"
fi
