#!/usr/bin/env bash
# berth's main job, end to end on one machine (run as root on Debian):
#   1. installs what is missing and builds berth (release);
#   2. builds a busybox base image from Debian's busybox-static, the sample "hello"
#      microservice as a second layer on top of it, and the debian:bookworm base image
#      (scripts/debian-base.sh, cached under the data dir) for the client;
#   3. round-trips the image through an OCI archive made by skopeo (what other tools produce);
#   4. lists and inspects the images and unpacks the service's root filesystem;
#   5. runs the service in a container (detached, host network, loopback port 18080), fetches
#      its page, shows it in `berth ps`, then stops and removes it;
#   6. starts a local cluster (`berth up`: berth-scheduler and one berth-agent, whose container
#      network lives in a network namespace of its own, so the host's network is untouched),
#      deploys the two-service sample app (hello with 3 replicas behind a service, and a client
#      that calls http://hello/ by name), shows `berth services`, rolls hello out to v2 while the
#      client keeps calling, prints how many of its calls failed during the rollout (exits 1
#      unless none did) and which versions answered;
#   7. on the same cluster, the delivery pipeline of examples/pipeline (pipeline.sh): the shop
#      app (redis, an api, a web front end) built from its Containerfiles, unit-tested and
#      linted in containers of its images, pushed to a local registry, deployed to staging,
#      tested there through the service names, promoted to production, which waits for
#      approval, approved, and the releases and the audit trail printed; then stops the
#      cluster cleanly.
# The data dir is /var/lib/berth unless BERTH_DATA_DIR says otherwise.
set -euo pipefail
source "$(dirname "$0")/as-root.sh" "$0" "$@"
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

export BERTH_DATA_DIR=${BERTH_DATA_DIR:-/var/lib/berth}
WORK=$(mktemp -d /tmp/berth-demo.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# The Debian tree (debootstrap, network-bound; cached after the first run) is made while the
# build uses the CPU; debian-base.sh below then only makes the image from it.
echo "== the Debian base tree (scripts/debian-base.sh --rootfs-only), beside the build"
bash scripts/debian-base.sh --rootfs-only >"$WORK/debian-tree.log" 2>&1 &
DEBIAN_TREE_PID=$!
echo "== building berth (release)"
cargo build --release --quiet -p berth-cli -p berth-runtime -p berth-shim -p berth-agent -p berth-scheduler
BERTH="$PWD/target/release/berth"
if ! wait "$DEBIAN_TREE_PID"; then
  cat "$WORK/debian-tree.log" >&2
  echo "demo: making the Debian base tree failed (its log is above)" >&2
  exit 1
fi

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

echo "== building debian:bookworm (scripts/debian-base.sh) for the client"
BERTH="$BERTH" bash scripts/debian-base.sh

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
echo "== berth deploy -f examples/hello.toml --wait (3 replicas behind a service)"
"$BERTH" deploy -f examples/hello.toml --wait
echo "== berth deploy -f examples/client.toml --wait (calls http://hello/ every 0.2 s)"
"$BERTH" deploy -f examples/client.toml --wait
"$BERTH" status hello
echo "== berth services (hello's virtual IP, its port and its ready endpoints)"
"$BERTH" services
echo "== the client calling hello by name (DNS: hello -> the virtual IP -> a ready replica)"
for _ in $(seq 150); do
  if "$BERTH" logs client 2>/dev/null | grep -q "ok=[1-9].* hello v1"; then break; fi
  sleep 0.2
done
"$BERTH" logs client | tail -3
if ! "$BERTH" logs client | grep -q "ok=[1-9].* hello v1"; then
  echo "demo: the client never reached hello by name in 30 s (its log is above)" >&2
  exit 1
fi

# The client's log lines carry running counts (`ok=N failed=M`); the last one before the
# rollout and the last one after it bound the window.
client_lines() { "$BERTH" logs client | grep -E '^[0-9:.]+ ok=[0-9]+ failed=[0-9]+ ' || true; }
counts() { sed -nE 's/^[0-9:.]+ ok=([0-9]+) failed=([0-9]+) .*/\1 \2/p' | tail -1; }

echo "== rolling hello out to v2 while the client calls it"
before_lines=$(client_lines)
read -r ok0 failed0 <<<"$(counts <<<"$before_lines")"
"$BERTH" deploy -f examples/hello-v2.toml --wait
# The rollout is complete once the new replicas are ready; the old ones are stopped only after
# they drained. The window ends after the last of them is gone, plus a few calls.
old_running() {
  "$BERTH" ps -o json | jq '[.[] | select(.deployment == "hello" and .image == "hello:v1"
    and .state == "running")] | length'
}
for _ in $(seq 150); do
  if [ "$(old_running)" = 0 ]; then break; fi
  sleep 0.2
done
echo "hello v1 replicas still running: $(old_running)"
sleep 1
after_lines=$(client_lines)
read -r ok1 failed1 <<<"$(counts <<<"$after_lines")"
client_lines | tail -3
if [ "$ok1" -lt "$ok0" ]; then
  # The counts restarted from 0: the client container itself was restarted.
  echo "demo: the client restarted during the rollout (ok=$ok0 before, ok=$ok1 after)" >&2
  failed=$((failed1 + 1))
else
  failed=$((failed1 - failed0))
fi
# The calls after the last one counted before the rollout: ok + failed grows by one per call.
window=$(awk -v base=$((ok0 + failed0)) '{
  split($2, o, "="); split($3, f, "="); if (o[2] + f[2] > base) print }' <<<"$after_lines")
echo "calls during the rollout: $(grep -c . <<<"$window"), answered by:"
grep -o ' hello .*' <<<"$window" | sort | uniq -c | sed 's/^/  /'
echo "failed calls during the rollout: $failed"
if [ "$failed" -gt 0 ]; then
  echo "== the failed calls"
  grep ' error: ' <<<"$window" || true
fi
"$BERTH" history hello
"$BERTH" ps
if [ "$failed" -gt 0 ]; then
  stop_cluster
  trap 'rm -rf "$WORK"' EXIT
  echo "demo: $failed client call(s) failed during the rollout (expected 0)" >&2
  exit 1
fi

echo "== the delivery pipeline (examples/pipeline/pipeline.sh) on this cluster"
BERTH="$BERTH" DEBIAN_BASE=given bash examples/pipeline/pipeline.sh
echo "== stopping the cluster (deployments deleted, containers and network torn down)"
stop_cluster
trap 'rm -rf "$WORK"' EXIT
echo "demo: done"
