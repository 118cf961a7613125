#!/usr/bin/env python3
"""Measure the snapshot and verify commands against LOAD DATA LOCAL INFILE.

Run it as root with `scripts/bench.sh --snapshot`, which builds the release
binary, starts throwaway servers and runs this file in target/bench-venv. It
reuses the benchmark table and the helpers of scripts/bench.py, and all
figures come from one run:

1. PostgreSQL gets the benchmark table with --rows generated rows, and
   `pg-to-mysql-sync setup --no-snapshot` installs capture for it.
2. The rows are exported once to a file in the text format of LOAD DATA.
3. Snapshot and LOAD DATA runs alternate, --repeats times each:
   `pg-to-mysql-sync snapshot public.bench` with no daemon running, and
   TRUNCATE plus LOAD DATA LOCAL INFILE of the file into bench_direct, a
   MariaDB table of the same definition.
4. The two MariaDB tables are compared row by row.
5. `pg-to-mysql-sync verify --json public.bench` runs --verify-repeats times.

It prints the figures and writes them as a Markdown section to --output.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import (
    CHANGE_COUNT,
    CHANGE_LOG,
    COLUMNS,
    MYSQL_DATABASE,
    MYSQL_TABLE_BODY,
    ROW_VALUES,
    UTC,
    CLOCK_TICKS,
    Servers,
    create_pg_table,
    daemon_environment,
    format_count,
    format_cpu,
    load_servers,
    log,
    machine_busy_ticks,
    mysql_connect,
    mysql_execute,
    mysql_query,
    mysql_summary,
    pg_connect,
    pg_scalar,
    pg_summary,
    process_cpu_seconds,
    read_git,
    read_load_average,
    read_machine,
    read_versions,
    run_setup,
    seconds_list,
    verdict,
)

TABLE = "public.bench"
DIRECT_TABLE = "bench_direct"
TARGET_RATIO = 0.70
ALL_COLUMNS = f"id, {COLUMNS}"
# The MariaDB defaults of LOAD DATA, written out: tab between fields, newline
# after each row, backslash escapes, and \N for NULL.
LOAD_DATA_SQL = (
    f"LOAD DATA LOCAL INFILE %s INTO TABLE {DIRECT_TABLE} CHARACTER SET utf8mb4 "
    "FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' "
    f"({ALL_COLUMNS})"
)
# PostgreSQL's COPY text format has the same separators, escapes and NULL
# marker. Booleans become 1 and 0 and timestamps UTC DATETIME(6) literals, as
# MariaDB reads them. COPY also writes \b, \f and \v escapes, which MariaDB
# would read as the letters, but the generated rows contain none of those
# characters, and the row compare after the runs would catch them.
EXPORT_SQL = (
    "COPY (SELECT id, customer_id, sku, qty, price, paid::int, note, "
    "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') "
    "FROM bench ORDER BY id) TO STDOUT"
)
# Every column compared, strings as bytes, because the table collation
# utf8mb4_unicode_ci treats 'café' and 'cafe' as equal.
ROW_MATCH_SQL = (
    f"SELECT count(*) FROM bench AS s JOIN {DIRECT_TABLE} AS d ON d.id = s.id "
    "AND d.customer_id = s.customer_id AND BINARY d.sku = BINARY s.sku AND d.qty = s.qty "
    "AND d.price = s.price AND d.paid = s.paid AND BINARY d.note <=> BINARY s.note "
    "AND d.created_at = s.created_at"
)
FINISHED_LINE = re.compile(r"snapshot finished.*?seconds=([0-9.]+).*?rows_per_second=(\d+)")


# ---------------------------------------------------------------------------
# Preparation


def create_tables(servers: Servers, rows: int) -> float:
    """Create and fill the PostgreSQL table and create both MariaDB tables.

    Returns the seconds that the INSERT of the rows took.
    """
    with pg_connect(servers) as pg:
        pg.execute("SET client_min_messages = warning")
        create_pg_table(pg, "bench", identity=False)
        started = time.perf_counter()
        # Integers go into the text directly: ROW_VALUES uses %, which psycopg
        # would read as a placeholder if parameters were passed. g is bigint,
        # because g * 7919 in ROW_VALUES overflows integer above 271,000 rows.
        pg.execute(f"INSERT INTO bench SELECT g, {ROW_VALUES} FROM generate_series(1::bigint, {int(rows)}) AS g")
        fill_seconds = time.perf_counter() - started
        # VACUUM sets the hint bits and the visibility map, so that no timed
        # read writes them, and ANALYZE gives the snapshot its row estimate.
        pg.execute("VACUUM (ANALYZE) bench")
        pg.execute("CHECKPOINT")

    mysql = mysql_connect(servers, database=None)
    try:
        mysql_execute(mysql, f"DROP DATABASE IF EXISTS {MYSQL_DATABASE}")
        mysql_execute(mysql, f"CREATE DATABASE {MYSQL_DATABASE} CHARACTER SET utf8mb4")
        mysql_execute(mysql, f"USE {MYSQL_DATABASE}")
        for table in ("bench", DIRECT_TABLE):
            mysql_execute(mysql, f"CREATE TABLE {table} " + MYSQL_TABLE_BODY.format(extra=""))
    finally:
        mysql.close()
    return fill_seconds


@dataclass
class Export:
    seconds: float
    size_bytes: int


def export_rows(servers: Servers, path: Path) -> Export:
    started = time.perf_counter()
    with pg_connect(servers) as pg, path.open("wb") as file:
        with pg.cursor().copy(EXPORT_SQL) as copy:
            for data in copy:
                file.write(data)
    return Export(seconds=time.perf_counter() - started, size_bytes=path.stat().st_size)


# ---------------------------------------------------------------------------
# Timed runs


@dataclass
class ServerPids:
    postmaster: int
    mariadbd: int


def read_server_pids(env_file: Path) -> ServerPids:
    """Read the pids of the servers that scripts/servers.sh started in the directory of env_file."""
    servers_dir = env_file.parent
    postmaster = (servers_dir / "pg-data" / "postmaster.pid").read_text().split()[0]
    mariadbd = (servers_dir / "mysql-run" / "mysqld.pid").read_text().split()[0]
    return ServerPids(postmaster=int(postmaster), mariadbd=int(mariadbd))


def stat_ticks(pid: int) -> tuple[int, int, int]:
    """Return (parent pid, own CPU ticks, CPU ticks of reaped children) from /proc/PID/stat, or zeros if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0, 0, 0
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state) of proc(5): ppid is field 4, utime and stime
    # are 14 and 15, cutime and cstime 16 and 17.
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def postgres_cpu_seconds(postmaster: int) -> float:
    """Return the CPU seconds of the postmaster, its live children and the children it has reaped.

    Backends and background workers are children of the postmaster, and its
    cutime and cstime contain those that exited, such as the backend of a
    finished command. NOTE: a backend that exits while this reads /proc can be
    counted twice or not at all.
    """
    _, own, reaped = stat_ticks(postmaster)
    ticks = own + reaped
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != postmaster:
            parent, child_own, child_reaped = stat_ticks(int(entry.name))
            if parent == postmaster:
                ticks += child_own + child_reaped
    return ticks / CLOCK_TICKS


