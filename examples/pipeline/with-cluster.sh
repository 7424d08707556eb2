#!/usr/bin/env bash
# Runs a command with the pipeline's setup around it (lib.sh): a registry and a `berth up`
# cluster, started unless REGISTRY / BERTH_SCHEDULER name running ones, and debian:bookworm in
# the store. The command gets REGISTRY (HOST:PORT) and BERTH_SCHEDULER (a URL) in its
# environment; what was started is stopped when it ends. For pipeline.py:
#   bash examples/pipeline/with-cluster.sh PYTHON examples/pipeline/pipeline.py
# (PYTHON with the packages of tests/python/requirements.txt). Same environment as pipeline.sh.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
source "$TOP/scripts/as-root.sh" "$0" "$@"
[ $# -gt 0 ] || { echo "usage: with-cluster.sh COMMAND [ARG]..." >&2; exit 2; }
source "$HERE/lib.sh"
step run "$*"
"$@"
