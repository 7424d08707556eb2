#!/usr/bin/env bash
# Unpack throughput of `berth image unpack` against umoci and tar, and rootfs-prepare latency.
#
#   usage: benches/unpack.sh [build|bench|all]      (default all; build is cached)
#   build: (once, under $WORK) debootstrap --variant=minbase bookworm into $WORK/debroot (or, if
#          that fails, a generated tree of 24,000 files / ~260 MB), then umoci builds in
#          $WORK/oci two images:
#            latest  3 layers: L1 rootfs without /usr/share, L2 /usr/share, L3 deletes
#                    /usr/share/{doc,man,locale} and the gconv *.so files, adds /etc/anchor
#            single  1 layer: the whole rootfs
#          and imports both into berth's store at $WORK/data.
#   bench: one hyperfine run per target filesystem (ext4 $WORK/t, tmpfs /dev/shm/berth-bench):
#          berth unpack, umoci unpack, tar -xzf of each layer blob in order (floor, no whiteout
#          handling), berth unpack and tar -xzf of the single-layer image; prints medians and
#          ratios. Then the rootfs-prepare microbench (median of $CYCLES prepare+remove cycles).
#          The references do other work than berth: umoci also writes an mtree manifest, tar
#          extracts the layers serially and skips whiteouts; the output says so beside each ratio.
#   env: WORK=/var/tmp/berth-bench RUNS=5 WARMUP=1 CYCLES=200 BERTH=target/release/berth
# Needs (Debian): debootstrap umoci hyperfine jq. Run as root from the workspace top.
set -euo pipefail

ACTION=${1:-all}
WORK=${WORK:-/var/tmp/berth-bench}
RUNS=${RUNS:-5}
WARMUP=${WARMUP:-1}
CYCLES=${CYCLES:-200}
TOP=$(cd "$(dirname "$0")/.." && pwd)
BERTH=${BERTH:-$TOP/target/release/berth}
ROOTFS=$WORK/debroot
LAYOUT=$WORK/oci
DATA=$WORK/data
MIRROR=${MIRROR:-http://deb.debian.org/debian}

generate_tree() { # a synthetic rootfs when debootstrap is unavailable
    rm -rf "$ROOTFS"; mkdir -p "$ROOTFS"/{bin,etc,usr/lib/x86_64-linux-gnu/gconv,usr/share/doc,usr/share/man,usr/share/locale,var}
    echo 'root:x:0:0::/root:/bin/sh' > "$ROOTFS/etc/passwd"; cp /bin/busybox "$ROOTFS/bin/sh" 2>/dev/null || true
    local d i
    for d in usr/lib usr/share/doc usr/share/man usr/share/locale usr/share/misc usr/lib/x86_64-linux-gnu/gconv; do
        for i in $(seq 1 4000); do mkdir -p "$ROOTFS/$d/$((i % 97))"; head -c $((i * 37 % 20000 + 100)) /dev/urandom | base64 > "$ROOTFS/$d/$((i % 97))/f$i"; done
    done
    for i in $(seq 1 200); do touch "$ROOTFS/usr/lib/x86_64-linux-gnu/gconv/m$i.so"; done
}

repack() { umoci repack --refresh-bundle --image "$1" --history.created_by "$2" "$3"; }

build() {
    command -v "$BERTH" >/dev/null || { echo "build berth first: cargo build --release -p berth-cli" >&2; exit 1; }
    if [ ! -x "$ROOTFS/bin/sh" ]; then
        rm -rf "$ROOTFS"
        debootstrap --variant=minbase bookworm "$ROOTFS" "$MIRROR" || generate_tree
    fi
    if [ ! -f "$LAYOUT/index.json" ]; then
        rm -rf "$LAYOUT" "$WORK/build"
        umoci init --layout "$LAYOUT"
        local img="$LAYOUT:latest" b="$WORK/build" r="$WORK/build/rootfs"
        umoci new --image "$img"; umoci unpack --image "$img" "$b"
        tar -C "$ROOTFS" --exclude=./usr/share --exclude='./proc/*' --exclude='./sys/*' --exclude='./var/cache/apt/archives/*.deb' -cf - . | tar -C "$r" -xpf -
        mkdir -p "$r/usr/share"; repack "$img" "L1 base without /usr/share" "$b"
        tar -C "$ROOTFS" -cf - ./usr/share | tar -C "$r" -xpf -; repack "$img" "L2 /usr/share" "$b"
        rm -rf "$r/usr/share/doc" "$r/usr/share/man" "$r/usr/share/locale"
        find "$r/usr/lib/x86_64-linux-gnu/gconv" -name '*.so' -type f -delete
        echo anchor > "$r/etc/anchor"; repack "$img" "L3 deletions" "$b"
        rm -rf "$b"
        img="$LAYOUT:single"
        umoci new --image "$img"; umoci unpack --image "$img" "$b"
        tar -C "$ROOTFS" --exclude='./proc/*' --exclude='./sys/*' --exclude='./var/cache/apt/archives/*.deb' -cf - . | tar -C "$b/rootfs" -xpf -
        repack "$img" "one layer" "$b"; rm -rf "$b"
        umoci gc --layout "$LAYOUT"
    fi
    if [ ! -d "$DATA/images" ] || ! "$BERTH" --data-dir "$DATA" image ls | grep -q bench/single; then
        rm -rf "$DATA"
        "$BERTH" --data-dir "$DATA" image import "$LAYOUT" --ref latest --tag bench/debian:latest >/dev/null
        "$BERTH" --data-dir "$DATA" image import "$LAYOUT" --ref single --tag bench/single:latest >/dev/null
    fi
}

blobs() { # layer blob paths of layout image $1, in order
    local m; m=$(jq -r --arg t "$1" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]==$t) | .digest' "$LAYOUT/index.json")
    jq -r '.layers[].digest' "$LAYOUT/blobs/sha256/${m#sha256:}" | sed "s#^sha256:#$LAYOUT/blobs/sha256/#"
}

