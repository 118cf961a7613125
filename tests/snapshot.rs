//! Snapshots and verify: copying existing rows consistently with concurrent changes, resuming
//! an interrupted copy, finding and repairing differences, the API routes and the periodic
//! verify.

use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use pg_to_mysql_sync::failpoint::{FAILPOINT_ENV, SNAPSHOT_FAILPOINTS};
use rand::RngExt;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{Daemon, Databases, ITEMS_MYSQL, ITEMS_PG, Pipeline, items_equal, pg_connect};

const CONVERGE: Duration = Duration::from_secs(60);

/// The snapshot progress table that the daemon keeps in MySQL.
const PROGRESS_TABLE: &str = "pg_to_mysql_sync_snapshot";

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs a command and asserts that it exits 0.
fn run_ok(pipeline: &Pipeline, args: &[&str]) -> Output {
    let output = pipeline.run_cli(args);
    assert!(
        output.status.success(),
        "{args:?} failed with {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        stdout(&output),
        stderr(&output)
    );
    output
}

/// Runs `verify --json` with `extra` arguments; returns the exit code and the report. A
/// failure shows the log of `daemon`, when the command went through one.
fn verify_json(
    pipeline: &Pipeline,
    extra: &[&str],
    daemon: Option<&Daemon>,
) -> (Option<i32>, Value) {
    let mut args = vec!["verify", "--json"];
    args.extend_from_slice(extra);
    let output = pipeline.run_cli(&args);
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "{args:?} printed no JSON report ({error}), exit {:?}\nstdout:\n{}\nstderr:\n{}\n\
             daemon log:\n{}",
            output.status,
            stdout(&output),
            stderr(&output),
            daemon.map(Daemon::log).unwrap_or_default()
        )
    });
    (output.status.code(), report)
}

/// Returns the report of `table` from a verify report.
fn table_report<'a>(report: &'a Value, table: &str) -> &'a Value {
    report["tables"]
        .as_array()
        .unwrap_or_else(|| panic!("the report has no table list: {report}"))
        .iter()
        .find(|entry| entry["table"] == table)
        .unwrap_or_else(|| panic!("the report has no entry for {table}: {report}"))
}

/// Asserts that a table's report shows no difference and no error.
fn assert_clean(entry: &Value) {
    assert_eq!(entry["changed"], 0, "{entry}");
    assert_eq!(entry["missing"], 0, "{entry}");
    assert_eq!(entry["extra"], 0, "{entry}");
    assert_eq!(entry["error"], Value::Null, "{entry}");
    assert_eq!(entry["keys"], json!([]), "{entry}");
}

