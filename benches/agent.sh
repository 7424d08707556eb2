#!/usr/bin/env bash
# The node agent (berth-agent, release build) under a fake scheduler, with podman + conmon
# (crun) measured in the same run as the peer:
#   1. agent idle RSS once registered;  2. berth-shim RSS/PSS per container vs conmon's;
#   3. assignment → Running latency p50/p99 vs `podman run -d` start latency;
#   4. 200 sleep containers on one node: time to all Running, memory overhead per container.
# The podman part runs first and is torn down before the agent starts, so neither skews the
# other's memory figures. Prints a table; writes JSON to $BENCH_OUT.
#   usage: bash benches/agent.sh
#   env:   BENCH_OUT=target/bench/agent.json  PODMAN_RUNS=20  PODMAN_WARMUP=2
#          BENCH_LATENCY_N=100  BENCH_DENSITY_N=200
# Needs root, cargo, hyperfine, jq, podman, conmon, crun, umoci, skopeo, busybox-static, ip, nsenter.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
PODMAN_RUNS=${PODMAN_RUNS:-20}
PODMAN_WARMUP=${PODMAN_WARMUP:-2}
export BENCH_OUT=${BENCH_OUT:-$ROOT/target/bench/agent.json}
. "$HERE/lib.sh"
bench_need cargo hyperfine jq podman conmon crun umoci skopeo ip nsenter
[ -x /bin/busybox ] || { echo "/bin/busybox missing: run scripts/setup.sh" >&2; exit 1; }

# Only the packages this bench runs: a half-done change elsewhere in the workspace does not
# stop it.
echo "building (release)..." >&2
(cd "$ROOT" && cargo build --release --quiet -p berth-agent -p berth-shim -p berth-cli -p berth-runtime -p berth-tests)
export BERTH_BIN_DIR=$ROOT/target/release

W=$(mktemp -d /tmp/berth-bench-agent.XXXXXX)
P="podman --root $W/root --runroot $W/runroot --tmpdir $W/tmp --cgroup-manager cgroupfs --events-backend file"
FLAGS="run -d --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --runtime $(command -v crun)"
podman_down() {
    $P rm -af -t 0 >/dev/null 2>&1 || true
    $P system reset -f >/dev/null 2>&1 || true
}
cleanup() {
    podman_down
    rm -rf "$W"
    hybrid_restore
}
trap cleanup EXIT

# --- peer: podman run -d (crun) start latency, then conmon's memory with those containers up.
hybrid_to_v1
mkdir -p "$W/img" && cd "$W/img"
umoci init --layout L >/dev/null && umoci new --image L:latest >/dev/null
umoci unpack --image L:latest B >/dev/null
mkdir -p B/rootfs/bin && cp /bin/busybox B/rootfs/bin/ && ln -s busybox B/rootfs/bin/sleep
umoci repack --image L:latest B >/dev/null
umoci config --image L:latest --config.cmd /bin/sleep --architecture amd64 --os linux >/dev/null
skopeo copy -q oci:L:latest "oci-archive:$W/bb.tar:localhost/bench-busybox:latest"
$P load -q -i "$W/bb.tar" >/dev/null
cd "$ROOT"
echo "peer: $PODMAN_RUNS x podman run -d (crun), +$PODMAN_WARMUP warm-up..." >&2
# Each run leaves a container running: they are the ones conmon is measured with.
hyperfine -N --style none --warmup "$PODMAN_WARMUP" --runs "$PODMAN_RUNS" \
    --export-json "$W/podman-run.json" \
    "$P $FLAGS localhost/bench-busybox:latest /bin/sleep 1000" >/dev/null
sleep 2
conmons=()
for id in $($P ps -q --no-trunc); do
    conmons+=("$($P inspect --format '{{.State.ConmonPid}}' "$id")")
done
[ "${#conmons[@]}" -gt 0 ] || { echo "no podman container is running" >&2; exit 1; }
mem_json() {
    local pid=$1
    awk -v pid="$pid" '/^Rss:/ {r=$2} /^Pss:/ {p=$2} END {printf "{\"pid\":%d,\"rss_kb\":%d,\"pss_kb\":%d}\n", pid, r, p}' \
        "/proc/$pid/smaps_rollup"
}
for pid in "${conmons[@]}"; do mem_json "$pid"; done > "$W/conmon.jsonl"
jq -n --slurpfile c "$W/conmon.jsonl" --slurpfile r "$W/podman-run.json" \
    --arg podman "$(podman --version)" --arg conmon "$(conmon --version | head -1)" \
    --arg crun "$(crun --version | head -1)" \
    '{podman: $podman, conmon_version: $conmon, crun: $crun,
      start_s: $r[0].results[0].times, conmon: $c}' > "$W/peer.json"
podman_down
hybrid_restore

# --- berth-agent.
BENCH_PEER=$W/peer.json "$BERTH_BIN_DIR/bench-agent" < /dev/null
echo "peer inputs: $(jq -c '{podman, conmon_version, crun}' "$W/peer.json")"
