#!/usr/bin/env bash
# The shop's delivery pipeline with berth commands only (run as root):
#   build      berth build of db, api and web from their Containerfiles (FROM debian:bookworm)
#   unit       each service's unit tests, in a container of the image it just built
#   lint       pyflakes on the Python sources, in a container of the image
#   push       berth image push to the registry; the specs then name the images by digest
#   envs       berth env create staging (auto) and production (manual approval)
#   staging    berth --env staging deploy -f specs/{db,api,web}.toml --wait
#   integration  from inside a web replica: plain `api` and `web` resolve to staging's services,
#              an order placed through web and api lands in staging's redis
#   promote    berth promote api/web --from staging --to production: stops at approval
#   approve    berth --env production approve ... --wait
#   verify     production serves the release ids staging served; the same checks there
#   report     berth releases, berth audit
# Setup, not part of the flow: a registry (Debian's docker-registry on a free loopback port)
# and a cluster (`berth up` with its containers in a network namespace of its own) are started
# unless REGISTRY / BERTH_SCHEDULER name running ones; what this script starts it stops on exit.
#
# Environment (all optional):
#   BERTH             the berth binary (default: target/release/berth, else berth on PATH)
#   BERTH_DATA_DIR    the image store and the cluster's data (default /var/lib/berth)
#   BERTH_SCHEDULER   a running scheduler to use (default: start `berth up` on UP_LISTEN)
#   UP_LISTEN         where the started scheduler listens (default 127.0.0.1:7700)
#   REGISTRY          HOST:PORT of a running registry (plain HTTP) to push to
#   STAGING, PRODUCTION  the environments' names (default staging, production)
#   VERSION           the version baked into the images (default v1)
#   PIPELINE_OUT      a directory to write results to (releases.json, audit.json, status.json,
#                     integration.txt, images.txt)
#   KEEP=1            leave the cluster and the registry this script started running
#   DEBIAN_BASE=given the store already has debian:bookworm (else scripts/debian-base.sh makes sure)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
source "$TOP/scripts/as-root.sh" "$0" "$@"
source "$HERE/lib.sh"

SERVICES=(db api web)
PROMOTED=(api web)   # db is per environment: its volume holds that environment's data
# db's unit check: redis-server starts with the image's configuration and answers PING.
DB_CHECK='redis-server /etc/redis/shop.conf --port 0 --unixsocket /tmp/redis.sock --dir /tmp --daemonize yes
for _ in $(seq 50); do redis-cli -s /tmp/redis.sock ping 2>/dev/null && exit 0; sleep 0.1; done; exit 1'

# --- build, unit tests, lint -----------------------------------------------------------------
step build "berth build of ${SERVICES[*]} (version $VERSION)"
for s in "${SERVICES[@]}"; do
  echo "--- $s"
  b build -f "$HERE/$s/Containerfile" -t "shop/$s:$VERSION" --build-arg "VERSION=$VERSION" "$HERE/$s"
done

step unit "unit tests inside the images"
# --network host: `berth run --network none` leaves the container's loopback down, and the
# tests serve and call on 127.0.0.1 (free ports only).
for s in api web; do
  echo "--- $s: python3 -m unittest"
  b run --rm --network host "shop/$s:$VERSION" python3 -m unittest -v 2>&1 | tee "$WORK/unit-$s.log"
  grep -q '^OK' "$WORK/unit-$s.log" || die "$s's unit tests did not report OK"
done
echo "--- db: redis-server starts with its configuration and answers PING (on a unix socket)"
b run --rm "shop/db:$VERSION" sh -c "$DB_CHECK" || die "redis-server did not start with /etc/redis/shop.conf"

step lint "pyflakes inside the images"
for s in api web; do
  echo "--- $s: python3 -m pyflakes /app"
  b run --rm "shop/$s:$VERSION" python3 -m pyflakes /app || die "pyflakes found problems in $s"
  echo "clean"
done

# --- push: from here on the images are named by digest ----------------------------------------
step push "berth image push to $REGISTRY"
declare -A IMAGE
for s in "${SERVICES[@]}"; do
  ref=$REGISTRY/shop/$s:$VERSION
  b image tag "shop/$s:$VERSION" "$ref"
  digest=$(b image push "$ref" --plain-http -o json | jq -r .digest)
  [[ $digest == sha256:* ]] || die "berth image push $ref printed no digest"
  IMAGE[$s]=$REGISTRY/shop/$s@$digest
  echo "$s: ${IMAGE[$s]}"
done

# render SERVICE ENV: the spec with the image by digest and its volumes suffixed with the
# environment (volumes are named cluster-wide: staging must not write into production's data).
render() {
  local out=$WORK/$2-$1.toml
  sed -e "s|^image = .*|image = \"${IMAGE[$1]}\"|" \
      -e "s|^\(volumes = \[{ name = \"[^\"]*\)\"|\1-$2\"|" "$HERE/specs/$1.toml" >"$out"
  echo "$out"
}

# --- environments ----------------------------------------------------------------------------
step envs "environments $STAGING (auto) and $PRODUCTION (manual approval)"
ensure_env() {
  if b env ls -o json | jq -e --arg n "$1" 'any(.[]; .name == $n)' >/dev/null; then
    echo "$1: exists"
  else
    b env create "$1" --approval "$2"
  fi
}
ensure_env "$STAGING" auto
ensure_env "$PRODUCTION" manual
b env ls