@dataclass
class CpuSample:
    """CPU seconds used so far by each process of the pipeline, and the machine's busy ticks."""

    wall: float
    binary: float
    postgres: float
    mariadbd: float
    own: float
    busy_ticks: int
    total_ticks: int

    @staticmethod
    def take(pids: ServerPids) -> CpuSample:
        # The binary runs as a child of this process, so RUSAGE_CHILDREN counts
        # it once it has been waited for.
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        times = os.times()
        busy, total = machine_busy_ticks()
        return CpuSample(
            wall=time.monotonic(),
            binary=children.ru_utime + children.ru_stime,
            postgres=postgres_cpu_seconds(pids.postmaster),
            mariadbd=process_cpu_seconds(pids.mariadbd),
            own=times.user + times.system,
            busy_ticks=busy,
            total_ticks=total,
        )


def cpu_since(before: CpuSample, pids: ServerPids) -> dict[str, float]:
    """Return the CPU seconds used since `before`, per process, in the form that format_cpu prints."""
    after = CpuSample.take(pids)
    ticks = after.total_ticks - before.total_ticks
    cores = len(os.sched_getaffinity(0))
    machine = (after.busy_ticks - before.busy_ticks) / ticks * cores * (after.wall - before.wall) if ticks else 0.0
    usage = {
        "pg-to-mysql-sync": after.binary - before.binary,
        "postgres": after.postgres - before.postgres,
        "mariadbd": after.mariadbd - before.mariadbd,
        "bench_snapshot.py": after.own - before.own,
    }
    # The rest is the noise of a shared machine: other users' work, and the kernel's.
    usage["other processes"] = max(0.0, machine - sum(usage.values()))
    usage["machine"] = machine
    return usage