/// Returns the differing keys of a table's report as sorted (kind, key) pairs.
fn listed_keys(entry: &Value) -> Vec<(String, String)> {
    let mut keys: Vec<(String, String)> = entry["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("no key list: {entry}"))
        .iter()
        .map(|key| {
            (
                key["kind"].as_str().unwrap().to_string(),
                key["key"].to_string(),
            )
        })
        .collect();
    keys.sort();
    keys
}

/// A row of the snapshot progress table.
#[derive(Debug, Clone, PartialEq)]
struct StoredProgress {
    state: String,
    after_key: Option<String>,
    rows_copied: u64,
    started_at: Option<String>,
    finished_at: Option<String>,
}

async fn stored_progress(databases: &Databases, table: &str) -> Option<StoredProgress> {
    let rows = databases
        .mysql_rows(&format!(
            "SELECT state, after_key, rows_copied, \
             DATE_FORMAT(started_at, '%Y-%m-%d %H:%i:%s.%f'), \
             DATE_FORMAT(finished_at, '%Y-%m-%d %H:%i:%s.%f') \
             FROM {PROGRESS_TABLE} WHERE table_name = '{table}'"
        ))
        .await;
    let row = rows.into_iter().next()?;
    Some(StoredProgress {
        state: row[0].clone().unwrap(),
        after_key: row[1].clone(),
        rows_copied: row[2].as_deref().unwrap().parse().unwrap(),
        started_at: row[3].clone(),
        finished_at: row[4].clone(),
    })
}

/// Polls the progress table until `table` is in `state`.
async fn wait_for_state(
    databases: &Databases,
    table: &str,
    state: &str,
    timeout: Duration,
    daemon: &Daemon,
) -> StoredProgress {
    let deadline = Instant::now() + timeout;
    loop {
        let progress = stored_progress(databases, table).await;
        if let Some(progress) = &progress
            && progress.state == state
        {
            return progress.clone();
        }
        if Instant::now() > deadline {
            panic!(
                "the snapshot of {table} did not reach state {state} within {timeout:?}: \
                 {progress:?}; log:\n{}",
                daemon.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn mysql_execute(databases: &Databases, sql: &str) {
    databases.mysql().await.query_drop(sql).await.unwrap();
}

async fn mysql_count(databases: &Databases, table: &str, filter: &str) -> i64 {
    let rows = databases
        .mysql_rows(&format!("SELECT COUNT(*) FROM {table} WHERE {filter}"))
        .await;
    rows[0][0].as_deref().unwrap().parse().unwrap()
}

/// Count, sums and a checksum over every column of `items`, written so that both servers
/// return the same text for the same rows.
const ITEMS_PG_CHECKSUM: &str = "SELECT count(*)::text, coalesce(sum(id), 0)::text, \
     coalesce(sum(qty), 0)::text, coalesce(sum(price), 0)::text, \
     coalesce(sum(('x' || substr(md5(concat_ws('|', id::text, coalesce(name, '<null>'), \
     coalesce(qty::text, '<null>'), coalesce(price::text, '<null>'), \
     coalesce(to_char(updated AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), '<null>'))), \
     1, 8))::bit(32)::bigint), 0)::text FROM items";
const ITEMS_MYSQL_CHECKSUM: &str = "SELECT COUNT(*), COALESCE(SUM(id), 0), \
     COALESCE(SUM(qty), 0), COALESCE(SUM(price), 0), \
     COALESCE(SUM(CAST(CONV(SUBSTR(MD5(CONCAT_WS('|', id, COALESCE(name, '<null>'), \
     COALESCE(qty, '<null>'), COALESCE(price, '<null>'), \
     COALESCE(DATE_FORMAT(updated, '%Y-%m-%d %H:%i:%s.%f'), '<null>'))), 1, 8), 16, 10) \
     AS UNSIGNED)), 0) FROM items";

/// Rows in the large snapshot test, written to PostgreSQL before setup.
const LARGE_TABLE_ROWS: i64 = 1_000_000;

/// Changes `items` in small transactions until `stop` is set, and counts the committed
/// ones in `committed`. Each transaction inserts a new key, updates a random existing row
/// and a range of rows, deletes one row and moves another to a new key. The keys are drawn
/// from the whole table, so they fall before and after the chunk being copied.
async fn write_during_copy(
    url: String,
    writer: i64,
    stop: Arc<std::sync::atomic::AtomicBool>,
    committed: Arc<AtomicU64>,
) {
    let client = pg_connect(&url).await;
    // Each writer has its own range of new keys, above the generated ones.
    let mut next_id = (writer + 2) * LARGE_TABLE_ROWS;
    let mut failed = 0;
    while !stop.load(Ordering::Relaxed) {
        let (updated, range, deleted) = {
            let mut rng = rand::rng();
            (
                rng.random_range(1..=LARGE_TABLE_ROWS),
                rng.random_range(1..=LARGE_TABLE_ROWS),
                rng.random_range(1..LARGE_TABLE_ROWS),
            )
        };
        next_id += 2;
        let sql = format!(
            "BEGIN;
             INSERT INTO items VALUES ({next_id}, 'new', 1, 1.5, now());
             UPDATE items SET qty = qty + 1, name = 'updated', updated = now() WHERE id = {updated};
             UPDATE items SET price = price + 1 WHERE id BETWEEN {range} AND {range} + 4;
             DELETE FROM items WHERE id = {deleted};
             UPDATE items SET id = {next_id} + 1 WHERE id = {deleted} + 1;
             COMMIT"
        );
        match client.batch_execute(&sql).await {
            Ok(()) => {
                committed.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                // Two writers can deadlock on overlapping ranges; PostgreSQL aborts one.
                let _ = client.batch_execute("ROLLBACK").await;
                failed += 1;
                assert!(failed < 50, "writer {writer} keeps failing: {error}");
            }
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_snapshot_with_concurrent_writes() {
    let databases = Databases::create("snaplarge").await;
    databases.create_tables(ITEMS_PG, ITEMS_MYSQL).await;
    databases
        .pg()
        .await
        .batch_execute(&format!(
            "INSERT INTO items SELECT g, 'item ' || g, g % 1000, g * 0.25, \
             timestamptz '2024-01-01 00:00:00+00' + g * interval '1.000001 second' \
             FROM generate_series(1, {LARGE_TABLE_ROWS}) g;
             ANALYZE items"
        ))
        .await
        .unwrap();
    let mut pipeline = Pipeline::new(&databases, "public.items");
    let api = pipeline.enable_api();
    let output = run_ok(&pipeline, &["setup"]);
    assert!(
        stdout(&output).contains("newly captured: public.items"),
        "{}",
        stdout(&output)
    );
    let pending = stored_progress(&databases, "public.items").await.unwrap();
    assert_eq!(pending.state, "pending");

    // The daemon copies the pending table at start while the writers change it.
    let started = Instant::now();
    let mut daemon = pipeline.start();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..2)
        .map(|writer| {
            tokio::spawn(write_during_copy(
                databases.pg_url.clone(),
                writer,
                stop.clone(),
                committed.clone(),
            ))
        })
        .collect();
    let copying = wait_for_state(
        &databases,
        "public.items",
        "copying",
        Duration::from_secs(30),
        &daemon,
    )
    .await;
    let committed_at_start = committed.load(Ordering::Relaxed);
    let done = wait_for_state(
        &databases,
        "public.items",
        "done",
        Duration::from_secs(150),
        &daemon,
    )
    .await;
    let committed_during_copy = committed.load(Ordering::Relaxed) - committed_at_start;
    let copy_seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    eprintln!(
        "snapshot of {LARGE_TABLE_ROWS} rows done after {copy_seconds:.1} s, with \
         {committed_during_copy} writer transactions during the copy"
    );
    assert!(
        committed_during_copy >= 20,
        "only {committed_during_copy} writer transactions committed during the copy"
    );
    assert!(copying.started_at.is_some(), "{copying:?}");
    assert_eq!(done.started_at, copying.started_at);
    assert!(done.finished_at.is_some(), "{done:?}");
    // Rows that changes wrote during the copy are skipped and not counted. Each writer transaction adds at most two
    // keys, which the copy reaches when they lie after its position.
    let committed_total = committed.load(Ordering::Relaxed);
    assert!(
        done.rows_copied > LARGE_TABLE_ROWS as u64 * 9 / 10,
        "{done:?}"
    );
    assert!(
        done.rows_copied <= LARGE_TABLE_ROWS as u64 + 2 * committed_total,
        "{done:?}, {committed_total} writer transactions"
    );
    assert!(
        daemon.log().contains("snapshot finished"),
        "{}",
        daemon.log()
    );

    let sums = databases
        .wait_until_equal(ITEMS_PG_CHECKSUM, ITEMS_MYSQL_CHECKSUM, CONVERGE)
        .await;
    let pg_count: u64 = sums[0][0].as_deref().unwrap().parse().unwrap();
    // Every committed transaction inserted one new row and deleted at most one old one.
    assert!(pg_count >= LARGE_TABLE_ROWS as u64, "{sums:?}");
    assert!(
        pg_count <= LARGE_TABLE_ROWS as u64 + committed_total,
        "{sums:?}"
    );

    // Verify runs inside the daemon, through its API.
    let verify_started = Instant::now();
    let (code, report) = verify_json(&pipeline, &[], Some(&daemon));
    eprintln!(
        "verify of {pg_count} rows took {:.1} s",
        verify_started.elapsed().as_secs_f64()
    );
    assert_eq!(code, Some(0), "{report}");
    let entry = table_report(&report, "public.items");
    assert_clean(entry);
    assert_eq!(entry["rows_compared"], pg_count, "{entry}");
    assert_eq!(entry["mysql_rows"], pg_count, "{entry}");
    let status = api.call(Method::GET, "/status", None).await.1;
    assert_eq!(status["drift"]["tables"][0]["differences"], 0, "{status}");

    assert!(daemon.stop().success(), "{}", daemon.log());
    databases.drop_all().await;
}

/// Rows of the resume test: 30 chunks of 100.
const RESUME_ROWS: i64 = 3000;

/// Reads the `resumed_rows` field of the "snapshot started" log line of `table`.
fn resumed_rows(log: &str, table: &str) -> u64 {
    let line = log
        .lines()
        .find(|line| line.contains("snapshot started") && line.contains(&format!("table={table}")))
        .unwrap_or_else(|| panic!("no \"snapshot started\" line for {table} in:\n{log}"));
    let value = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("resumed_rows="))
        .unwrap_or_else(|| panic!("no resumed_rows field in {line:?}"));
    value.parse().unwrap()
}

/// Crashes the offline `snapshot` command at each crash point, changes PostgreSQL while it
/// is down, and runs it again. The copy resumes when a chunk was committed and starts over
/// when none was, and it ends equal to PostgreSQL either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_snapshot_resumes_after_crash() {
    let databases = Databases::create("snapresume").await;
    databases.create_tables(ITEMS_PG, ITEMS_MYSQL).await;
    let pg = databases.pg().await;
    pg.batch_execute(&format!(
        "INSERT INTO items SELECT g, 'item ' || g, g, g * 0.5, now() \
         FROM generate_series(1, {RESUME_ROWS}) g"
    ))
    .await
    .unwrap();
    let mut pipeline = Pipeline::new(&databases, "public.items");
    pipeline.set("SNAPSHOT_CHUNK_ROWS", "100");
    pipeline.setup();

    for (round, point) in SNAPSHOT_FAILPOINTS.iter().enumerate() {
        let round = round as i64;
        pipeline.set(FAILPOINT_ENV, point);
        let output = pipeline.run_cli(&["snapshot"]);
        assert!(!output.status.success(), "{point}: {}", stderr(&output));
        assert!(
            stderr(&output).contains(&format!("failpoint {point} reached")),
            "{point}: {}",
            stderr(&output)
        );
        let crashed = stored_progress(&databases, "public.items").await.unwrap();
        assert_eq!(crashed.state, "copying", "{point}");
        let copied = mysql_count(&databases, "items", "TRUE").await;
        if *point == "snapshot-after-commit" {
            // The first chunk and its progress were committed together.
            assert_eq!(crashed.after_key.as_deref(), Some("[100]"), "{point}");
            assert_eq!(crashed.rows_copied, 100, "{point}");
            assert_eq!(copied, 100, "{point}");
        } else {
            // The table was emptied and no chunk committed, so the next run starts over.
            assert_eq!(crashed.after_key, None, "{point}");
            assert_eq!(crashed.rows_copied, 0, "{point}");
            assert_eq!(copied, 0, "{point}");
        }

        // Changes while nothing runs, on both sides of the copied range. They reach MySQL
        // through the journal when the snapshot runs again.
        pg.batch_execute(&format!(
            "UPDATE items SET name = 'round {round}', updated = now() WHERE id BETWEEN 90 AND 120;
             DELETE FROM items WHERE id IN ({0}, {1});
             INSERT INTO items VALUES ({2}, 'new', 1, 1, now()), ({3}, 'new', 1, 1, now());
             UPDATE items SET id = {4} WHERE id = {5};",
            40 + round,
            2000 + round,
            10 + round * 10_000 + 100_000,
            -(round + 1),
            round + 200_000,
            1500 + round,
        ))
        .await
        .unwrap();
        // A row only MySQL has, placed before the copied range. A run that starts over
        // removes it, and a run that resumes leaves it.
        mysql_execute(
            &databases,
            "INSERT INTO items VALUES (-1000, 'marker', 0, 0, NULL)",
        )
        .await;

        pipeline.env.retain(|(key, _)| key != FAILPOINT_ENV);
        let output = run_ok(&pipeline, &["snapshot"]);
        let log = stderr(&output);
        let summary: Value = serde_json::from_str(&stdout(&output)).unwrap();
        let marker = mysql_count(&databases, "items", "id = -1000").await;
        let finished = stored_progress(&databases, "public.items").await.unwrap();
        assert_eq!(finished.state, "done", "{point}");
        assert!(finished.finished_at.is_some(), "{point}");
        if *point == "snapshot-after-commit" {
            assert_eq!(resumed_rows(&log, "public.items"), 100, "{point}: {log}");
            assert_eq!(
                marker, 1,
                "{point}: the resumed copy emptied the table again"
            );
            assert_eq!(finished.started_at, crashed.started_at, "{point}");
            // The summary counts the 100 rows of the crashed run. The second run read only
            // the rows after them, and it copied each one or left it to a newer change.
            let after_first_chunk: u64 = databases
                .pg_rows("SELECT count(*) FROM items WHERE id > 100")
                .await[0][0]
                .as_deref()
                .unwrap()
                .parse()
                .unwrap();
            let entry = &summary["tables"][0];
            assert_eq!(
                entry["rows"].as_u64().unwrap() + entry["skipped_rows"].as_u64().unwrap(),
                100 + after_first_chunk,
                "{point}: {summary}"
            );
            let (code, report) = verify_json(&pipeline, &[], None);
            assert_eq!(code, Some(1), "{point}: {report}");
            let entry = table_report(&report, "public.items");
            assert_eq!(
                listed_keys(entry),
                vec![("extra".to_string(), "[-1000]".to_string())],
                "{point}"
            );
            mysql_execute(&databases, "DELETE FROM items WHERE id = -1000").await;
        } else {
            assert_eq!(resumed_rows(&log, "public.items"), 0, "{point}: {log}");
            assert_eq!(marker, 0, "{point}: the new copy did not empty the table");
        }
        let rows = items_equal(&databases, Duration::from_secs(5)).await;
        // Each round deletes two rows and inserts two.
        assert_eq!(rows.len() as i64, RESUME_ROWS, "{point}");
        let (code, report) = verify_json(&pipeline, &[], None);
        assert_eq!(code, Some(0), "{point}: {report}");
        assert_clean(table_report(&report, "public.items"));
    }
    databases.drop_all().await;
}

const DOCS_PG: &str = "CREATE TABLE docs (id integer PRIMARY KEY, name text, \
     qty integer, at timestamptz)";
const DOCS_MYSQL: &str = "CREATE TABLE docs (id INT PRIMARY KEY, name LONGTEXT, qty INT, \
     at DATETIME(6)) ENGINE=InnoDB";
const DOCS_PG_SELECT: &str = "SELECT id::text, name, qty::text, \
     to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') FROM docs ORDER BY docs.id";
const DOCS_MYSQL_SELECT: &str = "SELECT id, name, qty, \
     DATE_FORMAT(at, '%Y-%m-%d %H:%i:%s.%f') FROM docs ORDER BY docs.id";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_lists_and_repairs_differences() {
    let databases = Databases::create("verifydiff").await;
    databases.create_tables(DOCS_PG, DOCS_MYSQL).await;
    databases
        .pg()
        .await
        .batch_execute(
            "INSERT INTO docs VALUES
               (1, 'one', 1, '2024-01-01 00:00:00+00'),
               (2, 'two', 2, '2024-01-01 00:00:00+00'),
               (3, NULL, 3, '2024-01-01 00:00:00+00'),
               (4, '', 4, '2024-01-01 00:00:00+00'),
               (5, 'five', 5, '2024-01-01 00:00:00.000001+00'),
               (6, 'six', 6, '2024-01-01 00:00:00+00'),
               (7, 'seven', NULL, NULL),
               (8, '', NULL, '1999-12-31 23:59:59.999999+00');",
        )
        .await
        .unwrap();
    let pipeline = Pipeline::new(&databases, "public.docs");
    run_ok(&pipeline, &["setup"]);
    let output = run_ok(&pipeline, &["snapshot", "public.docs"]);
    let summary: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(summary["tables"][0]["rows"], 8, "{summary}");
    databases
        .wait_until_equal(DOCS_PG_SELECT, DOCS_MYSQL_SELECT, Duration::from_secs(5))
        .await;
    let (code, report) = verify_json(&pipeline, &[], None);
    assert_eq!(code, Some(0), "{report}");
    assert_clean(table_report(&report, "public.docs"));

    // One difference of each kind, made directly in MySQL.
    for sql in [
        "UPDATE docs SET qty = 10 WHERE id = 1",
        "DELETE FROM docs WHERE id = 2",
        "INSERT INTO docs VALUES (100, 'only in MySQL', 0, NULL)",
        "UPDATE docs SET name = '' WHERE id = 3",
        "UPDATE docs SET name = NULL WHERE id = 4",
        "UPDATE docs SET at = '2024-01-01 00:00:00.000002' WHERE id = 5",
        "UPDATE docs SET at = '2024-01-01 00:00:00.000001' WHERE id = 6",
    ] {
        mysql_execute(&databases, sql).await;
    }
    let expected: Vec<(String, String)> = [
        ("changed", "[1]"),
        ("changed", "[3]"),
        ("changed", "[4]"),
        ("changed", "[5]"),
        ("changed", "[6]"),
        ("extra", "[100]"),
        ("missing", "[2]"),
    ]
    .iter()
    .map(|(kind, key)| (kind.to_string(), key.to_string()))
    .collect();

    let (code, report) = verify_json(&pipeline, &[], None);
    assert_eq!(code, Some(1), "{report}");
    let entry = table_report(&report, "public.docs");
    assert_eq!(listed_keys(entry), expected, "{entry}");
    assert_eq!(entry["changed"], 5, "{entry}");
    assert_eq!(entry["missing"], 1, "{entry}");
    assert_eq!(entry["extra"], 1, "{entry}");
    assert_eq!(entry["in_flight"], 0, "{entry}");
    assert_eq!(entry["repaired"], 0, "{entry}");
    assert_eq!(entry["rows_compared"], 8, "{entry}");
    assert_eq!(entry["mysql_rows"], 8, "{entry}");
    assert_eq!(entry["keys_truncated"], false, "{entry}");
    assert_eq!(entry["error"], Value::Null, "{entry}");

    // The text report names the keys, and the exit message the count.
    let output = pipeline.run_cli(&["verify"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("missing key [2]"),
        "{}",
        stdout(&output)
    );
    assert!(
        stdout(&output).contains("extra key [100]"),
        "{}",
        stdout(&output)
    );
    assert!(
        stderr(&output).contains("7 rows differ between PostgreSQL and MySQL"),
        "{}",
        stderr(&output)
    );

    // --max-keys limits the list but not the counts.
    let (code, report) = verify_json(&pipeline, &["--max-keys", "2"], None);
    assert_eq!(code, Some(1), "{report}");
    let entry = table_report(&report, "public.docs");
    assert_eq!(entry["keys"].as_array().unwrap().len(), 2, "{entry}");
    assert_eq!(entry["keys_truncated"], true, "{entry}");
    assert_eq!(entry["changed"], 5, "{entry}");

    let (code, report) = verify_json(&pipeline, &["--repair"], None);
    assert_eq!(code, Some(0), "{report}");
    let entry = table_report(&report, "public.docs");
    assert_eq!(listed_keys(entry), expected, "{entry}");
    assert_eq!(entry["repaired"], 7, "{entry}");

    let (code, report) = verify_json(&pipeline, &[], None);
    assert_eq!(code, Some(0), "{report}");
    let entry = table_report(&report, "public.docs");
    assert_clean(entry);
    assert_eq!(entry["repaired"], 0, "{entry}");
    assert_eq!(entry["mysql_rows"], 8, "{entry}");
    let rows = databases
        .wait_until_equal(DOCS_PG_SELECT, DOCS_MYSQL_SELECT, Duration::from_secs(1))
        .await;
    assert_eq!(rows.len(), 8);
    databases.drop_all().await;
}

const EVENTS_PG: &str =
    "CREATE TABLE events (kind text, amount numeric(10,2), at timestamptz, note text)";
const EVENTS_PG_SELECT: &str = "SELECT kind, amount::text, \
     to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), note FROM events \
     ORDER BY kind COLLATE \"C\", events.amount NULLS FIRST, note COLLATE \"C\" NULLS FIRST, \
     events.at NULLS FIRST";
const EVENTS_MYSQL_SELECT: &str = "SELECT kind, amount, DATE_FORMAT(at, '%Y-%m-%d %H:%i:%s.%f'), \
     note FROM events ORDER BY kind, amount, note, at";

/// Inserts rows into `events` one transaction at a time, so that some wait for the lock
/// of a running copy.
async fn insert_events(url: String, count: u32) {
    let client = pg_connect(&url).await;
    for index in 0..count {
        client
            .batch_execute(&format!(
                "INSERT INTO events VALUES ('write', {index}, now(), NULL)"
            ))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_table_snapshot_and_verify() {
    let databases = Databases::create("snapkeyless").await;
    databases.create_tables(EVENTS_PG, "").await;
    databases
        .pg()
        .await
        .batch_execute(
            "INSERT INTO events VALUES
               ('click', 1.50, '2024-01-01 00:00:00+00', NULL),
               ('click', 1.50, '2024-01-01 00:00:00+00', NULL),
               ('click', 1.50, '2024-01-01 00:00:00+00', NULL),
               ('view', NULL, NULL, 'same'),
               ('view', NULL, NULL, 'same'),
               ('view', 2.00, '2024-01-02 00:00:00.000001+00', '');
             INSERT INTO events SELECT 'bulk', g % 7, NULL, NULL FROM generate_series(1, 2000) g;",
        )
        .await
        .unwrap();
    let mut pipeline = Pipeline::new(&databases, "public.events");
    pipeline.set("KEYLESS_TABLES", "public.events");
    let output = run_ok(&pipeline, &["setup", "--create-tables"]);
    assert!(
        stdout(&output).contains("newly captured: public.events"),
        "{}",
        stdout(&output)
    );

    // The daemon copies the table at start while rows keep arriving.
    let mut daemon = pipeline.start();
    let writer = tokio::spawn(insert_events(databases.pg_url.clone(), 200));
    let done = wait_for_state(&databases, "public.events", "done", CONVERGE, &daemon).await;
    writer.await.unwrap();
    let rows = databases
        .wait_until_equal(EVENTS_PG_SELECT, EVENTS_MYSQL_SELECT, CONVERGE)
        .await;
    assert_eq!(rows.len(), 2206);
    assert!(done.rows_copied >= 2006, "{done:?}");
    assert!(daemon.stop().success(), "{}", daemon.log());

    let (code, report) = verify_json(&pipeline, &[], None);
    assert_eq!(code, Some(0), "{report}");
    let entry = table_report(&report, "public.events");
    assert_clean(entry);
    assert_eq!(entry["rows_compared"], 2206, "{entry}");
    assert_eq!(entry["mysql_rows"], 2206, "{entry}");

    // One of three identical rows goes, and one of two gets a twin.
    mysql_execute(
        &databases,
        "DELETE FROM events WHERE kind = 'click' LIMIT 1",
    )
    .await;
    mysql_execute(
        &databases,
        "INSERT INTO events VALUES ('view', NULL, NULL, 'same')",
    )
    .await;
    let (code, report) = verify_json(&pipeline, &[], None);
    assert_eq!(code, Some(1), "{report}");
    let entry = table_report(&report, "public.events");
    assert_eq!(entry["changed"], 2, "{entry}");
    assert_eq!(entry["rows_compared"], 2206, "{entry}");
    assert_eq!(entry["mysql_rows"], 2206, "{entry}");

    let (code, report) = verify_json(&pipeline, &["--repair"], None);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(table_report(&report, "public.events")["repaired"], 2206);
    let (code, report) = verify_json(&pipeline, &[], None);
    assert_eq!(code, Some(0), "{report}");
    assert_clean(table_report(&report, "public.events"));
    databases
        .wait_until_equal(
            EVENTS_PG_SELECT,
            EVENTS_MYSQL_SELECT,
            Duration::from_secs(1),
        )
        .await;
    databases.drop_all().await;
}

const EXTRAS_PG: &str = "CREATE TABLE extras (id integer PRIMARY KEY, label text)";
const EXTRAS_MYSQL: &str = "CREATE TABLE extras (id INT PRIMARY KEY, label LONGTEXT) ENGINE=InnoDB";
const EXTRAS_PG_SELECT: &str = "SELECT id::text, label FROM extras ORDER BY extras.id";
const EXTRAS_MYSQL_SELECT: &str = "SELECT id, label FROM extras ORDER BY extras.id";

/// Adding a table to SYNC_TABLES and running setup again requests a snapshot of that table
/// only. The daemon copies it at the next start in the automatic mode, not in the manual
/// one, and leaves the table copied before alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_again_snapshots_only_new_table() {
    let databases = Databases::create("snapnew").await;
    databases
        .create_tables(
            &format!("{ITEMS_PG}; {EXTRAS_PG}"),
            &format!("{ITEMS_MYSQL}; {EXTRAS_MYSQL}"),
        )
        .await;
    let pg = databases.pg().await;
    pg.batch_execute(
        "INSERT INTO items SELECT g, 'item ' || g, g, g, now() FROM generate_series(1, 50) g;
         INSERT INTO extras SELECT g, 'extra ' || g FROM generate_series(1, 300) g;",
    )
    .await
    .unwrap();

    let mut pipeline = Pipeline::new(&databases, "public.items");
    let output = run_ok(&pipeline, &["setup"]);
    assert!(
        stdout(&output).contains("newly captured: public.items."),
        "{}",
        stdout(&output)
    );
    let mut daemon = pipeline.start();
    let copied = wait_for_state(&databases, "public.items", "done", CONVERGE, &daemon).await;
    assert_eq!(copied.rows_copied, 50);
    items_equal(&databases, CONVERGE).await;
    assert!(daemon.stop().success(), "{}", daemon.log());
    assert_eq!(stored_progress(&databases, "public.extras").await, None);

    // A row only MySQL has, which a new copy of items would remove.
    mysql_execute(
        &databases,
        "INSERT INTO items VALUES (-1, 'marker', 0, 0, NULL)",
    )
    .await;
    pipeline.set("SYNC_TABLES", "public.items,public.extras");
    let output = run_ok(&pipeline, &["setup"]);
    let printed = stdout(&output);
    let newly = printed
        .lines()
        .find(|line| line.starts_with("newly captured:"))
        .unwrap_or_else(|| panic!("no newly captured tables in:\n{printed}"));
    assert!(
        newly.starts_with("newly captured: public.extras."),
        "{newly}"
    );
    assert!(!newly.contains("public.items"), "{newly}");
    assert_eq!(
        stored_progress(&databases, "public.items").await,
        Some(copied.clone())
    );
    assert_eq!(
        stored_progress(&databases, "public.extras")
            .await
            .unwrap()
            .state,
        "pending"
    );
    // Changes captured after setup reach MySQL through the journal, next to the copy.
    pg.batch_execute(
        "UPDATE extras SET label = 'changed' WHERE id <= 10;
         DELETE FROM extras WHERE id = 300;
         INSERT INTO extras VALUES (301, 'new');",
    )
    .await
    .unwrap();

    // The manual mode only logs the pending table.
    pipeline.set("MODE", "manual");
    pipeline.enable_api();
    let mut daemon = pipeline.start();
    daemon
        .wait_for_log("wait for a snapshot", Duration::from_secs(30))
        .await;
    assert!(daemon.log().contains("public.extras"), "{}", daemon.log());
    assert!(daemon.stop().success(), "{}", daemon.log());
    assert_eq!(mysql_count(&databases, "extras", "TRUE").await, 0);
    assert_eq!(
        stored_progress(&databases, "public.extras")
            .await
            .unwrap()
            .state,
        "pending"
    );

    pipeline.set("MODE", "automatic");
    pipeline.set("API", "off");
    let mut daemon = pipeline.start();
    let extras = wait_for_state(&databases, "public.extras", "done", CONVERGE, &daemon).await;
    let rows = databases
        .wait_until_equal(EXTRAS_PG_SELECT, EXTRAS_MYSQL_SELECT, CONVERGE)
        .await;
    assert_eq!(rows.len(), 300);
    assert!(
        extras.rows_copied > 0 && extras.rows_copied <= 300,
        "{extras:?}"
    );
    assert!(daemon.stop().success(), "{}", daemon.log());
    let log = daemon.log();
    assert!(
        !log.lines()
            .any(|line| line.contains("snapshot started") && line.contains("table=public.items")),
        "items was copied again: {log}"
    );
    assert_eq!(mysql_count(&databases, "items", "id = -1").await, 1);
    assert_eq!(
        stored_progress(&databases, "public.items").await,
        Some(copied)
    );
    databases.drop_all().await;
}

/// Returns the value of the metric sample whose line starts with `name_and_labels`.
fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(name_and_labels)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

async fn get_metrics(api: &crate::support::ApiAccess) -> String {
    let token = api.token().await;
    let response = api
        .client()
        .get(api.url("/metrics"))
        .header("x-api-key", &api.api_key)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_routes_and_periodic_verify() {
    let databases = Databases::create("snapapi").await;
    databases.create_tables(ITEMS_PG, ITEMS_MYSQL).await;
    databases
        .pg()
        .await
        .batch_execute(
            "INSERT INTO items SELECT g, 'item ' || g, g, g * 0.5, now() \
             FROM generate_series(1, 1000) g",
        )
        .await
        .unwrap();
    let mut pipeline = Pipeline::new(&databases, "public.items");
    pipeline.set("VERIFY_INTERVAL", "10");
    pipeline.set("SNAPSHOT_CHUNK_ROWS", "100");
    // No snapshot is pending, so the API starts the only one.
    pipeline.setup();
    let api = pipeline.enable_api();
    let mut daemon = pipeline.start();
    api.wait_until_up(&daemon).await;
    // The API is up before the pipeline has read the tables, which the jobs need.
    daemon
        .wait_for_log("daemon started", Duration::from_secs(30))
        .await;

    let (status, body) = api.call(Method::GET, "/snapshot", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "running": false, "tables": [] }));

    let (status, body) = api
        .call(
            Method::POST,
            "/snapshot",
            Some(json!({ "tables": ["public.not_synced"] })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("public.not_synced"),
        "{body}"
    );

    // An empty list is an error, not every table.
    let (status, body) = api
        .call(Method::POST, "/snapshot", Some(json!({ "tables": [] })))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("empty list"),
        "{body}"
    );

    // A table named twice is copied once.
    let (status, body) = api
        .call(
            Method::POST,
            "/snapshot",
            Some(json!({ "tables": ["public.items", "public.items"] })),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body, json!({ "tables": ["public.items"] }));
    let deadline = Instant::now() + CONVERGE;
    let body = loop {
        let (status, body) = api.call(Method::GET, "/snapshot", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["running"] == false {
            break body;
        }
        assert!(Instant::now() < deadline, "{body}\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let tables = body["tables"].as_array().unwrap();
    assert_eq!(tables.len(), 1, "{body}");
    assert_eq!(tables[0]["table"], "public.items", "{body}");
    assert_eq!(tables[0]["state"], "done", "{body}");
    assert_eq!(tables[0]["rows_copied"], 1000, "{body}");
    assert_eq!(tables[0]["skipped_rows"], 0, "{body}");
    assert!(tables[0]["seconds"].as_f64().is_some(), "{body}");
    assert_eq!(tables[0]["error"], Value::Null, "{body}");
    items_equal(&databases, CONVERGE).await;

    let (_, status) = api.call(Method::GET, "/status", None).await;
    assert_eq!(status["snapshots"][0]["table"], "public.items", "{status}");
    assert_eq!(status["snapshots"][0]["state"], "done", "{status}");
    let metrics = get_metrics(&api).await;
    assert_eq!(
        metric(
            &metrics,
            "pg_to_mysql_sync_snapshot_rows_copied{table=\"public.items\"}"
        ),
        Some(1000.0),
        "{metrics}"
    );

    // The command line goes through the daemon too, waits for the copy and prints the same
    // summary as without a daemon.
    let output = run_ok(&pipeline, &["snapshot", "public.items"]);
    let printed: Value = serde_json::from_str(&stdout(&output)).unwrap();
    let printed = &printed["tables"];
    assert_eq!(printed.as_array().map(Vec::len), Some(1), "{printed}");
    assert_eq!(printed[0]["table"], "public.items", "{printed}");
    assert_eq!(printed[0]["state"], "done", "{printed}");
    assert_eq!(printed[0]["rows"], 1000, "{printed}");
    assert_eq!(printed[0]["skipped_rows"], 0, "{printed}");
    assert!(printed[0]["seconds"].as_f64().is_some(), "{printed}");
    // A table outside SYNC_TABLES fails in the command, before it asks the daemon.
    let output = pipeline.run_cli(&["snapshot", "public.not_synced"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("table public.not_synced is not in SYNC_TABLES"),
        "{}",
        stderr(&output)
    );

    let (status, report) = api.call(Method::POST, "/verify", None).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let entry = table_report(&report, "public.items");
    assert_clean(entry);
    assert_eq!(entry["rows_compared"], 1000, "{entry}");
    for body in [
        json!({ "tables": ["public.not_synced"] }),
        json!({ "max_keys": 10_001 }),
        json!({ "repair": "yes" }),
    ] {
        let (status, response) = api.call(Method::POST, "/verify", Some(body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {response}");
    }
    let (_, status) = api.call(Method::GET, "/status", None).await;
    let clean_run = status["drift"]["finished_at"].clone();
    assert!(clean_run.is_string(), "{status}");
    assert_eq!(status["drift"]["tables"][0]["differences"], 0, "{status}");

    // Only the periodic verify runs from now on, so it is what finds this.
    mysql_execute(&databases, "UPDATE items SET qty = -5 WHERE id = 7").await;
    let deadline = Instant::now() + Duration::from_secs(40);
    let drift = loop {
        let (_, status) = api.call(Method::GET, "/status", None).await;
        let drift = status["drift"].clone();
        if drift["finished_at"] != clean_run && drift["tables"][0]["differences"] == 1 {
            break drift;
        }
        assert!(Instant::now() < deadline, "{status}\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(drift["tables"][0]["table"], "public.items", "{drift}");
    assert_eq!(drift["tables"][0]["rows_compared"], 1000, "{drift}");
    assert_eq!(drift["tables"][0]["error"], Value::Null, "{drift}");
    let metrics = get_metrics(&api).await;
    assert_eq!(
        metric(
            &metrics,
            "pg_to_mysql_sync_verify_differences{table=\"public.items\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "pg_to_mysql_sync_verify_rows_compared{table=\"public.items\"}"
        ),
        Some(1000.0),
        "{metrics}"
    );
    let last_run = metric(
        &metrics,
        "pg_to_mysql_sync_verify_last_run_timestamp_seconds",
    )
    .unwrap_or_else(|| panic!("no last-run metric in:\n{metrics}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - last_run).abs() < 60.0, "{last_run} against {now}");
    assert!(
        daemon
            .log()
            .contains("periodic verify found rows that differ"),
        "{}",
        daemon.log()
    );

    let (status, report) = api
        .call(
            Method::POST,
            "/verify",
            Some(json!({ "tables": ["public.items"], "repair": true })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let entry = table_report(&report, "public.items");
    assert_eq!(
        listed_keys(entry),
        vec![("changed".to_string(), "[7]".to_string())]
    );
    assert_eq!(entry["repaired"], 1, "{entry}");
    let (_, status) = api.call(Method::GET, "/status", None).await;
    assert_eq!(status["drift"]["tables"][0]["differences"], 0, "{status}");
    items_equal(&databases, Duration::from_secs(5)).await;

    assert!(daemon.stop().success(), "{}", daemon.log());
    databases.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_rejected_clearly() {
    let databases = Databases::create("snapbad").await;
    databases.create_tables(ITEMS_PG, ITEMS_MYSQL).await;
    let mut pipeline = Pipeline::new(&databases, "public.items");
    pipeline.setup();

    for command in ["snapshot", "verify"] {
        let output = pipeline.run_cli(&[command, "public.not_synced"]);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{command}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains("table public.not_synced is not in SYNC_TABLES"),
            "{command}: {}",
            stderr(&output)
        );
        // The name is checked before any connection.
        assert!(
            !stderr(&output).contains("connected"),
            "{command}: {}",
            stderr(&output)
        );
    }
    // Nothing was copied or emptied on the way.
    assert_eq!(stored_progress(&databases, "public.items").await, None);

    pipeline.set("SNAPSHOT_CHUNK_ROWS", "5");
    for command in ["snapshot", "verify", "run"] {
        let output = pipeline.run_cli(&[command]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{command}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains("SNAPSHOT_CHUNK_ROWS is invalid"),
            "{command}: {}",
            stderr(&output)
        );
    }
    pipeline.set("SNAPSHOT_CHUNK_ROWS", "100");

    pipeline.set("VERIFY_INTERVAL", "5");
    let output = pipeline.run_cli(&["run"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("VERIFY_INTERVAL is invalid"),
        "{}",
        stderr(&output)
    );
    pipeline.set("VERIFY_INTERVAL", "60");
    pipeline.set("MODE", "manual");
    let output = pipeline.run_cli(&["run"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("VERIFY_INTERVAL is invalid"),
        "{}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("MODE=automatic"),
        "{}",
        stderr(&output)
    );
    pipeline.set("VERIFY_INTERVAL", "0");
    pipeline.set("MODE", "automatic");

    // A running daemon without the API cannot take the job.
    let mut daemon = pipeline.start();
    daemon
        .wait_for_log("daemon started", Duration::from_secs(30))
        .await;
    for command in ["snapshot", "verify"] {
        let output = pipeline.run_cli(&[command]);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{command}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains("a daemon runs with DATA_DIR"),
            "{command}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains("API=off"),
            "{command}: {}",
            stderr(&output)
        );
    }
    assert!(daemon.stop().success(), "{}", daemon.log());
    databases.drop_all().await;
}

const TAGS_PG: &str = "CREATE TABLE tags (region text, id integer, label text, \
     PRIMARY KEY (region, id))";
const TAGS_MYSQL: &str = "CREATE TABLE tags (region VARCHAR(50), id INT, label LONGTEXT, \
     PRIMARY KEY (region, id)) ENGINE=InnoDB";
const TAGS_PG_SELECT: &str = "SELECT region, id::text, label FROM tags \
     ORDER BY region COLLATE \"C\", tags.id";
const TAGS_MYSQL_SELECT: &str = "SELECT region, id, label FROM tags ORDER BY region, id";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composite_text_key_resumes_and_verifies() {
    let databases = Databases::create("snapcomposite").await;
    databases.create_tables(TAGS_PG, TAGS_MYSQL).await;
    databases
        .pg()
        .await
        .batch_execute(
            "INSERT INTO tags SELECT r, g, r || g \
             FROM unnest(ARRAY['a', 'B', 'é', 'O''Brien', 'z z', '', 'back\\slash', '日本']) r, \
             generate_series(1, 150) g",
        )
        .await
        .unwrap();
    let mut pipeline = Pipeline::new(&databases, "public.tags");
    pipeline.set("SNAPSHOT_CHUNK_ROWS", "100");
    pipeline.setup();
    pipeline.set(FAILPOINT_ENV, "snapshot-after-commit");
    let output = pipeline.run_cli(&["snapshot"]);
    assert!(!output.status.success(), "{}", stderr(&output));
    let crashed = stored_progress(&databases, "public.tags").await.unwrap();
    assert_eq!(crashed.rows_copied, 100, "{crashed:?}");
    pipeline.env.retain(|(key, _)| key != FAILPOINT_ENV);
    run_ok(&pipeline, &["snapshot"]);
    let rows = databases
        .wait_until_equal(TAGS_PG_SELECT, TAGS_MYSQL_SELECT, Duration::from_secs(5))
        .await;
    assert_eq!(rows.len(), 1200);
    let (code, report) = verify_json(&pipeline, &[], None);
    assert_eq!(code, Some(0), "{report}");

    for sql in [
        "INSERT INTO tags VALUES ('O''Brien', 999, 'only in MySQL')",
        "INSERT INTO tags VALUES ('日本', 0, 'only in MySQL')",
        "DELETE FROM tags WHERE region = 'back\\\\slash' AND id = 3",
        "UPDATE tags SET label = 'x' WHERE region = '' AND id = 5",
    ] {
        mysql_execute(&databases, sql).await;
    }
    let (code, report) = verify_json(&pipeline, &[], None);
    assert_eq!(code, Some(1), "{report}");
    let entry = table_report(&report, "public.tags");
    assert_eq!(
        listed_keys(entry),
        vec![
            ("changed".to_string(), r#"["",5]"#.to_string()),
            ("extra".to_string(), r#"["O'Brien",999]"#.to_string()),
            ("extra".to_string(), r#"["日本",0]"#.to_string()),
            ("missing".to_string(), r#"["back\\slash",3]"#.to_string()),
        ]
    );
    let (code, report) = verify_json(&pipeline, &["--repair"], None);
    assert_eq!(code, Some(0), "{report}");
    let (code, report) = verify_json(&pipeline, &[], None);
    assert_eq!(code, Some(0), "{report}");
    databases
        .wait_until_equal(TAGS_PG_SELECT, TAGS_MYSQL_SELECT, Duration::from_secs(1))
        .await;
    databases.drop_all().await;
}

/// Stops the shared MariaDB server, so it runs alone: `scripts/test.sh` runs ignored tests in
/// a second pass with one thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops the shared MariaDB server; scripts/test.sh runs it in a serial pass"]
async fn daemon_snapshot_survives_mysql_outage() {
    let script = std::env::var("PGSYNC_TEST_SERVERS_SCRIPT").expect("run with scripts/test.sh");
    let dir = std::env::var("PGSYNC_TEST_DIR").expect("run with scripts/test.sh");
    let databases = Databases::create("snapoutage").await;
    databases.create_tables(ITEMS_PG, ITEMS_MYSQL).await;
    databases
        .pg()
        .await
        .batch_execute(
            "INSERT INTO items SELECT g, 'item ' || g, g, g * 0.5, now() \
             FROM generate_series(1, 200000) g",
        )
        .await
        .unwrap();
    let mut pipeline = Pipeline::new(&databases, "public.items");
    pipeline.set("SNAPSHOT_CHUNK_ROWS", "1000");
    run_ok(&pipeline, &["setup"]);
    let mut daemon = pipeline.start();

    // Stop MariaDB once part of the table is copied.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let progress = stored_progress(&databases, "public.items").await;
        if progress.as_ref().is_some_and(|p| p.rows_copied >= 5000) {
            assert_eq!(progress.unwrap().state, "copying");
            break;
        }
        assert!(Instant::now() < deadline, "{progress:?}\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = std::process::Command::new("bash")
        .args([&script, "stop-mysql", &dir])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = std::process::Command::new("bash")
        .args([&script, "start-mysql", &dir])
        .status()
        .unwrap();
    assert!(status.success());

    // The daemon tries again on its own and finishes the copy from the stored key.
    let done = wait_for_state(
        &databases,
        "public.items",
        "done",
        Duration::from_secs(120),
        &daemon,
    )
    .await;
    assert!(done.rows_copied >= 200000, "{done:?}");
    items_equal(&databases, Duration::from_secs(10)).await;
    assert!(daemon.stop().success());
    assert!(
        daemon
            .log()
            .contains("snapshot paused because a server is unreachable; retrying"),
        "{}",
        daemon.log()
    );
    assert!(
        !daemon.log().contains("snapshot failed"),
        "{}",
        daemon.log()
    );
    databases.drop_all().await;
}
