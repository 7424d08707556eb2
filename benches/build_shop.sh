#!/usr/bin/env bash
# Build time (issue 16): `berth build` against `buildah bud` of the pipeline example's three
# Containerfiles (examples/pipeline/{db,api,web}: FROM debian:bookworm, COPY, RUN, USER, ...), in
# the same run, alternating. Both start from the same base tree (scripts/debian-base.sh), put in
# berth's store and in buildah's (overlay driver) before any timing. Cold: all three built with
# --no-cache, so every RUN runs. Cached: the same three again, every step a cache hit. berth runs
# its RUN steps in its default network mode (NAT: a netns, veth and nftables table per step) and
# with --network host; buildah with --network host and runc (crun refuses this host's hybrid
# cgroups). Neither step uses the network. Both stores live in WORK (/var/tmp by default).
# A figure is the total of the three builds. Writes JSON to $BENCH_OUT.
#
#   usage: bash benches/build_shop.sh [BERTH]   (default target/release/berth, built when missing)
#   env:   RUNS=5  BENCH_OUT=target/bench/build_shop.json
# Needs root, buildah, runc, debootstrap, jq.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/.." && pwd)
RUNS=${RUNS:-5}
BENCH_OUT=${BENCH_OUT:-$TOP/target/bench/build_shop.json}
. "$HERE/lib.sh"
bench_need buildah runc debootstrap jq
if [ -z "${1:-}" ]; then
    echo "building (release)..." >&2
    (cd "$TOP" && cargo build --release --quiet -p berth-cli -p berth-runtime)
fi
BERTH=$(realpath "${1:-$TOP/target/release/berth}")
[ -x "$BERTH" ] || { echo "$BERTH missing" >&2; exit 1; }

bench_buildah_work build-shop

echo "bench: the debian:bookworm tree (scripts/debian-base.sh, cached after its first run)" >&2
BASE_DIR=$(BERTH="$BERTH" bash "$TOP/scripts/debian-base.sh" --rootfs-only | tail -1)
[ -d "$BASE_DIR/usr/bin" ] || { echo "no Debian tree at '$BASE_DIR'" >&2; exit 1; }
PATH_ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
echo "bench: the base in berth's store and in buildah's" >&2
$BERTH --data-dir "$WORK/berth" image build --from-dir "$BASE_DIR" --tag debian:bookworm \
    --env "$PATH_ENV" >/dev/null
ctr=$($B from -q scratch)
cp -a "$BASE_DIR/." "$($B mount "$ctr")/"
$B config --env "$PATH_ENV" "$ctr"
# The full name, so that the Containerfiles' `FROM debian:bookworm` finds it with --pull=never.
$B commit -q "$ctr" docker.io/library/debian:bookworm >/dev/null
$B rm "$ctr" >/dev/null

SERVICES=(db api web)
# build_all TOOL FLAGS...: the three services, one after another, as the pipeline builds them.
build_all() {
    local tool=$1 s
    shift
    for s in "${SERVICES[@]}"; do
        ctx=$TOP/examples/pipeline/$s
        case $tool in
            berth) $BERTH --data-dir "$WORK/berth" build -f "$ctx/Containerfile" \
                -t "shop/$s:bench" --build-arg VERSION=bench "$@" "$ctx" ;;
            buildah) $B bud --pull=never --layers --runtime "$(command -v runc)" --network host \
                -f "$ctx/Containerfile" -t "localhost/shop/$s:bench" --build-arg VERSION=bench \
                "$@" "$ctx" ;;
        esac
    done
}

NAMES=(berth-nat berth-host buildah-host)
declare -A COLD CACHED
for i in $(seq "$RUNS"); do
    for name in "${NAMES[@]}"; do
        case $name in
            berth-nat) cmd=(build_all berth) ;;
            berth-host) cmd=(build_all berth --network host) ;;
            buildah-host) cmd=(build_all buildah) ;;
        esac
        cold=$(timed "${cmd[@]}" --no-cache)
        cached=$(timed "${cmd[@]}")
        COLD[$name]+="$cold "
        CACHED[$name]+="$cached "
        echo "run $i $name: cold $cold ms, cached $cached ms" >&2
    done
done

printf '%-14s %12s %12s\n' "3 builds" "cold ms" "cached ms"
json='[]'
for name in "${NAMES[@]}"; do
    c=$(tr ' ' '\n' <<<"${COLD[$name]}" | grep . | median)
    k=$(tr ' ' '\n' <<<"${CACHED[$name]}" | grep . | median)
    printf '%-14s %12s %12s\n' "$name" "$c" "$k"
    json=$(jq -c --arg n "$name" --argjson c "$c" --argjson k "$k" \
        '. + [{name: $n, cold_ms: $c, cached_ms: $k}]' <<<"$json")
done
bc=$(jq '.[] | select(.name=="berth-nat") | .cold_ms' <<<"$json")
bk=$(jq '.[] | select(.name=="berth-nat") | .cached_ms' <<<"$json")
hc=$(jq '.[] | select(.name=="buildah-host") | .cold_ms' <<<"$json")
hk=$(jq '.[] | select(.name=="buildah-host") | .cached_ms' <<<"$json")
echo "buildah / berth (NAT): cold $(jq -n "$hc / $bc * 100 | round / 100")x," \
    "cached $(jq -n "$hk / $bk * 100 | round / 100")x"
echo "(medians of $RUNS runs; $BERTH; load average $(cut -d' ' -f1-3 /proc/loadavg))"
mkdir -p "$(dirname "$BENCH_OUT")"
jq -n --argjson r "$json" --arg berth "$BERTH" --argjson runs "$RUNS" \
    '{runs: $runs, berth: $berth, results: $r}' > "$BENCH_OUT"
