#!/usr/bin/env bash
# Remove the pg-to-mysql-sync service installed by scripts/install.sh.
#
# Usage: scripts/uninstall.sh [--root DIR]
#
# It stops and disables the unit and removes the binary, the unit and the docs. It keeps the
# configuration in /etc/pg-to-mysql-sync, the journal in /var/lib/pg-to-mysql-sync and the
# system user, because the journal may hold changes not yet applied to MySQL.
set -euo pipefail

readonly service=pg-to-mysql-sync
root=/
while (($# > 0)); do
  case $1 in
    --root) root=${2:?--root needs a directory}; shift 2 ;;
    -h|--help) sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "uninstall.sh: unknown option $1; see --help" >&2; exit 2 ;;
  esac
done
if ((EUID != 0)); then
  echo "uninstall.sh: run as root" >&2
  exit 1
fi
root=${root%/}

if [[ $root == "" && -d /run/systemd/system ]]; then
  systemctl stop "$service.service" || true
  systemctl disable "$service.service" || true
elif [[ -e $root/etc/systemd/system/$service.service ]]; then
  systemctl --root="${root:-/}" disable "$service.service" || true
fi
rm -f "$root/etc/systemd/system/$service.service" "$root/usr/local/bin/$service"
rm -rf "$root/usr/local/share/doc/$service"
if [[ $root == "" && -d /run/systemd/system ]]; then
  systemctl daemon-reload
fi

echo "uninstall.sh: removed the binary and the unit"
echo "uninstall.sh: kept $root/etc/$service (configuration) and $root/var/lib/$service (journal)"
echo "uninstall.sh: kept the user $service; remove it with \`userdel $service\` once unneeded"
