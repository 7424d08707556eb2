#!/bin/sh
# Configures a debootstrapped Debian root ($ROOT) as the systemd test guest; run on the host by
# tests/src/systemd_guest.rs before mkfs.ext4 -d (its text is part of the image's cache key).
# $KVER is the guest kernel's version: its modules the guest needs are copied in.
set -eu
: "${ROOT:?}" "${KVER:?}"
echo berth-guest >"$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost berth-guest\n::1\tlocalhost\n' >"$ROOT/etc/hosts"
# An empty machine-id: systemd makes a transient one at every boot.
: >"$ROOT/etc/machine-id"
printf '/dev/vda / ext4 rw,noatime 0 1\n' >"$ROOT/etc/fstab"
# Modules from the host's tree (the guest boots the host's kernel): the results port and
# podman's overlay storage (loaded at boot). No udev in the guest: devtmpfs makes the nodes.
for m in virtio_console overlay; do
  modprobe -S "$KVER" --show-depends "$m" | awk '$1 == "insmod" {print $2}' | while read -r ko; do
    mkdir -p "$ROOT$(dirname "$ko")"
    cp "$ko" "$ROOT$ko"
  done
done
# berth-agent's node networking (bridge, veth, nftables, conntrack): the kernel loads these
# on demand through the guest's modprobe, so the whole net tree goes in.
mkdir -p "$ROOT/lib/modules/$KVER/kernel/drivers/net"
cp -a "/lib/modules/$KVER/kernel/net" "/lib/modules/$KVER/kernel/lib" "$ROOT/lib/modules/$KVER/kernel/"
cp "/lib/modules/$KVER/kernel/drivers/net/veth.ko" "$ROOT/lib/modules/$KVER/kernel/drivers/net/"
cp "/lib/modules/$KVER/modules.order" "/lib/modules/$KVER/modules.builtin" \
   "/lib/modules/$KVER/modules.builtin.modinfo" "$ROOT/lib/modules/$KVER/" 2>/dev/null || true
depmod -b "$ROOT" "$KVER"
printf 'virtio_console\noverlay\n' >"$ROOT/etc/modules-load.d/berth.conf"
# The test: mount the per-run inputs disk and run its run.sh, then power off. Booted as
# systemd.unit=berth-test.target, which pulls in only the basics (no getty, no network).
mkdir -p "$ROOT/mnt/inputs"
cat >"$ROOT/etc/systemd/system/berth-test.service" <<'UNIT'
[Unit]
Description=berth guest test (run.sh from the inputs disk)
Requires=dbus.socket
After=basic.target dbus.socket
OnSuccess=poweroff.target
OnFailure=poweroff.target

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'mount -o ro /dev/vdb /mnt/inputs && exec /bin/sh /mnt/inputs/run.sh'
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity
UNIT
cat >"$ROOT/etc/systemd/system/berth-test.target" <<'UNIT'
[Unit]
Description=berth guest test target
Requires=basic.target berth-test.service
After=basic.target
AllowIsolate=yes
UNIT
