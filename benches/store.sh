#!/usr/bin/env bash
# The scheduler's state store, embedded redb against etcd (release builds, real processes):
#   1. Apply → durable latency (p50/p99/max) on redb, a 1-member etcd and a 3-member etcd
#      (etcd with fsync on, as redb);
#   2. placement through the store: 20 fake nodes in the bench process, one Apply of 2000
#      replicas (and the same as 20 deployments of 100), Apply → every replica placed, per
#      backend, with the in-process figure of `cargo bench --bench placement` beside it;
#   3. leader failover: 3 schedulers on one etcd, kill -9 the leader, time the next election
#      and the node's return to the new leader, with --leader-lease-seconds 5 and 2.
# Kubernetes' leader-election figures in the table are cited, not measured. Prints a table;
# writes JSON to $BENCH_OUT.
#   usage: bash benches/store.sh
#   env:   BENCH_OUT=target/bench/store.json  BENCH_APPLY_N=200  BENCH_NODES=20
#          BENCH_PLACE_REPLICAS=2000  BENCH_PLACE_CHUNK=100  BENCH_PLACE_RUNS=3
#          BENCH_FAILOVER_KILLS=5 (0 skips it)  BENCH_FAILOVER_LEASES=5,2
#          BENCH_SKIP_INPROC=1 (skips the in-process placement bench)
# Needs cargo and etcd (Debian's etcd-server: scripts/setup.sh). No root needed.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
export BENCH_OUT=${BENCH_OUT:-$ROOT/target/bench/store.json}
command -v cargo >/dev/null || { echo "cargo missing: run scripts/setup.sh" >&2; exit 1; }
[ -x /usr/bin/etcd ] || { echo "/usr/bin/etcd missing: install etcd-server (scripts/setup.sh)" >&2; exit 1; }

W=$(mktemp -d /tmp/berth-bench-store.XXXXXX)
trap 'rm -rf "$W"' EXIT

# Only the packages this bench runs: a half-done change elsewhere in the workspace does not
# stop it.
echo "building (release)..." >&2
(cd "$ROOT" && cargo build --release --quiet -p berth-scheduler -p berth-tests --bin bench-store \
    --bin berth-scheduler)
export BERTH_BIN_DIR=$ROOT/target/release

# In process: the scheduler's placement over simulated nodes, no store.
if [ "${BENCH_SKIP_INPROC:-0}" != 1 ]; then
    echo "placement bench (in process)..." >&2
    (cd "$ROOT" && cargo bench --quiet -p berth-scheduler --bench placement) >"$W/placement.txt"
    grep -q '^placement:' "$W/placement.txt" || { echo "the placement bench printed no result" >&2; exit 1; }
    export BENCH_PLACEMENT=$W/placement.txt
fi

"$BERTH_BIN_DIR/bench-store" < /dev/null
