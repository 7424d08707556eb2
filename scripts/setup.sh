#!/usr/bin/env bash
# Installs what berth's build, demo and tests need on a Debian machine (run as root). Idempotent:
# installs only what is missing, so a second run takes a second.
set -euo pipefail
source "$(dirname "$0")/as-root.sh" "$0" "$@"

# Debian packages: build (protoc for tonic), images (busybox-static as the base of every test
# image; umoci and skopeo as the reference tools; docker-registry as a real registry), runtimes
# to compare against, the tools the benchmarks use (time for peak RSS; libc6-dev's libc.a for
# the statically linked berth-runtime that benches/lifecycle.sh builds), python3-venv for the
# Python gRPC client test (its packages come from PyPI into a cached venv, see
# tests/src/pyvenv.rs), buildah, which drives berth-runtime in tests/tests/buildah.rs, and
# conntrack, with which the agent flushes the UDP flows of service endpoints that left, and
# etcd-client (etcdctl), with which tests/tests/configs_secrets.rs greps the raw etcd store.
# libelf-dev, zlib1g-dev and pkg-config build libbpf (libcgroups' eBPF device program on
# cgroup v2); qemu-system-x86, linux-image-amd64, busybox-static and crun make the cgroup v2
# guest of tests/tests/guest_cgroup_v2.rs;
# e2fsprogs (mkfs.ext4 -d) and kmod (modprobe, depmod) make the systemd guest's disk images
# (tests/src/systemd_guest.rs).
PACKAGES=(
  busybox-static umoci skopeo docker-registry zstd protobuf-compiler libprotobuf-dev
  crun runc hyperfine jq iproute2 debootstrap apache2-utils podman conmon curl nftables util-linux
  qemu-system-x86 linux-image-amd64 cpio etcd-server etcd-client openssl procps e2fsprogs kmod
  python3 python3-venv time libc6-dev buildah conntrack chromium chromium-driver
  prometheus libnss3-tools
  libelf-dev zlib1g-dev pkg-config
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The docker-registry package starts a registry on :5000 through systemd where systemd runs;
# berth's tests start their own on loopback ports of their choosing and need no system one.

if ! command -v cargo-nextest >/dev/null && ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
