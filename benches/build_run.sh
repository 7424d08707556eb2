#!/usr/bin/env bash
# `berth build` against `buildah bud` of one Containerfile with two RUN steps on the Debian base
# (no network use in the steps), in the same run, alternating. Cold: every step runs (berth
# --no-cache; buildah --no-cache on a storage that holds the base). Cached: the same build again,
# every step a cache hit. berth runs its steps with --network host and with its default (NAT:
# a netns, veth and nftables table per step); buildah with --network host and runc (crun refuses
# this host's hybrid cgroups). Both stores are on the same disk (WORK, /var/tmp by default).
#
#   usage: benches/build_run.sh [BERTH]   (default target/debug/berth; say which in a report)
#   env:   RUNS=3
# Needs root, buildah, runc, debootstrap (the Debian base is made once and cached under
# /var/cache/berth-bench).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
BERTH=$(realpath "${1:-$HERE/../target/debug/berth}")
RUNS=${RUNS:-3}
. "$HERE/lib.sh"
bench_need buildah runc debootstrap
[ -x "$BERTH" ] || { echo "$BERTH missing: cargo build -p berth-cli" >&2; exit 1; }

bench_debian_base

bench_buildah_work build-run

CTX="$WORK/context"
mkdir -p "$CTX"
cat > "$CTX/Containerfile" <<'EOF'
ARG BASE
FROM $BASE
RUN mkdir -p /opt/app && cp -a /usr/share/doc /opt/app/doc && echo built > /opt/app/version
RUN rm -rf /opt/app/doc/a* /usr/share/doc/z* && echo two > /opt/app/two
EOF

PATH_ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
echo "bench: the base in berth's store and in buildah's (overlay driver)" >&2
$BERTH --data-dir "$WORK/berth" image build --from-dir "$BASE_DIR" --tag debian:bench \
    --env "$PATH_ENV" >/dev/null
ctr=$($B from -q scratch)
cp -a "$BASE_DIR/." "$($B mount "$ctr")/"
$B config --env "$PATH_ENV" "$ctr"
$B commit -q "$ctr" localhost/debian:bench >/dev/null
$B rm "$ctr" >/dev/null

berth_build() {
    $BERTH --data-dir "$WORK/berth" build --build-arg BASE=debian:bench -t app:bench "$@" "$CTX"
}
buildah_bud() {
    $B bud --pull=never --layers --runtime "$(command -v runc)" --network host \
        --build-arg BASE=localhost/debian:bench -t localhost/app:bench "$@" "$CTX"
}

NAMES=(berth-host berth-nat buildah-host)
declare -A COLD CACHED
for i in $(seq "$RUNS"); do
    for name in "${NAMES[@]}"; do
        case $name in
            berth-host) cmd=(berth_build --network host) ;;
            berth-nat) cmd=(berth_build) ;;
            buildah-host) cmd=(buildah_bud) ;;
        esac
        cold=$(timed "${cmd[@]}" --no-cache)
        cached=$(timed "${cmd[@]}")
        COLD[$name]+="$cold "
        CACHED[$name]+="$cached "
        echo "run $i $name: cold $cold ms, cached $cached ms" >&2
    done
done

printf '%-14s %12s %12s\n' build "cold ms" "cached ms"
for name in "${NAMES[@]}"; do
    c=$(tr ' ' '\n' <<<"${COLD[$name]}" | grep . | median)
    k=$(tr ' ' '\n' <<<"${CACHED[$name]}" | grep . | median)
    printf '%-14s %12s %12s\n' "$name" "$c" "$k"
done
echo "(medians of $RUNS runs; $BERTH)"
