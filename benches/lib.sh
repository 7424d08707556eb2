# Shared by the benchmark scripts (sourced, not run): tool checks, the cgroup-v1 workaround crun
# needs on this machine, and hyperfine in alternating rounds.

# bench_need TOOL...: fails unless running as root with every tool on PATH.
bench_need() {
    local tool
    [ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "$tool missing: run scripts/setup.sh" >&2; exit 1; }
    done
}

# crun 1.8 refuses a "hybrid" cgroup layout while a controller sits on cgroup2 (hugetlb here).
# hybrid_to_v1 mounts each such controller as a v1 hierarchy; hybrid_restore gives it back.
HYBRID_MOVED=()
hybrid_to_v1() {
    local unified=/sys/fs/cgroup/unified/cgroup.controllers c
    [ -f "$unified" ] && [ -n "$(tr -d ' \n' < "$unified")" ] || return 0
    for c in $(cat "$unified"); do
        mkdir -p "/sys/fs/cgroup/$c"
        mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c"
        HYBRID_MOVED+=("$c")
    done
    echo "note: moved [${HYBRID_MOVED[*]}] from cgroup2 to v1 for crun; restored at exit" >&2
}

hybrid_restore() {
    local c try
    for c in "${HYBRID_MOVED[@]+"${HYBRID_MOVED[@]}"}"; do
        # A v1 hierarchy gives its controller back only once destroyed: empty cgroups left in it
        # (berth's /berth, podman's libpod_parent) keep it alive, and right after container churn
        # the first umount may not destroy it, so remove them and mount + umount again.
        for try in 1 2 3 4 5; do
            find "/sys/fs/cgroup/$c" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null || true
            umount "/sys/fs/cgroup/$c" 2>/dev/null || break
            for _ in $(seq 50); do
                grep -qw "$c" /sys/fs/cgroup/unified/cgroup.controllers && break 2
                sleep 0.1
            done
            mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c" || break
        done
        rmdir "/sys/fs/cgroup/$c" 2>/dev/null || true
        grep -qw "$c" /sys/fs/cgroup/unified/cgroup.controllers \
            || echo "WARNING: $c is not back on cgroup2" >&2
    done
    HYBRID_MOVED=()
}

# alternate_rounds DIR REFERENCE TITLE: times every command of the associative array CMD (named
# in the array NAMES, in that order) in $ROUNDS hyperfine rounds of $RUNS_PER_ROUND runs each, so
# that drift on a noisy machine falls on all alike; prints each median and its ratio to REFERENCE.
alternate_rounds() {
    local dir=$1 reference=$2 title=$3 round n args ref
    for n in "${NAMES[@]}"; do
        ${CMD[$n]} >/dev/null || { echo "$n failed its sanity run" >&2; exit 1; }
    done
    for round in $(seq "$ROUNDS"); do
        args=()
        for n in "${NAMES[@]}"; do args+=(-n "$n" "${CMD[$n]}"); done
        hyperfine -N --style none --warmup "$WARMUP" --runs "$RUNS_PER_ROUND" \
            --export-json "$dir/round-$round.json" "${args[@]}" >/dev/null
    done
    jq -s '[.[].results[]] | group_by(.command)
           | map({name: .[0].command, times: (map(.times) | add)})
           | map(. + {median: (.times | sort | .[(length / 2 | floor)]), runs: (.times | length)})' \
        "$dir"/round-*.json > "$dir/summary.json"
    ref=$(jq -r --arg r "$reference" '.[] | select(.name==$r) | .median' "$dir/summary.json")
    echo "$title, $ROUNDS alternating rounds:"
    jq -r --arg r "$reference" --argjson b "$ref" '.[] | "  \(.name)\tmedian \(.median*1000*100|round/100) ms\truns \(.runs)\t\(if .name == $r then "(reference)" else "\($r) is \((.median/$b)*100|round/100)x faster" end)"' \
        "$dir/summary.json"
}

# bench_debian_base: makes the Debian minbase tree once (debootstrap, cached under
# /var/cache/berth-bench) and sets BASE_DIR to it.
bench_debian_base() {
    BASE_DIR=/var/cache/berth-bench/debian-bookworm-minbase
    if [ ! -f "$BASE_DIR.done" ]; then
        echo "bench: debootstrap of the Debian base (once; about a minute)" >&2
        rm -rf "$BASE_DIR"
        mkdir -p "$(dirname "$BASE_DIR")"
        debootstrap --variant=minbase bookworm "$BASE_DIR" http://deb.debian.org/debian >/dev/null
        touch "$BASE_DIR.done"
    fi
}

