//! Modes, manual sync, the failed-change log and `sync --offline`, through the API and the
//! command line.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::support::{
    Databases, ITEMS_MYSQL_SELECT, ITEMS_PG_SELECT, TcpProxy, items_equal, items_pipeline,
};

async fn insert_items(databases: &Databases, ids: std::ops::Range<i64>) {
    databases
        .pg()
        .await
        .batch_execute(&format!(
            "INSERT INTO items SELECT g, 'item ' || g, g, g * 1.5, now() \
             FROM generate_series({}, {}) g",
            ids.start,
            ids.end - 1
        ))
        .await
        .unwrap();
}

async fn mysql_count(databases: &Databases) -> i64 {
    let rows = databases.mysql_rows("SELECT COUNT(*) FROM items").await;
    rows[0][0].as_deref().unwrap().parse().unwrap()
}

#[tokio::test]
async fn manual_mode_applies_only_on_request() {
    let databases = Databases::create("manual").await;
    let mut pipeline = items_pipeline(&databases).await;
    pipeline.set("MODE", "manual");
    let api = pipeline.enable_api();
    let daemon = pipeline.start();
    api.wait_until_up(&daemon).await;

    insert_items(&databases, 1..11).await;
    databases.wait_until_journaled().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        mysql_count(&databases).await,
        0,
        "manual mode applied by itself"
    );

    let (status, body) = api.call(Method::GET, "/status", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["mode"], "manual");
    assert_eq!(body["journal"]["backlog_records"], 10, "{body}");
    assert_eq!(body["mysql"], "reachable", "{body}");
    assert_eq!(body["postgres"], "reachable", "{body}");

    let (status, body) = api.call(Method::POST, "/sync", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["applied"], 10, "{body}");
    assert_eq!(mysql_count(&databases).await, 10);
    items_equal(&databases, Duration::from_secs(5)).await;

    // The original's route does the same.
    insert_items(&databases, 11..14).await;
    databases.wait_until_journaled().await;
    let (status, body) = api
        .call(Method::POST, "/sync/trigger-synctomysql", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["applied"], 3, "{body}");

    // The command line reads the same settings and calls the API.
    insert_items(&databases, 14..16).await;
    databases.wait_until_journaled().await;
    let output = pipeline.run_cli(&["sync"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["applied"], 2, "{report}");
    let output = pipeline.run_cli(&["status"]);
    assert!(output.status.success());
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["journal"]["backlog_records"], 0, "{status}");
    items_equal(&databases, Duration::from_secs(5)).await;

    drop(daemon);
    databases.drop_all().await;
}

#[tokio::test]
async fn mode_change_at_runtime_takes_effect() {
    let databases = Databases::create("modechange").await;
    let mut pipeline = items_pipeline(&databases).await;
    pipeline.set("MODE", "manual");
    let api = pipeline.enable_api();
    let daemon = pipeline.start();
    api.wait_until_up(&daemon).await;

    insert_items(&databases, 1..6).await;
    databases.wait_until_journaled().await;
    let (status, body) = api
        .call(Method::PUT, "/mode", Some(json!({ "mode": "automatic" })))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["previous_mode"], "manual");
    assert_eq!(body["persistent"], false);
    items_equal(&databases, Duration::from_secs(15)).await;

    // Back to manual through the command line: changes wait again.
    let output = pipeline.run_cli(&["mode", "manual"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    insert_items(&databases, 6..8).await;
    databases.wait_until_journaled().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(mysql_count(&databases).await, 5);

    let (status, body) = api
        .call(Method::PUT, "/mode", Some(json!({ "mode": "sometimes" })))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("auto-check"),
        "{body}"
    );

    drop(daemon);
    databases.drop_all().await;
}

