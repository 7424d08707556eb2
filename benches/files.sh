#!/usr/bin/env bash
# Issue 15's speed figures with release binaries:
#   1. what 3 named volumes + 3 configs + 3 secrets add to a container's start on a real agent
#      (assignment applied -> started, from the agent's own log; alternating plain and full
#      containers, BENCH_ROUNDS of each, medians): tests/tests/agent_files.rs `nine_mounts`;
#   2. a config update until 3 replicas on 3 real nodes run the new content (real scheduler,
#      3 agents on the node fabric): tests/tests/app_storage.rs `a_config_update`.
# Volume seeding against podman is benches/volumes.sh.
#   usage: bash benches/files.sh        env: BENCH_ROUNDS=30
# Needs root and what the end-to-end tests need (scripts/setup.sh).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
echo "building (release)..." >&2
cargo build --release --quiet -p berth-agent -p berth-shim -p berth-cli -p berth-runtime -p berth-scheduler
export BERTH_BIN_DIR=$ROOT/target/release BENCH_ROUNDS=${BENCH_ROUNDS:-30}
echo "== load average: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores"
cargo nextest run --no-fail-fast -p berth-tests --test agent_files --test app_storage \
    -E 'test(nine_mounts) | test(a_config_update)' --no-capture 2>&1 \
    | grep -E '^(assignment -> started|BENCH)'
