#!/usr/bin/env bash
# Writes a minimal busybox root filesystem into DIR from Debian's static busybox.
#   usage: busybox-rootfs.sh DIR
set -euo pipefail
R=${1:?usage: busybox-rootfs.sh DIR}
[ -x /bin/busybox ] || { echo "/bin/busybox missing: run scripts/setup.sh" >&2; exit 1; }
mkdir -p "$R"/{bin,sbin,etc,proc,sys,dev,tmp,root,run,var,usr/bin}
chmod 1777 "$R/tmp"
install -m 0755 /bin/busybox "$R/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$R/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$R/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$R/etc/group"
echo busybox > "$R/etc/hostname"