#[tokio::test]
async fn auto_check_applies_while_mysql_up() {
    let databases = Databases::create("autocheck").await;
    let mut pipeline = items_pipeline(&databases).await;
    let mysql_port: u16 = std::env::var("PGSYNC_TEST_MYSQL_PORT")
        .unwrap()
        .parse()
        .unwrap();
    let proxy = TcpProxy::start(mysql_port).await;
    let proxied_url = databases
        .mysql_url
        .replace(&format!(":{mysql_port}/"), &format!(":{}/", proxy.port));
    assert_ne!(proxied_url, databases.mysql_url);
    pipeline.set("MYSQL_DATABASE_URL", &proxied_url);
    pipeline.set("MODE", "auto-check");
    pipeline.set("AUTO_CHECK_INTERVAL", "2");
    let api = pipeline.enable_api();
    let daemon = pipeline.start();
    api.wait_until_up(&daemon).await;

    insert_items(&databases, 1..4).await;
    items_equal(&databases, Duration::from_secs(10)).await;

    // MySQL unreachable: capture goes on, nothing is applied, and a manual sync says 503.
    proxy.cut();
    insert_items(&databases, 4..8).await;
    databases.wait_until_journaled().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(mysql_count(&databases).await, 3);
    let (status, body) = api.call(Method::POST, "/sync", None).await;
    assert_eq!(status, 503, "{body}");
    let (_, body) = api.call(Method::GET, "/status", None).await;
    assert_eq!(body["mysql"], "unreachable", "{body}");
    assert_eq!(
        body["journal"]["backlog_records"],
        4,
        "{body}\nlog:\n{}",
        daemon.log()
    );

    // Back up: the next interval applies the backlog.
    proxy.restore();
    items_equal(&databases, Duration::from_secs(10)).await;
    assert_eq!(mysql_count(&databases).await, 7);
    assert!(
        daemon.log().contains("auto-check run finished"),
        "{}",
        daemon.log()
    );

    drop(daemon);
    databases.drop_all().await;
}

#[tokio::test]
async fn concurrent_manual_syncs_do_not_overlap() {
    let databases = Databases::create("concurrent").await;
    let mut pipeline = items_pipeline(&databases).await;
    pipeline.set("MODE", "manual");
    let api = pipeline.enable_api();
    let daemon = pipeline.start();
    api.wait_until_up(&daemon).await;

    insert_items(&databases, 1..20_001).await;
    databases.wait_until_journaled().await;
    let calls = (0..6).map(|_| api.call(Method::POST, "/sync", None));
    let results = futures_util::future::join_all(calls).await;
    let mut applied = 0;
    for (status, body) in &results {
        assert_eq!(*status, 200, "{body}");
        applied += body["applied"].as_u64().unwrap();
    }
    assert_eq!(applied, 20_000, "{results:?}");
    assert_eq!(mysql_count(&databases).await, 20_000);
    items_equal(&databases, Duration::from_secs(5)).await;

    drop(daemon);
    databases.drop_all().await;
}

/// Adds a CHECK constraint on the target that rejects qty = 13.
async fn reject_unlucky_quantities(databases: &Databases) {
    use mysql_async::prelude::Queryable;
    databases
        .mysql()
        .await
        .query_drop("ALTER TABLE items ADD CONSTRAINT no_thirteen CHECK (qty <> 13)")
        .await
        .unwrap();
}

async fn allow_unlucky_quantities(databases: &Databases) {
    use mysql_async::prelude::Queryable;
    databases
        .mysql()
        .await
        .query_drop("ALTER TABLE items DROP CONSTRAINT no_thirteen")
        .await
        .unwrap();
}

#[tokio::test]
async fn rejected_change_halts_with_halt_policy() {
    let databases = Databases::create("halt").await;
    let mut pipeline = items_pipeline(&databases).await;
    reject_unlucky_quantities(&databases).await;
    let api = pipeline.enable_api();
    let daemon = pipeline.start();
    api.wait_until_up(&daemon).await;

    insert_items(&databases, 10..16).await;
    daemon
        .wait_for_log("apply halted", Duration::from_secs(15))
        .await;
    assert_eq!(
        mysql_count(&databases).await,
        0,
        "the batch is applied whole or not at all"
    );
    let (_, status) = api.call(Method::GET, "/status", None).await;
    assert_eq!(status["apply"]["state"], "halted", "{status}");
    let error = status["apply"]["last_error"].as_str().unwrap();
    assert!(error.contains("4025") || error.contains("3819"), "{error}");
    assert!(
        !error.contains("no_thirteen"),
        "server text in the API: {error}"
    );
    let (code, body) = api.call(Method::POST, "/sync", None).await;
    assert_eq!(code, 409, "{body}");
    let (_, failed) = api.call(Method::GET, "/sync/failed", None).await;
    assert_eq!(failed["failed"], json!([]), "halt parks nothing");

    allow_unlucky_quantities(&databases).await;
    let (code, body) = api.call(Method::POST, "/sync", None).await;
    assert_eq!(code, 200, "{body}");
    items_equal(&databases, Duration::from_secs(5)).await;

    drop(daemon);
    databases.drop_all().await;
}