@dataclass
class CommandRun:
    wall_seconds: float
    report: dict
    stderr: str
    cpu: dict[str, float]


def run_command(args: argparse.Namespace, env: dict[str, str], command: list[str], label: str) -> CommandRun:
    """Run the binary with `command`, appending its standard error to the command log.

    It runs in the scratch directory, so no stray .env file is loaded.
    """
    cpu_before = CpuSample.take(args.server_pids)
    started = time.perf_counter()
    result = subprocess.run(
        [str(args.binary), *command], env=env, cwd=args.work_dir, capture_output=True, text=True, check=False
    )
    wall_seconds = time.perf_counter() - started
    cpu = cpu_since(cpu_before, args.server_pids)
    with args.command_log.open("a") as command_log:
        command_log.write(f"--- {label}: pg-to-mysql-sync {' '.join(command)}, exit status {result.returncode}\n")
        command_log.write(result.stderr)
    if result.returncode != 0:
        raise RuntimeError(
            f"pg-to-mysql-sync {' '.join(command)} failed with exit status {result.returncode}:\n"
            f"{result.stdout}{result.stderr}"
        )
    return CommandRun(wall_seconds=wall_seconds, report=json.loads(result.stdout), stderr=result.stderr, cpu=cpu)


@dataclass
class SnapshotRun:
    seconds: float
    wall_seconds: float
    # From the log line "snapshot finished", whose clock starts after the TRUNCATE.
    logged_seconds: float | None
    logged_rate: int | None
    cpu: dict[str, float]


def run_snapshot(args: argparse.Namespace, env: dict[str, str], repeat: int) -> SnapshotRun:
    run = run_command(args, env, ["snapshot", TABLE], f"snapshot, run {repeat}")
    tables = run.report["tables"]
    if len(tables) != 1 or tables[0]["table"] != TABLE:
        raise RuntimeError(f"the snapshot reported other tables than {TABLE}: {run.report}")
    table = tables[0]
    if table["rows"] != args.rows or table["skipped_rows"] != 0:
        raise RuntimeError(
            f"the snapshot copied {table['rows']} rows and skipped {table['skipped_rows']}, "
            f"expected {args.rows} and 0"
        )
    finished = FINISHED_LINE.search(run.stderr)
    if finished is None:
        log("warning: no 'snapshot finished' line with seconds and rows_per_second on standard error")
    result = SnapshotRun(
        seconds=float(table["seconds"]),
        wall_seconds=run.wall_seconds,
        logged_seconds=float(finished.group(1)) if finished else None,
        logged_rate=int(finished.group(2)) if finished else None,
        cpu=run.cpu,
    )
    log(
        f"snapshot, run {repeat}: {args.rows:,} rows in {result.seconds:.2f} s "
        f"({format_count(args.rows / result.seconds)} rows/s), process {result.wall_seconds:.2f} s"
    )
    return result


@dataclass
class LoadRun:
    seconds: float
    cpu: dict[str, float]


def run_load_data(args: argparse.Namespace, servers: Servers, path: Path, repeat: int) -> LoadRun:
    """Time TRUNCATE, then LOAD DATA LOCAL INFILE and COMMIT in one transaction."""
    rows = args.rows
    mysql = mysql_connect(servers, local_infile=True)
    try:
        cpu_before = CpuSample.take(args.server_pids)
        started = time.perf_counter()
        mysql_execute(mysql, f"TRUNCATE TABLE {DIRECT_TABLE}")
        mysql.begin()
        with mysql.cursor() as cursor:
            loaded = cursor.execute(LOAD_DATA_SQL, (str(path),))
        mysql.commit()
        seconds = time.perf_counter() - started
        cpu = cpu_since(cpu_before, args.server_pids)
        # No binary runs here, so its share is 0.
        del cpu["pg-to-mysql-sync"]
        warnings = mysql_query(mysql, "SELECT @@warning_count")[0][0]
    finally:
        mysql.close()
    # With LOCAL, the server cannot stop the client's transfer, so it reports bad
    # values as warnings and goes on, as if IGNORE were given (MySQL manual, LOAD DATA).
    if loaded != rows or warnings:
        raise RuntimeError(f"LOAD DATA loaded {loaded} rows with {warnings} warnings, expected {rows} and none")
    log(f"LOAD DATA, run {repeat}: {rows:,} rows in {seconds:.2f} s ({format_count(rows / seconds)} rows/s)")
    return LoadRun(seconds=seconds, cpu=cpu)


