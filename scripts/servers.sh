#!/usr/bin/env bash
# Install, start and stop private PostgreSQL and MariaDB servers for the tests.
#
# Usage: scripts/servers.sh COMMAND DIR
#   start DIR        Install missing Debian packages, initialize both servers
#                    in DIR (created if missing), start them and write DIR/env.
#                    Run it again on the same DIR to start whatever is stopped.
#   stop DIR         Stop both servers and remove DIR.
#   stop-pg DIR      Stop only PostgreSQL (fast shutdown), keeping its data.
#   start-pg DIR     Start PostgreSQL again on the same port and password.
#   stop-mysql DIR   Stop only MariaDB (clean shutdown), keeping its data.
#   start-mysql DIR  Start MariaDB again on the same port and password.
#
# Both servers listen only on 127.0.0.1, on ports picked outside the kernel's
# ephemeral range so client sockets cannot take them while a server is down.
# `source DIR/env` exports the PGSYNC_TEST_* connection variables.
# `mariadb --defaults-file=DIR/mysql-client.cnf` connects as the tests do.
# No system service is started, stopped or reconfigured. Must run as root
# because it uses apt-get, chown and runuser.
set -euo pipefail

# mariadbd and runuser live in /usr/sbin, which a minimal PATH may lack.
PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin

readonly MARKER_NAME=.pgsync-test-servers
readonly START_TIMEOUT_SECONDS=60
readonly STOP_TIMEOUT_SECONDS=60
readonly POLICY_RC_D=/usr/sbin/policy-rc.d
# Ports tried per server at first start, in case another process binds the
# chosen port between the check and the server's bind.
readonly PORT_ATTEMPTS=3

log() {
  printf 'servers.sh: %s\n' "$*" >&2
}

die() {
  log "error: $*"
  exit 1
}