#[tokio::test]
async fn manual_mode_status_shows_halt() {
    let databases = Databases::create("manualhalt").await;
    let mut pipeline = items_pipeline(&databases).await;
    reject_unlucky_quantities(&databases).await;
    pipeline.set("MODE", "manual");
    let api = pipeline.enable_api();
    let daemon = pipeline.start();
    api.wait_until_up(&daemon).await;

    insert_items(&databases, 12..15).await;
    databases.wait_until_journaled().await;
    let (code, body) = api.call(Method::POST, "/sync", None).await;
    assert_eq!(code, 409, "{body}");
    let (_, status) = api.call(Method::GET, "/status", None).await;
    assert_eq!(status["apply"]["state"], "halted", "{status}");
    let error = status["apply"]["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("MySQL error"), "{status}");

    // A successful run clears the halt.
    allow_unlucky_quantities(&databases).await;
    let (code, body) = api.call(Method::POST, "/sync", None).await;
    assert_eq!(code, 200, "{body}");
    let (_, status) = api.call(Method::GET, "/status", None).await;
    assert_eq!(status["apply"]["state"], "idle", "{status}");
    assert_eq!(status["apply"]["last_error"], json!(null), "{status}");

    drop(daemon);
    databases.drop_all().await;
}

#[tokio::test]
async fn park_policy_parks_then_retries() {
    let databases = Databases::create("park").await;
    let mut pipeline = items_pipeline(&databases).await;
    reject_unlucky_quantities(&databases).await;
    pipeline.set("FAILED_CHANGE_POLICY", "park");
    let api = pipeline.enable_api();
    let daemon = pipeline.start();
    api.wait_until_up(&daemon).await;

    // Row 13 is rejected; the other rows flow, and later changes of row 13 wait behind it.
    insert_items(&databases, 10..16).await;
    let pg = databases.pg().await;
    pg.batch_execute("UPDATE items SET name = 'renamed' WHERE id = 13")
        .await
        .unwrap();
    pg.batch_execute("UPDATE items SET name = 'also renamed' WHERE id = 14")
        .await
        .unwrap();
    let rows = databases
        .wait_until_equal(
            "SELECT id::text, name FROM items WHERE id <> 13 ORDER BY id",
            "SELECT id, name FROM items ORDER BY id",
            Duration::from_secs(15),
        )
        .await;
    assert_eq!(rows.len(), 5);

    let (status, body) = api.call(Method::GET, "/sync/failed", None).await;
    assert_eq!(status, 200, "{body}");
    let failed = body["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 2, "{body}");
    assert_eq!(failed[0]["table"], "public.items");
    assert_eq!(failed[0]["operation"], "insert");
    assert_eq!(failed[0]["key"], json!([13]));
    assert!(
        failed[0]["error"].as_str().unwrap().contains("MySQL error"),
        "{body}"
    );
    assert_eq!(failed[1]["operation"], "update");
    assert_eq!(failed[1]["waits_for"], failed[0]["id"]);
    let (_, status) = api.call(Method::GET, "/status", None).await;
    assert_eq!(status["failed_changes"], 2, "{status}");
    assert_eq!(status["journal"]["backlog_records"], 0, "{status}");

    // A retry while the target still rejects the row keeps both entries.
    let (code, report) = api.call(Method::POST, "/sync/failed/retry", None).await;
    assert_eq!(code, 200, "{report}");
    assert_eq!(report["applied"], json!([]), "{report}");
    assert_eq!(report["still_failed"].as_array().unwrap().len(), 2);

    // Once the target accepts it, the retry applies both in order.
    allow_unlucky_quantities(&databases).await;
    let output = pipeline.run_cli(&["failed", "retry"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["applied"].as_array().unwrap().len(), 2, "{report}");
    items_equal(&databases, Duration::from_secs(5)).await;
    let (_, body) = api.call(Method::GET, "/sync/failed", None).await;
    assert_eq!(body["failed"], json!([]));

    // Changes of the row flow directly again.
    pg.batch_execute("UPDATE items SET name = 'third name' WHERE id = 13")
        .await
        .unwrap();
    items_equal(&databases, Duration::from_secs(10)).await;

    drop(daemon);
    databases.drop_all().await;
}

#[tokio::test]
async fn parked_change_can_be_discarded() {
    let databases = Databases::create("discard").await;
    let mut pipeline = items_pipeline(&databases).await;
    reject_unlucky_quantities(&databases).await;
    pipeline.set("FAILED_CHANGE_POLICY", "park");
    let api = pipeline.enable_api();
    let daemon = pipeline.start();
    api.wait_until_up(&daemon).await;

    insert_items(&databases, 12..15).await;
    databases
        .wait_until_equal(
            "SELECT id::text FROM items WHERE id <> 13 ORDER BY id",
            "SELECT id FROM items ORDER BY id",
            Duration::from_secs(15),
        )
        .await;
    let (_, body) = api.call(Method::GET, "/sync/failed", None).await;
    let id = body["failed"][0]["id"].as_u64().unwrap();

    let (status, _) = api
        .call(Method::DELETE, &format!("/sync/failed/{id}"), None)
        .await;
    assert_eq!(status, 204);
    let (status, body) = api
        .call(Method::DELETE, &format!("/sync/failed/{id}"), None)
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = api.call(Method::DELETE, "/sync/failed/abc", None).await;
    assert_eq!(status, 400, "{body}");
    let (_, status) = api.call(Method::GET, "/status", None).await;
    assert_eq!(status["failed_changes"], 0, "{status}");

    // The row is no longer parked, so its next change applies.
    databases
        .pg()
        .await
        .batch_execute("UPDATE items SET qty = 7 WHERE id = 13")
        .await
        .unwrap();
    items_equal(&databases, Duration::from_secs(10)).await;

    drop(daemon);
    databases.drop_all().await;
}

#[tokio::test]
async fn retry_by_id_keeps_blocked_truncate_first() {
    let databases = Databases::create("retrytrunc").await;
    let mut pipeline = items_pipeline(&databases).await;
    reject_unlucky_quantities(&databases).await;
    pipeline.set("FAILED_CHANGE_POLICY", "park");
    let api = pipeline.enable_api();
    let daemon = pipeline.start();
    api.wait_until_up(&daemon).await;

    // Row 13 is parked, the TRUNCATE waits behind it, and the insert of row 20 waits behind
    // the TRUNCATE.
    insert_items(&databases, 12..15).await;
    let pg = databases.pg().await;
    pg.batch_execute("TRUNCATE items").await.unwrap();
    insert_items(&databases, 20..21).await;
    let mut failed = Vec::new();
    for _ in 0..150 {
        let (_, body) = api.call(Method::GET, "/sync/failed", None).await;
        failed = body["failed"].as_array().unwrap().clone();
        if failed.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(failed.len(), 3, "{failed:?}");
    let parked_13 = failed[0]["id"].as_u64().unwrap();
    assert_eq!(failed[1]["operation"], "truncate", "{failed:?}");
    let insert_20 = failed[2]["id"].as_u64().unwrap();

    // Retrying the insert alone must not pass the TRUNCATE that is still blocked.
    let (code, report) = api
        .call(
            Method::POST,
            "/sync/failed/retry",
            Some(json!({ "ids": [insert_20] })),
        )
        .await;
    assert_eq!(code, 200, "{report}");
    assert_eq!(report["applied"], json!([]), "{report}");
    assert_eq!(mysql_count(&databases).await, 2, "rows 12 and 14 only");

    // Discarding row 13's change releases the TRUNCATE and then the insert, in order.
    let (code, _) = api
        .call(Method::DELETE, &format!("/sync/failed/{parked_13}"), None)
        .await;
    assert_eq!(code, 204);
    let (code, report) = api.call(Method::POST, "/sync/failed/retry", None).await;
    assert_eq!(code, 200, "{report}");
    items_equal(&databases, Duration::from_secs(5)).await;
    assert_eq!(mysql_count(&databases).await, 1);

    drop(daemon);
    databases.drop_all().await;
}

#[tokio::test]
async fn offline_sync_applies_the_journal_without_a_daemon() {
    let databases = Databases::create("offline").await;
    let mut pipeline = items_pipeline(&databases).await;
    pipeline.set("MODE", "manual");
    let api = pipeline.enable_api();
    let mut daemon = pipeline.start();
    api.wait_until_up(&daemon).await;
    insert_items(&databases, 1..101).await;
    databases.wait_until_journaled().await;

    // While the daemon has the DATA_DIR lock, an offline sync fails.
    let output = pipeline.run_cli(&["sync", "--offline"]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("journal"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(daemon.stop().success(), "{}", daemon.log());
    assert_eq!(mysql_count(&databases).await, 0);

    let output = pipeline.run_cli(&["sync", "--offline"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["applied"], 100, "{report}");
    databases
        .wait_until_equal(ITEMS_PG_SELECT, ITEMS_MYSQL_SELECT, Duration::from_secs(5))
        .await;

    // Without a daemon, the API commands explain how to proceed.
    let output = pipeline.run_cli(&["status"]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("cannot reach the daemon"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    databases.drop_all().await;
}

#[tokio::test]
async fn crash_while_parking_parks_each_change_once() {
    use pg_to_mysql_sync::failpoint::FAILPOINT_ENV;

    let databases = Databases::create("parkcrash").await;
    let mut pipeline = items_pipeline(&databases).await;
    reject_unlucky_quantities(&databases).await;
    pipeline.set("FAILED_CHANGE_POLICY", "park");
    for (round, point) in [
        "apply-before-checkpoint",
        "apply-before-commit",
        "apply-after-commit",
    ]
    .into_iter()
    .enumerate()
    {
        pipeline.set(FAILPOINT_ENV, point);
        let mut daemon = pipeline.start();
        // Each round inserts ids N..N+20, one of which has qty 13.
        let first = (round as i64 + 1) * 100;
        databases
            .pg()
            .await
            .batch_execute(&format!(
                "INSERT INTO items SELECT g, 'round', CASE WHEN g = {first} + 5 THEN 13 ELSE g END, \
                 1, now() FROM generate_series({first}, {first} + 19) g"
            ))
            .await
            .unwrap();
        let status = daemon.wait_exit(Duration::from_secs(30));
        assert!(!status.success(), "{point}: the daemon should have aborted");

        pipeline.env.retain(|(key, _)| key != FAILPOINT_ENV);
        let mut daemon = pipeline.start();
        databases
            .wait_until_equal(
                "SELECT id::text, qty::text FROM items WHERE qty <> 13 ORDER BY id",
                "SELECT id, qty FROM items ORDER BY id",
                Duration::from_secs(30),
            )
            .await;
        let parked = databases
            .mysql_rows("SELECT COUNT(*), COUNT(DISTINCT seq) FROM pg_to_mysql_sync_failed")
            .await;
        let expected = (round + 1).to_string();
        assert_eq!(
            parked[0],
            vec![Some(expected.clone()), Some(expected)],
            "{point}: {}",
            daemon.log()
        );
        assert!(daemon.stop().success(), "{point}: {}", daemon.log());
    }

    databases.drop_all().await;
}

#[tokio::test]
async fn altered_table_is_parked_while_others_go_on() {
    use mysql_async::prelude::Queryable;

    let databases = Databases::create("altered").await;
    databases
        .create_tables(
            "CREATE TABLE tags (id int PRIMARY KEY, label text)",
            "CREATE TABLE tags (id INT PRIMARY KEY, label LONGTEXT) ENGINE=InnoDB",
        )
        .await;
    let mut pipeline = items_pipeline(&databases).await;
    pipeline.set("SYNC_TABLES", "public.items,public.tags");
    pipeline.setup();
    pipeline.set("FAILED_CHANGE_POLICY", "park");
    let api = pipeline.enable_api();
    let mut daemon = pipeline.start();
    api.wait_until_up(&daemon).await;
    // The check at connect compares the current definitions, so an ALTER before it would halt
    // apply at start instead of parking the altered table's changes.
    daemon
        .wait_for_log("apply connected to MySQL", Duration::from_secs(30))
        .await;

    // tags gains a column; its changes wait, while items go on.
    let pg = databases.pg().await;
    pg.batch_execute(
        "ALTER TABLE tags ADD COLUMN color text;
         INSERT INTO tags VALUES (1, 'urgent', 'red');
         INSERT INTO tags VALUES (2, 'later', NULL);",
    )
    .await
    .unwrap();
    insert_items(&databases, 1..4).await;
    items_equal(&databases, Duration::from_secs(15)).await;
    let (_, body) = api.call(Method::GET, "/sync/failed", None).await;
    let failed = body["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 2, "{body}");
    assert_eq!(failed[0]["table"], "public.tags");
    assert_eq!(
        failed[0]["key"],
        serde_json::Value::Null,
        "the whole table waits"
    );
    assert!(
        failed[0]["error"]
            .as_str()
            .unwrap()
            .contains("column color is new"),
        "{body}"
    );

    // The operator alters MySQL too, restarts, and retries.
    databases
        .mysql()
        .await
        .query_drop("ALTER TABLE tags ADD COLUMN color LONGTEXT")
        .await
        .unwrap();
    assert!(daemon.stop().success(), "{}", daemon.log());
    let daemon = pipeline.start();
    api.wait_until_up(&daemon).await;
    let (status, report) = api.call(Method::POST, "/sync/failed/retry", None).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["applied"].as_array().unwrap().len(), 2, "{report}");
    databases
        .wait_until_equal(
            "SELECT id::text, label, color FROM tags ORDER BY id",
            "SELECT id, label, color FROM tags ORDER BY id",
            Duration::from_secs(15),
        )
        .await;

    drop(daemon);
    databases.drop_all().await;
}
