#!/usr/bin/env bash
# Push throughput: `berth image push` against `skopeo copy oci:LAYOUT docker://...` of the same
# image to Debian's docker-registry on loopback. berth's store is an OCI layout, so skopeo reads
# the very same blobs. Every run gets a fresh registry (new port, empty storage), so neither tool
# can skip or mount a blob; runs alternate berth, skopeo. Store, registry storage and image all
# live on tmpfs (/dev/shm), so the figures are the clients' and the registry's, not the disk's.
# Prints each median, MB/s and the ratio; writes JSON to $BENCH_OUT.
#   usage: bash benches/push.sh
#   env:   RUNS=7  SIZE_MB=64 (two random layers of half each, incompressible)
#          BERTH=target/release/berth (built when missing)  BENCH_OUT=target/bench/push.json
# Needs docker-registry, skopeo, jq, curl, python3 (scripts/setup.sh).
set -euo pipefail
TOP=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-7}
SIZE_MB=${SIZE_MB:-64}
BERTH=${BERTH:-$TOP/target/release/berth}
BENCH_OUT=${BENCH_OUT:-$TOP/target/bench/push.json}
. "$TOP/benches/lib.sh"
bench_need docker-registry skopeo jq curl python3
if [ ! -x "$BERTH" ]; then
    echo "building berth (release)..." >&2
    (cd "$TOP" && cargo build --release --quiet -p berth-cli)
fi

W=$(mktemp -d /dev/shm/berth-bench-push.XXXXXX)
REG_PID=
stop_registry() {
    [ -n "$REG_PID" ] || return 0
    kill "$REG_PID" 2>/dev/null || true
    wait "$REG_PID" 2>/dev/null || true
    REG_PID=
}
trap 'stop_registry; rm -rf "$W"' EXIT

# start_registry: a registry with empty storage on a free loopback port; sets REG (host:port).
start_registry() {
    local port i
    port=$(bench_free_port)
    REG=127.0.0.1:$port
    rm -rf "$W/reg" && mkdir -p "$W/reg"
    printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: "%s"\nhttp:\n  addr: "%s"\n' \
        "$W/reg/data" "$REG" > "$W/reg/config.yml"
    docker-registry serve "$W/reg/config.yml" > "$W/reg/log" 2>&1 &
    REG_PID=$!
    for i in $(seq 600); do
        curl -fs "http://$REG/v2/" >/dev/null && return 0
        sleep 0.05
    done
    echo "docker-registry did not start: $(cat "$W/reg/log")" >&2
    exit 1
}

# The image: two layers of random data, built into berth's store.
B=("$BERTH" --data-dir "$W/data")
mkdir -p "$W/l1" "$W/l2"
head -c $((SIZE_MB / 2 * 1048576)) /dev/urandom > "$W/l1/a.bin"
head -c $((SIZE_MB / 2 * 1048576)) /dev/urandom > "$W/l2/b.bin"
"${B[@]}" image build --from-dir "$W/l1" --tag bench:base >/dev/null
"${B[@]}" image build --from-dir "$W/l2" --base bench:base --tag bench:1 >/dev/null
BYTES=$("${B[@]}" image inspect bench:1 --output json | jq '[.manifest.config.size, .manifest.layers[].size] | add')
DIGEST=$("${B[@]}" image inspect bench:1 --output json | jq -r .digest)

# one TOOL: pushes the image to a fresh registry; sets T to the seconds it took. (Not run in a
# $(...) subshell: the EXIT trap, which stops the registry, does not reach into one.)
one() {
    local start end
    start_registry
    rm -rf "$W/data/blob-sources"   # no mount hints (the registry is empty anyway)
    start=$EPOCHREALTIME
    case $1 in
        berth) "${B[@]}" image push bench:1 --dest "$REG/bench:1" >/dev/null ;;
        skopeo) skopeo copy --quiet --dest-tls-verify=false "oci:$W/data/images:bench:1" "docker://$REG/bench:1" >/dev/null ;;
    esac
    end=$EPOCHREALTIME
    # Same content arrived: the manifest digest the registry serves is berth's.
    local served
    served=$(curl -fsI -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$REG/v2/bench/manifests/1" \
        | tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest" {print $2}')
    [ "$served" = "$DIGEST" ] || { echo "$1 pushed $served, expected $DIGEST" >&2; exit 1; }
    stop_registry
    T=$(python3 -c "print($end - $start)")
}

berth_times=(); skopeo_times=()
for _ in $(seq "$RUNS"); do
    one berth; berth_times+=("$T")
    one skopeo; skopeo_times+=("$T")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
BM=$(median "${berth_times[@]}")
SM=$(median "${skopeo_times[@]}")
mkdir -p "$(dirname "$BENCH_OUT")"
jq -n --argjson bytes "$BYTES" --argjson berth "$BM" --argjson skopeo "$SM" --argjson runs "$RUNS" \
    --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" --arg berth_bin "$BERTH" \
    '{bytes: $bytes, runs: $runs, load: $load, berth_bin: $berth_bin,
      berth: {median_s: $berth, mb_per_s: ($bytes / 1e6 / $berth)},
      skopeo: {median_s: $skopeo, mb_per_s: ($bytes / 1e6 / $skopeo)},
      berth_speedup: ($skopeo / $berth)}' > "$BENCH_OUT"
echo "push of $BYTES bytes (config + 2 layers) to a fresh loopback registry, $RUNS runs each, load $(cut -d' ' -f1-3 /proc/loadavg):"
jq -r '"  berth  median \(.berth.median_s * 1000 | round) ms  \(.berth.mb_per_s * 10 | round / 10) MB/s",
       "  skopeo median \(.skopeo.median_s * 1000 | round) ms  \(.skopeo.mb_per_s * 10 | round / 10) MB/s",
       "  berth is \(.berth_speedup * 100 | round / 100)x skopeo"' "$BENCH_OUT"