bench_target() { # TARGET_BASE
    local T=$1 D=$1/dst
    mkdir -p "$T"
    local fs; fs=$(findmnt -n -o FSTYPE --target "$T" | head -1)
    echo; echo "=== $T ($fs) ==="
    mapfile -t L < <(blobs latest); mapfile -t S < <(blobs single)
    local tarloop="for b in ${L[*]}; do tar -xzf \$b -C $D || exit 1; done"
    local J="$WORK/result-$fs.json"
    hyperfine --warmup "$WARMUP" --runs "$RUNS" --export-json "$J" \
        --prepare "rm -rf $D" -n "berth unpack (3 layers)" "$BERTH --data-dir $DATA image unpack bench/debian:latest $D" \
        --prepare "rm -rf $D" -n "umoci unpack (3 layers)" "umoci unpack --image $LAYOUT:latest $D" \
        --prepare "rm -rf $D; mkdir -p $D" -n "tar -xzf layers (floor)" "$tarloop" \
        --prepare "rm -rf $D" -n "berth unpack (1 layer)" "$BERTH --data-dir $DATA image unpack bench/single:latest $D" \
        --prepare "rm -rf $D; mkdir -p $D" -n "tar -xzf (1 layer)" "tar -xzf ${S[0]} -C $D" >/dev/null
    rm -rf "$D"; rmdir "$T" 2>/dev/null || true
    printf '%-26s %9s %9s %9s\n' command median_s min_s max_s
    jq -r '.results[] | [.command, .median, .min, .max] | @tsv' "$J" | awk -F'\t' '{printf "%-26s %9.3f %9.3f %9.3f\n", $1, $2, $3, $4}'
    jq -r '[.results[].median] as $m |
        "ratios (median), each against a tool that does different work:",
        "  berth/umoci \($m[0]/$m[1]*100|floor/100)   umoci also writes an mtree manifest of the whole rootfs (berth writes none)",
        "  berth/tar-layers \($m[0]/$m[2]*100|floor/100)   tar runs serially, one layer after the other, and handles no whiteouts (berth unpacks layers in parallel)",
        "  berth/tar single layer \($m[3]/$m[4]*100|floor/100)   one tar process against berth'"'"'s unpack of the same one layer"' "$J"
}

bench() {
    [ -f "$LAYOUT/index.json" ] || { echo "no image; run: $0 build" >&2; exit 1; }
    local n; n=$(for b in $(blobs latest); do tar -tzf "$b"; done | wc -l)
    echo "image: 3 layers, $n tar entries, $(du -cb $(blobs latest) | tail -1 | cut -f1) compressed bytes"
    bench_target "$WORK/t"
    bench_target /dev/shm/berth-bench
    echo; echo "=== rootfs prepare (overlay, layers already unpacked) ==="
    local ex="$TOP/target/release/examples/rootfs_bench"
    [ -x "$ex" ] || (cd "$TOP" && cargo build --release -p berth-images --example rootfs_bench)
    "$ex" "$DATA" bench/debian:latest "$CYCLES"
}

case "$ACTION" in
    build) build ;;
    bench) bench ;;
    all) build; bench ;;
    *) echo "usage: $0 [build|bench|all]" >&2; exit 2 ;;
esac
