//! Nothing is lost when the daemon, MySQL or the journal files suffer.

use std::fs;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pg_to_mysql_sync::failpoint::{FAILPOINT_ENV, FAILPOINTS};
use rand::RngExt;

use crate::support::{Databases, items_equal, items_pipeline, pg_connect, segments};

const CONVERGE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_while_stopped_arrive_after_start() {
    let databases = Databases::create("offline").await;
    let pipeline = items_pipeline(&databases).await;
    let pg = databases.pg().await;

    pg.batch_execute(
        "INSERT INTO items SELECT g, 'before', g, 0, now() FROM generate_series(1, 100) g",
    )
    .await
    .unwrap();
    let mut daemon = pipeline.start();
    assert_eq!(items_equal(&databases, CONVERGE).await.len(), 100);
    assert!(daemon.stop().success());

    pg.batch_execute(
        "UPDATE items SET name = 'while stopped' WHERE id <= 50;
         DELETE FROM items WHERE id > 90;
         INSERT INTO items VALUES (1000, 'new', 1, 1, now());",
    )
    .await
    .unwrap();
    let mut daemon = pipeline.start();
    let rows = items_equal(&databases, CONVERGE).await;
    assert_eq!(rows.len(), 91);
    assert!(daemon.stop().success());
    databases.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_cleanly_with_work_in_flight() {
    let databases = Databases::create("sigterm").await;
    let pipeline = items_pipeline(&databases).await;
    let pg = databases.pg().await;
    pg.batch_execute("INSERT INTO items SELECT g, repeat('x', 500), g, 0, now() FROM generate_series(1, 50000) g")
        .await
        .unwrap();

    let mut daemon = pipeline.start();
    daemon
        .wait_for_log("apply connected", Duration::from_secs(20))
        .await;
    let status = daemon.stop();
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        daemon.log()
    );
    assert!(daemon.log().contains("daemon stopped"), "{}", daemon.log());

    let mut daemon = pipeline.start();
    assert_eq!(items_equal(&databases, CONVERGE).await.len(), 50000);
    assert!(daemon.stop().success());
    databases.drop_all().await;
}

/// Writes random changes to `items` until `stop` is set: inserts, updates, deletes and key
/// changes in multi-statement transactions.
async fn write_randomly(url: String, stop: Arc<AtomicBool>) -> u64 {
    let client = pg_connect(&url).await;
    let mut transactions = 0;
    while !stop.load(Ordering::Relaxed) {
        let (id, other, kind) = {
            let mut rng = rand::rng();
            (
                rng.random_range(1..300),
                rng.random_range(1..300),
                rng.random_range(0..5),
            )
        };
        let sql = match kind {
            0 => format!(
                "INSERT INTO items VALUES ({id}, 'n{id}', 1, {id}.5, now()) ON CONFLICT (id) DO UPDATE SET qty = items.qty + 1"
            ),
            1 => format!("UPDATE items SET qty = qty + 1, updated = now() WHERE id BETWEEN {id} AND {id} + 20"),
            2 => format!("DELETE FROM items WHERE id = {id}"),
            3 => format!(
                "BEGIN; DELETE FROM items WHERE id = {other} + 1000;
                 UPDATE items SET id = {other} + 1000 WHERE id = {id}; COMMIT"
            ),
            _ => format!(
                "BEGIN; INSERT INTO items SELECT g, 'bulk', 0, 0, now() FROM generate_series({id}, {id} + 30) g ON CONFLICT DO NOTHING;
                 UPDATE items SET name = 'B' WHERE id = {id}; UPDATE items SET name = 'A' WHERE id = {id}; COMMIT"
            ),
        };
        if client.batch_execute(&sql).await.is_err() {
            // A key change can collide with a concurrent one; roll back and go on.
            let _ = client.batch_execute("ROLLBACK").await;
        }
        transactions += 1;
    }
    transactions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_nothing() {
    let databases = Databases::create("crash").await;
    let pipeline = items_pipeline(&databases).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|_| tokio::spawn(write_randomly(databases.pg_url.clone(), stop.clone())))
        .collect();

    for _ in 0..20 {
        let mut daemon = pipeline.start();
        let delay = rand::rng().random_range(50..700);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        daemon.kill();
    }
    stop.store(true, Ordering::Relaxed);
    let mut transactions = 0;
    for writer in writers {
        transactions += writer.await.unwrap();
    }
    assert!(
        transactions > 100,
        "the writers made only {transactions} transactions"
    );

    let mut daemon = pipeline.start();
    let rows = items_equal(&databases, CONVERGE).await;
    assert!(!rows.is_empty());
    assert!(daemon.stop().success());
    // Equal after a clean stop as well: nothing was still in flight.
    items_equal(&databases, Duration::from_secs(1)).await;
    databases.drop_all().await;
}

