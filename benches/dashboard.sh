#!/usr/bin/env bash
# The dashboard's first page (issue 17), plain HTTP against HTTPS with a client certificate:
# two real berth-schedulers (redb in a temp dir on /tmp), one without TLS and one with the
# certificates of `berth certs`, each with a deployment awaiting approval. For each, curl on a
# new connection per run measures the time to the first byte of `/` (for HTTPS the TCP and TLS
# handshakes, with the client certificate, included; curl's time_starttransfer) and the bytes
# the first page transfers (bodies of the page and its CSS and scripts, gzip accepted as
# browsers do; headers and TLS records not counted).
# Runs alternate between the two; medians of N runs.
# Uses the binaries in $BERTH_BIN_DIR (default target/release: build them with
# `cargo build --release -p berth-scheduler -p berth-cli`); say which in the figures you report.
#   usage: bash benches/dashboard.sh
#   env:   BENCH_DASHBOARD_N=31 (runs of each)  BENCH_OUT=target/bench/dashboard.json
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=benches/lib.sh
. "$HERE/lib.sh"
BIN=${BERTH_BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
N=${BENCH_DASHBOARD_N:-31}
export BENCH_OUT=${BENCH_OUT:-$ROOT/target/bench/dashboard.json}
for b in berth berth-scheduler; do
    [ -x "$BIN/$b" ] || { echo "$BIN/$b missing: cargo build --release -p berth-scheduler -p berth-cli" >&2; exit 1; }
done
bench_need curl jq python3

W=$(mktemp -d /tmp/berth-bench-dashboard.XXXXXX)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]+"${PIDS[@]}"}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
    rm -rf "$W"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    local _
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on $1" >&2; exit 1
}

# The certificates: the cluster CA, the scheduler's (it names localhost) and an admin client's.
B=(--data-dir "$W/pki-home")
"$BIN/berth" "${B[@]}" certs init >/dev/null
"$BIN/berth" "${B[@]}" certs scheduler sched >/dev/null
"$BIN/berth" "${B[@]}" certs client bench-admin --role admin >/dev/null
PKI=$W/pki-home/pki

# start_scheduler NAME EXTRA...: a scheduler on free ports; sets GRPC and HTTP.
start_scheduler() {
    local name=$1; shift
    GRPC=$(free_port); HTTP=$(free_port)
    mkdir -p "$W/$name"
    "$BIN/berth-scheduler" --listen "127.0.0.1:$GRPC" --http-listen "127.0.0.1:$HTTP" \
        --metrics-listen 127.0.0.1:0 --data-dir "$W/$name" "$@" >"$W/$name.log" 2>&1 &
    PIDS+=($!)
    wait_port "$GRPC"; wait_port "$HTTP"
}

# A deployment with no replicas, complete at v1 and waiting for approval at v2: the page then
# carries a form, as an operator's would.
for v in v1 v2; do
    approval=auto; [ "$v" = v2 ] && approval=manual
    cat >"$W/hello-$v.toml" <<EOF
name = "hello"
image = "busybox:1"
command = ["sleep", "1000"]
replicas = 0
env = { VERSION = "$v" }

[rollout]
approval = "$approval"
EOF
done
deploy() {
    "$@" deploy -f "$W/hello-v1.toml" >/dev/null
    "$@" deploy -f "$W/hello-v2.toml" >/dev/null
}

start_scheduler plain
PLAIN_HTTP=$HTTP
deploy "$BIN/berth" --scheduler "127.0.0.1:$GRPC"
start_scheduler tls --tls-cert "$PKI/scheduler-sched.pem" --tls-key "$PKI/scheduler-sched-key.pem" \
    --tls-ca "$PKI/ca.pem"
TLS_HTTP=$HTTP
deploy "$BIN/berth" --scheduler "https://localhost:$GRPC" --tls-cert "$PKI/client-bench-admin.pem" \
    --tls-key "$PKI/client-bench-admin-key.pem" --tls-ca "$PKI/ca.pem"
CERT=(--cert "$PKI/client-bench-admin.pem" --key "$PKI/client-bench-admin-key.pem" --cacert "$PKI/ca.pem")

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
# first_page BASE CURL_ARGS...: "ttfb_seconds total_bytes handshake_seconds" for one visit on
# new connections (handshake: TCP connect to TLS done; 0 over plain HTTP).
first_page() {
    local base=$1; shift
    local ttfb bytes total asset tls
    read -r ttfb bytes tls < <(curl -sS -o /dev/null \
        -w '%{time_starttransfer} %{size_download} %{time_appconnect}\n' \
        -H 'Accept-Encoding: gzip' "$@" "$base/")
    total=$bytes
    for asset in dashboard.css htmx-2.0.11.min.js htmx-ext-sse-2.2.4.min.js; do
        bytes=$(curl -sS -o /dev/null -w '%{size_download}' -H 'Accept-Encoding: gzip' "$@" \
            "$base/assets/$asset")
        total=$((total + bytes))
    done
    echo "$ttfb $total $tls"
}
# Sanity: each answers 200 with the page, the HTTPS one to the certificate's holder.
curl -sSf "http://127.0.0.1:$PLAIN_HTTP/deployments/default/hello" | grep -q 'id="approve"'
curl -sSf "${CERT[@]}" "https://localhost:$TLS_HTTP/deployments/default/hello" \
    | grep -q 'bench-admin (admin)'

: >"$W/http.txt"; : >"$W/https.txt"
for _ in $(seq "$N"); do
    first_page "http://127.0.0.1:$PLAIN_HTTP" >>"$W/http.txt"
    first_page "https://localhost:$TLS_HTTP" "${CERT[@]}" >>"$W/https.txt"
done
summary() {
    local file=$1 ttfb bytes tls
    ttfb=$(cut -d' ' -f1 "$file" | median)
    bytes=$(cut -d' ' -f2 "$file" | median)
    tls=$(cut -d' ' -f3 "$file" | median)
    jq -n --argjson t "$ttfb" --argjson b "$bytes" --argjson h "$tls" --argjson n "$N" \
        '{ttfb_ms: ($t * 1000 * 100 | round / 100), handshake_ms: ($h * 1000 * 100 | round / 100),
          first_page_bytes: $b, runs: $n}'
}
mkdir -p "$(dirname "$BENCH_OUT")"
jq -n --argjson http "$(summary "$W/http.txt")" --argjson https "$(summary "$W/https.txt")" \
    --arg bin "$BIN" --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" \
    '{http: $http, https_client_cert: $https, binaries: $bin, loadavg: $load}' >"$BENCH_OUT"
jq -r '"first page /, medians of \(.http.runs) runs (\(.binaries)):",
  "  HTTP                      TTFB \(.http.ttfb_ms) ms   transfer \(.http.first_page_bytes) B",
  "  HTTPS + client cert       TTFB \(.https_client_cert.ttfb_ms) ms   transfer \(.https_client_cert.first_page_bytes) B   (TLS handshake done at \(.https_client_cert.handshake_ms) ms)",
  "load average after: \(.loadavg)"' "$BENCH_OUT"
