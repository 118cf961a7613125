#!/usr/bin/env bash
# Run the test suite against private PostgreSQL and MariaDB servers.
#
# Usage: scripts/test.sh [ARGS...]
# ARGS go to the test binaries after `--`, e.g. a test name filter.
# The servers run in a temporary directory and are stopped and removed on
# exit, also when cargo fails or on SIGINT or SIGTERM. The exit status is
# cargo's, or 1 if cargo passed but the servers failed to stop.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"
servers_script=$repo_root/scripts/servers.sh

if ! command -v cargo >/dev/null 2>&1 && [[ -x ${HOME:-/root}/.cargo/bin/cargo ]]; then
  PATH=${HOME:-/root}/.cargo/bin:$PATH
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "test.sh: error: cargo not found on PATH or in ~/.cargo/bin" >&2
  exit 1
fi

# Build first, so that a compile error fails before any server starts.
cargo test --locked --all-targets --no-run

servers_dir=$(mktemp -d "${TMPDIR:-/tmp}/pgsync-test.XXXXXX")

# shellcheck disable=SC2317 # runs from the EXIT trap
stop_servers() {
  local status=$?
  # A second Ctrl-C must not interrupt the shutdown. servers.sh inherits the
  # ignored signals.
  trap '' INT TERM
  if ! bash "$servers_script" stop "$servers_dir"; then
    echo "test.sh: error: failed to stop the test servers in $servers_dir" >&2
    if ((status == 0)); then
      status=1
    fi
  fi
  exit "$status"
}
trap stop_servers EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bash "$servers_script" start "$servers_dir"
# shellcheck source=/dev/null
source "$servers_dir/env"
export PGSYNC_TEST_SERVERS_SCRIPT=$servers_script

status=0
cargo test --locked --all-targets -- --test-threads=4 "$@" || status=$?
# Tests marked #[ignore] stop or restart a shared server, so they run alone, one at a time.
if ((status == 0)); then
  cargo test --locked --test main -- --ignored --test-threads=1 "$@" || status=$?
fi
exit "$status"
