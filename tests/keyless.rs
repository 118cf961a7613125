//! Tables without a primary key, opted in with KEYLESS_TABLES: rows are matched on all columns.

use std::time::Duration;

use crate::support::{Databases, Pipeline};

const EVENTS_PG: &str =
    "CREATE TABLE events (kind text, amount numeric(10,2), at timestamptz, note text)";
const EVENTS_PG_SELECT: &str = "SELECT kind, amount::text, \
     to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), note FROM events \
     ORDER BY kind COLLATE \"C\", amount, note COLLATE \"C\" NULLS FIRST";
const EVENTS_MYSQL_SELECT: &str = "SELECT kind, amount, DATE_FORMAT(at, '%Y-%m-%d %H:%i:%s.%f'), \
     note FROM events ORDER BY kind, amount, note";

#[tokio::test]
async fn keyless_table_needs_opt_in() {
    let databases = Databases::create("keylessoff").await;
    databases.create_tables(EVENTS_PG, "").await;
    let pipeline = Pipeline::new(&databases, "public.events");
    let output = pipeline.run_cli(&["setup", "--create-tables"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("has no primary key"), "{stderr}");
    assert!(stderr.contains("KEYLESS_TABLES"), "{stderr}");
    databases.drop_all().await;
}

#[tokio::test]
async fn keyless_delete_removes_one_of_identical_rows() {
    let databases = Databases::create("keyless").await;
    databases.create_tables(EVENTS_PG, "").await;
    let mut pipeline = Pipeline::new(&databases, "public.events");
    pipeline.set("KEYLESS_TABLES", "public.events");
    let output = pipeline.run_cli(&["setup", "--create-tables"]);
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!String::from_utf8_lossy(&output.stdout).contains("PRIMARY KEY"));
    let mut daemon = pipeline.start();

    let pg = databases.pg().await;
    pg.batch_execute(
        "INSERT INTO events VALUES
           ('click', 1.50, '2024-01-01 00:00:00+00', NULL),
           ('click', 1.50, '2024-01-01 00:00:00+00', NULL),
           ('click', 1.50, '2024-01-01 00:00:00+00', NULL),
           ('view', NULL, NULL, 'same'),
           ('view', NULL, NULL, 'same')",
    )
    .await
    .unwrap();
    databases
        .wait_until_equal(
            EVENTS_PG_SELECT,
            EVENTS_MYSQL_SELECT,
            Duration::from_secs(30),
        )
        .await;

    // One of three identical rows goes, one of two with NULLs changes, and an update that
    // changes nothing must not duplicate the row.
    pg.batch_execute(
        "DELETE FROM events WHERE ctid = (SELECT ctid FROM events WHERE kind = 'click' LIMIT 1);
         UPDATE events SET note = 'changed'
             WHERE ctid = (SELECT ctid FROM events WHERE kind = 'view' LIMIT 1);
         UPDATE events SET amount = amount WHERE kind = 'click';",
    )
    .await
    .unwrap();
    let rows = databases
        .wait_until_equal(
            EVENTS_PG_SELECT,
            EVENTS_MYSQL_SELECT,
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(rows.len(), 4);
    assert_eq!(
        rows.iter()
            .filter(|row| row[0].as_deref() == Some("click"))
            .count(),
        2
    );

    pg.batch_execute("DELETE FROM events WHERE kind = 'view'")
        .await
        .unwrap();
    let rows = databases
        .wait_until_equal(
            EVENTS_PG_SELECT,
            EVENTS_MYSQL_SELECT,
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(rows.len(), 2);
    assert!(daemon.stop().success(), "{}", daemon.log());
    databases.drop_all().await;
}

#[tokio::test]
async fn keyless_table_rejects_inexact_columns() {
    let databases = Databases::create("keylesstypes").await;
    databases
        .create_tables(
            "CREATE TABLE readings (sensor text, value real, meta jsonb)",
            "",
        )
        .await;
    let mut pipeline = Pipeline::new(&databases, "public.readings");
    pipeline.set("KEYLESS_TABLES", "public.readings");
    let output = pipeline.run_cli(&["setup", "--create-tables"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("value"), "{stderr}");
    assert!(stderr.contains("meta"), "{stderr}");
    assert!(stderr.contains("primary key"), "{stderr}");
    databases.drop_all().await;
}
