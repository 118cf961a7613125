#!/usr/bin/env bash
# Show pg-to-mysql-sync at work on throwaway servers, from a clean clone.
#
# Usage: scripts/quickstart.sh [--keep]
#   --keep   Leave the servers and the daemon running at the end, and print
#            how to connect to them and how to stop them.
#
# The script builds the release binary and starts private PostgreSQL and
# MariaDB servers in a temporary directory with scripts/servers.sh, which
# installs the Debian packages if they are missing. It then creates a sample
# database `shop` on both, runs `setup` and the daemon, which copies the rows that existed before, changes rows in
# PostgreSQL and waits until MySQL has the same rows. Without --keep,
# everything it started is stopped and removed on exit, also on failure and
# on Ctrl-C. Must run as root, because servers.sh does.
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
readonly tables=(customers orders order_lines)
readonly SYNC_TIMEOUT_SECONDS=30
readonly DAEMON_START_TIMEOUT_SECONDS=30
readonly DAEMON_STOP_TIMEOUT_SECONDS=30

keep=0
servers_dir=""
work_dir=""
daemon_pid=""
daemon_log=""

# Print the usage text to standard output for --help, or to standard error
# with exit status 2 after an invalid option.
usage() {
  local status=${1:-2}
  if ((status == 0)); then
    sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  else
    sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  fi
  exit "$status"
}

step() {
  printf '\n==> %s\n' "$*"
}

