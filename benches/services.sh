#!/usr/bin/env bash
# Services (issue 14's Speed list), release build, against the real kernel: the agent's own
# node network, nft services table and DNS server in two node netns that the bench makes and
# removes (agent/examples/bench-services). Pod IP and VIP are measured in alternating rounds.
#   1. added latency of the VIP over the pod IP, p50/p99: Rust client and ab (apache2-utils),
#      new connection per request and keep-alive, from a container netns;
#   2. throughput through the VIP vs the pod IP (ab -k -c 4, ab -c 1, one bulk TCP stream);
#   3. lookup cost at 10 / 1,000 / 5,000 services: berth's verdict map vs a linear nft chain
#      of as many `ip daddr X tcp dport Y dnat` rules (what kube-proxy's iptables mode walks);
#   4. LB update time (whole table, one endpoint changed, DNS zone) at each size;
#   5. endpoint propagation over 100 changes, an endpoint moving between two nodes;
#   6. node DNS query latency over UDP from a container netns, idle and under load.
# Prints a table (load average before and after); writes JSON to $BENCH_OUT.
#   usage: bash benches/services.sh
#   env:   BENCH_OUT=target/bench/services.json  BENCH_ROUNDS=5  BENCH_REQUESTS=2000
#          BENCH_SIZES=10,1000,5000  BENCH_CHANGES=100  BENCH_QUERIES=5000
# Needs root, cargo, ab, nft, conntrack, ip, nsenter.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
export BENCH_OUT=${BENCH_OUT:-$ROOT/target/bench/services.json}
. "$HERE/lib.sh"
bench_need cargo ab nft conntrack ip nsenter

echo "building (release)..." >&2
(cd "$ROOT" && cargo build --release --quiet -p berth-agent --example bench-services)
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg), cores: $(nproc)"
"${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/bench-services" < /dev/null
echo "kernel $(uname -r), $(nft --version), $(ab -V | head -1)"