usage() {
  sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

have_command() {
  command -v "$1" >/dev/null 2>&1
}

# Print the last lines of a log file to stderr, for failure reports.
show_log_tail() {
  local file=$1
  if [[ -s $file ]]; then
    log "last lines of $file:"
    tail -n 25 "$file" >&2
  fi
}

random_password() {
  # Hex keeps the password safe inside URLs and option files.
  od -An -N16 -tx1 /dev/urandom | tr -d ' \n'
}

# Print a free TCP port on 127.0.0.1 that differs from the ports given as
# arguments. Ports come from 10000 up to the start of the ephemeral range
# (net.ipv4.ip_local_port_range), so the kernel never assigns them to
# outgoing client sockets.
# Perl is used because perl-base is an Essential package on Debian.
find_free_port() {
  perl -MIO::Socket::INET -e '
    my $low = 32768;
    if (open(my $fh, "<", "/proc/sys/net/ipv4/ip_local_port_range")) {
      my ($start) = split " ", scalar <$fh>;
      $low = $start if $start && $start > 11000;
    }
    my %excluded = map { $_ => 1 } @ARGV;
    for (1 .. 500) {
      my $port = 10000 + int(rand($low - 10000));
      next if $excluded{$port};
      my $socket = IO::Socket::INET->new(
        LocalAddr => "127.0.0.1", LocalPort => $port, Proto => "tcp",
        Listen => 1, ReuseAddr => 0);
      if ($socket) { close($socket); print $port; exit 0; }
    }
    exit 1;
  ' "$@" || die "no free TCP port found on 127.0.0.1"
}

# True if something accepts TCP connections on 127.0.0.1:PORT.
port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Wait until process PID has exited. Returns 1 after STOP_TIMEOUT_SECONDS.
wait_for_exit() {
  local pid=$1
  local deadline=$((SECONDS + STOP_TIMEOUT_SECONDS))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      return 1
    fi
    sleep 0.2
  done
}

# Print the size of FILE in bytes, 0 if it does not exist.
file_size() {
  if [[ -f $1 ]]; then
    stat -c %s "$1"
  else
    echo 0
  fi
}

# True if FILE gained an "Address already in use" line after byte OFFSET.
log_has_bind_error() {
  local file=$1 offset=$2
  [[ -f $file ]] && tail -c "+$((offset + 1))" "$file" | grep -q 'Address already in use'
}

# ---------------------------------------------------------------------------
# Layout and state

# Set the path variables for the server directory DIR.
set_layout() {
  DIR=$(realpath -m -- "$1")
  # Paths go unquoted into option files and into socket names, so allow only
  # characters that need no quoting anywhere.
  if [[ ! $DIR =~ ^/[A-Za-z0-9._/+-]+$ ]]; then
    die "invalid DIR '$DIR': use only letters, digits and . _ / + -"
  fi

  MARKER_FILE=$DIR/$MARKER_NAME
  STATE_FILE=$DIR/state
  ENV_FILE=$DIR/env

  PG_DATA=$DIR/pg-data
  PG_INITIALIZED=$DIR/pg-data.initialized
  PG_SOCKET_DIR=$DIR/pg-socket
  PG_LOG=$DIR/pg.log

  MYSQL_DATA=$DIR/mysql-data
  MYSQL_INITIALIZED=$DIR/mysql-data.initialized
  MYSQL_RUN_DIR=$DIR/mysql-run
  MYSQL_SOCKET=$MYSQL_RUN_DIR/mysqld.sock
  MYSQL_PID_FILE=$MYSQL_RUN_DIR/mysqld.pid
  MYSQL_ERROR_LOG=$MYSQL_RUN_DIR/error.log
  MYSQL_STDERR_LOG=$MYSQL_RUN_DIR/mariadbd.stderr
  MYSQL_SERVER_CNF=$DIR/mysql-server.cnf
  MYSQL_CLIENT_CNF=$DIR/mysql-client.cnf

  # sun_path is 108 bytes including the terminating NUL, so a socket path may
  # have at most 107 characters.
  if ((${#MYSQL_SOCKET} > 100 || ${#PG_SOCKET_DIR} + 17 > 107)); then
    die "DIR '$DIR' is too long for Unix socket paths; use a shorter path"
  fi
}

# Print the highest /usr/lib/postgresql/NN/bin that has initdb, or nothing.
find_pg_bin() {
  local dir version best="" best_version=0
  for dir in /usr/lib/postgresql/*/bin; do
    [[ -x $dir/initdb && -x $dir/pg_ctl ]] || continue
    version=${dir#/usr/lib/postgresql/}
    version=${version%/bin}
    [[ $version =~ ^[0-9]+$ ]] || continue
    if ((version > best_version)); then
      best_version=$version
      best=$dir
    fi
  done
  printf '%s' "$best"
}

find_mariadbd() {
  if have_command mariadbd; then
    command -v mariadbd
  elif have_command mysqld; then
    command -v mysqld
  fi
}

# Write ports and passwords to DIR/state, readable only by root because it
# contains the passwords.
write_state() {
  (
    umask 077
    {
      printf 'PG_BIN=%q\n' "$PG_BIN"
      printf 'PG_PORT=%q\n' "$PG_PORT"
      printf 'PG_PASSWORD=%q\n' "$PG_PASSWORD"
      printf 'MYSQL_PORT=%q\n' "$MYSQL_PORT"
      printf 'MYSQL_PASSWORD=%q\n' "$MYSQL_PASSWORD"
    } >"$STATE_FILE.tmp"
    mv -f "$STATE_FILE.tmp" "$STATE_FILE"
  )
}

load_state() {
  [[ -f $STATE_FILE ]] || die "$STATE_FILE not found; run 'servers.sh start $DIR' first"
  # shellcheck source=/dev/null
  source "$STATE_FILE"
  [[ -x $PG_BIN/pg_ctl ]] || die "PostgreSQL binaries not found in $PG_BIN (from $STATE_FILE)"
}

write_env_file() {
  (
    umask 077
    {
      printf 'export PGSYNC_TEST_PG_URL=%q\n' \
        "postgres://postgres:$PG_PASSWORD@127.0.0.1:$PG_PORT/postgres"
      printf 'export PGSYNC_TEST_MYSQL_URL=%q\n' \
        "mysql://root:$MYSQL_PASSWORD@127.0.0.1:$MYSQL_PORT/"
      printf 'export PGSYNC_TEST_PG_BIN=%q\n' "$PG_BIN"
      printf 'export PGSYNC_TEST_DIR=%q\n' "$DIR"
      printf 'export PGSYNC_TEST_PG_PORT=%q\n' "$PG_PORT"
      printf 'export PGSYNC_TEST_MYSQL_PORT=%q\n' "$MYSQL_PORT"
      printf 'export PGSYNC_TEST_MYSQL_SOCKET=%q\n' "$MYSQL_SOCKET"
      printf 'export PGSYNC_TEST_PG_SOCKET_DIR=%q\n' "$PG_SOCKET_DIR"
    } >"$ENV_FILE.tmp"
    mv -f "$ENV_FILE.tmp" "$ENV_FILE"
  )
}

# Create DIR, or adopt it if it is empty or was made by an earlier start.
prepare_dir() {
  if [[ -d $DIR && ! -f $MARKER_FILE ]]; then
    if [[ -n $(ls -A "$DIR") ]]; then
      die "$DIR exists, is not empty and was not created by servers.sh; choose an empty or new DIR"
    fi
  fi
  mkdir -p "$DIR"
  touch "$MARKER_FILE"
  # The postgres and mysql users must reach their subdirectories, and
  # mktemp -d creates DIR with mode 0700.
  chmod 0755 "$DIR"
  local user
  for user in postgres mysql; do
    if ! runuser -u "$user" -- test -x "$DIR"; then
      die "user $user cannot enter $DIR; choose a DIR whose parents are world-searchable (e.g. under /tmp)"
    fi
  done
}

# ---------------------------------------------------------------------------
# Packages

restore_policy_rc_d() {
  rm -f "$POLICY_RC_D"
  if [[ -n ${POLICY_RC_D_BACKUP:-} ]]; then
    mv -f "$POLICY_RC_D_BACKUP" "$POLICY_RC_D"
  fi
  POLICY_RC_D_BACKUP=""
}

# Install Debian packages without letting their maintainer scripts start
# services, because invoke-rc.d skips any action for which policy-rc.d
# exits 101.
install_packages() {
  POLICY_RC_D_BACKUP=""
  if [[ -e $POLICY_RC_D ]]; then
    POLICY_RC_D_BACKUP=$(mktemp "$POLICY_RC_D.pgsync-backup.XXXXXX")
    mv -f "$POLICY_RC_D" "$POLICY_RC_D_BACKUP"
  fi
  trap restore_policy_rc_d EXIT
  printf '#!/bin/sh\n# Written by pg-to-mysql-sync scripts/servers.sh during apt-get install.\nexit 101\n' \
    >"$POLICY_RC_D"
  chmod 0755 "$POLICY_RC_D"

  local apt_options=(-q -y -o DPkg::Lock::Timeout=600)
  log "installing Debian packages: $*"
  DEBIAN_FRONTEND=noninteractive apt-get "${apt_options[@]}" update >&2
  DEBIAN_FRONTEND=noninteractive apt-get "${apt_options[@]}" install "$@" >&2

  restore_policy_rc_d
  trap - EXIT
}

# Print the Debian packages that provide missing server pieces.
# NOTE: only the case of nothing missing has run here. The package names are
# those of Debian 12; other releases may name the PostGIS package differently.
list_missing_packages() {
  local pg_bin pg_version
  pg_bin=$(find_pg_bin)
  if [[ -z $pg_bin ]]; then
    # postgresql-postgis pulls the PostGIS build for the default PostgreSQL.
    echo postgresql postgresql-postgis postgis
  else
    pg_version=${pg_bin#/usr/lib/postgresql/}
    pg_version=${pg_version%/bin}
    if [[ ! -f /usr/share/postgresql/$pg_version/extension/postgis.control ]]; then
      echo "postgresql-$pg_version-postgis-3" postgis
    fi
  fi
  if [[ -z $(find_mariadbd) ]] || ! have_command mariadb-install-db; then
    echo mariadb-server
  fi
  if ! have_command mariadb || ! have_command mariadb-admin; then
    echo mariadb-client
  fi
  # The service tests check the systemd unit with systemd-analyze; installing the package
  # does not start systemd.
  if ! have_command systemd-analyze; then
    echo systemd
  fi
}

ensure_packages() {
  local missing
  missing=$(list_missing_packages)
  if [[ -z $missing ]]; then
    return 0
  fi
  # shellcheck disable=SC2086 # one package name per word
  install_packages $missing
  missing=$(list_missing_packages)
  if [[ -n $missing ]]; then
    die "still missing after apt-get install: ${missing//$'\n'/ }"
  fi
}

# ---------------------------------------------------------------------------
# PostgreSQL

# Run a command as the postgres user. The cd avoids "could not change
# directory" warnings when the caller's directory is private to root.
run_as_postgres() {
  (cd "$DIR" && runuser -u postgres -- "$@")
}

# Run one SQL statement over TCP with password authentication.
pg_sql() {
  local database=$1 sql=$2
  PGPASSWORD=$PG_PASSWORD PGCONNECT_TIMEOUT=10 PGOPTIONS="-c client_min_messages=warning" \
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 \
    -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$database" -c "$sql" >/dev/null
}

pg_is_running() {
  [[ -f $PG_DATA/PG_VERSION ]] &&
    run_as_postgres "$PG_BIN/pg_ctl" status -D "$PG_DATA" >/dev/null 2>&1
}

init_pg() {
  if [[ -e $PG_DATA ]]; then
    die "$PG_DATA exists but its initialization did not finish; run 'servers.sh stop $DIR' and start again"
  fi
  log "initializing PostgreSQL in $PG_DATA"
  install -d -o postgres -g postgres -m 0700 "$PG_DATA"
  install -d -o postgres -g postgres -m 0755 "$PG_SOCKET_DIR"

  # initdb reads the superuser password from a file, which keeps it out of
  # the process list.
  local password_file=$DIR/pg-password.tmp
  (umask 077 && printf '%s\n' "$PG_PASSWORD" >"$password_file")
  chown postgres "$password_file"
  if ! run_as_postgres "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --pwfile="$password_file" \
    --auth-local=scram-sha-256 --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 >"$DIR/initdb.log" 2>&1; then
    rm -f "$password_file"
    show_log_tail "$DIR/initdb.log"
    die "initdb failed"
  fi
  rm -f "$password_file"

  # Only password (SCRAM) logins, from the socket or from 127.0.0.1.
  cat >"$PG_DATA/pg_hba.conf" <<'EOF'
# Written by scripts/servers.sh. Only SCRAM password authentication.
# TYPE  DATABASE     USER  ADDRESS       METHOD
local   all          all                 scram-sha-256
host    all          all   127.0.0.1/32  scram-sha-256
host    replication  all   127.0.0.1/32  scram-sha-256
EOF
  # Port and paths live in an included file rewritten at every start.
  printf "\ninclude 'pgsync-test.conf'\n" >>"$PG_DATA/postgresql.conf"
  chown postgres:postgres "$PG_DATA/pg_hba.conf"
  touch "$PG_INITIALIZED"
}

write_pg_conf() {
  cat >"$PG_DATA/pgsync-test.conf" <<EOF
# Written by scripts/servers.sh at every start.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCKET_DIR'
max_connections = 200
password_encryption = 'scram-sha-256'
# Allows logical decoding and replication slots, at the cost of a little more WAL.
wal_level = logical
EOF
  chown postgres:postgres "$PG_DATA/pgsync-test.conf"
}

# Start PostgreSQL and wait until it accepts connections. Returns non-zero
# on failure, leaving the reason in $PG_LOG.
launch_pg() {
  write_pg_conf
  if [[ ! -e $PG_LOG ]]; then
    install -m 0640 -o postgres -g postgres /dev/null "$PG_LOG"
  fi
  log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
  run_as_postgres "$PG_BIN/pg_ctl" start -w -t "$START_TIMEOUT_SECONDS" \
    -D "$PG_DATA" -l "$PG_LOG" </dev/null >/dev/null
}

# Start PostgreSQL on the port in the state file.
start_pg() {
  if pg_is_running; then
    log "PostgreSQL is already running on 127.0.0.1:$PG_PORT"
    return 0
  fi
  if port_in_use "$PG_PORT"; then
    die "cannot start PostgreSQL: port $PG_PORT on 127.0.0.1 is in use by another process"
  fi
  if ! launch_pg; then
    show_log_tail "$PG_LOG"
    die "PostgreSQL failed to start; see $PG_LOG"
  fi
}

# Start PostgreSQL for the first time, picking a new port if another process
# took the chosen one between the check and the bind.
start_pg_first_time() {
  local attempt offset
  for ((attempt = 1; attempt <= PORT_ATTEMPTS; attempt++)); do
    offset=$(file_size "$PG_LOG")
    if launch_pg; then
      return 0
    fi
    if ((attempt < PORT_ATTEMPTS)) && log_has_bind_error "$PG_LOG" "$offset"; then
      log "port $PG_PORT was taken; picking another"
      PG_PORT=$(find_free_port "$MYSQL_PORT")
      write_state
      continue
    fi
    break
  done
  show_log_tail "$PG_LOG"
  die "PostgreSQL failed to start; see $PG_LOG"
}

stop_pg() {
  if [[ ! -f $PG_DATA/PG_VERSION ]] || ! pg_is_running; then
    log "PostgreSQL is not running"
    return 0
  fi
  local pid
  pid=$(head -n 1 "$PG_DATA/postmaster.pid" 2>/dev/null || true)
  log "stopping PostgreSQL"
  if ! run_as_postgres "$PG_BIN/pg_ctl" stop -w -t "$STOP_TIMEOUT_SECONDS" -m fast \
    -D "$PG_DATA" >/dev/null; then
    log "error: pg_ctl stop failed; see $PG_LOG"
    return 1
  fi
  # pg_ctl returns once postmaster.pid is gone, a moment before the exit.
  if [[ $pid =~ ^[0-9]+$ ]] && ! wait_for_exit "$pid"; then
    log "error: PostgreSQL (pid $pid) did not exit within $STOP_TIMEOUT_SECONDS s"
    return 1
  fi
}

# Check once that PostGIS works in a fresh database, then drop it again.
check_postgis() {
  local database=pgsync_postgis_check
  log "checking that CREATE EXTENSION postgis works"
  pg_sql postgres "DROP DATABASE IF EXISTS $database"
  pg_sql postgres "CREATE DATABASE $database"
  if ! pg_sql "$database" "CREATE EXTENSION postgis"; then
    pg_sql postgres "DROP DATABASE IF EXISTS $database"
    die "CREATE EXTENSION postgis failed; is postgresql-NN-postgis-3 installed for $PG_BIN?"
  fi
  pg_sql postgres "DROP DATABASE $database"
}

# ---------------------------------------------------------------------------
# MariaDB

# Print the pid of our mariadbd if it is running. The command line must name
# our option file, so a stale pid file never leads to signalling another
# process, such as a system MariaDB.
mysql_pid() {
  local pid
  pid=$(cat "$MYSQL_PID_FILE" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null |
    grep -qxF -- "--defaults-file=$MYSQL_SERVER_CNF" || return 1
  echo "$pid"
}

# Run the mariadb client as root over the Unix socket. root@localhost keeps
# unix_socket authentication, so no password is needed here.
mysql_admin() {
  mariadb --no-defaults --protocol=socket --socket="$MYSQL_SOCKET" --user=root "$@"
}

init_mysql() {
  if [[ -e $MYSQL_DATA ]]; then
    die "$MYSQL_DATA exists but its initialization did not finish; run 'servers.sh stop $DIR' and start again"
  fi
  log "initializing MariaDB in $MYSQL_DATA"
  install -d -o mysql -g mysql -m 0750 "$MYSQL_DATA"
  install -d -o mysql -g mysql -m 0755 "$MYSQL_RUN_DIR"
  if ! mariadb-install-db --no-defaults --user=mysql --datadir="$MYSQL_DATA" \
    --auth-root-authentication-method=socket --skip-test-db \
    >"$DIR/mysql-install-db.log" 2>&1; then
    show_log_tail "$DIR/mysql-install-db.log"
    die "mariadb-install-db failed"
  fi
  touch "$MYSQL_INITIALIZED"
}

# The server reads only this file (--defaults-file), never /etc/mysql.
write_mysql_server_cnf() {
  cat >"$MYSQL_SERVER_CNF" <<EOF
# Written by scripts/servers.sh at every start.
[mysqld]
user=mysql
datadir=$MYSQL_DATA
socket=$MYSQL_SOCKET
port=$MYSQL_PORT
bind-address=127.0.0.1
skip-name-resolve
pid-file=$MYSQL_PID_FILE
log-error=$MYSQL_ERROR_LOG
max_allowed_packet=64M
character-set-server=utf8mb4
collation-server=utf8mb4_unicode_ci
innodb_buffer_pool_size=256M
EOF
}

# The client option file contains the root password, so only root may read it.
write_mysql_client_cnf() {
  (
    umask 077
    cat >"$MYSQL_CLIENT_CNF" <<EOF
# Written by scripts/servers.sh: mariadb --defaults-file=$MYSQL_CLIENT_CNF
[client]
user=root
password=$MYSQL_PASSWORD
host=127.0.0.1
port=$MYSQL_PORT
protocol=tcp
default-character-set=utf8mb4
EOF
  )
}

# Start mariadbd and wait until it accepts connections on its socket.
# Returns non-zero on failure, leaving the reason in the logs.
launch_mysql() {
  local mariadbd
  mariadbd=$(find_mariadbd)
  write_mysql_server_cnf
  log "starting MariaDB on 127.0.0.1:$MYSQL_PORT"

  # setsid keeps a Ctrl-C in the caller's terminal from reaching the server,
  # and the redirections keep it from holding the caller's pipes open.
  # --defaults-file must be the first option.
  setsid "$mariadbd" --defaults-file="$MYSQL_SERVER_CNF" \
    </dev/null >>"$MYSQL_STDERR_LOG" 2>&1 &
  local pid=$!

  local deadline=$((SECONDS + START_TIMEOUT_SECONDS))
  until mysql_admin --connect-timeout=2 -e 'SELECT 1' >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "mariadbd exited during startup"
      return 1
    fi
    if ((SECONDS >= deadline)); then
      log "MariaDB did not accept connections within $START_TIMEOUT_SECONDS s; stopping it"
      kill -TERM "$pid" 2>/dev/null || true
      wait_for_exit "$pid" || kill -KILL "$pid" 2>/dev/null || true
      return 1
    fi
    sleep 0.2
  done
}

show_mysql_logs() {
  show_log_tail "$MYSQL_STDERR_LOG"
  show_log_tail "$MYSQL_ERROR_LOG"
}

# Start MariaDB on the port in the state file.
start_mysql() {
  if mysql_pid >/dev/null; then
    log "MariaDB is already running on 127.0.0.1:$MYSQL_PORT"
    return 0
  fi
  if port_in_use "$MYSQL_PORT"; then
    die "cannot start MariaDB: port $MYSQL_PORT on 127.0.0.1 is in use by another process"
  fi
  if ! launch_mysql; then
    show_mysql_logs
    die "MariaDB failed to start; see $MYSQL_ERROR_LOG"
  fi
}

# Start MariaDB for the first time, picking a new port if another process
# took the chosen one between the check and the bind.
start_mysql_first_time() {
  local attempt offset
  for ((attempt = 1; attempt <= PORT_ATTEMPTS; attempt++)); do
    offset=$(file_size "$MYSQL_ERROR_LOG")
    if launch_mysql; then
      return 0
    fi
    if ((attempt < PORT_ATTEMPTS)) && log_has_bind_error "$MYSQL_ERROR_LOG" "$offset"; then
      log "port $MYSQL_PORT was taken; picking another"
      MYSQL_PORT=$(find_free_port "$PG_PORT")
      write_state
      continue
    fi
    break
  done
  show_mysql_logs
  die "MariaDB failed to start; see $MYSQL_ERROR_LOG"
}

# Give root a password for TCP logins from 127.0.0.1. With skip-name-resolve,
# TCP clients match only host entries written as IP addresses, so
# root@localhost alone would not do. root@localhost gets the same password
# and keeps unix_socket so that this script can log in without it.
configure_mysql_accounts() {
  log "setting MariaDB root passwords"
  mysql_admin <<EOF
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';
ALTER USER 'root'@'127.0.0.1'
  IDENTIFIED VIA mysql_native_password USING PASSWORD('$MYSQL_PASSWORD');
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
ALTER USER 'root'@'localhost'
  IDENTIFIED VIA mysql_native_password USING PASSWORD('$MYSQL_PASSWORD') OR unix_socket;
DROP USER IF EXISTS ''@'localhost';
FLUSH PRIVILEGES;
EOF
  write_mysql_client_cnf
}

stop_mysql() {
  local pid
  if ! pid=$(mysql_pid); then
    log "MariaDB is not running"
    return 0
  fi
  # SIGTERM makes mariadbd shut down cleanly, like mariadb-admin shutdown.
  log "stopping MariaDB (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  if ! wait_for_exit "$pid"; then
    log "error: MariaDB (pid $pid) did not exit within $STOP_TIMEOUT_SECONDS s; see $MYSQL_ERROR_LOG"
    return 1
  fi
}

# ---------------------------------------------------------------------------
# Commands

require_root() {
  ((EUID == 0)) || die "must run as root (it uses apt-get, chown and runuser)"
}

cmd_start() {
  local started_at=$SECONDS
  ensure_packages
  prepare_dir

  if [[ -f $STATE_FILE ]]; then
    load_state
  else
    PG_BIN=$(find_pg_bin)
    PG_PORT=$(find_free_port)
    PG_PASSWORD=$(random_password)
    MYSQL_PORT=$(find_free_port "$PG_PORT")
    MYSQL_PASSWORD=$(random_password)
    write_state
  fi

  if [[ -f $PG_INITIALIZED ]]; then
    start_pg
  else
    init_pg
    start_pg_first_time
    check_postgis
  fi
  pg_sql postgres 'SELECT 1' || die "cannot log in to PostgreSQL over TCP with the password"

  if [[ -f $MYSQL_INITIALIZED ]]; then
    start_mysql
  else
    init_mysql
    start_mysql_first_time
  fi
  configure_mysql_accounts
  mariadb --defaults-file="$MYSQL_CLIENT_CNF" -e 'SELECT 1' >/dev/null ||
    die "cannot log in to MariaDB over TCP with the password"

  write_env_file
  log "PostgreSQL on 127.0.0.1:$PG_PORT and MariaDB on 127.0.0.1:$MYSQL_PORT are ready" \
    "after $((SECONDS - started_at)) s; variables are in $ENV_FILE"
}

cmd_stop() {
  if [[ ! -d $DIR ]]; then
    log "$DIR does not exist; nothing to stop"
    return 0
  fi
  if [[ ! -f $MARKER_FILE ]]; then
    # test.sh leaves an empty DIR when start fails before writing the marker.
    if rmdir "$DIR" 2>/dev/null; then
      return 0
    fi
    die "$DIR was not created by servers.sh start (no $MARKER_NAME); leaving it alone"
  fi

  if [[ -f $STATE_FILE ]]; then
    load_state
  else
    PG_BIN=$(find_pg_bin)
  fi
  local failed=0
  stop_pg || failed=1
  stop_mysql || failed=1
  if ((failed)); then
    die "a server did not stop; keeping $DIR for its logs"
  fi
  rm -rf -- "$DIR"
  log "removed $DIR"
}

main() {
  if (($# != 2)); then
    usage
  fi
  local command=$1
  set_layout "$2"
  require_root
  # Turning signals into exit makes bash run the EXIT trap, which restores
  # policy-rc.d during a package install.
  trap 'exit 130' INT
  trap 'exit 143' TERM

  case $command in
    start) cmd_start ;;
    stop) cmd_stop ;;
    start-pg)
      load_state
      [[ -f $PG_INITIALIZED ]] || die "PostgreSQL in $DIR is not initialized; run 'servers.sh start $DIR'"
      start_pg
      ;;
    stop-pg)
      load_state
      stop_pg
      ;;
    start-mysql)
      load_state
      [[ -f $MYSQL_INITIALIZED ]] || die "MariaDB in $DIR is not initialized; run 'servers.sh start $DIR'"
      start_mysql
      ;;
    stop-mysql)
      load_state
      stop_mysql
      ;;
    *) usage ;;
  esac
}

main "$@"
