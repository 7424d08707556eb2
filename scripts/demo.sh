#!/usr/bin/env bash
# berth's main job, end to end on one machine (run as root on Debian):
#   1. installs what is missing and builds berth (release);
#   2. builds a busybox base image from Debian's busybox-static and the sample "hello"
#      microservice as a second layer on top of it;
#   3. round-trips the image through an OCI archive made by skopeo (what other tools produce);
#   4. lists and inspects the images and unpacks the service's root filesystem;
#   5. runs the service in a container (detached, host network, loopback port 18080), fetches
#      its page, shows it in `berth ps`, then stops and removes it;
#   6. starts a local cluster (`berth up`: berth-scheduler and one berth-agent, whose container
#      network lives in a network namespace of its own, so the host's network is untouched),
#      deploys the two-service sample app (hello + client), rolls hello out to v2 and shows
#      the client seeing the new version, then stops the cluster cleanly.
# The data dir is /var/lib/berth unless BERTH_DATA_DIR says otherwise.
set -euo pipefail
source "$(dirname "$0")/as-root.sh" "$0" "$@"
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

echo "== building berth (release)"
cargo build --release --quiet -p berth-cli -p berth-runtime -p berth-shim -p berth-agent -p berth-scheduler
BERTH="$PWD/target/release/berth"
export BERTH_DATA_DIR=${BERTH_DATA_DIR:-/var/lib/berth}

WORK=$(mktemp -d /tmp/berth-demo.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

echo "== building busybox:latest from Debian's busybox-static"
bash scripts/busybox-rootfs.sh "$WORK/base"
"$BERTH" image build --from-dir "$WORK/base" --tag busybox:latest \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --cmd /bin/sh

echo "== building hello:v1 (the sample microservice) on top of busybox:latest"
mkdir -p "$WORK/hello/srv/www" "$WORK/hello/usr/local/bin"
cp examples/hello/index.html "$WORK/hello/srv/www/"
install -m 0755 examples/hello/hello-service "$WORK/hello/usr/local/bin/"
"$BERTH" image build --from-dir "$WORK/hello" --base busybox:latest --tag hello:v1 \
  --env PORT=8080 --workdir /srv/www --cmd /usr/local/bin/hello-service

echo "== round trip through an oci-archive made by skopeo"
skopeo copy -q "oci:$BERTH_DATA_DIR/images:hello:v1" "oci-archive:$WORK/hello.tar:hello:v2"
"$BERTH" image import "$WORK/hello.tar" --tag hello:v2

echo "== berth image ls"
"$BERTH" image ls
echo "== berth image inspect hello:v1"
"$BERTH" image inspect hello:v1 --output table
echo "== berth image unpack hello:v1"
"$BERTH" image unpack hello:v1 "$WORK/rootfs"
ls -l "$WORK/rootfs/usr/local/bin" "$WORK/rootfs/srv/www"
echo "== berth run -d hello:v1 (serving on 127.0.0.1:18080)"
NAME=berth-demo-hello
"$BERTH" rm -f "$NAME" >/dev/null 2>&1 || true
"$BERTH" run -d --name "$NAME" --network host -e PORT=18080 -m 64m --cpus 0.5 hello:v1
for _ in $(seq 100); do
  if page=$("$WORK/rootfs/bin/busybox" wget -q -O - http://127.0.0.1:18080/ 2>/dev/null); then break; fi
  sleep 0.1
done
echo "$page"
"$BERTH" ps
"$BERTH" stop -t 2 "$NAME"
"$BERTH" logs "$NAME" | tail -3
"$BERTH" rm "$NAME"

echo "== berth up: a local cluster (scheduler + one agent)"
NETNS=berth-demo
ip netns delete "$NETNS" 2>/dev/null || true
ip netns add "$NETNS"
ip -n "$NETNS" link set lo up
UP_LOG="$WORK/up.log"
"$BERTH" up --listen 127.0.0.1:7700 --node-name demo-node \
  --agent-arg=--net-namespace=/run/netns/$NETNS >"$UP_LOG" 2>&1 &
UP_PID=$!
stop_cluster() {
  if kill -0 "$UP_PID" 2>/dev/null; then
    kill -INT "$UP_PID"
    wait "$UP_PID" || true
  fi
  ip netns delete "$NETNS" 2>/dev/null || true
}
trap 'stop_cluster; rm -rf "$WORK"' EXIT
export BERTH_SCHEDULER=http://127.0.0.1:7700
for _ in $(seq 300); do
  if "$BERTH" nodes -o json 2>/dev/null | jq -e 'any(.[]; .ready)' >/dev/null; then break; fi
  sleep 0.1
done
"$BERTH" nodes
echo "== berth deploy -f examples/hello.toml --wait"
"$BERTH" deploy -f examples/hello.toml --wait
echo "== berth deploy -f examples/client.toml --wait"
"$BERTH" deploy -f examples/client.toml --wait
"$BERTH" status hello
echo "== hello's page through its published port, from the node's network"
nsenter --net=/run/netns/$NETNS curl -s --retry 20 --retry-connrefused --retry-delay 0 \
  http://127.0.0.1:18080/ | head -5
echo "== the client calling hello"
for _ in $(seq 100); do
  if "$BERTH" logs client 2>/dev/null | grep -q "200 OK"; then break; fi
  sleep 0.2
done
"$BERTH" logs client | tail -2
echo "== rolling hello out to v2"
"$BERTH" deploy -f examples/hello-v2.toml --wait
for _ in $(seq 100); do
  if "$BERTH" logs client 2>/dev/null | tail -1 | grep -q "hello v2"; then break; fi
  sleep 0.2
done
"$BERTH" logs client | tail -2
"$BERTH" history hello
"$BERTH" ps
echo "== stopping the cluster (deployments deleted, containers and network torn down)"
stop_cluster
trap 'rm -rf "$WORK"' EXIT
echo "demo: done"
