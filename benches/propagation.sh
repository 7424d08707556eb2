#!/usr/bin/env bash
# Endpoint propagation on the real path (issue 14), release builds: a real berth-scheduler and
# 3 real agents on the netns fabric, one replica whose exec readiness probe (`test -f
# /tmp/ready`, every 100 ms) is made to fail and pass 100 times; from the agent logging the
# probe passing to a connect through the virtual IP succeeding on every node
# (tests/src/bin/bench-propagation.rs). Prints a table (load average before and after);
# writes JSON to $BENCH_OUT. Not part of the test suite.
#   usage: bash benches/propagation.sh
#   env:   BENCH_OUT=target/bench/propagation.json  BENCH_CHANGES=100
# Needs root, cargo, ip, nsenter, nft, busybox-static.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
export BENCH_OUT=${BENCH_OUT:-$ROOT/target/bench/propagation.json}
. "$HERE/lib.sh"
bench_need cargo ip nsenter nft
[ -x /bin/busybox ] || { echo "/bin/busybox missing: run scripts/setup.sh" >&2; exit 1; }

# Only the packages this bench runs: a half-done change elsewhere in the workspace does not
# stop it.
echo "building (release)..." >&2
(cd "$ROOT" && cargo build --release --quiet -p berth-cli -p berth-agent -p berth-shim -p berth-runtime \
    -p berth-scheduler && cargo build --release --quiet -p berth-tests --bin bench-propagation)
export BERTH_BIN_DIR=${CARGO_TARGET_DIR:-$ROOT/target}/release
echo "kernel $(uname -r), $(nft --version)"
"$BERTH_BIN_DIR/bench-propagation" < /dev/null
