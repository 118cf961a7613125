#!/usr/bin/env bash
# Fuzz the HTTPS API of a running daemon with schemathesis, against the
# OpenAPI document that the daemon serves.
#
# Usage: scripts/fuzz-api.sh [--max-examples N] [--seed N] [--report-dir DIR]
#   --max-examples N  Maximum test cases per operation (default 100).
#   --seed N          Seed of the data generation, to repeat a run.
#   --report-dir DIR  Directory of the reports and logs (default
#                     target/fuzz-api); an earlier run's files there are replaced.
#
# The script builds the release binary and starts private PostgreSQL and
# MariaDB servers in a temporary directory with scripts/servers.sh. It
# creates a sample database, runs `setup` and the daemon in manual mode, and
# makes changes so that the sync routes have work and the failed-change log
# has an entry. It installs schemathesis from PyPI into a virtualenv in the
# temporary directory and runs it twice: first every check except
# ignored_auth with valid credentials, then ignored_auth alone, in groups of
# operations small enough for the daemon's limit of failed authentications.
# It exits with status 1 when schemathesis reports a failure or the daemon
# dies. Everything it started is stopped and removed on exit, also on
# failure and on Ctrl-C. Must run as root, because servers.sh does.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly repo_root
readonly servers_script=$repo_root/scripts/servers.sh
# cargo resolves a relative CARGO_TARGET_DIR against its working directory,
# which is repo_root here.
target_dir=${CARGO_TARGET_DIR:-target}
[[ $target_dir == /* ]] || target_dir=$repo_root/$target_dir
readonly binary=$target_dir/release/pg-to-mysql-sync
readonly database=shop
# The version this script was checked with; another may name checks or
# options differently.
readonly SCHEMATHESIS_VERSION=4.32.5
readonly DAEMON_START_TIMEOUT_SECONDS=30
readonly DAEMON_STOP_TIMEOUT_SECONDS=30
# The daemon responds with 429 to every request from an address after 20 failed
# authentications within a 60 s window (src/api/security.rs). The
# ignored_auth probes are such failures, so each group of operations stays
# below the limit and starts after the previous window has ended.
readonly AUTH_FAILURES_PER_GROUP=18
readonly AUTH_WINDOW_WAIT_SECONDS=61

max_examples=100
seed=""
report_dir=$target_dir/fuzz-api
servers_dir=""
work_dir=""
daemon_pid=""
daemon_log=""

# Print the usage text to standard output for --help, or to standard error
# with exit status 2 after an invalid option.
usage() {
  local status=${1:-2}
  if ((status == 0)); then
    sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  else
    sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  fi
  exit "$status"
}

step() {
  printf '\n==> %s\n' "$*"
}

die() {
  printf 'fuzz-api.sh: error: %s\n' "$*" >&2
  exit 1
}

# ---------------------------------------------------------------------------
# Cleanup

# True while the daemon runs. A daemon that exited but was not yet reaped is
# a zombie, which kill -0 still reports as alive, so read its state instead.
daemon_running() {
  local stat
  [[ -n $daemon_pid ]] || return 1
  stat=$(cat "/proc/$daemon_pid/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]]
}

# Send SIGTERM to the daemon and wait for it to exit, with SIGKILL after
# DAEMON_STOP_TIMEOUT_SECONDS. Returns the daemon's exit status.
stop_daemon() {
  local deadline=$((SECONDS + DAEMON_STOP_TIMEOUT_SECONDS))
  local status=0
  kill -TERM "$daemon_pid" 2>/dev/null || true
  while daemon_running; do
    if ((SECONDS >= deadline)); then
      printf 'fuzz-api.sh: error: the daemon (pid %s) did not exit within %s s after SIGTERM; killing it\n' \
        "$daemon_pid" "$DAEMON_STOP_TIMEOUT_SECONDS" >&2
      kill -KILL "$daemon_pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  wait "$daemon_pid" || status=$?
  daemon_pid=""
  return "$status"
}

# EXIT trap: keep the daemon log, then stop the daemon and the servers, which
# also removes the temporary directory with the virtualenv and the secrets.
# shellcheck disable=SC2317 # runs from the EXIT trap
cleanup() {
  local status=$?
  # A second Ctrl-C must not interrupt the shutdown. servers.sh inherits the
  # ignored signals.
  trap '' INT TERM
  if [[ -n $servers_dir ]]; then
    printf '\nfuzz-api.sh: exiting with status %s; stopping the daemon and the servers\n' "$status" >&2
  fi
  if daemon_running; then
    local daemon_status=0
    stop_daemon || daemon_status=$?
    if ((daemon_status != 0)); then
      printf 'fuzz-api.sh: the daemon exited with status %s\n' "$daemon_status" >&2
    fi
  fi
  if [[ -n $daemon_log && -f $daemon_log && -d $report_dir ]]; then
    cp "$daemon_log" "$report_dir/daemon.log" || true
  fi
  if [[ -n $servers_dir ]]; then
    if ! bash "$servers_script" stop "$servers_dir"; then
      printf 'fuzz-api.sh: error: failed to stop the servers in %s\n' "$servers_dir" >&2
      ((status != 0)) || status=1
    fi
  fi
  exit "$status"
}

# ---------------------------------------------------------------------------
# Database clients

# Run psql on database $1 with the remaining arguments, or with SQL from
# standard input. The password comes from a password file, so it never
# appears in a process list.
pg() {
  local db=$1
  shift
  "$pg_bin/psql" -X -q -v ON_ERROR_STOP=1 -d "$db" "$@"
}

# Read the server addresses from servers.sh's env file and write a password
# file for psql. The URLs contain passwords, so they stay in unexported shell
# variables and in files that only root can read.
configure_clients() {
  local env_file=$servers_dir/env
  # shellcheck source=/dev/null
  source "$env_file"
  export -n PGSYNC_TEST_PG_URL PGSYNC_TEST_MYSQL_URL PGSYNC_TEST_PG_BIN PGSYNC_TEST_DIR \
    PGSYNC_TEST_PG_PORT PGSYNC_TEST_MYSQL_PORT PGSYNC_TEST_MYSQL_SOCKET PGSYNC_TEST_PG_SOCKET_DIR
  pg_bin=$PGSYNC_TEST_PG_BIN

  # servers.sh writes postgres://USER:PASSWORD@HOST:PORT/postgres with a hex
  # password, which needs no decoding.
  local pattern='^postgres://([^:@/]+):([^@/]+)@([^:/]+):([0-9]+)/postgres$'
  if [[ ! $PGSYNC_TEST_PG_URL =~ $pattern ]]; then
    die "PGSYNC_TEST_PG_URL in $env_file is not of the form postgres://user:password@host:port/postgres"
  fi
  local pg_user=${BASH_REMATCH[1]} pg_password=${BASH_REMATCH[2]}
  local pg_host=${BASH_REMATCH[3]} pg_port=${BASH_REMATCH[4]}
  if [[ $PGSYNC_TEST_MYSQL_URL != mysql://*/ ]]; then
    die "PGSYNC_TEST_MYSQL_URL in $env_file does not end with /"
  fi

  pg_shop_url="postgres://$pg_user:$pg_password@$pg_host:$pg_port/$database"
  mysql_shop_url="$PGSYNC_TEST_MYSQL_URL$database"

  local pgpass_file=$work_dir/.pgpass
  (umask 077 && printf '%s:%s:*:%s:%s\n' "$pg_host" "$pg_port" "$pg_user" "$pg_password" >"$pgpass_file")
  export PGPASSFILE=$pgpass_file PGHOST=$pg_host PGPORT=$pg_port PGUSER=$pg_user
  export PGCONNECT_TIMEOUT=10
}

