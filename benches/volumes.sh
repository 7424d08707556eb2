#!/usr/bin/env bash
# What mounts cost `berth run` (release build): start with three named volumes and a tmpfs
# against none, and the time to seed a new volume from image content (SEED_FILES files of
# SEED_KB kB each, 1,000 x 10 kB by default) against a first use with nothing to copy; both
# against podman with crun doing the same. Alternating rounds, medians. Storage on /var/tmp
# and /var/lib/containers (ext4 here; tmpfs would be 2-3x faster for the copy).
#
#   usage: benches/volumes.sh [BERTH_BIN]   (default target/release/berth)
#   env:   ROUNDS=5 RUNS_PER_ROUND=10 WARMUP=3 SEED_FILES=1000 SEED_KB=10
# Needs root, hyperfine, jq, podman, crun, skopeo and /bin/busybox (busybox-static).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
BERTH=$(realpath "${1:-$HERE/../target/release/berth}")
ROUNDS=${ROUNDS:-5}
RUNS_PER_ROUND=${RUNS_PER_ROUND:-10}
WARMUP=${WARMUP:-3}
SEED_FILES=${SEED_FILES:-1000}
SEED_KB=${SEED_KB:-10}
. "$HERE/lib.sh"
bench_need hyperfine jq podman crun skopeo
[ -x "$BERTH" ] || { echo "$BERTH missing: cargo build --release -p berth-cli" >&2; exit 1; }

WORK=$(mktemp -d /var/tmp/berth-vol-bench.XXXXXX)
DATA="$WORK/data"
TAG=berth-vol-bench-$$
PODMAN_IMAGE=localhost/$TAG:latest
PODMAN=(podman --runtime "$(command -v crun)" --cgroup-manager cgroupfs --events-backend file)
PVOLS=("$TAG-a" "$TAG-b" "$TAG-c" "$TAG-seed" "$TAG-empty")
cleanup() {
    "${PODMAN[@]}" volume rm -f "${PVOLS[@]}" >/dev/null 2>&1 || true
    "${PODMAN[@]}" rmi -f "$PODMAN_IMAGE" >/dev/null 2>&1 || true
    hybrid_restore
    rm -rf "$WORK"
}
trap cleanup EXIT

# ---- busybox plus /seed (the content to copy), in berth's store and exported to podman ----
R="$WORK/rootfs"
mkdir -p "$R"/{bin,etc,proc,sys,dev,tmp,root,seed,empty}
install -m 0755 /bin/busybox "$R/bin/busybox"
for a in sh true; do ln -s busybox "$R/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$R/etc/passwd"
printf 'root:x:0:\n' > "$R/etc/group"
for i in $(seq "$SEED_FILES"); do
    d="$R/seed/d$((i % 20))"
    mkdir -p "$d"
    head -c "$((SEED_KB * 1024))" /dev/urandom > "$d/f$i"
done
"$BERTH" --data-dir "$DATA" image build --from-dir "$R" --tag "$TAG:latest" --cmd /bin/sh \
    --env PATH=/bin >/dev/null
skopeo copy --quiet "oci:$DATA/images:$TAG:latest" "oci-archive:$WORK/image.tar"
LOADED=$("${PODMAN[@]}" load -q -i "$WORK/image.tar" | sed -n 's/^Loaded image[^:]*: //p' | tail -1)
"${PODMAN[@]}" tag "$LOADED" "$PODMAN_IMAGE"
SEED_MB=$(du -sm "$R/seed" | cut -f1)

hybrid_to_v1

B="$BERTH --data-dir $DATA run --rm"
P="${PODMAN[*]} run --rm --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024"
declare -A CMD=(
    [berth-none]="$B $TAG:latest true"
    [berth-3vol-tmpfs]="$B -v a:/a -v b:/b -v c:/c --tmpfs /t:size=64m $TAG:latest true"
    [podman-none]="$P $PODMAN_IMAGE true"
    [podman-3vol-tmpfs]="$P -v $TAG-a:/a -v $TAG-b:/b -v $TAG-c:/c --tmpfs /t:size=64m $PODMAN_IMAGE true"
)
NAMES=(berth-none berth-3vol-tmpfs podman-none podman-3vol-tmpfs)
alternate_rounds "$WORK" berth-none "run --rm with 3 named volumes + a tmpfs, against none"

# ---- seeding: a fresh volume each run (removed in --prepare), at /seed against /empty ----
BV="$BERTH --data-dir $DATA volume rm -f"
PV="${PODMAN[*]} volume rm -f"
for round in $(seq "$ROUNDS"); do
    hyperfine -N --style none --warmup 1 --runs "$RUNS_PER_ROUND" \
        --export-json "$WORK/seed-$round.json" \
        --prepare "sh -c '$BV seedvol >/dev/null 2>&1 || true'" -n berth-seed \
        "$B -v seedvol:/seed $TAG:latest true" \
        --prepare "sh -c '$BV emptyvol >/dev/null 2>&1 || true'" -n berth-first-use-empty \
        "$B -v emptyvol:/empty $TAG:latest true" \
        --prepare "sh -c '$PV $TAG-seed >/dev/null 2>&1 || true'" -n podman-seed \
        "$P -v $TAG-seed:/seed $PODMAN_IMAGE true" \
        --prepare "sh -c '$PV $TAG-empty >/dev/null 2>&1 || true'" -n podman-first-use-empty \
        "$P -v $TAG-empty:/empty $PODMAN_IMAGE true" >/dev/null
done
echo "seeding a new volume from $SEED_FILES files, $SEED_MB MB ($(df --output=fstype "$WORK" | tail -1)), $ROUNDS alternating rounds:"
jq -s -r '[.[].results[]] | group_by(.command)
    | map({name: .[0].command, median: (map(.times) | add | sort | .[(length / 2 | floor)])})
    | map("  \(.name)\tmedian \(.median*1000*100|round/100) ms") | .[]' "$WORK"/seed-*.json
# The copy really happened, once: the volume holds every file.
n=$(find "$DATA/volumes/seedvol/_data" -type f | wc -l)
[ "$n" = "$SEED_FILES" ] || { echo "seeded $n files, expected $SEED_FILES" >&2; exit 1; }
[ -z "$(ls -A "$DATA/containers" 2>/dev/null)" ] || { echo "berth left containers behind" >&2; exit 1; }
