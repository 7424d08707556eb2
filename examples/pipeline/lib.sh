# Shared by pipeline.sh and with-cluster.sh (sourced, not run): settings, step banners, and the
# setup: a registry (Debian's docker-registry on a free loopback port, storage under the data
# dir so a second run pushes nothing new) and a cluster (`berth up`, its containers in a network
# namespace of its own) unless REGISTRY / BERTH_SCHEDULER name running ones, and the
# debian:bookworm base (scripts/debian-base.sh, unless DEBIAN_BASE=given). What it starts is
# stopped on exit (KEEP=1 leaves it running). Expects HERE and TOP. The node is named
# $NODE_NAME (default pipeline), the same on every run, so a reused data dir keeps one node.
STAGING=${STAGING:-staging}
PRODUCTION=${PRODUCTION:-production}
VERSION=${VERSION:-v1}
UP_LISTEN=${UP_LISTEN:-127.0.0.1:7700}
export BERTH_DATA_DIR=${BERTH_DATA_DIR:-/var/lib/berth}
if [ -z "${BERTH:-}" ]; then
  BERTH=$TOP/target/release/berth
  [ -x "$BERTH" ] || BERTH=$(command -v berth || true)
fi

STEP=setup
step() {
  STEP=$1
  printf '\n=== [%s] %s\n' "$1" "$2"
}
REPORTED=0
die() {
  echo "pipeline: step \"$STEP\" failed: $*" >&2
  REPORTED=1
  exit 1
}
b() { "$BERTH" "$@"; }

for tool in jq curl; do
  command -v "$tool" >/dev/null || die "$tool is missing: run scripts/setup.sh"
done
[ -n "$BERTH" ] && [ -x "$BERTH" ] || die "no berth binary: cargo build --release -p berth-cli (or set BERTH)"

WORK=$(mktemp -d /tmp/berth-pipeline.XXXXXX)
REG_PID= UP_PID= NETNS=
cleanup() {
  local status=$?
  # A failing command (set -e) names the step it ended; die() already did.
  if [ "$status" != 0 ] && [ "$REPORTED" = 0 ]; then
    echo "pipeline: step \"$STEP\" failed (exit $status)" >&2
  fi
  if [ "${KEEP:-0}" != 1 ]; then
    if [ -n "$UP_PID" ] && kill -0 "$UP_PID" 2>/dev/null; then
      echo "pipeline: stopping the cluster it started" >&2
      kill -INT "$UP_PID"
      wait "$UP_PID" || true
    fi
    [ -z "$NETNS" ] || ip netns delete "$NETNS" 2>/dev/null || true
    if [ -n "$REG_PID" ]; then
      kill "$REG_PID" 2>/dev/null || true
      wait "$REG_PID" 2>/dev/null || true
    fi
  fi
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT

# --- setup: registry, cluster and the Debian base image ---------------------------------------
step setup "registry, cluster, debian:bookworm"
export BERTH_SCHEDULER REGISTRY
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
if [ -z "${REGISTRY:-}" ]; then
  command -v docker-registry >/dev/null || die "docker-registry is missing: run scripts/setup.sh"
  REGISTRY=127.0.0.1:$(free_port)
  REG_DIR=${REG_DIR:-$BERTH_DATA_DIR/pipeline-registry}
  mkdir -p "$REG_DIR"
  printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: "%s"\n  delete:\n    enabled: true\nhttp:\n  addr: "%s"\n' \
    "$REG_DIR/data" "$REGISTRY" >"$WORK/registry.yml"
  docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
  REG_PID=$!
  for _ in $(seq 200); do curl -fs "http://$REGISTRY/v2/" >/dev/null && break; sleep 0.05; done
  curl -fs "http://$REGISTRY/v2/" >/dev/null || die "docker-registry did not start: $(cat "$WORK/registry.log")"
  echo "registry: docker-registry on $REGISTRY (storage $REG_DIR/data)"
else
  curl -fs "http://$REGISTRY/v2/" >/dev/null || die "no registry answers on http://$REGISTRY/v2/"
  echo "registry: $REGISTRY (given)"
fi

if [ -z "${BERTH_SCHEDULER:-}" ]; then
  export BERTH_SCHEDULER=http://$UP_LISTEN
  if b nodes -o json >/dev/null 2>&1; then
    die "a scheduler already answers on $UP_LISTEN: set BERTH_SCHEDULER to use it, or UP_LISTEN for another address"
  fi
  NETNS=berth-pipe-$$
  ip netns add "$NETNS"
  ip -n "$NETNS" link set lo up
  # Metrics on free ports: this cluster may run beside another (the tests run two at once).
  "$BERTH" up --listen "$UP_LISTEN" --node-name "${NODE_NAME:-pipeline}" \
    --metrics-listen 127.0.0.1:0 --agent-metrics-listen 127.0.0.1:0 \
    --agent-arg=--net-namespace=/run/netns/$NETNS >"$WORK/up.log" 2>&1 &
  UP_PID=$!
  echo "cluster: berth up on $UP_LISTEN (containers in netns $NETNS; daemon logs in $BERTH_DATA_DIR/up/)"
else
  echo "cluster: $BERTH_SCHEDULER (given)"
fi
for _ in $(seq 600); do
  b nodes -o json 2>/dev/null | jq -e 'any(.[]; .ready)' >/dev/null && break
  [ -z "$UP_PID" ] || kill -0 "$UP_PID" 2>/dev/null || die "berth up exited: $(tail -20 "$WORK/up.log")"
  sleep 0.1
done
b nodes -o json | jq -e 'any(.[]; .ready)' >/dev/null || die "no ready node in 60 s"
b nodes
if [ "${DEBIAN_BASE:-build}" = given ]; then
  b image inspect debian:bookworm -o json >/dev/null || die "DEBIAN_BASE=given, but the store has no debian:bookworm"
else
  BERTH="$BERTH" bash "$TOP/scripts/debian-base.sh"
fi