# ---------------------------------------------------------------------------
# Sample data

# Two synced tables. MySQL's orders table has a CHECK constraint that
# PostgreSQL's lacks, so that one change is rejected and parked.
create_databases() {
  pg postgres -c "CREATE DATABASE $database"
  pg "$database" <<'SQL'
CREATE TABLE public.customers (
  id bigint PRIMARY KEY,
  email text NOT NULL,
  name text
);
CREATE TABLE public.orders (
  id bigint PRIMARY KEY,
  customer_id bigint,
  total numeric(12,2),
  paid boolean
);
SQL

  mariadb --defaults-file="$servers_dir/mysql-client.cnf" <<SQL
CREATE DATABASE $database CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin;
USE $database;
CREATE TABLE customers (
  id BIGINT PRIMARY KEY,
  email LONGTEXT NOT NULL,
  name LONGTEXT
) ENGINE=InnoDB;
CREATE TABLE orders (
  id BIGINT PRIMARY KEY,
  customer_id BIGINT,
  total DECIMAL(12,2) CHECK (total >= 0),
  paid BOOLEAN
) ENGINE=InnoDB;
SQL
}

# Changes applied by the first sync, one of which MySQL rejects.
make_first_changes() {
  pg "$database" <<'SQL'
INSERT INTO customers VALUES (1, 'ada@example.com', 'Ada'), (2, 'linus@example.com', 'Linus');
INSERT INTO orders VALUES (1001, 1, 21.30, false);
-- MySQL's CHECK (total >= 0) rejects this row, so it is parked.
INSERT INTO orders VALUES (1002, 2, -5.00, false);
SQL
}