# timed CMD...: runs CMD quietly, prints its wall time in ms (its stderr kept in $WORK/last.err
# and shown if it fails).
timed() {
    local t0 t1
    t0=$(date +%s%N)
    "$@" >/dev/null 2>"$WORK/last.err" || { cat "$WORK/last.err" >&2; exit 1; }
    t1=$(date +%s%N)
    echo $(((t1 - t0) / 1000000))
}

# median: the median of the numbers on stdin, one a line.
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# bench_free_port: a free loopback TCP port, as the kernel picks one (bound again soon after).
bench_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# bench_binaries PROFILE: builds the five binaries a cluster needs (release or debug) and sets
# BERTH to the CLI of that profile.
bench_binaries() {
    local flag='' dir=debug
    case $1 in
        release) flag=--release; dir=release ;;
        debug) ;;
        *) echo "PROFILE=$1: expected release or debug" >&2; exit 1 ;;
    esac
    echo "building ($1)..." >&2
    (cd "$ROOT" && cargo build $flag --quiet -p berth-cli -p berth-agent -p berth-shim \
        -p berth-runtime -p berth-scheduler)
    BERTH=${CARGO_TARGET_DIR:-$ROOT/target}/$dir/berth
}

# bench_buildah_work NAME: WORK, a fresh directory under ${TMPDIR_BENCH:-/var/tmp}, and B, buildah
# over a storage of its own inside it (overlay driver); both are removed at exit.
bench_buildah_work() {
    WORK=$(mktemp -d "${TMPDIR_BENCH:-/var/tmp}/berth-$1-bench.XXXXXX")
    B="buildah --root $WORK/buildah/root --runroot $WORK/buildah/run --storage-driver overlay"
    trap bench_buildah_cleanup EXIT
}
bench_buildah_cleanup() {
    $B rm --all >/dev/null 2>&1 || true
    $B rmi --all --force >/dev/null 2>&1 || true
    rm -rf "$WORK"
}

# bench_up NAME [ARG...]: a one-node `berth up` cluster of the bench's own (needs BERTH and ROOT):
# W on tmpfs holds its data dir (BERTH_DATA_DIR) and a busybox:latest image; its containers live
# in a network namespace of its own; the scheduler listens on a free loopback port
# (BERTH_SCHEDULER). ARGs go to `berth up`. Returns once the node is ready; sets W, NETNS and
# UP_PID; everything is stopped and removed at exit.
bench_up() {
    local name=$1 port
    shift
    W=$(mktemp -d "/dev/shm/berth-bench-$name.XXXXXX")
    export BERTH_DATA_DIR=$W/data
    NETNS=berth-bench-$name-$$
    UP_PID=
    trap bench_up_cleanup EXIT
    bash "$ROOT/scripts/busybox-rootfs.sh" "$W/base" >/dev/null
    "$BERTH" image build --from-dir "$W/base" --tag busybox:latest \
        --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd /bin/sh >/dev/null
    port=$(bench_free_port)
    export BERTH_SCHEDULER=http://127.0.0.1:$port
    ip netns add "$NETNS"
    ip -n "$NETNS" link set lo up
    "$BERTH" up --listen "127.0.0.1:$port" --node-name "bench-$name" \
        --agent-arg=--net-namespace=/run/netns/$NETNS "$@" >"$W/up.log" 2>&1 &
    UP_PID=$!
    for _ in $(seq 600); do
        "$BERTH" nodes -o json 2>/dev/null | jq -e 'any(.[]; .ready)' >/dev/null && return 0
        kill -0 "$UP_PID" 2>/dev/null || { cat "$W/up.log" >&2; exit 1; }
        sleep 0.1
    done
    echo "bench: the node did not become ready in 60 s" >&2
    cat "$W/up.log" >&2
    exit 1
}
bench_up_cleanup() {
    if [ -n "$UP_PID" ] && kill -0 "$UP_PID" 2>/dev/null; then
        kill -INT "$UP_PID"
        wait "$UP_PID" || true
    fi
    ip netns delete "$NETNS" 2>/dev/null || true
    rm -rf "$W"
}
