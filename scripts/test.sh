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
echo "== declared MSRV (rust-version)"
# CI has no internet but crates.io, so it cannot install the MSRV toolchain to `cargo +MSRV
# check` with. Instead: every member must inherit the workspace's rust-version, which clippy's
# incompatible_msrv lint (denied in Cargo.toml, run next) reads to reject std APIs newer than it;
# and the declaration must be at least what the language features in use need, which that lint
# does not see (let chains need 1.88; raise the floor when using a newer feature).
msrv_floor=1.88
msrv=$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' Cargo.toml)
[ -n "$msrv" ] || { echo "Cargo.toml declares no workspace rust-version" >&2; exit 1; }
if [ "$(printf '%s\n%s\n' "$msrv_floor" "$msrv" | sort -V | head -1)" != "$msrv_floor" ]; then
  echo "rust-version $msrv is below $msrv_floor, which the code's language features need" >&2
  exit 1
fi
undeclared=$(cargo metadata --no-deps --format-version 1 --locked |
  jq -r --arg v "$msrv" '.packages[] | select(.rust_version != $v) | "\(.name) (\(.rust_version))"')
if [ -n "$undeclared" ]; then
  echo "these members do not inherit rust-version $msrv: $undeclared" >&2
  exit 1
fi
if grep -rn --include=*.rs 'incompatible_msrv' agent cli images proto runtime scheduler shim tests; then
  echo "incompatible_msrv must not be allowed anywhere: raise rust-version instead" >&2
  exit 1
fi
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo build"
cargo build --workspace --quiet
echo "== unit tests as a non-root user (nobody)"
# A unit test needing root must say so: the nextest profile `nonroot` (.config/nextest.toml)
# names those and leaves them out, and nextest reports them as skipped. nobody cannot reach
# cargo or root's CARGO_HOME, so the test binaries travel in a nextest archive (built as root)
# and run from it, over a copy of the workspace's files (the checkout itself may sit where
# nobody cannot read, under /root say).
unit_dir=$(mktemp -d)
trap 'rm -rf "$unit_dir"' EXIT
chmod 755 "$unit_dir"
cargo nextest archive --workspace --lib --bins --archive-file "$unit_dir/unit.tar.zst"
install -m 755 "$(command -v cargo-nextest)" "$unit_dir/cargo-nextest"
mkdir "$unit_dir/x" "$unit_dir/ws" # nextest extracts only into a directory that exists
git ls-files -z --cached --others --exclude-standard | tar -c --null -T - | tar -x -C "$unit_dir/ws"
chown -R nobody "$unit_dir"
(cd "$unit_dir" && runuser -u nobody -- env HOME="$unit_dir" ./cargo-nextest nextest run \
  --archive-file unit.tar.zst --workspace-remap ws --extract-to x --profile nonroot)
rm -rf "$unit_dir"
trap - EXIT
echo "== tests"
profile=default
[ "${CI:-}" = "true" ] && profile=ci
cargo nextest run --workspace --profile "$profile" --no-fail-fast
echo "== the scheduler's end-to-end suites again, on an etcd store (issue 8)"
# --workspace with a filter, not -p: the same feature set as the run above, so nothing rebuilds.
BERTH_TEST_STORE=etcd cargo nextest run --workspace --profile "$profile" --no-fail-fast \
  -E 'package(berth-tests) & (binary(cluster) | binary(cli_cluster))'