/// Crashes the daemon at each step of the write path in turn (see `failpoint`), restarts it,
/// and checks that MySQL converges and that no change was journaled twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_at_every_step_loses_and_duplicates_nothing() {
    let databases = Databases::create("failpoints").await;
    let mut pipeline = items_pipeline(&databases).await;
    let pg = databases.pg().await;
    let mut round = 0;
    for point in FAILPOINTS {
        round += 1;
        pipeline
            .env
            .push((FAILPOINT_ENV.to_string(), point.to_string()));
        let mut daemon = pipeline.start();
        pg.batch_execute(&format!(
            "INSERT INTO items SELECT g, 'round {round}', g, 0, now() FROM generate_series({0}, {0} + 9) g;
             UPDATE items SET qty = qty + 1 WHERE id % 2 = 0;
             DELETE FROM items WHERE id = {0} + 3;",
            round * 100
        ))
        .await
        .unwrap();
        let status = daemon.wait_exit(Duration::from_secs(30));
        assert!(!status.success(), "{point}: the daemon should have aborted");
        assert!(
            daemon.log().contains(&format!("failpoint {point} reached")),
            "{}",
            daemon.log()
        );

        pipeline.env.pop();
        let mut daemon = pipeline.start();
        items_equal(&databases, CONVERGE).await;
        assert!(daemon.stop().success(), "{point}: {}", daemon.log());
    }

    let mut cids = Vec::new();
    for segment in segments(&pipeline.data_dir()) {
        for line in fs::read_to_string(segment).unwrap().lines().skip(1) {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            cids.push(record["cid"].as_i64().unwrap());
        }
    }
    let total = cids.len();
    cids.sort_unstable();
    cids.dedup();
    assert_eq!(cids.len(), total, "a change-log row was journaled twice");
    assert!(total >= FAILPOINTS.len() * 10);
    databases.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_journal_tail_is_truncated_and_reported() {
    let databases = Databases::create("torn").await;
    let pipeline = items_pipeline(&databases).await;
    let pg = databases.pg().await;
    pg.batch_execute("INSERT INTO items SELECT g, 'x', g, 0, now() FROM generate_series(1, 10) g")
        .await
        .unwrap();
    let mut daemon = pipeline.start();
    items_equal(&databases, CONVERGE).await;
    assert!(daemon.stop().success());

    // A crash in the middle of a write leaves part of a line at the end.
    let segment = segments(&pipeline.data_dir()).pop().unwrap();
    let mut content = fs::read(&segment).unwrap();
    content.extend_from_slice(br#"{"seq":11,"batch":9,"xid":1,"cid":1,"table":"public.it"#);
    fs::write(&segment, &content).unwrap();

    pg.batch_execute("INSERT INTO items VALUES (11, 'after the crash', 1, 0, now())")
        .await
        .unwrap();
    let mut daemon = pipeline.start();
    assert_eq!(items_equal(&databases, CONVERGE).await.len(), 11);
    assert!(daemon.stop().success());
    let log = daemon.log();
    assert!(log.contains("torn record"), "{log}");
    databases.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_middle_record_stops_the_daemon() {
    let databases = Databases::create("corrupt").await;
    let pipeline = items_pipeline(&databases).await;
    let pg = databases.pg().await;
    pg.batch_execute("INSERT INTO items SELECT g, 'x', g, 0, now() FROM generate_series(1, 5) g")
        .await
        .unwrap();

    // Journal the changes without applying them: MySQL's table is missing for now.
    let mut mysql = databases.mysql().await;
    mysql_async::prelude::Queryable::query_drop(&mut mysql, "RENAME TABLE items TO items_away")
        .await
        .unwrap();
    let mut daemon = pipeline.start();
    daemon
        .wait_for_log("does not exist", Duration::from_secs(20))
        .await;
    databases.wait_until_journaled().await;
    assert!(daemon.stop().success());

    let segment = segments(&pipeline.data_dir()).pop().unwrap();
    let mut content = fs::read(&segment).unwrap();
    let second_record = content
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'\n')
        .nth(1)
        .unwrap()
        .0
        + 1;
    content[second_record + 20] ^= 0x01;
    fs::write(&segment, &content).unwrap();
    mysql_async::prelude::Queryable::query_drop(&mut mysql, "RENAME TABLE items_away TO items")
        .await
        .unwrap();

    let mut daemon = pipeline.start();
    let status = daemon.wait_exit(Duration::from_secs(20));
    assert!(!status.success());
    let log = daemon.log();
    assert!(log.contains("is corrupt"), "{log}");
    assert!(log.contains("line 3"), "{log}");
    let applied = databases.mysql_rows("SELECT COUNT(*) FROM items").await;
    assert_eq!(
        applied[0][0].as_deref(),
        Some("0"),
        "nothing after the damage is applied"
    );
    databases.drop_all().await;
}

/// Stops the shared MariaDB server, so it runs alone: `scripts/test.sh` runs ignored tests in
/// a second pass with one thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "stops the shared MariaDB server; scripts/test.sh runs it in a serial pass"]
async fn mysql_outage_mid_stream_converges() {
    let script = std::env::var("PGSYNC_TEST_SERVERS_SCRIPT").expect("run with scripts/test.sh");
    let dir = std::env::var("PGSYNC_TEST_DIR").expect("run with scripts/test.sh");
    let databases = Databases::create("outage").await;
    let pipeline = items_pipeline(&databases).await;
    let mut daemon = pipeline.start();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_randomly(databases.pg_url.clone(), stop.clone()));

    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = Command::new("bash")
        .args([&script, "stop-mysql", &dir])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = Command::new("bash")
        .args([&script, "start-mysql", &dir])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    items_equal(&databases, CONVERGE).await;
    assert!(daemon.stop().success());
    assert!(
        daemon.log().contains("apply failed, retrying"),
        "{}",
        daemon.log()
    );
    databases.drop_all().await;
}