# Changes left in the journal for the fuzzed sync routes. The update of the
# parked row waits behind it in the failed-change log.
make_backlog() {
  pg "$database" <<'SQL'
UPDATE customers SET name = 'Ada King' WHERE id = 1;
INSERT INTO customers VALUES (3, 'zoe@example.com', 'Zoë');
UPDATE orders SET paid = true WHERE id = 1002;
DELETE FROM orders WHERE id = 1001;
SQL
}

# ---------------------------------------------------------------------------
# Daemon

# Print the first TCP port from 3000 up on which nothing listens on 127.0.0.1.
free_port() {
  local port
  for ((port = 3000; port < 3100; port++)); do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  die "no free TCP port between 3000 and 3099 on 127.0.0.1 for the API"
}

# Run the binary in the work directory, where .env is.
cli() {
  (cd "$work_dir" && "$binary" "$@")
}

show_daemon_log_tail() {
  printf -- '--- last lines of %s ---\n' "$daemon_log"
  tail -n 20 "$daemon_log"
}

write_env_file() {
  (
    umask 077
    {
      printf 'PG_DATABASE_URL=%s\n' "$pg_shop_url"
      printf 'MYSQL_DATABASE_URL=%s\n' "$mysql_shop_url"
      printf 'SYNC_TABLES=public.customers,public.orders\n'
      printf 'MODE=manual\nFAILED_CHANGE_POLICY=park\n'
      printf 'BIND_ADDRESS=127.0.0.1\nPORT=%s\n' "$api_port"
      printf 'JWT_TTL=3600\n'
      printf 'JWT_SECRET=%s\n' "$(head -c 48 /dev/urandom | base64 | tr -d '\n')"
      printf 'API_KEY=%s\n' "$(head -c 32 /dev/urandom | base64 | tr -d '\n')"
    } >"$work_dir/.env"
  )
}

start_daemon() {
  daemon_log=$work_dir/daemon.log
  # setsid keeps a Ctrl-C in the terminal from reaching the daemon, so that
  # the EXIT trap stops it with SIGTERM and gets its exit status.
  (cd "$work_dir" && RUST_LOG=info exec setsid "$binary" run \
    </dev/null >>"$daemon_log" 2>&1) &
  daemon_pid=$!

  local deadline=$((SECONDS + DAEMON_START_TIMEOUT_SECONDS))
  until [[ -f $work_dir/datalog/tls/ca.pem ]] &&
    curl -fsS --cacert "$work_dir/datalog/tls/ca.pem" -o /dev/null "$api_url/health" 2>/dev/null; do
    if ! daemon_running; then
      show_daemon_log_tail
      die "the daemon exited during start-up"
    fi
    if ((SECONDS >= deadline)); then
      show_daemon_log_tail
      die "the API did not respond to GET /health within $DAEMON_START_TIMEOUT_SECONDS s"
    fi
    sleep 0.2
  done
  echo "daemon running, pid $daemon_pid, API on $api_url, log in $daemon_log"
}

# ---------------------------------------------------------------------------
# schemathesis

install_schemathesis() {
  python3 -m venv "$work_dir/venv" || die "python3 -m venv failed; install python3-venv"
  "$work_dir/venv/bin/pip" install --quiet --disable-pip-version-check \
    "schemathesis==$SCHEMATHESIS_VERSION" ||
    die "pip install schemathesis==$SCHEMATHESIS_VERSION failed; is PyPI reachable?"
  "$work_dir/venv/bin/st" --version
}

# Write the schemathesis configuration with the credentials. It replaces
# `-H`, which would show the API key and the JWT in the process list, with a
# file of mode 0600. schemathesis sends these headers on every request and
# when it loads the document.
write_schemathesis_config() {
  local api_key token
  api_key=$(sed -n 's/^API_KEY=//p' "$work_dir/.env")
  token=$(cli token)
  [[ -n $token ]] || die "pg-to-mysql-sync token printed no JWT"
  (
    umask 077
    cat >"$work_dir/schemathesis.toml" <<EOF
headers = { "x-api-key" = "$api_key", "Authorization" = "Bearer $token" }
EOF
  )
}