# --- staging ---------------------------------------------------------------------------------
step staging "deploy to $STAGING"
for s in "${SERVICES[@]}"; do
  b --env "$STAGING" deploy -f "$(render "$s" "$STAGING")" --wait --timeout 5m
done
b --env "$STAGING" status

# in_web ENV CMD...: runs CMD in a running web replica of ENV (through its node's agent).
in_web() {
  local env=$1 row node id agent
  shift
  row=$(b --env "$env" ps -o json | jq -c --arg e "$env" \
    'first(.[] | select((.deployment == "web" or .deployment == "web.\($e)") and .state == "running"))')
  [ -n "$row" ] || die "no running web replica in $env"
  node=$(jq -r .node <<<"$row")
  id=$(jq -r .id <<<"$row")
  agent=$(b nodes -o json | jq -r --arg n "$node" '.[] | select(.name == $n) | .agent_endpoint')
  b exec --agent "$agent" "$id" "$@"
}

# integration ENV: the services by plain name from inside a web replica of ENV.
integration() {
  local env=$1 api_ip qualified page before after
  echo "--- $env: plain 'api' is $env's api"
  api_ip=$(in_web "$env" getent hosts api | awk '{print $1}')
  qualified=$(in_web "$env" getent hosts "api.$env.berth" | awk '{print $1}')
  [ -n "$api_ip" ] && [ "$api_ip" = "$qualified" ] \
    || die "in $env, api resolves to '$api_ip' but api.$env.berth to '$qualified'"
  echo "api -> $api_ip = api.$env.berth"
  echo "--- $env: GET http://api:8080/"
  before=$(in_web "$env" curl -fsS --max-time 5 http://api:8080/)
  echo "$before"
  [ "$(jq -r .version <<<"$before")" = "$VERSION" ] || die "$env's api reports $(jq -r .version <<<"$before"), expected $VERSION"
  echo "--- $env: an order through web (POST http://web:8080/order -> api -> db)"
  page=$(in_web "$env" curl -fsS --max-time 5 -L --data "" http://web:8080/order)
  after=$(in_web "$env" curl -fsS --max-time 5 http://api:8080/)
  echo "$after"
  [ "$(jq .orders <<<"$after")" -eq $(($(jq .orders <<<"$before") + 1)) ] \
    || die "the order placed through $env's web was not counted by its api"
  grep -q "<p>api: $VERSION</p>" <<<"$page" || die "$env's web page does not show api $VERSION: $page"
  echo "integration ($env): ok, orders $(jq .orders <<<"$before") -> $(jq .orders <<<"$after")" \
    | tee -a "$WORK/integration.txt"
}

step integration "integration tests against $STAGING through the service names"
integration "$STAGING"

# --- production ------------------------------------------------------------------------------
step promote "promote ${PROMOTED[*]} from $STAGING to $PRODUCTION (stops at approval)"
# db is not promoted: production gets its own redis with its own volume, from the same image.
code=0
b --env "$PRODUCTION" deploy -f "$(render db "$PRODUCTION")" --wait --stop-at-approval --timeout 5m || code=$?
[ "$code" = 0 ] || [ "$code" = 3 ] || die "deploying db to $PRODUCTION failed (exit $code)"
for s in "${PROMOTED[@]}"; do
  code=0
  b promote "$s" --from "$STAGING" --to "$PRODUCTION" --wait --stop-at-approval --timeout 5m || code=$?
  # 3: waits for approval (a manual production); 0: already complete (an auto production, or
  # this release was promoted before).
  [ "$code" = 3 ] || [ "$code" = 0 ] || die "promote $s failed (exit $code)"
done
b --env "$PRODUCTION" status

step approve "approve in $PRODUCTION"
for s in db "${PROMOTED[@]}"; do
  phase=$(b --env "$PRODUCTION" status "$s" -o json | jq -r '.phase // .deployment.phase // ""')
  case "$phase" in
    *[Aa]pproval*|*APPROVAL*) b --env "$PRODUCTION" approve "$s" --wait --timeout 5m ;;
    *) echo "$s: $phase" ;;
  esac
done

step verify "$PRODUCTION serves the releases $STAGING tested"
release_of() { b --env "$1" status "$2" -o json | jq -r '.release // .deployment.release // ""'; }
for s in "${PROMOTED[@]}"; do
  staged=$(release_of "$STAGING" "$s")
  produced=$(release_of "$PRODUCTION" "$s")
  [ -n "$staged" ] && [ "$staged" = "$produced" ] \
    || die "$s: $PRODUCTION runs release '$produced', $STAGING '$staged'"
  echo "$s: release $produced in $STAGING and $PRODUCTION" | tee -a "$WORK/integration.txt"
done
integration "$PRODUCTION"

step report "releases and audit"
b releases
b audit --limit 30
if [ -n "${PIPELINE_OUT:-}" ]; then
  mkdir -p "$PIPELINE_OUT"
  b releases -o json >"$PIPELINE_OUT/releases.json"
  b audit -o json >"$PIPELINE_OUT/audit.json"
  cp "$WORK/integration.txt" "$PIPELINE_OUT/integration.txt"
  for env in "$STAGING" "$PRODUCTION"; do
    for s in "${SERVICES[@]}"; do b --env "$env" status "$s" -o json; done
  done | jq -s . >"$PIPELINE_OUT/status.json"
  for s in "${SERVICES[@]}"; do echo "$s ${IMAGE[$s]}"; done >"$PIPELINE_OUT/images.txt"
fi
echo
echo "pipeline: done (${SERVICES[*]} $VERSION: $STAGING tested, $PRODUCTION approved and serving)"
