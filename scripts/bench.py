#!/usr/bin/env python3
"""Measure pg-to-mysql-sync against private PostgreSQL and MariaDB servers.

scripts/bench.sh starts the servers, builds the binary and runs this file in a
virtual environment with psycopg and PyMySQL. All figures come from one run,
in this order, so that their ratios share the machine's state:

1. Trigger overhead: the same INSERT workloads on a table without and a table
   with the capture triggers, the daemon not running.
2. Backlog: 100,000 inserts, then updates of 30% and deletes of 10% of the
   rows, captured while the daemon is not running.
3. Direct load: the final rows written straight into an empty copy of the
   MariaDB table as multi-row INSERTs.
4. Drain: the daemon starts, and the clock stops when the MariaDB table equals
   the PostgreSQL table.
5. Latency: paced single-row INSERTs while the daemon runs.
6. Shutdown: SIGTERM, and the daemon must exit with status 0.

It prints the figures and writes them as a Markdown section to --output.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import psycopg
import pymysql

UTC = dt.timezone.utc
MYSQL_DATABASE = "bench"
CHANGE_LOG = "pg2mysql_sync.change_log"
# A change-log row holds one change as a JSON object. These expressions also count and
# expand a JSON array of changes, so the figures stay right if rows ever carry several.
CHANGE_COUNT = (
    "coalesce(sum(CASE WHEN json_typeof(coalesce(new_row, old_key)) = 'array' "
    "THEN json_array_length(coalesce(new_row, old_key)) ELSE 1 END), 0)::bigint"
)
# The images of a change-log row, one per output row, numbered from 1.
CHANGE_IMAGES = (
    "json_array_elements(CASE WHEN json_typeof(new_row) = 'array' THEN new_row "
    "ELSE json_build_array(new_row) END) WITH ORDINALITY AS image(value, position)"
)
CHECKPOINT_TABLE = "pg_to_mysql_sync_checkpoint"

COLUMNS = "customer_id, sku, qty, price, paid, note, created_at"

PG_TABLE_BODY = """(
    id bigint {id_clause},
    customer_id integer NOT NULL,
    sku varchar(32) NOT NULL,
    qty smallint NOT NULL,
    price numeric(12,2) NOT NULL,
    paid boolean NOT NULL,
    note text,
    created_at timestamptz NOT NULL
)"""

MYSQL_TABLE_BODY = """(
    id BIGINT NOT NULL PRIMARY KEY,
    customer_id INT NOT NULL,
    sku VARCHAR(32) NOT NULL,
    qty SMALLINT NOT NULL,
    price DECIMAL(12,2) NOT NULL,
    paid BOOLEAN NOT NULL,
    note TEXT,
    created_at DATETIME(6) NOT NULL{extra}
) ENGINE=InnoDB"""

# Values of generated row g, for every column but id. One in ten notes is NULL
# and one in ten has a quote and a non-ASCII character.
ROW_VALUES = """
    (g * 7919) % 50000,
    'SKU-' || lpad((g % 5000)::text, 6, '0'),
    (g % 20 + 1)::smallint,
    round((g % 100000) / 100.0 + 0.99, 2),
    g % 3 = 0,
    CASE g % 10
        WHEN 0 THEN NULL
        WHEN 1 THEN 'O''Brien café ' || md5(g::text)
        ELSE 'order note ' || md5(g::text)
    END,
    timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second'
        + (g % 1000) * interval '1 microsecond'