die() {
  printf 'quickstart.sh: error: %s\n' "$*" >&2
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
      printf 'quickstart.sh: error: the daemon (pid %s) did not exit within %s s after SIGTERM; killing it\n' \
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

# EXIT trap: stop the daemon and the servers unless --keep finished its run.
# shellcheck disable=SC2317 # runs from the EXIT trap
cleanup() {
  local status=$?
  # A second Ctrl-C must not interrupt the shutdown. servers.sh inherits the
  # ignored signals.
  trap '' INT TERM
  if ((keep && status == 0)); then
    exit 0
  fi
  if [[ -n $servers_dir ]]; then
    printf '\nquickstart.sh: exiting with status %s; stopping the daemon and the servers\n' "$status" >&2
  fi
  if daemon_running; then
    local daemon_status=0
    stop_daemon || daemon_status=$?
    if ((daemon_status != 0)); then
      printf 'quickstart.sh: the daemon exited with status %s\n' "$daemon_status" >&2
    fi
  fi
  if [[ -n $servers_dir ]]; then
    if ! bash "$servers_script" stop "$servers_dir"; then
      printf 'quickstart.sh: error: failed to stop the servers in %s\n' "$servers_dir" >&2
      ((status != 0)) || status=1
    fi
  fi
  exit "$status"
}

# ---------------------------------------------------------------------------
# Database clients

# Run psql on database $1 with the remaining arguments, or with SQL from
# standard input. The connection comes from the PG* variables that
# configure_clients sets. The password comes from a password file, so it
# never appears in a process list.
pg() {
  local db=$1
  shift
  "$pg_bin/psql" -X -q -v ON_ERROR_STOP=1 -d "$db" "$@"
}

mysql() {
  mariadb --defaults-file="$servers_dir/mysql-client.cnf" "$@"
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
  pg_host=${BASH_REMATCH[3]}
  pg_port=${BASH_REMATCH[4]}
  if [[ $PGSYNC_TEST_MYSQL_URL != mysql://*/ ]]; then
    die "PGSYNC_TEST_MYSQL_URL in $env_file does not end with /"
  fi

  pg_shop_url="postgres://$pg_user:$pg_password@$pg_host:$pg_port/$database"
  mysql_shop_url="$PGSYNC_TEST_MYSQL_URL$database"

  pgpass_file=$work_dir/.pgpass
  (umask 077 && printf '%s:%s:*:%s:%s\n' "$pg_host" "$pg_port" "$pg_user" "$pg_password" >"$pgpass_file")
  export PGPASSFILE=$pgpass_file PGHOST=$pg_host PGPORT=$pg_port PGUSER=$pg_user
  export PGCONNECT_TIMEOUT=10
  # psql then prints timestamptz values in UTC, as MySQL stores them.
  export PGTZ=UTC
}

# ---------------------------------------------------------------------------
# Sample data

create_databases() {
  pg postgres -c "CREATE DATABASE $database"
  pg "$database" <<'SQL'
CREATE TABLE public.customers (
  id bigint PRIMARY KEY,
  email text NOT NULL,
  name text,
  created_at timestamptz DEFAULT now()
);
CREATE TABLE public.orders (
  id bigint PRIMARY KEY,
  customer_id bigint,
  total numeric(12,2),
  paid boolean,
  placed_at timestamptz,
  notes jsonb
);
CREATE TABLE public.order_lines (
  order_id bigint,
  line int,
  sku varchar(32),
  qty int,
  price numeric(10,2),
  PRIMARY KEY (order_id, line)
);
SQL

  # A table with rows from before the sync starts; the daemon's first
  # snapshot copies them.
  pg "$database" <<'SQL'
CREATE TABLE public.products (
  id bigint PRIMARY KEY,
  sku varchar(32) NOT NULL,
  name text,
  price numeric(10,2),
  updated_at timestamptz
);
INSERT INTO products
SELECT g, 'SKU-' || lpad(g::text, 6, '0'), 'product ' || g, (g % 1000) / 10.0 + 0.99,
       timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute'
FROM generate_series(1, 50000) g;
SQL

  # The tables themselves are created by `setup --create-tables` from the
  # PostgreSQL definitions.
  mysql -e "CREATE DATABASE $database CHARACTER SET utf8mb4"
}

# Each statement outside BEGIN ... COMMIT is its own transaction. psql echoes
# the input, comments included, so the output shows what was run.
make_changes() {
  pg "$database" --echo-all <<'SQL'
-- INSERTs, one row and several rows per statement
INSERT INTO customers (id, email, name) VALUES (1, 'ada@example.com', 'Ada Lovelace');
INSERT INTO customers (id, email, name, created_at) VALUES
  (2, 'linus@example.com', 'Linus', '2024-05-01 09:00:00+02'),
  (3, 'zoe@example.com', 'Zoë O''Brien', '2024-05-02 18:30:00.123456-04');
INSERT INTO orders VALUES
  (1001, 1, 21.30, false, '2024-05-03 10:15:00+02', '{"gift": true, "note": "leave at the door"}');
INSERT INTO order_lines VALUES (1001, 1, 'BOOK-42', 1, 19.90), (1001, 2, 'PEN-7', 1, 1.40);

-- UPDATEs, one of them changing a primary key
UPDATE orders SET paid = true WHERE id = 1001;
UPDATE customers SET id = 30 WHERE id = 3;

-- DELETE
DELETE FROM order_lines WHERE order_id = 1001 AND line = 2;
UPDATE orders SET total = 19.90 WHERE id = 1001;

-- one transaction that changes several rows in two tables
BEGIN;
INSERT INTO orders (id, customer_id, paid, placed_at) VALUES (1002, 30, false, now());
INSERT INTO order_lines VALUES (1002, 1, 'MUG-1', 2, 8.00), (1002, 2, 'TEA-3', 1, 4.50), (1002, 3, 'SPOON', 2, 1.00);
UPDATE orders SET total = (SELECT sum(qty * price) FROM order_lines WHERE order_id = 1002) WHERE id = 1002;
COMMIT;
SQL
}

# ---------------------------------------------------------------------------
# Comparison

# Print a SELECT of table $1 whose output reads the same on both servers:
# booleans as 0/1, times in UTC with microseconds, NULL as the word NULL.
pg_canonical_select() {
  case $1 in
    customers) echo "SELECT id, email, name, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') FROM customers ORDER BY id" ;;
    orders) echo "SELECT id, customer_id, total, paid::int, to_char(placed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), notes FROM orders ORDER BY id" ;;
    order_lines) echo "SELECT order_id, line, sku, qty, price FROM order_lines ORDER BY order_id, line" ;;
  esac
}

# NOTE: `notes` is compared as text. That works on MariaDB, where JSON is
# LONGTEXT and keeps the text that jsonb printed. MySQL 8 stores JSON in a
# binary form and prints it in its own layout.
mysql_canonical_select() {
  case $1 in
    customers) echo "SELECT id, email, name, DATE_FORMAT(created_at, '%Y-%m-%d %H:%i:%s.%f') FROM customers ORDER BY id" ;;
    orders) echo "SELECT id, customer_id, total, paid, DATE_FORMAT(placed_at, '%Y-%m-%d %H:%i:%s.%f'), notes FROM orders ORDER BY id" ;;
    order_lines) echo "SELECT order_id, line, sku, qty, price FROM order_lines ORDER BY order_id, line" ;;
  esac
}