# Park one more change and write the configuration of pass 2, which sends
# its id to DELETE /sync/failed/{id}. ignored_auth probes an operation only
# after a 2xx response, and a generated id hardly ever names a parked change.
write_auth_pass_config() {
  cli mode manual >/dev/null
  pg "$database" -c "INSERT INTO orders VALUES (1003, 1, -1.00, false)"
  sleep 1
  cli sync >/dev/null
  local id
  id=$(cli failed list | jq '[.failed[] | select(.key == [1003]) | .id] | max')
  [[ $id =~ ^[0-9]+$ ]] || die "the change to orders 1003 was not parked"
  echo "DELETE /sync/failed/{id} gets id $id, a parked change"
  (
    umask 077
    cat "$work_dir/schemathesis.toml" - >"$work_dir/schemathesis-auth.toml" <<EOF

[[operations]]
include-operation-id = "deleteFailed"
parameters = { id = $id }
EOF
  )
}

# Print the operationIds of the document that need credentials, in groups
# of at most AUTH_FAILURES_PER_GROUP failed authentications, one group a
# line, comma-separated. The ignored_auth check sends one request without
# credentials per operation and one per security scheme with an invalid
# value, and the daemon counts each as a failure.
auth_probe_groups() {
  "$work_dir/venv/bin/python" - "$repo_root/docs/openapi.json" "$AUTH_FAILURES_PER_GROUP" <<'PY'
import json
import sys

document = json.load(open(sys.argv[1]))
limit = int(sys.argv[2])
groups, group, cost = [], [], 0
for methods in document["paths"].values():
    for operation in methods.values():
        security = operation.get("security", document.get("security", []))
        schemes = max((len(requirement) for requirement in security), default=0)
        if schemes == 0:
            continue
        probes = 1 + schemes
        if group and cost + probes > limit:
            groups.append(group)
            group, cost = [], 0
        group.append(operation["operationId"])
        cost += probes
if group:
    groups.append(group)
for group in groups:
    print(",".join(group))
PY
}

# Run schemathesis with the configuration file $2 and the common options,
# then the remaining arguments. Output goes to the terminal and to the log
# file named after $1.
run_schemathesis() {
  local name=$1 config_file=$2
  shift 2
  local -a command=(
    "$work_dir/venv/bin/st" --config-file "$config_file" run "$api_url/openapi.json"
    --tls-verify "$work_dir/datalog/tls/ca.pem"
    --max-examples "$max_examples"
    --request-timeout 60
    --rate-limit auto
    --generation-with-security-parameters false
    --report "junit,ndjson" --report-dir "$report_dir/$name"
    --no-color
  )
  if [[ -n $seed ]]; then
    command+=(--seed "$seed")
  fi
  command+=("$@")
  printf '%s\n' "${command[*]#"$work_dir"/venv/bin/}" | sed "s|$work_dir|\$WORK|g"
  # schemathesis keeps found examples and crashes in .schemathesis/ in its
  # working directory, which goes with the temporary directory.
  (cd "$work_dir" && "${command[@]}") 2>&1 | tee "$report_dir/$name.log"
  return "${PIPESTATUS[0]}"
}

# Print the number of failed authentications in the daemon log: requests to
# protected routes and to POST /auth/token.
count_auth_failures() {
  grep -c -e 'authentication failed' -e 'token request with a missing or unknown API key' "$daemon_log" || true
}

# Fail if a report contains the API key or the JWT. schemathesis filters
# the x-api-key and Authorization headers; this checks that it did.
check_reports_for_secrets() {
  local api_key token
  api_key=$(sed -n 's/^API_KEY=//p' "$work_dir/.env")
  token=$(sed -n 's/.*Bearer \([^"]*\)".*/\1/p' "$work_dir/schemathesis.toml")
  if grep -rqF -e "$api_key" -e "$token" "$report_dir"; then
    die "a report in $report_dir contains the API key or the JWT; delete the directory"
  fi
}

# ---------------------------------------------------------------------------
# Main

