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

bench_binaries release
bench_up promote --metrics-listen 127.0.0.1:0 --agent-metrics-listen 127.0.0.1:0

# The sample hello service on busybox, as scripts/demo.sh builds it.
mkdir -p "$W/hello/srv/www" "$W/hello/usr/local/bin"
cp "$ROOT/examples/hello/index.html" "$W/hello/srv/www/"
install -m 0755 "$ROOT/examples/hello/hello-service" "$W/hello/usr/local/bin/"
"$BERTH" image build --from-dir "$W/hello" --base busybox:latest --tag hello:v1 \
    --env PORT=8080 --workdir /srv/www --cmd /usr/local/bin/hello-service >/dev/null

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

median=$(printf '%s\n' "${times[@]}" | median)
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
