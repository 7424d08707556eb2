# Sourced first by the scripts that need root (source "$(dirname "$0")/as-root.sh" "$0" "$@").
# As root, the usual case on a fresh Debian machine, which has no sudo, it does nothing. Another
# user is re-run through sudo when sudo exists, and otherwise told how to become root.
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    exec sudo -E bash "$@"
  fi
  echo "$(basename "$1"): run as root (e.g. su -c 'bash $1'); sudo is not installed" >&2
  exit 1
fi
