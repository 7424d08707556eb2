#!/usr/bin/env bash
# Promotion time (issue 16): from `berth promote APP --from STAGING --to PRODUCTION --wait`
# starting to the command returning with production's rollout complete, for 3 replicas, release
# build, on a one-node `berth up` cluster of its own (free loopback port, its containers in a
# network namespace of its own, data dir on tmpfs so the disk is not what is measured).
# Each round first deploys a new version to staging (--wait; not timed), then times the
# promotion of that release to production. Production's approval is auto here, so the figure
# is berth's own: Promote's Apply, the rollout (replicas replaced with surge, each ready by its
# http probe) and the watch. With a manual production the same path waits for `berth approve`.
# The app is examples/hello (busybox httpd, 3 replicas, readiness every 500 ms; image node-local).
# Prints each round, the median and the spread; writes JSON to $BENCH_OUT.
#   usage: bash benches/promote.sh
#   env:   ROUNDS=5  BENCH_OUT=target/bench/promote.json
# Needs root, cargo, jq, ip, busybox-static.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
ROUNDS=${ROUNDS:-5}
BENCH_OUT=${BENCH_OUT:-$ROOT/target/bench/promote.json}
. "$HERE/lib.sh"
bench_need cargo jq ip python3
[ -x /bin/busybox ] || { echo "/bin/busybox missing: run scripts/setup.sh" >&2; exit 1; }

echo "building (release)..." >&2
(cd "$ROOT" && cargo build --release --quiet -p berth-cli -p berth-agent -p berth-shim \
    -p berth-runtime -p berth-scheduler)
BERTH=$ROOT/target/release/berth

W=$(mktemp -d /dev/shm/berth-bench-promote.XXXXXX)
export BERTH_DATA_DIR=$W/data
NETNS=berth-bench-promote-$$
UP_PID=
cleanup() {
    if [ -n "$UP_PID" ] && kill -0 "$UP_PID" 2>/dev/null; then
        kill -INT "$UP_PID"
        wait "$UP_PID" || true
    fi
    ip netns delete "$NETNS" 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT

# The image: busybox + the sample hello service, as scripts/demo.sh builds it.
bash "$ROOT/scripts/busybox-rootfs.sh" "$W/base" >/dev/null
"$BERTH" image build --from-dir "$W/base" --tag busybox:latest \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd /bin/sh >/dev/null
mkdir -p "$W/hello/srv/www" "$W/hello/usr/local/bin"
cp "$ROOT/examples/hello/index.html" "$W/hello/srv/www/"
install -m 0755 "$ROOT/examples/hello/hello-service" "$W/hello/usr/local/bin/"
"$BERTH" image build --from-dir "$W/hello" --base busybox:latest --tag hello:v1 \
    --env PORT=8080 --workdir /srv/www --cmd /usr/local/bin/hello-service >/dev/null

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export BERTH_SCHEDULER=http://127.0.0.1:$PORT
ip netns add "$NETNS"
ip -n "$NETNS" link set lo up
"$BERTH" up --listen "127.0.0.1:$PORT" --node-name bench-promote \
    --metrics-listen 127.0.0.1:0 --agent-metrics-listen 127.0.0.1:0 \
    --agent-arg=--net-namespace=/run/netns/$NETNS >"$W/up.log" 2>&1 &
UP_PID=$!
for _ in $(seq 600); do
    "$BERTH" nodes -o json 2>/dev/null | jq -e 'any(.[]; .ready)' >/dev/null && break
    kill -0 "$UP_PID" 2>/dev/null || { cat "$W/up.log" >&2; exit 1; }
    sleep 0.1
done
"$BERTH" env create bench-staging --approval auto >/dev/null
"$BERTH" env create bench-production --approval auto >/dev/null

# spec VERSION: hello with 3 replicas, the version in its environment (a new release per round).
spec() {
    sed -e "s|VERSION = \"v1\"|VERSION = \"$1\"|" "$ROOT/examples/hello.toml" >"$W/hello-$1.toml"
    echo "$W/hello-$1.toml"
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }
load_before=$(cut -d' ' -f1 /proc/loadavg)
times=()
for round in $(seq 0 "$ROUNDS"); do
    version=r$round
    "$BERTH" --env bench-staging deploy -f "$(spec "$version")" --wait --timeout 3m >/dev/null
    t0=$(now_ms)
    "$BERTH" promote hello --from bench-staging --to bench-production --wait --timeout 3m >"$W/promote.log" \
        || { cat "$W/promote.log" >&2; exit 1; }
    t1=$(now_ms)
    ready=$("$BERTH" --env bench-production status hello -o json | jq -r '"\(.ready_replicas)/\(.replicas) \(.phase)"')
    [ "$ready" = "3/3 complete" ] || { echo "round $round: production is $ready after promote --wait" >&2; exit 1; }
    if [ "$round" = 0 ]; then
        echo "warm-up (first promotion: production's deployment is created): $((t1 - t0)) ms"
    else
        echo "round $round: promote --wait -> 3/3 ready in production: $((t1 - t0)) ms"
        times+=($((t1 - t0)))
    fi
done
load_after=$(cut -d' ' -f1 /proc/loadavg)

median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}')
min=$(printf '%s\n' "${times[@]}" | sort -n | head -1)
max=$(printf '%s\n' "${times[@]}" | sort -n | tail -1)
echo
echo "| what | median | min | max | rounds |"
echo "|---|---|---|---|---|"
echo "| \`berth promote --wait\`, 3 replicas replaced, auto approval | $median ms | $min ms | $max ms | ${#times[@]} |"
echo "load average: $load_before before, $load_after after (2 shared cores)"
mkdir -p "$(dirname "$BENCH_OUT")"
printf '%s\n' "${times[@]}" | jq -s --argjson median "$median" --arg lb "$load_before" --arg la "$load_after" \
    '{what: "berth promote --wait to production complete, 3 replicas", unit: "ms",
      times: ., median: $median, load_before: $lb, load_after: $la}' >"$BENCH_OUT"
echo "wrote $BENCH_OUT"