"""

SINGLE_ROW_INSERT = (
    "INSERT INTO {table} (" + COLUMNS + ") VALUES "
    "(4242, 'SKU-004242', 3, 19.99, true, "
    "'order note 0123456789abcdef0123456789abcdef', now());"
)

DRAIN_POLL_SECONDS = 0.05
DRAIN_TIMEOUT_SECONDS = 300
LATENCY_WAIT_TIMEOUT_SECONDS = 60
DAEMON_STOP_TIMEOUT_SECONDS = 60


def log(message: str) -> None:
    print(f"bench: {message}", flush=True)


# ---------------------------------------------------------------------------
# Connections and small helpers


@dataclass
class Servers:
    pg_url: str
    mysql_host: str
    mysql_port: int
    mysql_user: str
    mysql_password: str
    pg_bin: Path

    @property
    def daemon_mysql_url(self) -> str:
        user = urllib.parse.quote(self.mysql_user, safe="")
        password = urllib.parse.quote(self.mysql_password, safe="")
        return f"mysql://{user}:{password}@{self.mysql_host}:{self.mysql_port}/{MYSQL_DATABASE}"


def read_env_file(path: Path) -> dict[str, str]:
    """Read the `export NAME=value` lines that scripts/servers.sh writes."""
    values = {}
    for line in path.read_text().splitlines():
        match = re.fullmatch(r"export ([A-Z_]+)=(.*)", line.strip())
        if match:
            # servers.sh writes the values with printf %q, which leaves them as they
            # are because they contain only URL-safe characters.
            values[match.group(1)] = match.group(2)
    return values


def load_servers(env_file: Path) -> Servers:
    env = read_env_file(env_file)
    mysql = urllib.parse.urlsplit(env["PGSYNC_TEST_MYSQL_URL"])
    return Servers(
        pg_url=env["PGSYNC_TEST_PG_URL"],
        mysql_host=mysql.hostname or "127.0.0.1",
        mysql_port=mysql.port or 3306,
        mysql_user=urllib.parse.unquote(mysql.username or "root"),
        mysql_password=urllib.parse.unquote(mysql.password or ""),
        pg_bin=Path(env["PGSYNC_TEST_PG_BIN"]),
    )


def pg_connect(servers: Servers, autocommit: bool = True) -> psycopg.Connection:
    return psycopg.connect(servers.pg_url, autocommit=autocommit)


def mysql_connect(
    servers: Servers, database: str | None = MYSQL_DATABASE, local_infile: bool = False
) -> pymysql.Connection:
    # autocommit matters for the pollers: without it, REPEATABLE READ would keep
    # showing them the snapshot of their first read.
    return pymysql.connect(
        host=servers.mysql_host,
        port=servers.mysql_port,
        user=servers.mysql_user,
        password=servers.mysql_password,
        database=database,
        charset="utf8mb4",
        autocommit=True,
        local_infile=local_infile,
    )


def mysql_query(conn: pymysql.Connection, sql: str, args=None) -> list[tuple]:
    with conn.cursor() as cursor:
        cursor.execute(sql, args)
        return list(cursor.fetchall())


def mysql_execute(conn: pymysql.Connection, sql: str, args=None) -> None:
    with conn.cursor() as cursor:
        cursor.execute(sql, args)


def pg_scalar(conn: psycopg.Connection, sql: str, args=None):
    row = conn.execute(sql, args).fetchone()
    return row[0] if row else None


def percentile(sorted_values: list[float], percent: float) -> float:
    """Return the nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(percent / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def format_count(value: float) -> str:
    return f"{value:,.0f}"


def format_ratio(value: float) -> str:
    return f"{value:.2f}×"


def verdict(passed: bool) -> str:
    return "yes" if passed else "no"


# ---------------------------------------------------------------------------
# CPU and memory accounting from /proc


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """Return user plus system CPU seconds of one process, 0 if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state) of proc(5); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpu_seconds_by_command() -> dict[str, float]:
    """Sum user plus system CPU seconds per command name over all live processes."""
    totals: dict[str, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        seconds = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        totals[comm] = totals.get(comm, 0.0) + seconds
    return totals


def machine_busy_ticks() -> tuple[int, int]:
    """Return (busy, total) CPU ticks of the whole machine from /proc/stat."""
    # The fields are user, nice, system, idle, iowait, irq, softirq, steal, then
    # guest times, which user time already contains. Steal time counts as not busy.
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    busy = values[0] + values[1] + values[2] + values[5] + values[6]
    return busy, sum(values)


def status_kib(pid: int, key: str) -> int | None:
    """Read a `key: N kB` line of /proc/PID/status, such as VmHWM or VmRSS."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


@dataclass
class CpuSnapshot:
    wall: float
    by_command: dict[str, float]
    daemon: float
    busy_ticks: int
    total_ticks: int
    own: float

    @staticmethod
    def take(daemon_pid: int | None) -> CpuSnapshot:
        busy, total = machine_busy_ticks()
        times = os.times()
        return CpuSnapshot(
            wall=time.monotonic(),
            by_command=cpu_seconds_by_command(),
            daemon=process_cpu_seconds(daemon_pid) if daemon_pid else 0.0,
            busy_ticks=busy,
            total_ticks=total,
            own=times.user + times.system,
        )


def cpu_usage(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """Return CPU seconds used between two snapshots, per part of the pipeline."""

    def delta(command: str) -> float:
        return after.by_command.get(command, 0.0) - before.by_command.get(command, 0.0)

    cores = len(os.sched_getaffinity(0))
    ticks = after.total_ticks - before.total_ticks
    return {
        "daemon": after.daemon - before.daemon,
        "postgres": delta("postgres"),
        "mariadbd": delta("mariadbd"),
        "bench.py": after.own - before.own,
        "machine": (after.busy_ticks - before.busy_ticks) / ticks * cores * (after.wall - before.wall)
        if ticks
        else 0.0,
    }


def format_cpu(usage: dict[str, float], seconds: float) -> str:
    parts = [f"{name} {value:.1f} s" for name, value in usage.items() if name != "machine"]
    busy = usage["machine"] / seconds if seconds else 0.0
    return ", ".join(parts) + f"; whole machine {usage['machine']:.1f} s ({busy:.2f} cores busy on average)"


# ---------------------------------------------------------------------------
# Schema


def create_pg_table(pg: psycopg.Connection, name: str, identity: bool) -> None:
    id_clause = "GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY" if identity else "PRIMARY KEY"
    pg.execute(f"DROP TABLE IF EXISTS {name}")
    pg.execute(f"CREATE TABLE {name} " + PG_TABLE_BODY.format(id_clause=id_clause))


def create_schema(servers: Servers) -> None:
    with pg_connect(servers) as pg:
        pg.execute("SET client_min_messages = warning")
        create_pg_table(pg, "bench", identity=False)
        create_pg_table(pg, "lat", identity=False)
        create_pg_table(pg, "ovh_plain", identity=True)
        create_pg_table(pg, "ovh_trig", identity=True)

    mysql = mysql_connect(servers, database=None)
    try:
        mysql_execute(mysql, f"DROP DATABASE IF EXISTS {MYSQL_DATABASE}")
        mysql_execute(mysql, f"CREATE DATABASE {MYSQL_DATABASE} CHARACTER SET utf8mb4")
        mysql_execute(mysql, f"USE {MYSQL_DATABASE}")
        for table in ("bench", "bench_direct", "ovh_trig"):
            mysql_execute(mysql, f"CREATE TABLE {table} " + MYSQL_TABLE_BODY.format(extra=""))
        # The daemon writes only the PostgreSQL columns, so MariaDB fills `arrived`
        # when it inserts the row.
        mysql_execute(
            mysql,
            "CREATE TABLE lat "
            + MYSQL_TABLE_BODY.format(extra=",\n    arrived DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)"),
        )
    finally:
        mysql.close()


def daemon_environment(servers: Servers, tables: str, data_dir: Path, rust_log: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PG_DATABASE_URL=servers.pg_url,
        MYSQL_DATABASE_URL=servers.daemon_mysql_url,
        SYNC_TABLES=tables,
        DATA_DIR=str(data_dir),
        RUST_LOG=rust_log,
        # The HTTPS API plays no part in the data path; it would only need keys here.
        API="off",
        MODE="automatic",
    )
    return env


def run_setup(binary: Path, env: dict[str, str], work_dir: Path, extra_args: tuple[str, ...] = ()) -> None:
    result = subprocess.run(
        [str(binary), "setup", *extra_args], env=env, cwd=work_dir, capture_output=True, text=True, check=False
    )
    for line in (result.stdout + result.stderr).splitlines():
        log(f"setup: {line}")
    if result.returncode != 0:
        raise RuntimeError(f"pg-to-mysql-sync setup failed with exit status {result.returncode}")


# ---------------------------------------------------------------------------
# Phase 1: trigger overhead


@dataclass
class OverheadResult:
    plain_seconds: list[float] = field(default_factory=list)
    trig_seconds: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return statistics.median(self.trig_seconds) / statistics.median(self.plain_seconds)


def reset_overhead_tables(pg: psycopg.Connection) -> None:
    # TRUNCATE on ovh_trig fires the capture trigger, so the change log is
    # emptied after it. CHECKPOINT keeps earlier writes out of the timed run.
    pg.execute("TRUNCATE ovh_plain, ovh_trig RESTART IDENTITY")
    pg.execute(f"TRUNCATE {CHANGE_LOG}")
    pg.execute("CHECKPOINT")


def check_overhead_run(pg: psycopg.Connection, table: str, rows: int) -> None:
    count = pg_scalar(pg, f"SELECT count(*) FROM {table}")
    if count != rows:
        raise RuntimeError(f"{table} has {count} rows after the run, expected {rows}")
    logged = pg_scalar(pg, f"SELECT {CHANGE_COUNT} FROM {CHANGE_LOG}")
    expected = rows if table == "ovh_trig" else 0
    if logged != expected:
        raise RuntimeError(f"the change log has {logged} rows after a run on {table}, expected {expected}")


def time_bulk_insert(pg: psycopg.Connection, table: str, rows: int) -> float:
    reset_overhead_tables(pg)
    started = time.perf_counter()
    # Integers go into the text directly: ROW_VALUES uses %, which psycopg
    # would read as a placeholder if parameters were passed.
    pg.execute(f"INSERT INTO {table} ({COLUMNS}) SELECT {ROW_VALUES} FROM generate_series(1, {int(rows)}) AS g")
    seconds = time.perf_counter() - started
    check_overhead_run(pg, table, rows)
    return seconds


def pgbench_environment(servers: Servers) -> dict[str, str]:
    url = urllib.parse.urlsplit(servers.pg_url)
    env = dict(os.environ)
    env.update(
        PGHOST=url.hostname or "127.0.0.1",
        PGPORT=str(url.port or 5432),
        PGUSER=urllib.parse.unquote(url.username or "postgres"),
        PGPASSWORD=urllib.parse.unquote(url.password or ""),
        PGDATABASE=url.path.lstrip("/") or "postgres",
    )
    return env


def run_pgbench(
    servers: Servers, script: Path, transactions: int | None = None, clients: int = 1, seconds: int | None = None
) -> tuple[float, int]:
    """Run pgbench with `transactions` per client or for `seconds`; return tps and transactions done."""
    command = [str(servers.pg_bin / "pgbench"), "-n", "-c", str(clients), "-j", str(min(clients, 2))]
    command += ["-t", str(transactions)] if transactions is not None else ["-T", str(seconds)]
    result = subprocess.run(
        command + ["-f", str(script)],
        env=pgbench_environment(servers),
        capture_output=True,
        text=True,
        check=False,
    )
    tps = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", result.stdout)
    processed = re.search(r"number of transactions actually processed: (\d+)", result.stdout)
    failed = re.search(r"number of failed transactions: (\d+)", result.stdout)
    expected = transactions * clients if transactions is not None else None
    if (
        result.returncode != 0
        or not tps
        or not processed
        or (failed and int(failed.group(1)) != 0)
        or (expected is not None and int(processed.group(1)) != expected)
    ):
        raise RuntimeError(f"pgbench failed (exit status {result.returncode}):\n{result.stdout}\n{result.stderr}")
    return float(tps.group(1)), int(processed.group(1))


def write_batched_insert_script(path: Path, table: str, statements: int) -> None:
    lines = ["BEGIN;"] + [SINGLE_ROW_INSERT.format(table=table)] * statements + ["COMMIT;"]
    path.write_text("\n".join(lines) + "\n")


def time_single_row_inserts(
    servers: Servers, pg: psycopg.Connection, script: Path, table: str, rows: int, per_transaction: int
) -> float:
    reset_overhead_tables(pg)
    tps, _ = run_pgbench(servers, script, transactions=rows // per_transaction)
    check_overhead_run(pg, table, rows)
    return (rows // per_transaction) / tps


def measure_concurrent_commits(
    servers: Servers, pg: psycopg.Connection, script: Path, table: str, clients: int, seconds: int
) -> float:
    """Return the tps of `clients` pgbench clients sending autocommit single-row INSERTs."""
    reset_overhead_tables(pg)
    tps, done = run_pgbench(servers, script, clients=clients, seconds=seconds)
    check_overhead_run(pg, table, done)
    return tps


@dataclass
class TriggerOverhead:
    commit_ms: float
    single: OverheadResult = field(default_factory=OverheadResult)
    bulk: OverheadResult = field(default_factory=OverheadResult)
    # Commits per second, unlike the seconds in OverheadResult.
    concurrent_plain_tps: list[float] = field(default_factory=list)
    concurrent_trig_tps: list[float] = field(default_factory=list)

    @property
    def concurrent_ratio(self) -> float:
        return statistics.median(self.concurrent_plain_tps) / statistics.median(self.concurrent_trig_tps)


def measure_trigger_overhead(servers: Servers, work_dir: Path, args: argparse.Namespace) -> TriggerOverhead:
    rows = args.rows
    batched = {}
    autocommit = {}
    for table in ("ovh_plain", "ovh_trig"):
        batched[table] = work_dir / f"insert-batched-{table}.sql"
        write_batched_insert_script(batched[table], table, args.per_transaction)
        autocommit[table] = work_dir / f"insert-autocommit-{table}.sql"
        autocommit[table].write_text(SINGLE_ROW_INSERT.format(table=table) + "\n")

    with pg_connect(servers) as pg:
        reset_overhead_tables(pg)
        tps, _ = run_pgbench(servers, autocommit["ovh_plain"], transactions=1000)
        result = TriggerOverhead(commit_ms=1000 / tps)
        log(f"context: one autocommit single-row INSERT takes {result.commit_ms:.2f} ms on average (1,000 in a row)")
        # Runs alternate between the two tables so that drift on the machine
        # affects both alike.
        for repeat in range(1, args.overhead_repeats + 1):
            for table, target in (("ovh_plain", result.single.plain_seconds), ("ovh_trig", result.single.trig_seconds)):
                seconds = time_single_row_inserts(servers, pg, batched[table], table, rows, args.per_transaction)
                target.append(seconds)
                log(
                    f"trigger overhead, single-row INSERTs, run {repeat}, {table}: {seconds:.2f} s "
                    f"({format_count(rows / seconds)} rows/s)"
                )
            for table, target in (("ovh_plain", result.concurrent_plain_tps), ("ovh_trig", result.concurrent_trig_tps)):
                tps = measure_concurrent_commits(
                    servers, pg, autocommit[table], table, args.concurrent_clients, args.concurrent_seconds
                )
                target.append(tps)
                log(
                    f"trigger overhead, autocommit INSERTs from {args.concurrent_clients} clients, run {repeat}, "
                    f"{table}: {format_count(tps)} commits/s"
                )
        for repeat in range(1, args.bulk_repeats + 1):
            for table, target in (("ovh_plain", result.bulk.plain_seconds), ("ovh_trig", result.bulk.trig_seconds)):
                seconds = time_bulk_insert(pg, table, rows)
                target.append(seconds)
                log(
                    f"trigger overhead, INSERT … SELECT, run {repeat}, {table}: {seconds:.2f} s "
                    f"({format_count(rows / seconds)} rows/s)"
                )
        reset_overhead_tables(pg)
    return result


# ---------------------------------------------------------------------------
# Phase 2: backlog


@dataclass
class Backlog:
    changes: int
    by_op: dict[str, int]
    pg_seconds: float
    final_rows: int
    # Probe rows: the last inserted row that is not deleted later, and the last
    # updated row with its final note.
    insert_probe_id: int
    update_probe_id: int
    update_probe_note: str
    summary: tuple


def summary_sql(table: str) -> str:
    """Return the query for the cheap checksum of a table: row count and column sums."""
    return (
        "SELECT count(*), sum(qty), sum(price), sum(CASE WHEN paid THEN 1 ELSE 0 END), sum(customer_id) "
        f"FROM {table}"
    )


def as_decimals(row: tuple) -> tuple:
    # MariaDB returns the sums of integer columns as DECIMAL and PostgreSQL as
    # bigint, so both sides are compared as Decimal.
    return tuple(None if value is None else Decimal(value) for value in row)


def pg_summary(pg: psycopg.Connection) -> tuple:
    return as_decimals(pg.execute(summary_sql("bench")).fetchone())


def mysql_summary(mysql: pymysql.Connection, table: str) -> tuple:
    return as_decimals(mysql_query(mysql, summary_sql(table))[0])


def create_backlog(servers: Servers, rows: int) -> Backlog:
    """Commit the insert, update and delete workload on `bench` with capture installed."""
    step = max(1, rows // 10)
    started = time.perf_counter()
    with pg_connect(servers, autocommit=False) as pg:
        # 10 transactions of inserts.
        for low in range(1, rows + 1, step):
            high = min(rows, low + step - 1)
            pg.execute(f"INSERT INTO bench SELECT g, {ROW_VALUES} FROM generate_series({low}, {high}) AS g")
            pg.commit()
        # 3 transactions that update the rows with id % 10 in (1, 2, 3): 30%.
        third = math.ceil(rows / 3)
        for low in range(1, rows + 1, third):
            pg.execute(
                "UPDATE bench SET qty = qty + 1, price = price + 1.25, paid = NOT paid, "
                "note = coalesce(note, '') || ' (updated)' "
                f"WHERE id % 10 IN (1, 2, 3) AND id BETWEEN {low} AND {low + third - 1}"
            )
            pg.commit()
        # 2 transactions that delete the rows with id % 10 = 9: 10%.
        half = math.ceil(rows / 2)
        for low in range(1, rows + 1, half):
            pg.execute(f"DELETE FROM bench WHERE id % 10 = 9 AND id BETWEEN {low} AND {low + half - 1}")
            pg.commit()
    pg_seconds = time.perf_counter() - started

    with pg_connect(servers) as pg:
        by_op = dict(
            pg.execute(f"SELECT op::text, {CHANGE_COUNT} FROM {CHANGE_LOG} GROUP BY op ORDER BY op").fetchall()
        )
        changes = sum(by_op.values())
        insert_probe_id = pg_scalar(
            pg,
            f"SELECT (image.value->>'id')::bigint FROM {CHANGE_LOG}, {CHANGE_IMAGES} "
            "WHERE op = 'I' AND (image.value->>'id')::bigint % 10 <> 9 "
            "ORDER BY id DESC, image.position DESC LIMIT 1",
        )
        update_probe_id = pg_scalar(
            pg,
            f"SELECT (image.value->>'id')::bigint FROM {CHANGE_LOG}, {CHANGE_IMAGES} "
            "WHERE op = 'U' ORDER BY id DESC, image.position DESC LIMIT 1",
        )
        update_probe_note = pg_scalar(pg, "SELECT note FROM bench WHERE id = %s", (update_probe_id,))
        summary = pg_summary(pg)
        pg.execute("CHECKPOINT")
    return Backlog(
        changes=changes,
        by_op=by_op,
        pg_seconds=pg_seconds,
        final_rows=int(summary[0]),
        insert_probe_id=insert_probe_id,
        update_probe_id=update_probe_id,
        update_probe_note=update_probe_note,
        summary=summary,
    )


# ---------------------------------------------------------------------------
# Phase 3: direct load


def fetch_pg_rows(servers: Servers, table: str) -> list[tuple]:
    with pg_connect(servers) as pg:
        rows = pg.execute(f"SELECT id, {COLUMNS} FROM {table} ORDER BY id").fetchall()
    return [normalize_row(row) for row in rows]


def fetch_mysql_rows(servers: Servers, table: str) -> list[tuple]:
    mysql = mysql_connect(servers)
    try:
        rows = mysql_query(mysql, f"SELECT id, {COLUMNS} FROM {table} ORDER BY id")
    finally:
        mysql.close()
    return [normalize_row(row) for row in rows]


def normalize_row(row: tuple) -> tuple:
    """Map a row from either server to plain Python values: UTC naive times, bool flags."""
    row_id, customer_id, sku, qty, price, paid, note, created_at = row
    if created_at.tzinfo is not None:
        created_at = created_at.astimezone(UTC).replace(tzinfo=None)
    return (int(row_id), int(customer_id), sku, int(qty), Decimal(price), bool(paid), note, created_at)


def mysql_literal(mysql: pymysql.Connection, value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, Decimal)):
        return str(value)
    if isinstance(value, dt.datetime):
        return f"'{value:%Y-%m-%d %H:%M:%S.%f}'"
    return mysql.escape(value)


def build_direct_statements(mysql: pymysql.Connection, rows: list[tuple], rows_per_statement: int) -> list[str]:
    statements = []
    for start in range(0, len(rows), rows_per_statement):
        values = ",".join(
            "(" + ",".join(mysql_literal(mysql, value) for value in row) + ")"
            for row in rows[start : start + rows_per_statement]
        )
        statements.append(f"INSERT INTO bench_direct (id, {COLUMNS}) VALUES {values}")
    return statements


def measure_direct_load(servers: Servers, expected: list[tuple], rows_per_statement: int, repeats: int) -> list[float]:
    """Time loading `expected` into the empty bench_direct table, once per repeat."""
    mysql = mysql_connect(servers)
    try:
        statements = build_direct_statements(mysql, expected, rows_per_statement)
        seconds = []
        for repeat in range(1, repeats + 1):
            mysql_execute(mysql, "TRUNCATE TABLE bench_direct")
            started = time.perf_counter()
            for sql in statements:
                mysql_execute(mysql, sql)
            elapsed = time.perf_counter() - started
            seconds.append(elapsed)
            log(
                f"direct load, run {repeat}: {len(expected):,} rows in {len(statements)} statements, "
                f"{elapsed:.2f} s ({format_count(len(expected) / elapsed)} rows/s)"
            )
    finally:
        mysql.close()
    loaded = fetch_mysql_rows(servers, "bench_direct")
    if loaded != expected:
        raise RuntimeError("bench_direct differs from the PostgreSQL rows after the direct load")
    return seconds


# ---------------------------------------------------------------------------
# Phase 4: drain


@dataclass
class DrainResult:
    seconds: float
    first_row_seconds: float
    inserts_seconds: float
    updates_seconds: float
    # VmHWM read when the tables matched, and the highest VmRSS sampled at each poll.
    hwm_kib: int
    sampled_rss_kib: int
    cpu: dict[str, float]
    checkpoint: int

    @property
    def peak_rss_kib(self) -> int:
        return max(self.hwm_kib, self.sampled_rss_kib)


def start_daemon(binary: Path, env: dict[str, str], work_dir: Path, log_path: Path) -> subprocess.Popen:
    log_file = log_path.open("w")
    try:
        # The working directory is the scratch directory, so no stray .env file
        # is loaded.
        return subprocess.Popen(
            [str(binary), "run"], env=env, cwd=work_dir, stdout=log_file, stderr=subprocess.STDOUT
        )
    finally:
        log_file.close()


def wait_for_drain(servers: Servers, daemon: subprocess.Popen, backlog: Backlog, started: float) -> DrainResult:
    """Poll MariaDB until `bench` equals the PostgreSQL summary; return the timings.

    Cheap primary-key probes run first, so that the expensive count and sums
    run only once the inserts and updates are visible.
    """
    mysql = mysql_connect(servers)
    marks: dict[str, float] = {}
    sampled_rss = 0
    deadline = started + DRAIN_TIMEOUT_SECONDS
    try:
        while True:
            now = time.monotonic()
            if daemon.poll() is not None:
                raise RuntimeError(f"the daemon exited with status {daemon.returncode} during the drain")
            if now > deadline:
                raise RuntimeError(f"MariaDB did not match PostgreSQL within {DRAIN_TIMEOUT_SECONDS} s")
            sampled_rss = max(sampled_rss, status_kib(daemon.pid, "VmRSS") or 0)

            if "first" not in marks and mysql_query(mysql, "SELECT 1 FROM bench LIMIT 1"):
                marks["first"] = now
            if "first" in marks and "inserts" not in marks and mysql_query(
                mysql, "SELECT 1 FROM bench WHERE id = %s", (backlog.insert_probe_id,)
            ):
                marks["inserts"] = now
            if "inserts" in marks and "updates" not in marks:
                note = mysql_query(mysql, "SELECT note FROM bench WHERE id = %s", (backlog.update_probe_id,))
                if note and note[0][0] == backlog.update_probe_note:
                    marks["updates"] = now
            if "updates" in marks and mysql_summary(mysql, "bench") == backlog.summary:
                marks["done"] = now
                break
            time.sleep(DRAIN_POLL_SECONDS)
        peak = status_kib(daemon.pid, "VmHWM") or 0
        checkpoint = mysql_query(mysql, f"SELECT max(applied_seq) FROM {CHECKPOINT_TABLE}")[0][0]
    finally:
        mysql.close()
    return DrainResult(
        seconds=marks["done"] - started,
        first_row_seconds=marks["first"] - started,
        inserts_seconds=marks["inserts"] - started,
        updates_seconds=marks["updates"] - started,
        hwm_kib=peak,
        sampled_rss_kib=sampled_rss,
        cpu={},
        checkpoint=int(checkpoint or 0),
    )


# ---------------------------------------------------------------------------
# Phase 5: latency


@dataclass
class LatencyResult:
    rows: int
    achieved_rate: float
    max_schedule_lag_ms: float
    late_writes: int
    from_created_ms: list[float]
    from_commit_ms: list[float]


def run_paced_writer(servers: Servers, rate: float, duration: float, threads: int) -> tuple[dict[int, float], float, list[float]]:
    """Insert rate × duration rows into `lat` on an absolute schedule.

    Row i is due at start + i / rate and is written by connection i % threads,
    each INSERT in its own transaction. Several connections are needed because
    one autocommit INSERT waits for a WAL flush. Returns the wall-clock time at
    which each row's commit was acknowledged, the achieved rate and the lag of
    each write behind its due time.
    """
    total = int(rate * duration)
    connections = [pg_connect(servers) for _ in range(threads)]
    committed: dict[int, float] = {}
    lags: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = time.monotonic() + 0.2
    finished = [start] * threads

    def write(worker: int) -> None:
        conn = connections[worker]
        local_committed = {}
        local_lags = []
        try:
            for i in range(worker, total, threads):
                due = start + i / rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                local_lags.append(time.monotonic() - due)
                conn.execute(
                    f"INSERT INTO lat (id, {COLUMNS}) VALUES (%s, %s, 'SKU-LAT', 1, 9.99, true, "
                    "'latency probe', clock_timestamp())",
                    (i + 1, i % 50000),
                    prepare=True,
                )
                local_committed[i + 1] = time.time()
            finished[worker] = time.monotonic()
        except BaseException as error:  # reported by the main thread
            errors.append(error)
        with lock:
            committed.update(local_committed)
            lags.extend(local_lags)

    workers = [threading.Thread(target=write, args=(k,)) for k in range(threads)]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        for conn in connections:
            conn.close()
    if errors:
        raise RuntimeError(f"the latency writer failed: {errors[0]!r}")
    achieved = total / (max(finished) - start)
    return committed, achieved, lags


def measure_latency(servers: Servers, daemon: subprocess.Popen, rate: float, duration: float, threads: int) -> LatencyResult:
    committed, achieved, lags = run_paced_writer(servers, rate, duration, threads)
    total = len(committed)
    mysql = mysql_connect(servers)
    try:
        deadline = time.monotonic() + LATENCY_WAIT_TIMEOUT_SECONDS
        while mysql_query(mysql, "SELECT count(*) FROM lat")[0][0] < total:
            if daemon.poll() is not None:
                raise RuntimeError(f"the daemon exited with status {daemon.returncode} during the latency run")
            if time.monotonic() > deadline:
                raise RuntimeError(f"not all {total} latency rows reached MariaDB within {LATENCY_WAIT_TIMEOUT_SECONDS} s")
            time.sleep(0.1)
        rows = mysql_query(mysql, "SELECT id, created_at, arrived FROM lat")
    finally:
        mysql.close()

    from_created = []
    from_commit = []
    for row_id, created_at, arrived in rows:
        from_created.append((arrived - created_at).total_seconds() * 1000)
        arrived_epoch = arrived.replace(tzinfo=UTC).timestamp()
        from_commit.append((arrived_epoch - committed[row_id]) * 1000)
    return LatencyResult(
        rows=total,
        achieved_rate=achieved,
        max_schedule_lag_ms=max(lags) * 1000,
        late_writes=sum(1 for lag in lags if lag > 1 / rate),
        from_created_ms=sorted(from_created),
        from_commit_ms=sorted(from_commit),
    )


def latency_summary(values: list[float], bold_median: bool = False) -> str:
    median = f"{statistics.median(values):.1f} ms"
    if bold_median:
        median = f"**{median}**"
    return (
        f"median {median}, p90 {percentile(values, 90):.1f} ms, "
        f"p99 {percentile(values, 99):.1f} ms, max {values[-1]:.1f} ms"
    )


# ---------------------------------------------------------------------------
# Phase 6: shutdown, and the phases that need the daemon


def stop_daemon(daemon: subprocess.Popen) -> tuple[int | None, float]:
    """Send SIGTERM and wait; return the exit status (None if it had to be killed) and the wait."""
    started = time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    try:
        status = daemon.wait(timeout=DAEMON_STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        daemon.kill()
        daemon.wait()
        return None, time.monotonic() - started
    return status, time.monotonic() - started


@dataclass
class DaemonRun:
    drain: DrainResult
    latency: LatencyResult
    final_peak_rss_kib: int
    exit_status: int | None
    stop_seconds: float


def run_daemon_phases(
    args: argparse.Namespace, servers: Servers, env: dict[str, str], backlog: Backlog, expected_rows: list[tuple]
) -> DaemonRun:
    """Start the daemon, measure the drain and the latency, then stop it with SIGTERM."""
    daemon = None
    try:
        # Phase 4: drain.
        cpu_before = CpuSnapshot.take(None)
        drain_started = time.monotonic()
        daemon = start_daemon(args.binary, env, args.work_dir, args.daemon_log)
        drain = wait_for_drain(servers, daemon, backlog, drain_started)
        drain.cpu = cpu_usage(cpu_before, CpuSnapshot.take(daemon.pid))
        log(
            f"drain: {backlog.changes:,} changes in {drain.seconds:.2f} s "
            f"({format_count(backlog.changes / drain.seconds)} changes/s); peak RSS {drain.peak_rss_kib / 1024:.1f} MiB"
        )
        if fetch_mysql_rows(servers, "bench") != expected_rows:
            raise RuntimeError("the MariaDB table differs from PostgreSQL after the drain")
        log("drain: every row of the MariaDB table equals PostgreSQL's")

        # Phase 5: latency, with the daemon still running.
        latency = measure_latency(servers, daemon, args.latency_rate, args.latency_seconds, args.latency_threads)
        log(f"latency: {latency_summary(latency.from_created_ms)}; achieved {latency.achieved_rate:.0f} rows/s")

        # Phase 6: shutdown.
        final_peak = status_kib(daemon.pid, "VmHWM") or 0
        exit_status, stop_seconds = stop_daemon(daemon)
        log(f"daemon stopped after {stop_seconds:.2f} s with exit status {exit_status}")
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    return DaemonRun(drain, latency, final_peak, exit_status, stop_seconds)


# ---------------------------------------------------------------------------
# Report


def read_load_average() -> str:
    """Return the 1, 5 and 15 minute load averages from /proc/loadavg."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def read_machine() -> dict[str, str]:
    cpu_model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    return {
        "load_average": read_load_average(),
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": cpu_model,
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "kernel": os.uname().release,
    }


def read_versions(servers: Servers) -> tuple[str, str]:
    with pg_connect(servers) as pg:
        pg_version = pg_scalar(pg, "SELECT version()")
    mysql = mysql_connect(servers, database=None)
    try:
        mysql_version = mysql_query(mysql, "SELECT VERSION()")[0][0]
    finally:
        mysql.close()
    return pg_version.split(",")[0], mysql_version


def read_git(repo: Path) -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False).stdout.strip()

    commit = git("rev-parse", "HEAD") or "unknown"
    changed = git("status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock")
    if changed:
        return f"{commit}, with uncommitted changes in src/, Cargo.toml or Cargo.lock"
    return f"{commit} (src/, Cargo.toml and Cargo.lock as committed)"


OPERATION_NAMES = {"I": "inserts", "U": "updates", "D": "deletes", "T": "truncates"}


def seconds_list(values: list[float]) -> str:
    return ", ".join(f"{value:.2f}" for value in values)


@dataclass
class Report:
    args: argparse.Namespace
    machine: dict[str, str]
    pg_version: str
    mysql_version: str
    git: str
    overhead: TriggerOverhead
    backlog: Backlog
    direct_seconds: list[float]
    drain: DrainResult
    latency: LatencyResult
    final_peak_rss_kib: int
    exit_status: int | None
    stop_seconds: float
    started_at: dt.datetime
    total_seconds: float
    load_average_end: str

    def header(self) -> list[str]:
        machine = self.machine
        return [
            f"### Run of {self.started_at:%Y-%m-%d %H:%M} UTC",
            "",
            f"- Command: `{self.args.command}`",
            f"- Commit: {self.git}",
            f"- Machine: {machine['nproc']} CPUs (nproc), {machine['cpu']}, {machine['memory']} memory, "
            f"Linux {machine['kernel']}; load average {machine['load_average']} at the start and "
            f"{self.load_average_end} at the end",
            f"- Servers: {self.pg_version} and MariaDB {self.mysql_version}, on the same machine, started by "
            "scripts/servers.sh with its settings (every commit flushed to disk on both), reached over "
            "TCP on 127.0.0.1",
            f"- Context: one autocommit single-row INSERT into PostgreSQL took {self.overhead.commit_ms:.2f} ms "
            "on average (pgbench, 1,000 in a row); most of that is the WAL flush",
            f"- Whole run, from the start of scripts/bench.sh: {self.total_seconds:.0f} s",
        ]

    def table(self) -> list[str]:
        a = self.args
        b = self.backlog
        d = self.drain
        o = self.overhead
        lat = self.latency

        direct_seconds = statistics.median(self.direct_seconds)
        direct_rate = b.final_rows / direct_seconds
        drain_rate = b.changes / d.seconds
        ratio = drain_rate / direct_rate
        insert_ratio = (a.rows / d.seconds) / direct_rate
        operations = ", ".join(
            f"{b.by_op[code]:,} {OPERATION_NAMES.get(code, code)}" for code in ("I", "U", "D", "T") if code in b.by_op
        )
        drain_rows = [
            f"| Backlog drain: {b.changes:,} changes ({operations}) | {d.seconds:.2f} s, "
            f"**{format_count(drain_rate)} changes/s** | | |",
            f"| Direct load: {b.final_rows:,} rows as INSERTs of {a.direct_rows_per_statement:,} rows "
            f"(median of {len(self.direct_seconds)}) | {direct_seconds:.2f} s, "
            f"**{format_count(direct_rate)} rows/s** | | |",
            f"| Drain rate ÷ direct rate (changes/s ÷ rows/s) | **{ratio:.0%}** | ≥ 50% | {verdict(ratio >= 0.5)} |",
            f"| Same, counting only the {a.rows:,} inserts of the drain | {insert_ratio:.0%} | | |",
        ]

        single_plain = statistics.median(o.single.plain_seconds)
        single_trig = statistics.median(o.single.trig_seconds)
        bulk_plain = statistics.median(o.bulk.plain_seconds)
        bulk_trig = statistics.median(o.bulk.trig_seconds)
        bulk_ratio = bulk_trig / bulk_plain
        overhead_rows = [
            f"| Trigger overhead, batched: {a.rows:,} single-row INSERTs in transactions of "
            f"{a.per_transaction:,} (median of {len(o.single.plain_seconds)}) | {single_plain:.2f} s → "
            f"{single_trig:.2f} s, **{format_ratio(single_trig / single_plain)}** | | |",
            f"| Trigger overhead, bulk: one {a.rows:,}-row INSERT … SELECT (median of "
            f"{len(o.bulk.plain_seconds)}) | {bulk_plain:.2f} s → {bulk_trig:.2f} s, "
            f"**{format_ratio(bulk_ratio)}** | < 2× | {verdict(bulk_ratio < 2)} |",
            f"| Trigger overhead, concurrent: autocommit single-row INSERTs from {a.concurrent_clients} "
            f"clients for {a.concurrent_seconds} s (median of {len(o.concurrent_plain_tps)}) | "
            f"{format_count(statistics.median(o.concurrent_plain_tps))} → "
            f"{format_count(statistics.median(o.concurrent_trig_tps))} commits/s, "
            f"**{format_ratio(o.concurrent_ratio)}** slower | | |",
        ]

        median_latency = statistics.median(lat.from_created_ms)
        peak_mib = d.peak_rss_kib / 1024
        daemon_rows = [
            f"| Latency at {a.latency_rate:g} changes/s for {a.latency_seconds:g} s "
            f"({lat.rows:,} rows, achieved {lat.achieved_rate:.0f}/s), `arrived − created_at` | "
            f"{latency_summary(lat.from_created_ms, bold_median=True)} | median < 50 ms | "
            f"{verdict(median_latency < 50)} |",
            f"| Daemon peak RSS during the drain | **{peak_mib:.1f} MiB** | < 64 MiB | "
            f"{verdict(peak_mib < 64)} |",
        ]

        header = ["| Figure | Result | Target | Target met |", "| --- | --- | --- | --- |"]
        return header + drain_rows + overhead_rows + daemon_rows

    def details(self) -> list[str]:
        a = self.args
        b = self.backlog
        d = self.drain
        o = self.overhead
        lat = self.latency
        exit_text = (
            f"was killed after {DAEMON_STOP_TIMEOUT_SECONDS} s"
            if self.exit_status is None
            else f"exited with status {self.exit_status}"
        )
        return [
            f"- Backlog: written to PostgreSQL in {b.pg_seconds:.1f} s with the capture triggers installed and "
            "the daemon stopped: 10 transactions of `INSERT … SELECT generate_series`, then 3 `UPDATE` "
            "transactions (qty, price, paid and note of 30% of the rows), then 2 `DELETE` transactions "
            f"(10% of the rows). {b.final_rows:,} rows remain.",
            "- Drain: the clock starts when the daemon process is started and stops at the first poll "
            f"(every {DRAIN_POLL_SECONDS * 1000:.0f} ms) at which count(\\*), sum(qty), sum(price), sum(paid) "
            "and sum(customer_id) of the MariaDB table equal PostgreSQL's; after that, every row and column "
            "is compared once and found equal. Until the inserts and updates are visible, the poll reads "
            "single rows by primary key only, so it barely loads MariaDB. "
            f"First row visible after {d.first_row_seconds:.2f} s, all inserts after {d.inserts_seconds:.2f} s, "
            f"all updates after {d.updates_seconds:.2f} s, all changes after {d.seconds:.2f} s. "
            f"Checkpoint `applied_seq` at the end: {d.checkpoint:,}.",
            f"- CPU time during the drain: {format_cpu(d.cpu, d.seconds)}. The postgres figure misses "
            "backends that exited during the drain.",
            f"- Direct load runs: {seconds_list(self.direct_seconds)} s. Plain `INSERT` statements of "
            f"{a.direct_rows_per_statement:,} rows, built before the clock starts and sent by PyMySQL, each "
            "committed on its own (autocommit), into an empty table of the same definition, while the "
            "daemon is not running. The drain rate counts changes and the direct rate counts rows. Each "
            "change is one row written or removed in MariaDB, so the first ratio compares rows handled per "
            f"second; the second ratio credits the drain with its {a.rows:,} inserts only, treats the "
            "updates and deletes as overhead, and is a lower bound.",
            "- Trigger overhead runs, without / with the trigger: batched "
            f"{seconds_list(o.single.plain_seconds)} / {seconds_list(o.single.trig_seconds)} s; bulk "
            f"{seconds_list(o.bulk.plain_seconds)} / {seconds_list(o.bulk.trig_seconds)} s; concurrent "
            f"{', '.join(format_count(v) for v in o.concurrent_plain_tps)} / "
            f"{', '.join(format_count(v) for v in o.concurrent_trig_tps)} commits/s. Each run starts on an "
            "empty table and an empty change log after a CHECKPOINT, with the daemon not running, so the "
            "figures cover the trigger alone, and runs alternate between the two tables. The batched and "
            f"concurrent runs use pgbench. In the batched runs one client sends `BEGIN`, {a.per_transaction:,} "
            "INSERTs and `COMMIT`, so the WAL flush of each commit does not hide the trigger's cost. In the "
            "concurrent runs each INSERT is its own transaction.",
            f"- Latency: {a.latency_threads} connections write on an absolute schedule (row i is due at start + "
            f"i / {a.latency_rate:g} s), each row a single-row INSERT in its own transaction whose created_at is "
            f"`clock_timestamp()`. {lat.late_writes:,} writes started more than one interval late, the latest by "
            f"{lat.max_schedule_lag_ms:.1f} ms. MariaDB fills `arrived` with CURRENT_TIMESTAMP(6), the start of "
            "the daemon's INSERT statement, so the figure includes PostgreSQL's commit but not MariaDB's. "
            "Measured from the moment the writer received the commit acknowledgement instead: "
            f"{latency_summary(lat.from_commit_ms)}.",
            f"- Memory: the peak is the larger of VmHWM read when the tables matched "
            f"({d.hwm_kib / 1024:.1f} MiB) and the highest VmRSS sampled at each poll "
            f"({d.sampled_rss_kib / 1024:.1f} MiB), because the two can differ by a few pages. VmHWM at the "
            f"end of the run, after the latency phase, was {self.final_peak_rss_kib / 1024:.1f} MiB.",
            f"- Shutdown: on SIGTERM at the end, the daemon {exit_text} after {self.stop_seconds:.2f} s.",
        ]

    def lines(self) -> list[str]:
        return self.header() + [""] + self.table() + ["", "Details:", ""] + self.details()


def write_report(report: Report, output: Path) -> None:
    text = "\n".join(report.lines()) + "\n"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    print()
    print(text, end="", flush=True)
    log(f"wrote {output}")


# ---------------------------------------------------------------------------
# Main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--env-file", type=Path, required=True, help="DIR/env written by scripts/servers.sh start DIR")
    parser.add_argument("--binary", type=Path, required=True, help="pg-to-mysql-sync binary")
    parser.add_argument("--work-dir", type=Path, required=True, help="scratch directory for the journal and pgbench scripts")
    parser.add_argument("--daemon-log", type=Path, required=True, help="file for the daemon's log output")
    parser.add_argument("--output", type=Path, required=True, help="Markdown file for the results")
    parser.add_argument("--repo", type=Path, required=True, help="repository, for the git commit")
    parser.add_argument("--command", default="scripts/bench.sh", help="command line to record in the report")
    parser.add_argument(
        "--script-started", type=float, default=None, help="Unix time at which scripts/bench.sh started (default: now)"
    )

    parser.add_argument("--rows", type=int, default=100_000, help="rows inserted by the backlog and overhead workloads (default 100000)")
    parser.add_argument("--per-transaction", type=int, default=1_000, help="single-row INSERTs per transaction in the overhead test (default 1000)")
    parser.add_argument(
        "--overhead-repeats", type=int, default=2, help="runs per table of the pgbench overhead tests (default 2)"
    )
    parser.add_argument(
        "--bulk-repeats", type=int, default=5, help="runs per table of the INSERT … SELECT overhead test (default 5)"
    )
    parser.add_argument("--concurrent-clients", type=int, default=4, help="pgbench clients in the autocommit overhead test (default 4)")
    parser.add_argument("--concurrent-seconds", type=int, default=5, help="length of each autocommit overhead run in seconds (default 5)")
    parser.add_argument("--direct-rows-per-statement", type=int, default=1_000, help="rows per INSERT of the direct load (default 1000)")
    parser.add_argument("--direct-repeats", type=int, default=5, help="runs of the direct load (default 5)")
    parser.add_argument("--latency-rate", type=float, default=500, help="changes per second in the latency test (default 500)")
    parser.add_argument("--latency-seconds", type=float, default=20, help="length of the latency test in seconds (default 20)")
    parser.add_argument("--latency-threads", type=int, default=4, help="writer connections in the latency test (default 4)")
    parser.add_argument("--rust-log", default="warn", help="RUST_LOG for the daemon (default warn)")
    args = parser.parse_args()
    if args.rows < 100 or args.rows % args.per_transaction:
        parser.error("--rows must be at least 100 and a multiple of --per-transaction")
    return args


def main() -> int:
    args = parse_args()
    script_started = args.script_started if args.script_started is not None else time.time()
    started_at = dt.datetime.fromtimestamp(script_started, UTC)
    servers = load_servers(args.env_file)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    data_dir = args.work_dir / "datalog"
    machine = read_machine()
    pg_version, mysql_version = read_versions(servers)
    git = read_git(args.repo)
    log(f"{machine['nproc']} CPUs, {machine['cpu']}, {machine['memory']}; {pg_version}; MariaDB {mysql_version}")

    create_schema(servers)

    # Phase 1: only ovh_trig is captured.
    overhead_env = daemon_environment(servers, "public.ovh_trig", data_dir, args.rust_log)
    run_setup(args.binary, overhead_env, args.work_dir)
    overhead = measure_trigger_overhead(servers, args.work_dir, args)
    log(
        f"trigger overhead: batched single-row INSERTs {format_ratio(overhead.single.ratio)}, "
        f"INSERT … SELECT {format_ratio(overhead.bulk.ratio)}, "
        f"concurrent autocommit INSERTs {format_ratio(overhead.concurrent_ratio)}"
    )

    # Phase 2: setup again with the benchmark tables, which removes the triggers from ovh_trig.
    env = daemon_environment(servers, "public.bench,public.lat", data_dir, args.rust_log)
    run_setup(args.binary, env, args.work_dir)
    backlog = create_backlog(servers, args.rows)
    log(
        f"backlog: {backlog.changes:,} changes {backlog.by_op}, written in {backlog.pg_seconds:.1f} s; "
        f"{backlog.final_rows:,} rows remain"
    )
    expected_rows = fetch_pg_rows(servers, "bench")

    # Phase 3: direct load, before the daemon starts.
    direct_seconds = measure_direct_load(servers, expected_rows, args.direct_rows_per_statement, args.direct_repeats)

    daemon_run = run_daemon_phases(args, servers, env, backlog, expected_rows)

    with pg_connect(servers) as pg:
        left = pg_scalar(pg, f"SELECT {CHANGE_COUNT} FROM {CHANGE_LOG}")
    if left:
        log(f"warning: {left} changes are still in the change log after the run")

    report = Report(
        args=args,
        machine=machine,
        pg_version=pg_version,
        mysql_version=mysql_version,
        git=git,
        overhead=overhead,
        backlog=backlog,
        direct_seconds=direct_seconds,
        drain=daemon_run.drain,
        latency=daemon_run.latency,
        final_peak_rss_kib=daemon_run.final_peak_rss_kib,
        exit_status=daemon_run.exit_status,
        stop_seconds=daemon_run.stop_seconds,
        started_at=started_at,
        total_seconds=time.time() - script_started,
        load_average_end=read_load_average(),
    )
    write_report(report, args.output)
    shutil.rmtree(data_dir, ignore_errors=True)
    if daemon_run.exit_status != 0:
        log("error: the daemon did not exit with status 0 after SIGTERM")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
