#!/usr/bin/env bash
# Install pg-to-mysql-sync as a systemd service.
#
# Usage: scripts/install.sh [--binary PATH] [--root DIR]
#   --binary PATH  install this binary instead of building target/release/pg-to-mysql-sync
#   --root DIR     install below DIR instead of / (a staging root for packaging and tests);
#                  the service user is still created on this machine
#
# It installs the binary to /usr/local/bin, creates the system user pg-to-mysql-sync,
# /etc/pg-to-mysql-sync/.env (from .env.example, mode 0600; an existing .env is never
# overwritten), the data directory /var/lib/pg-to-mysql-sync and the unit
# pg-to-mysql-sync.service, and enables the unit. Start it with
# `service pg-to-mysql-sync start` after editing the .env.
set -euo pipefail

readonly service=pg-to-mysql-sync
readonly user=pg-to-mysql-sync
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

binary=
root=/
while (($# > 0)); do
  case $1 in
    --binary) binary=${2:?--binary needs a path}; shift 2 ;;
    --root) root=${2:?--root needs a directory}; shift 2 ;;
    -h|--help) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option $1; see --help" >&2; exit 2 ;;
  esac
done
if ((EUID != 0)); then
  echo "install.sh: run as root (it creates a system user and writes to /etc)" >&2
  exit 1
fi
root=${root%/}

step() { echo "install.sh: $*"; }

if [[ -z $binary ]]; then
  if ! command -v cargo >/dev/null 2>&1 && [[ -x ${HOME:-/root}/.cargo/bin/cargo ]]; then
    PATH=${HOME:-/root}/.cargo/bin:$PATH
  fi
  step "building the release binary"
  (cd "$repo_root" && cargo build --release --locked)
  binary=$repo_root/target/release/pg-to-mysql-sync
fi
if [[ ! -x $binary ]]; then
  echo "install.sh: $binary is not an executable file; build it or pass --binary" >&2
  exit 1
fi

if ! id -u "$user" >/dev/null 2>&1; then
  step "creating system user $user"
  useradd --system --user-group --home-dir /var/lib/$service --no-create-home \
    --shell /usr/sbin/nologin --comment "pg-to-mysql-sync daemon" "$user"
fi

step "installing $root/usr/local/bin/$service"
install -D -m 0755 -o root -g root "$binary" "$root/usr/local/bin/$service"
install -D -m 0644 -o root -g root "$repo_root/README.md" \
  "$root/usr/local/share/doc/$service/README.md"

# The configuration contains database passwords, so only the service user may read it.
install -d -m 0750 -o root -g "$user" "$root/etc/$service"
install -m 0644 -o root -g root "$repo_root/.env.example" "$root/etc/$service/env.example"
if [[ -e $root/etc/$service/.env ]]; then
  step "keeping the existing $root/etc/$service/.env"
else
  step "creating $root/etc/$service/.env from .env.example; edit it before the first start"
  # A fresh install gets its own random JWT secret. It goes through the environment, not a
  # command line, so that other users cannot read it in the process list.
  JWT_SECRET_VALUE=$(head -c 48 /dev/urandom | base64 | tr -d '\n') \
    DATA_DIR_VALUE=/var/lib/$service \
    awk '/^DATA_DIR=/ { print "DATA_DIR=" ENVIRON["DATA_DIR_VALUE"]; next }
         /^JWT_SECRET=/ { print "JWT_SECRET=" ENVIRON["JWT_SECRET_VALUE"]; next }
         { print }' "$repo_root/.env.example" \
    | install -m 0600 -o "$user" -g "$user" /dev/stdin "$root/etc/$service/.env"
fi

install -d -m 0750 -o "$user" -g "$user" "$root/var/lib/$service"

step "installing the unit $root/etc/systemd/system/$service.service"
install -D -m 0644 -o root -g root "$repo_root/dist/systemd/$service.service" \
  "$root/etc/systemd/system/$service.service"
if [[ $root == "" && -d /run/systemd/system ]]; then
  systemctl daemon-reload
  systemctl enable "$service.service"
else
  # No running systemd (a container, a staging root): enable offline.
  systemctl --root="${root:-/}" enable "$service.service"
fi

step "done. Next: edit /etc/$service/.env, run \`sudo -u $user $service setup\` there, then"
step "\`service $service start\`; logs: \`journalctl -u $service\`"
