#!/usr/bin/env bash
# Benchmark pg-to-mysql-sync on private PostgreSQL and MariaDB servers.
#
# Usage: scripts/bench.sh [--snapshot] [--output FILE] [BENCH_ARGS...]
#   --snapshot     Run scripts/bench_snapshot.py instead of scripts/bench.py: the
#                  snapshot and verify commands on 1,000,000 rows against
#                  LOAD DATA LOCAL INFILE. Results default to
#                  target/bench-snapshot-results.md and the commands' log to
#                  target/bench-snapshot.log.
#   --output FILE  Markdown file for the results (default target/bench-results.md).
#   BENCH_ARGS     Passed to the Python script, e.g. `--rows 10000 --latency-seconds 5`
#                  for a short trial; `target/bench-venv/bin/python scripts/bench.py
#                  --help` lists them, and scripts/bench_snapshot.py --help those of
#                  --snapshot.
#
# Builds the release binary, installs psycopg and PyMySQL at pinned versions
# into target/bench-venv, starts throwaway servers with scripts/servers.sh in a
# temporary directory and stops them on exit, also on failure or SIGINT. All
# figures come from this one run; they are printed and written to FILE. The
# daemon's log goes to target/bench-daemon.log. A run took about 2 minutes on
# 2 cores once the binary was built, and so did a --snapshot run. Must run as
# root, because scripts/servers.sh does.
set -euo pipefail

script_started=$(date +%s.%N)
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
servers_script=$repo_root/scripts/servers.sh
command_line=$(printf '%q ' "$0" "$@")
command_line=${command_line% }

readonly VENV=$repo_root/target/bench-venv
readonly PYTHON_PACKAGES=("psycopg[binary]==3.3.9" "PyMySQL==1.2.4")

log() {
  printf 'bench.sh: %s\n' "$*" >&2
}

output=
snapshot=0
bench_args=()
while (($# > 0)); do
  case $1 in
    --snapshot)
      snapshot=1
      shift
      ;;
    --output)
      (($# >= 2)) || {
        log "error: --output needs a file name"
        exit 2
      }
      output=$(realpath -m -- "$2")
      shift 2
      ;;
    -h | --help)
      sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      bench_args+=("$1")
      shift
      ;;
  esac
done

# After the arguments, so that a relative --output is taken from the caller's directory.
cd "$repo_root"

if ! command -v cargo >/dev/null 2>&1 && [[ -x ${HOME:-/root}/.cargo/bin/cargo ]]; then
  PATH=${HOME:-/root}/.cargo/bin:$PATH
fi
if ! command -v cargo >/dev/null 2>&1; then
  log "error: cargo not found on PATH or in ~/.cargo/bin"
  exit 1
fi

# Build and install first, so that a failure there starts no server.
cargo build --release --locked
binary=$repo_root/target/release/pg-to-mysql-sync

if [[ ! -x $VENV/bin/python ]]; then
  log "creating $VENV"
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check "${PYTHON_PACKAGES[@]}"

servers_dir=$(mktemp -d "${TMPDIR:-/tmp}/pgsync-bench.XXXXXX")
work_dir=$(mktemp -d "${TMPDIR:-/tmp}/pgsync-bench-work.XXXXXX")

# shellcheck disable=SC2317 # runs from the EXIT trap
cleanup() {
  local status=$?
  # A second Ctrl-C must not interrupt the shutdown.
  trap '' INT TERM
  if ! bash "$servers_script" stop "$servers_dir"; then
    log "error: failed to stop the servers in $servers_dir"
    if ((status == 0)); then
      status=1
    fi
  fi
  rm -rf -- "$work_dir"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bash "$servers_script" start "$servers_dir"

if ((snapshot)); then
  bench_script=$repo_root/scripts/bench_snapshot.py
  log_args=(--command-log "$repo_root/target/bench-snapshot.log")
  output=${output:-$repo_root/target/bench-snapshot-results.md}
else
  bench_script=$repo_root/scripts/bench.py
  log_args=(--daemon-log "$repo_root/target/bench-daemon.log")
  output=${output:-$repo_root/target/bench-results.md}
fi

status=0
"$VENV/bin/python" "$bench_script" \
  --env-file "$servers_dir/env" \
  --binary "$binary" \
  --work-dir "$work_dir" \
  "${log_args[@]}" \
  --output "$output" \
  --repo "$repo_root" \
  --command "$command_line" \
  --script-started "$script_started" \
  ${bench_args[@]+"${bench_args[@]}"} || status=$?
exit "$status"