# Print table $1 from PostgreSQL as tab-separated lines.
pg_canonical_rows() {
  pg "$database" -A -t -F $'\t' -P null=NULL -c "$(pg_canonical_select "$1")"
}

# Print table $1 from MySQL as tab-separated lines. The sample data has no
# tabs, newlines or backslashes, which `mariadb --batch` would escape.
mysql_canonical_rows() {
  mysql --batch --skip-column-names "$database" -e "$(mysql_canonical_select "$1")"
}

tables_match() {
  local table
  for table in "${tables[@]}"; do
    if [[ $(pg_canonical_rows "$table") != "$(mysql_canonical_rows "$table")" ]]; then
      return 1
    fi
  done
}

show_daemon_log_tail() {
  printf -- '--- last lines of %s ---\n' "$daemon_log"
  tail -n 20 "$daemon_log"
}

# Poll until every table has the same rows on both servers. On timeout, print
# the differences and the daemon log, and fail.
wait_for_sync() {
  local started=$EPOCHREALTIME
  local deadline=$((SECONDS + SYNC_TIMEOUT_SECONDS))
  until tables_match; do
    if ! daemon_running; then
      show_daemon_log_tail
      die "the daemon exited before MySQL matched PostgreSQL"
    fi
    if ((SECONDS >= deadline)); then
      local table
      for table in "${tables[@]}"; do
        printf -- '--- %s: PostgreSQL (<) and MySQL (>) ---\n' "$table"
        diff <(pg_canonical_rows "$table") <(mysql_canonical_rows "$table") || true
      done
      show_daemon_log_tail
      die "MySQL did not match PostgreSQL within $SYNC_TIMEOUT_SECONDS s; see the differences and the log above"
    fi
    sleep 0.2
  done
  local elapsed
  elapsed=$(awk -v start="$started" -v end="$EPOCHREALTIME" 'BEGIN { printf "%.1f", end - start }')
  echo "MySQL matched PostgreSQL within ${elapsed} s of the last commit:"
  local table count
  for table in "${tables[@]}"; do
    count=$(pg "$database" -A -t -c "SELECT count(*) FROM $table")
    printf '  %-12s %s rows on both sides, same values\n' "$table" "$count"
  done
}

# Poll the daemon's status until the snapshot of the products table is done.
wait_for_snapshot() {
  local deadline=$((SECONDS + SYNC_TIMEOUT_SECONDS))
  # `status` prints the fields of each snapshot in alphabetical order.
  until cli status | tr -d ' \n' | grep -q '"state":"done","table":"public.products"'; do
    if ! daemon_running; then
      show_daemon_log_tail
      die "the daemon exited before the snapshot finished"
    fi
    if ((SECONDS >= deadline)); then
      show_daemon_log_tail
      die "the snapshot did not finish within $SYNC_TIMEOUT_SECONDS s"
    fi
    sleep 0.5
  done
  echo "$(mysql --batch --skip-column-names "$database" -e 'SELECT count(*) FROM products') products in MySQL; the snapshots in the daemon's status:"
  local entry
  cli status | tr -d ' \n' | grep -o '"snapshots":\[[^]]*\]' | grep -o '{[^}]*}' |
    while read -r entry; do
      field() { grep -o "\"$1\":[^,}]*" <<<"$entry" | cut -d: -f2 | tr -d '"'; }
      echo "  $(field table): $(field state), $(field rows_copied) rows copied"
    done
}