@dataclass
class VerifyRun:
    rows_compared: int
    seconds: float
    wall_seconds: float
    cpu: dict[str, float]


def run_verify(args: argparse.Namespace, env: dict[str, str], repeat: int) -> VerifyRun:
    run = run_command(args, env, ["verify", "--json", TABLE], f"verify, run {repeat}")
    tables = run.report["tables"]
    if len(tables) != 1 or tables[0]["table"] != TABLE:
        raise RuntimeError(f"verify reported other tables than {TABLE}: {run.report}")
    table = tables[0]
    differences = table["changed"] + table["missing"] + table["extra"]
    if table["rows_compared"] != args.rows or differences or table["error"]:
        raise RuntimeError(f"verify compared {table['rows_compared']} rows and found differences: {table}")
    result = VerifyRun(
        rows_compared=table["rows_compared"],
        seconds=float(table["seconds"]),
        wall_seconds=run.wall_seconds,
        cpu=run.cpu,
    )
    log(
        f"verify, run {repeat}: {result.rows_compared:,} rows compared in {result.seconds:.2f} s "
        f"({format_count(result.rows_compared / result.seconds)} rows/s), process {result.wall_seconds:.2f} s"
    )
    return result


def check_tables_equal(servers: Servers, rows: int) -> None:
    """Check that the snapshot's target and the LOAD DATA table hold the PostgreSQL rows."""
    with pg_connect(servers) as pg:
        expected = pg_summary(pg)
    mysql = mysql_connect(servers)
    try:
        for table in ("bench", DIRECT_TABLE):
            if mysql_summary(mysql, table) != expected:
                raise RuntimeError(f"the count and column sums of {table} differ from PostgreSQL's")
        matching = mysql_query(mysql, ROW_MATCH_SQL)[0][0]
    finally:
        mysql.close()
    if matching != rows:
        raise RuntimeError(f"only {matching:,} of {rows:,} rows are equal in bench and {DIRECT_TABLE}")
    log(f"bench and {DIRECT_TABLE} hold the same {rows:,} rows, and their count and sums equal PostgreSQL's")


# ---------------------------------------------------------------------------
# Report


def mean_cpu(runs: list) -> dict[str, float]:
    """Average the CPU seconds per process over runs."""
    return {name: statistics.fmean(run.cpu[name] for run in runs) for name in runs[0].cpu}


def median_rate(rows: int, seconds: list[float]) -> float:
    return rows / statistics.median(seconds)