/// Restarts the shared PostgreSQL server, so it runs in the serial pass like the MySQL outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts the shared PostgreSQL server; scripts/test.sh runs it in a serial pass"]
async fn postgres_restart_mid_stream_reconnects() {
    let script = std::env::var("PGSYNC_TEST_SERVERS_SCRIPT").expect("run with scripts/test.sh");
    let dir = std::env::var("PGSYNC_TEST_DIR").expect("run with scripts/test.sh");
    let databases = Databases::create("pgrestart").await;
    let pipeline = items_pipeline(&databases).await;
    let mut daemon = pipeline.start();
    let before = databases.pg().await;
    before
        .batch_execute(
            "INSERT INTO items SELECT g, 'before', g, 0, now() FROM generate_series(1, 100) g",
        )
        .await
        .unwrap();
    items_equal(&databases, CONVERGE).await;

    let status = Command::new("bash")
        .args([&script, "stop-pg", &dir])
        .status()
        .unwrap();
    assert!(status.success());
    daemon
        .wait_for_log("capture failed, reconnecting", Duration::from_secs(20))
        .await;
    let status = Command::new("bash")
        .args([&script, "start-pg", &dir])
        .status()
        .unwrap();
    assert!(status.success());

    let after = databases.pg().await;
    after
        .batch_execute(
            "UPDATE items SET name = 'after' WHERE id <= 50;
             INSERT INTO items SELECT g, 'new', g, 0, now() FROM generate_series(101, 150) g;",
        )
        .await
        .unwrap();
    assert_eq!(items_equal(&databases, CONVERGE).await.len(), 150);
    assert!(daemon.stop().success());
    databases.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_change_halts_apply_until_fixed() {
    let databases = Databases::create("halt").await;
    let pipeline = items_pipeline(&databases).await;
    let mut mysql = databases.mysql().await;
    mysql_async::prelude::Queryable::query_drop(
        &mut mysql,
        "ALTER TABLE items ADD CONSTRAINT qty_small CHECK (qty < 1000)",
    )
    .await
    .unwrap();
    let mut daemon = pipeline.start();
    let pg = databases.pg().await;
    pg.batch_execute(
        "INSERT INTO items VALUES (1, 'fits', 1, 1, now());
         INSERT INTO items VALUES (2, 'secret-row-value', 5000, 1, now());
         INSERT INTO items VALUES (3, 'after the rejected one', 2, 1, now());",
    )
    .await
    .unwrap();

    daemon
        .wait_for_log("apply halted", Duration::from_secs(30))
        .await;
    let log = daemon.log();
    assert!(
        log.contains("into the MySQL table for public.items"),
        "{log}"
    );
    assert!(log.contains("qty_small"), "the constraint is named: {log}");
    assert!(
        !log.contains("secret-row-value"),
        "row values stay out of the log: {log}"
    );
    let applied = databases
        .mysql_rows("SELECT id FROM items ORDER BY id")
        .await;
    assert!(
        applied.len() <= 1,
        "nothing after the rejected change is applied: {applied:?}"
    );

    mysql_async::prelude::Queryable::query_drop(
        &mut mysql,
        "ALTER TABLE items DROP CONSTRAINT qty_small",
    )
    .await
    .unwrap();
    assert_eq!(items_equal(&databases, CONVERGE).await.len(), 3);
    assert!(daemon.stop().success());
    databases.drop_all().await;
}

/// Freezes the shared MariaDB server with SIGSTOP, so it runs in the serial pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "freezes the shared MariaDB server; scripts/test.sh runs it in a serial pass"]
async fn sigterm_with_mysql_frozen_exits_after_the_grace_period() {
    let dir = std::env::var("PGSYNC_TEST_DIR").expect("run with scripts/test.sh");
    let pid = fs::read_to_string(format!("{dir}/mysql-run/mysqld.pid")).unwrap();
    let pid = pid.trim().to_string();
    let databases = Databases::create("frozen").await;
    let pipeline = items_pipeline(&databases).await;
    let mut daemon = pipeline.start();
    daemon
        .wait_for_log("apply connected", Duration::from_secs(20))
        .await;

    // Resumes the server even when an assertion fails, so that later tests can use it.
    struct Thaw(String);
    impl Drop for Thaw {
        fn drop(&mut self) {
            let _ = Command::new("kill").args(["-CONT", &self.0]).status();
        }
    }
    let status = Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    assert!(status.success());
    let thaw = Thaw(pid.clone());
    let pg = databases.pg().await;
    pg.batch_execute("INSERT INTO items VALUES (1, 'while frozen', 1, 1, now())")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stopped = std::time::Instant::now();
    let status = daemon.stop();
    let waited = stopped.elapsed();
    drop(thaw);

    assert!(status.success(), "{}", daemon.log());
    assert!(waited < Duration::from_secs(40), "the stop took {waited:?}");
    assert!(daemon.log().contains("abandoned it"), "{}", daemon.log());
    let mut daemon = pipeline.start();
    assert_eq!(items_equal(&databases, CONVERGE).await.len(), 1);
    assert!(daemon.stop().success());
    databases.drop_all().await;
}