show_rows() {
  local table
  for table in "${tables[@]}"; do
    printf '\n--- PostgreSQL %s.public.%s ---\n' "$database" "$table"
    pg "$database" -P footer=off -c "SELECT * FROM $table ORDER BY 1, 2"
    printf -- '--- MySQL %s.%s ---\n' "$database" "$table"
    mysql --table "$database" -e "SELECT * FROM $table ORDER BY 1, 2"
  done
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

start_daemon() {
  daemon_log=$work_dir/daemon.log
  # setsid keeps a Ctrl-C in the terminal from reaching the daemon. The EXIT
  # trap then stops it with SIGTERM and gets its exit status, and a daemon
  # left running by --keep does not depend on this terminal. DEBUG adds a
  # log line per journaled and per applied batch, without row values.
  (cd "$work_dir" && RUST_LOG=pg_to_mysql_sync=debug exec setsid "$binary" run \
    </dev/null >>"$daemon_log" 2>&1) &
  daemon_pid=$!

  local deadline=$((SECONDS + DAEMON_START_TIMEOUT_SECONDS))
  until grep -q 'daemon started' "$daemon_log" 2>/dev/null; do
    if ! daemon_running; then
      show_daemon_log_tail
      die "the daemon exited during start-up"
    fi
    if ((SECONDS >= deadline)); then
      show_daemon_log_tail
      die "the daemon did not log 'daemon started' within $DAEMON_START_TIMEOUT_SECONDS s"
    fi
    sleep 0.2
  done
  echo "daemon running, pid $daemon_pid, log in $daemon_log"
}

# ---------------------------------------------------------------------------
# Main

main() {
  while (($# > 0)); do
    case $1 in
      --keep) keep=1 ;;
      -h | --help) usage 0 ;;
      *)
        printf 'quickstart.sh: error: unknown option %s\n' "$1" >&2
        usage 2
        ;;
    esac
    shift
  done
  ((EUID == 0)) || die "must run as root, because scripts/servers.sh installs packages and starts servers as other users"

  local started_at=$SECONDS
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  # Build first, so that a compile error fails before any server starts.
  step "Building the release binary (5 to 20 minutes the first time)"
  if ! command -v cargo >/dev/null 2>&1 && [[ -x ${HOME:-/root}/.cargo/bin/cargo ]]; then
    PATH=${HOME:-/root}/.cargo/bin:$PATH
  fi
  command -v cargo >/dev/null 2>&1 || die "cargo not found on PATH or in ~/.cargo/bin; install Rust from https://rustup.rs"
  (cd "$repo_root" && cargo build --release --locked)

  step "Starting private PostgreSQL and MariaDB servers on 127.0.0.1"
  servers_dir=$(mktemp -d "${TMPDIR:-/tmp}/pgsync-quickstart.XXXXXX")
  bash "$servers_script" start "$servers_dir"
  # servers.sh makes the directory world-readable, and .env contains passwords.
  work_dir=$servers_dir/work
  mkdir -m 0700 "$work_dir"
  configure_clients

  step "Creating the database '$database' with three tables in PostgreSQL and an empty one in MySQL"
  create_databases
  echo "PostgreSQL: public.customers, public.orders, public.order_lines, and public.products with 50,000 rows"
  echo "MySQL:      an empty database; setup --create-tables creates the tables below"

  api_port=$(free_port)
  step "Writing $work_dir/.env (not shown: the URLs contain passwords)"
  (
    umask 077
    {
      printf 'PG_DATABASE_URL=%s\n' "$pg_shop_url"
      printf 'MYSQL_DATABASE_URL=%s\n' "$mysql_shop_url"
      printf 'SYNC_TABLES=public.customers,public.orders,public.order_lines,public.products\n'
      printf 'BIND_ADDRESS=127.0.0.1\nPORT=%s\n' "$api_port"
      printf 'JWT_SECRET=%s\n' "$(head -c 48 /dev/urandom | base64 | tr -d '\n')"
      printf 'API_KEY=%s\n' "$(head -c 32 /dev/urandom | base64 | tr -d '\n')"
    } >"$work_dir/.env"
  )
  echo "keys: PG_DATABASE_URL, MYSQL_DATABASE_URL, SYNC_TABLES=public.customers,public.orders,public.order_lines,public.products"
  echo "      BIND_ADDRESS=127.0.0.1, PORT=$api_port, and a random JWT_SECRET and API_KEY for the HTTPS API"
  echo "DATA_DIR is not set, so the journal goes to ./datalog in $work_dir"

  step "pg-to-mysql-sync setup --create-tables"
  echo "(it checks both sides, creates the MySQL tables from the PostgreSQL definitions and installs the capture triggers)"
  (cd "$work_dir" && "$binary" setup --create-tables)

  step "Starting the daemon: RUST_LOG=pg_to_mysql_sync=debug pg-to-mysql-sync run"
  start_daemon

  step "The daemon copies the rows that existed before setup (a snapshot)"
  wait_for_snapshot

  step "Changing rows in PostgreSQL"
  make_changes

  step "Waiting up to $SYNC_TIMEOUT_SECONDS s until MySQL has the same rows"
  wait_for_sync

  step "The daemon's status through its HTTPS API: pg-to-mysql-sync status"
  echo "(the command reads .env, trusts the certificate the daemon generated in datalog/tls, and sends API_KEY with a JWT)"
  cli status

  step "Manual mode: pg-to-mysql-sync mode manual, then a change waits in the journal"
  cli mode manual
  pg "$database" --echo-all -c "UPDATE customers SET name = 'Ada King' WHERE id = 1"
  sleep 1
  echo "backlog: $(cli status | grep -o '"backlog_records": [0-9]*')"
  echo "MySQL still has: $(mysql --batch --skip-column-names "$database" -e 'SELECT name FROM customers WHERE id = 1')"

  step "pg-to-mysql-sync sync (POST /sync) applies it now"
  cli sync
  wait_for_sync
  cli mode automatic

  step "pg-to-mysql-sync verify compares every row on both sides"
  cli verify

  step "Drift: a row changed directly in MySQL, which verify finds"
  mysql --verbose "$database" -e "UPDATE products SET price = price + 1 WHERE id = 42"
  if cli verify; then
    die "verify did not find the row changed in MySQL"
  else
    echo "verify exited with status $? because the tables differ"
  fi

  step "pg-to-mysql-sync verify --repair copies the row again from PostgreSQL"
  cli verify --repair
  cli verify

  step "The rows on both sides"
  echo "(PostgreSQL prints timestamptz in UTC here and booleans as t/f; MySQL stores DATETIME(6) in UTC and BOOLEAN as 1/0)"
  show_rows

  step "The journal in $work_dir/datalog"
  ls -l "$work_dir/datalog"
  local segments=("$work_dir"/datalog/segment-*.jsonl)
  echo
  echo "head -n 2 ${segments[0]##*/} (the segment header, then the first change):"
  head -n 2 "${segments[0]}"
  echo
  echo "The last applied sequence number, stored in MySQL in the same transaction as the changes:"
  mysql --table "$database" -e 'SELECT * FROM pg_to_mysql_sync_checkpoint'

  step "Last lines of the daemon log"
  tail -n 12 "$daemon_log"

  if ((keep)); then
    step "Left running (--keep)"
    cat <<EOF
PostgreSQL:  PGPASSFILE=$pgpass_file psql -h $pg_host -p $pg_port -U postgres $database
MySQL:       mariadb --defaults-file=$servers_dir/mysql-client.cnf $database
Daemon log:  tail -f $daemon_log
Stop:        kill -TERM $daemon_pid; $servers_script stop $servers_dir
EOF
    return 0
  fi

  step "Stopping the daemon with SIGTERM"
  local daemon_status=0
  stop_daemon || daemon_status=$?
  if ((daemon_status != 0)); then
    show_daemon_log_tail
    die "the daemon exited with status $daemon_status after SIGTERM; expected 0"
  fi
  echo "the daemon exited with status 0"
  tail -n 4 "$daemon_log"

  step "Stopping the servers"
  # servers_dir stays set until the stop succeeds, so that the EXIT trap
  # stops them again if a Ctrl-C interrupts servers.sh.
  bash "$servers_script" stop "$servers_dir"
  servers_dir=""

  step "Done in $((SECONDS - started_at)) s"
  cat <<'EOF'
You saw setup install capture triggers in PostgreSQL, the daemon copy the
50,000 rows that existed before, then carry INSERTs, UPDATEs (one of them
changing a primary key), a DELETE and a multi-row transaction to MySQL, and
the journal of plain JSON lines in between. The command line asked the
daemon's HTTPS API for its status, switched it to manual mode and applied a
waiting change on request. Verify compared every row, found a row changed
behind the daemon's back, and repaired it. The daemon stopped cleanly on
SIGTERM, and the servers and files are gone.

Next: README.md shows how to configure your own databases, the supported
types and how to operate the daemon. Run scripts/quickstart.sh --keep to
look around in the servers afterwards.
EOF
}

main "$@"
