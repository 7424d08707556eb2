#!/usr/bin/env bash
# Metrics (issue 17): the cost of a Prometheus scrape of an agent running 100 containers, and of
# the scheduler's, on a one-node `berth up` cluster of its own (free loopback ports, containers
# in a network namespace of its own, data dir on tmpfs). 100 busybox `sleep` replicas (10m CPU,
# 8 MiB each) are deployed and waited for; then each daemon is scraped $SCRAPES times with curl.
# Reported per scrape: the daemon's own CPU time (utime + stime from /proc/PID/stat across all
# scrapes, divided by their number: the "under 10 ms of its time" of the issue), the wall time
# curl saw (median and p99), the body size, and the number of series.
# Prints a table; writes JSON to $BENCH_OUT.
#   usage: bash benches/metrics.sh
#   env:   REPLICAS=100  SCRAPES=200  PROFILE=release (or debug: no release build, slower code)
#          BENCH_OUT=target/bench/metrics.json
# Needs root, cargo, curl, jq, ip, python3, busybox-static.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
REPLICAS=${REPLICAS:-100}
SCRAPES=${SCRAPES:-200}
PROFILE=${PROFILE:-release}
BENCH_OUT=${BENCH_OUT:-$ROOT/target/bench/metrics.json}
. "$HERE/lib.sh"
bench_need cargo curl jq ip python3
[ -x /bin/busybox ] || { echo "/bin/busybox missing: run scripts/setup.sh" >&2; exit 1; }

bench_binaries "$PROFILE"
SCHED_METRICS=127.0.0.1:$(bench_free_port)
AGENT_METRICS=127.0.0.1:$(bench_free_port)
bench_up metrics --metrics-listen "$SCHED_METRICS" --agent-metrics-listen "$AGENT_METRICS" \
    --agent-arg=--stop-grace=1 --stop-timeout 5m

cat >"$W/sleepers.toml" <<EOF
name = "sleepers"
image = "busybox:latest"
replicas = $REPLICAS
cpu = "10m"
memory = "8m"
command = ["sleep", "100000"]
EOF
echo "deploying $REPLICAS replicas..." >&2
"$BERTH" deploy -f "$W/sleepers.toml" --wait --timeout 10m >/dev/null
ready=$("$BERTH" status sleepers -o json | jq -r '.ready_replicas')
[ "$ready" = "$REPLICAS" ] || { echo "only $ready of $REPLICAS replicas ready" >&2; exit 1; }

# cpu_ticks PID: the process's utime and stime in clock ticks ("USER SYSTEM").
cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

# measure NAME PID ADDR: scrapes ADDR $SCRAPES times; prints one JSON object.
measure() {
    local name=$1 pid=$2 addr=$3 before after i user system
    curl -sf "http://$addr/metrics" >"$W/$name.txt"
    before=$(cpu_ticks "$pid")
    for i in $(seq "$SCRAPES"); do
        curl -sf -o /dev/null -w '%{time_total} %{size_download}\n' "http://$addr/metrics"
    done >"$W/$name.times"
    after=$(cpu_ticks "$pid")
    user=$(( ${after% *} - ${before% *} ))
    system=$(( ${after#* } - ${before#* } ))
    jq -n --arg name "$name" --argjson user "$user" --argjson system "$system" --argjson tick "$TICK" \
        --argjson n "$SCRAPES" \
        --argjson series "$(grep -vc '^#' "$W/$name.txt")" \
        --argjson containers "$(grep -c '^container_memory_usage_bytes{' "$W/$name.txt" || true)" \
        --slurpfile t <(awk '{print "[" $1 "," $2 "]"}' "$W/$name.times") '
        ($t | map(.[0] * 1000) | sort) as $ms
        | {name: $name, scrapes: $n, containers: $containers, series: $series,
           cpu_ms_per_scrape: (($user + $system) * 1000 / $tick / $n),
           user_ms_per_scrape: ($user * 1000 / $tick / $n),
           system_ms_per_scrape: ($system * 1000 / $tick / $n),
           wall_ms_median: $ms[($n / 2 | floor)], wall_ms_p99: $ms[($n * 99 / 100 | floor)],
           bytes: $t[0][1]}'
}

agent_pid=$(pgrep -f "berth-agent .*--node-name bench-metrics" | head -1)
sched_pid=$(pgrep -f "berth-scheduler .*--metrics-listen $SCHED_METRICS" | head -1)
load_before=$(cut -d' ' -f1 /proc/loadavg)
agent=$(measure agent "$agent_pid" "$AGENT_METRICS")
scheduler=$(measure scheduler "$sched_pid" "$SCHED_METRICS")
load_after=$(cut -d' ' -f1 /proc/loadavg)

echo
echo "| daemon | containers | series | body | CPU per scrape (user + system) | wall median / p99 |"
echo "|---|---|---|---|---|---|"
for r in "$agent" "$scheduler"; do
    jq -r 'def ms: . * 100 | round / 100;
        "| \(.name) | \(.containers) | \(.series) | \(.bytes) B | \(.cpu_ms_per_scrape | ms) ms (\(.user_ms_per_scrape | ms) + \(.system_ms_per_scrape | ms)) | \(.wall_ms_median | ms) / \(.wall_ms_p99 | ms) ms |"' <<<"$r"
done
echo "$PROFILE build, $REPLICAS replicas, $SCRAPES scrapes each; load average $load_before before, $load_after after (2 shared cores)"
mkdir -p "$(dirname "$BENCH_OUT")"
jq -n --argjson agent "$agent" --argjson scheduler "$scheduler" --arg profile "$PROFILE" \
    --arg lb "$load_before" --arg la "$load_after" \
    '{profile: $profile, agent: $agent, scheduler: $scheduler, load_before: $lb, load_after: $la}' \
    >"$BENCH_OUT"
echo "wrote $BENCH_OUT"
"$BERTH" delete sleepers >/dev/null || true
