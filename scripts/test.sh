#!/usr/bin/env bash
# Every test berth has, as root on a Debian machine: installs what is missing, checks formatting
# and lints, builds the workspace, then runs unit, integration and end-to-end tests.
set -euo pipefail
# The tests create namespaces, cgroups and mounts.
source "$(dirname "$0")/as-root.sh" "$0" "$@"
cd "$(dirname "$0")/.."

bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo build"
cargo build --workspace --quiet
echo "== tests"
profile=default
[ "${CI:-}" = "true" ] && profile=ci
cargo nextest run --workspace --profile "$profile" --no-fail-fast
echo "== the scheduler's end-to-end suites again, on an etcd store (issue 8)"
BERTH_TEST_STORE=etcd cargo nextest run -p berth-tests --profile "$profile" --no-fail-fast \
  --test cluster --test cli_cluster