main() {
  while (($# > 0)); do
    case $1 in
      --max-examples)
        [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || die "--max-examples needs a positive whole number"
        max_examples=$2
        shift
        ;;
      --seed)
        [[ ${2:-} =~ ^[0-9]+$ ]] || die "--seed needs a whole number"
        seed=$2
        shift
        ;;
      --report-dir)
        [[ -n ${2:-} ]] || die "--report-dir needs a directory"
        report_dir=$2
        shift
        ;;
      -h | --help) usage 0 ;;
      *)
        printf 'fuzz-api.sh: error: unknown option %s\n' "$1" >&2
        usage 2
        ;;
    esac
    shift
  done
  ((EUID == 0)) || die "must run as root, because scripts/servers.sh installs packages and starts servers as other users"
  command -v curl >/dev/null 2>&1 || die "curl not found; install it with apt-get install curl"
  command -v python3 >/dev/null 2>&1 || die "python3 not found; install python3 and python3-venv"
  command -v jq >/dev/null 2>&1 || die "jq not found; install it with apt-get install jq"

  local started_at=$SECONDS
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  # Build first, so that a compile error fails before any server starts.
  step "Building the release binary (a few minutes the first time)"
  if ! command -v cargo >/dev/null 2>&1 && [[ -x ${HOME:-/root}/.cargo/bin/cargo ]]; then
    PATH=${HOME:-/root}/.cargo/bin:$PATH
  fi
  command -v cargo >/dev/null 2>&1 || die "cargo not found on PATH or in ~/.cargo/bin; install Rust from https://rustup.rs"
  (cd "$repo_root" && cargo build --release --locked)

  mkdir -p "$report_dir"
  report_dir=$(cd "$report_dir" && pwd)
  # Only the names this script writes, so that a mistyped DIR loses nothing else.
  rm -rf -- "$report_dir"/checks "$report_dir"/auth-* "$report_dir"/*.log

  step "Starting private PostgreSQL and MariaDB servers on 127.0.0.1"
  servers_dir=$(mktemp -d "${TMPDIR:-/tmp}/pgsync-fuzz.XXXXXX")
  bash "$servers_script" start "$servers_dir"
  # servers.sh makes the directory world-readable, and .env contains secrets.
  work_dir=$servers_dir/work
  mkdir -m 0700 "$work_dir"
  configure_clients

  step "Creating the database '$database' with the tables customers and orders on both servers"
  create_databases

  api_port=$(free_port)
  api_url=https://127.0.0.1:$api_port
  step "Writing $work_dir/.env (not shown: it contains passwords and the API secrets)"
  write_env_file
  echo "MODE=manual, FAILED_CHANGE_POLICY=park, BIND_ADDRESS=127.0.0.1, PORT=$api_port, JWT_TTL=3600"

  step "pg-to-mysql-sync setup"
  cli setup

  step "Starting the daemon"
  start_daemon

  step "Changing rows in PostgreSQL; one change breaks a CHECK constraint in MySQL"
  make_first_changes
  sleep 1
  cli sync
  make_backlog
  sleep 1
  echo "failed-change log:"
  cli failed list

  step "Installing schemathesis $SCHEMATHESIS_VERSION from PyPI into $work_dir/venv"
  install_schemathesis
  write_schemathesis_config

  local status=0
  step "schemathesis pass 1: every check except ignored_auth, $max_examples examples per operation and phase"
  run_schemathesis checks "$work_dir/schemathesis.toml" --checks all --exclude-checks ignored_auth --workers 2 || status=1

  echo "failed authentications so far: $(count_auth_failures)"

  step "Preparing pass 2: the ignored_auth check"
  write_auth_pass_config
  local -a groups
  mapfile -t groups < <(auth_probe_groups)
  local index
  for index in "${!groups[@]}"; do
    step "schemathesis pass 2, group $((index + 1)) of ${#groups[@]}: ignored_auth on ${groups[index]}"
    echo "waiting $AUTH_WINDOW_WAIT_SECONDS s, so that earlier failed authentications no longer count"
    sleep "$AUTH_WINDOW_WAIT_SECONDS"
    local -a filters=()
    local operation_id
    IFS=, read -r -a operation_ids <<<"${groups[index]}"
    for operation_id in "${operation_ids[@]}"; do
      filters+=(--include-operation-id "$operation_id")
    done
    run_schemathesis "auth-$((index + 1))" "$work_dir/schemathesis-auth.toml" --checks ignored_auth --mode positive \
      --phases examples,fuzzing --workers 1 "${filters[@]}" || status=1
  done

  step "Checking the daemon after the run"
  if ! daemon_running; then
    show_daemon_log_tail
    die "the daemon died during the run"
  fi
  curl -fsS --cacert "$work_dir/datalog/tls/ca.pem" "$api_url/health"
  echo
  echo "failed authentications logged by the daemon: $(count_auth_failures)"
  check_reports_for_secrets

  step "Done in $((SECONDS - started_at)) s"
  echo "reports and logs: $report_dir (the daemon log is copied there on exit)"
  if ((status != 0)); then
    die "schemathesis reported failures; see the logs in $report_dir"
  fi
  echo "schemathesis reported no failures"
}

main "$@"
