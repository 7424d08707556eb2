#!/usr/bin/env bash
# The scheduler end to end (issue 6), release builds:
#   1. placement throughput in process (`cargo bench -p berth-scheduler --bench placement`):
#      placements/s count only replicas given a node; unschedulable ones are reported apart;
#   2. Apply → all Ready: 30 replicas over 3 real nodes (agents + containers on this machine),
#      warm image, p50/p99 over several runs, and per replica Apply → container started_at;
#   3. a lost node (agent and containers SIGKILLed) → every replica Ready elsewhere, first with
#      the scheduler's defaults (heartbeats every 1000 ms, 3 missed, reschedule delay 2000 ms),
#      then tuned (heartbeats every 200 ms, reschedule delay 500 ms), each labelled.
# Kubernetes' figures in the table are cited, not measured. Prints a table; writes JSON to
# $BENCH_OUT.
#   usage: bash benches/cluster.sh
#   env:   BENCH_OUT=target/bench/cluster.json  BENCH_E2E_RUNS=5  BENCH_E2E_REPLICAS=30
#          BENCH_LOSS_RUNS=5  BENCH_LOSS_TUNED_RUNS=3 (0 skips the tuned runs)
#          BENCH_LOSS_REPLICAS=6
# Needs root, cargo, ip, nsenter, pkill, busybox-static.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
export BENCH_OUT=${BENCH_OUT:-$ROOT/target/bench/cluster.json}
. "$HERE/lib.sh"
bench_need cargo ip nsenter pkill
[ -x /bin/busybox ] || { echo "/bin/busybox missing: run scripts/setup.sh" >&2; exit 1; }

W=$(mktemp -d /tmp/berth-bench-cluster.XXXXXX)
trap 'rm -rf "$W"' EXIT

# Only the packages this bench runs: a half-done change elsewhere in the workspace does not
# stop it.
echo "building (release)..." >&2
(cd "$ROOT" && cargo build --release --quiet -p berth-cli -p berth-agent -p berth-shim -p berth-runtime \
    -p berth-scheduler -p berth-tests)
export BERTH_BIN_DIR=$ROOT/target/release

# 1. In process: the scheduler's placement over simulated nodes.
echo "placement bench (in process)..." >&2
(cd "$ROOT" && cargo bench --quiet -p berth-scheduler --bench placement) | tee "$W/placement.txt"
grep -q '^placement:' "$W/placement.txt" || { echo "the placement bench printed no result" >&2; exit 1; }

# 2 and 3. End to end.
BENCH_PLACEMENT=$W/placement.txt "$BERTH_BIN_DIR/bench-cluster" < /dev/null