@dataclass
class Report:
    args: argparse.Namespace
    machine: dict[str, str]
    pg_version: str
    mysql_version: str
    git: str
    started_at: dt.datetime
    fill_seconds: float
    export: Export
    snapshots: list[SnapshotRun] = field(default_factory=list)
    loads: list[LoadRun] = field(default_factory=list)
    verifies: list[VerifyRun] = field(default_factory=list)
    total_seconds: float = 0.0
    load_average_end: str = ""

    @property
    def snapshot_rate(self) -> float:
        return median_rate(self.args.rows, [run.seconds for run in self.snapshots])

    @property
    def load_rate(self) -> float:
        return median_rate(self.args.rows, [run.seconds for run in self.loads])

    @property
    def verify_rate(self) -> float:
        return median_rate(self.args.rows, [run.seconds for run in self.verifies])

    @property
    def ratio(self) -> float:
        return self.snapshot_rate / self.load_rate

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
            f"- Whole run, from the start of scripts/bench.sh: {self.total_seconds:.0f} s",
        ]

    def table(self) -> list[str]:
        rows = self.args.rows
        snapshot_seconds = statistics.median(run.seconds for run in self.snapshots)
        snapshot_wall = statistics.median(run.wall_seconds for run in self.snapshots)
        load_seconds = statistics.median(run.seconds for run in self.loads)
        verify_seconds = statistics.median(run.seconds for run in self.verifies)
        verify_wall = statistics.median(run.wall_seconds for run in self.verifies)
        return [
            "| Figure | Result | Target | Target met |",
            "| --- | --- | --- | --- |",
            f"| Snapshot: `snapshot {TABLE}` of {rows:,} rows (median of {len(self.snapshots)}) | "
            f"{snapshot_seconds:.2f} s, **{format_count(self.snapshot_rate)} rows/s**; whole process "
            f"{snapshot_wall:.2f} s, {format_count(rows / snapshot_wall)} rows/s | | |",
            f"| Limit: TRUNCATE and LOAD DATA LOCAL INFILE of the same rows (median of {len(self.loads)}) | "
            f"{load_seconds:.2f} s, **{format_count(self.load_rate)} rows/s** | | |",
            f"| Snapshot rate ÷ LOAD DATA rate | **{self.ratio:.0%}** | ≥ {TARGET_RATIO:.0%} | "
            f"{verdict(self.ratio >= TARGET_RATIO)} |",
            f"| Verify: `verify {TABLE}` of the equal tables (median of {len(self.verifies)}) | "
            f"{verify_seconds:.2f} s, **{format_count(self.verify_rate)} rows compared/s**; whole process "
            f"{verify_wall:.2f} s | | |",
        ]

    def details(self) -> list[str]:
        rows = self.args.rows
        snapshot_cpu = mean_cpu(self.snapshots)
        load_cpu = mean_cpu(self.loads)
        verify_cpu = mean_cpu(self.verifies)
        snapshot_wall = statistics.fmean(run.wall_seconds for run in self.snapshots)
        load_seconds = statistics.fmean(run.seconds for run in self.loads)
        verify_wall = statistics.fmean(run.wall_seconds for run in self.verifies)
        pair_ratios = ", ".join(
            f"{load.seconds / snapshot.seconds:.0%}" for snapshot, load in zip(self.snapshots, self.loads)
        )
        logged = [run for run in self.snapshots if run.logged_seconds is not None]
        logged_text = (
            "The log line `snapshot finished`, whose clock starts after the TRUNCATE, gave "
            + ", ".join(f"{run.logged_seconds:.2f} s ({format_count(run.logged_rate)} rows/s)" for run in logged)
            + "."
            if logged
            else "No run logged a `snapshot finished` line."
        )
        return [
            f"- Data: `{TABLE}` with {rows:,} rows from `generate_series` and the column values of "
            f"scripts/bench.py, filled in {self.fill_seconds:.1f} s, then `VACUUM (ANALYZE)` and a "
            "CHECKPOINT. `setup --no-snapshot` installed capture. Nothing wrote to the table during the "
            "runs, so the change log stayed empty, and no daemon ran, so each command ran in its own "
            "process. The snapshot used the default chunk size.",
            f"- Snapshot runs: {seconds_list([run.seconds for run in self.snapshots])} s by the `seconds` "
            "of the command's JSON output, which covers the TRUNCATE of the target and the copy; "
            f"{seconds_list([run.wall_seconds for run in self.snapshots])} s for the whole process, "
            f"including its start and its connections. {logged_text}",
            f"- LOAD DATA runs: {seconds_list([run.seconds for run in self.loads])} s. One PyMySQL "
            f"connection sends `TRUNCATE TABLE {DIRECT_TABLE}`, then `LOAD DATA LOCAL INFILE` of the "
            "whole file and `COMMIT` in one transaction. The file "
            f"({self.export.size_bytes / 1024 / 1024:.0f} MiB) was written once before the runs by "
            f"`COPY … TO STDOUT` in {self.export.seconds:.1f} s, which is not counted. Runs alternate "
            "with the snapshot runs, snapshot first in odd rounds and LOAD DATA first in even rounds. "
            f"Ratio of each round: {pair_ratios}.",
            f"- Equal data: after the runs, every row of `bench` (the snapshot's target) equals the row "
            f"of `{DIRECT_TABLE}` with the same id in every column, and both tables have PostgreSQL's "
            "count(\\*), sum(qty), sum(price), sum(paid) and sum(customer_id). Each verify run compared "
            f"{rows:,} rows and found no difference.",
            f"- Verify runs: {seconds_list([run.seconds for run in self.verifies])} s by the `seconds` of "
            f"`verify --json`; {seconds_list([run.wall_seconds for run in self.verifies])} s for the "
            "whole process.",
            f"- CPU time per snapshot run (mean): {format_cpu(snapshot_cpu, snapshot_wall)}.",
            f"- CPU time per LOAD DATA run (mean): {format_cpu(load_cpu, load_seconds)}.",
            f"- CPU time per verify run (mean): {format_cpu(verify_cpu, verify_wall)}.",
            "- In the CPU figures, postgres is the postmaster of this run's server and its children, "
            "including the backends that exited during the run, and mariadbd is this run's server. "
            "Other processes is the rest of the whole machine's busy time, such as the work of other "
            "users of a shared machine.",
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
    parser.add_argument("--work-dir", type=Path, required=True, help="scratch directory for DATA_DIR and the export file")
    parser.add_argument("--command-log", type=Path, required=True, help="file for the standard error of the binary's runs")
    parser.add_argument("--output", type=Path, required=True, help="Markdown file for the results")
    parser.add_argument("--repo", type=Path, required=True, help="repository, for the git commit")
    parser.add_argument("--command", default="scripts/bench.sh --snapshot", help="command line to record in the report")
    parser.add_argument(
        "--script-started", type=float, default=None, help="Unix time at which scripts/bench.sh started (default: now)"
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the benchmark table (default 1000000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs each of the snapshot and of LOAD DATA (default 3)")
    parser.add_argument("--verify-repeats", type=int, default=3, help="runs of verify (default 3)")
    args = parser.parse_args()
    if args.rows < 1 or args.repeats < 1 or args.verify_repeats < 1:
        parser.error("--rows, --repeats and --verify-repeats must be at least 1")
    return args


def main() -> int:
    args = parse_args()
    script_started = args.script_started if args.script_started is not None else time.time()
    servers = load_servers(args.env_file)
    args.server_pids = read_server_pids(args.env_file)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    args.command_log.parent.mkdir(parents=True, exist_ok=True)
    args.command_log.write_text("")
    data_dir = args.work_dir / "datalog"
    export_path = args.work_dir / "bench.tsv"
    machine = read_machine()
    pg_version, mysql_version = read_versions(servers)
    log(f"{machine['nproc']} CPUs, {machine['cpu']}, {machine['memory']}; {pg_version}; MariaDB {mysql_version}")

    fill_seconds = create_tables(servers, args.rows)
    log(f"filled {TABLE} with {args.rows:,} rows in {fill_seconds:.1f} s")
    env = daemon_environment(servers, TABLE, data_dir, "info")
    run_setup(args.binary, env, args.work_dir, ("--no-snapshot",))
    export = export_rows(servers, export_path)
    log(f"exported {args.rows:,} rows to {export_path} ({export.size_bytes:,} bytes) in {export.seconds:.1f} s")

    report = Report(
        args=args,
        machine=machine,
        pg_version=pg_version,
        mysql_version=mysql_version,
        git=read_git(args.repo),
        started_at=dt.datetime.fromtimestamp(script_started, UTC),
        fill_seconds=fill_seconds,
        export=export,
    )
    # Alternating the order spreads drift on the shared machine, and the
    # background work that each load leaves to InnoDB, over both measurements.
    for repeat in range(1, args.repeats + 1):
        if repeat % 2:
            report.snapshots.append(run_snapshot(args, env, repeat))
            report.loads.append(run_load_data(args, servers, export_path, repeat))
        else:
            report.loads.append(run_load_data(args, servers, export_path, repeat))
            report.snapshots.append(run_snapshot(args, env, repeat))
    check_tables_equal(servers, args.rows)
    with pg_connect(servers) as pg:
        captured = pg_scalar(pg, f"SELECT {CHANGE_COUNT} FROM {CHANGE_LOG}")
    if captured:
        raise RuntimeError(f"the change log contains {captured} changes, expected none because nothing wrote to {TABLE}")
    for repeat in range(1, args.verify_repeats + 1):
        report.verifies.append(run_verify(args, env, repeat))

    report.total_seconds = time.time() - script_started
    report.load_average_end = read_load_average()
    write_report(report, args.output)
    export_path.unlink(missing_ok=True)
    shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
