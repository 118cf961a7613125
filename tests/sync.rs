//! Changes flow from PostgreSQL to MySQL exactly and in order.

use std::time::Duration;

use crate::support::{Databases, Pipeline, Rows, items_equal, items_pipeline};

const CONVERGE: Duration = Duration::from_secs(30);

/// Every supported type, with one column per type on each side.
const TYPES_PG: &str = "CREATE TABLE typed (
    id integer PRIMARY KEY,
    c_int2 smallint, c_int4 integer, c_int8 bigint,
    c_numeric numeric(60,25), c_real real, c_double double precision,
    c_bool boolean, c_text text, c_varchar varchar(40), c_char char(6),
    c_date date, c_ts timestamp, c_tstz timestamptz,
    c_json json, c_jsonb jsonb, c_uuid uuid, c_bytea bytea)";
const TYPES_MYSQL: &str = "CREATE TABLE typed (
    id INT PRIMARY KEY,
    c_int2 SMALLINT, c_int4 INT, c_int8 BIGINT,
    c_numeric DECIMAL(60,25), c_real FLOAT, c_double DOUBLE,
    c_bool BOOLEAN, c_text LONGTEXT, c_varchar VARCHAR(40), c_char CHAR(6),
    c_date DATE, c_ts DATETIME(6), c_tstz DATETIME(6),
    c_json JSON, c_jsonb JSON, c_uuid CHAR(36), c_bytea LONGBLOB) ENGINE=InnoDB";

/// Canonical text of each column, written so both sides print the same thing for an exact copy.
const TYPES_PG_SELECT: &str = "SELECT id::text, c_int2::text, c_int4::text, c_int8::text,
    c_numeric::text, c_real::text, c_double::text, c_bool::int::text, c_text, c_varchar, c_char::text,
    to_char(c_date, 'YYYY-MM-DD'), to_char(c_ts, 'YYYY-MM-DD HH24:MI:SS.US'),
    to_char(c_tstz AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'),
    c_json::jsonb::text, c_jsonb::text, c_uuid::text, encode(c_bytea, 'hex')
    FROM typed ORDER BY typed.id";
const TYPES_MYSQL_SELECT: &str = "SELECT id, c_int2, c_int4, c_int8,
    c_numeric, c_real, c_double, c_bool, c_text, c_varchar, c_char,
    DATE_FORMAT(c_date, '%Y-%m-%d'), DATE_FORMAT(c_ts, '%Y-%m-%d %H:%i:%s.%f'),
    DATE_FORMAT(c_tstz, '%Y-%m-%d %H:%i:%s.%f'),
    c_json, c_jsonb, c_uuid, LOWER(HEX(c_bytea))
    FROM typed ORDER BY typed.id";

/// Rewrites the columns whose text differs between the servers for equal values: floating-point
/// exponents (`e+308` and `e308`) and JSON documents (escapes and key order).
fn normalize_typed(rows: &mut Rows) {
    for row in rows {
        for column in [5, 6] {
            if let Some(text) = &row[column] {
                row[column] = Some(format!("{:e}", text.parse::<f64>().unwrap()));
            }
        }
        for column in [14, 15] {
            if let Some(text) = &row[column] {
                let value: serde_json::Value = serde_json::from_str(text).unwrap();
                row[column] = Some(value.to_string());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_supported_type_round_trips_exactly() {
    let databases = Databases::create("types").await;
    databases.create_tables(TYPES_PG, TYPES_MYSQL).await;
    let pipeline = Pipeline::new(&databases, "public.typed");
    pipeline.setup();
    let mut daemon = pipeline.start();

    let pg = databases.pg().await;
    // A non-UTC session, so that time stamps with a zone must be converted, around the
    // 2024 spring-forward and fall-back changes in Berlin.
    pg.batch_execute(
        r#"SET TimeZone = 'Europe/Berlin';
        INSERT INTO typed VALUES
        (1, 32767, 2147483647, 9223372036854775807,
         12345678901234567890123456789012345.1234567890123456789012345, 0.5, 1.7976931348623157e308,
         true, E'back\\slash\ttab\nnewline ''quote'' 😀 𝄞', 'trailing   ', 'ab',
         '2024-02-29', '2024-03-31 02:30:00.123456', '2024-03-31 01:59:59.999999',
         '{"k": "a\"b\\c\n\u00e9", "n": 1.10}', '{"emoji": "😀", "list": [1, 2.5, null]}',
         'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\x00010200ff00'),
        (2, -32768, -2147483648, -9223372036854775808,
         -0.0000000000000000000000001, -1.25, -2.2250738585072014e-308,
         false, '', '', '',
         '0001-01-01', '9999-12-31 23:59:59.999999', '2024-03-31 03:00:00',
         '[]', '{}', '00000000-0000-0000-0000-000000000000', ''),
        (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
         NULL, NULL, '2024-10-27 02:30:00+02', NULL, NULL, NULL, NULL),
        (4, 0, 0, 0, 0, 0, 0, false, ' ', ' ', ' ', '1970-01-01', '1970-01-01 00:00:00',
         '2024-10-27 02:30:00+01', 'null', '"text"', 'ffffffff-ffff-ffff-ffff-ffffffffffff', '\x00');"#,
    )
    .await
    .unwrap();

    let rows = databases
        .wait_until_equal_by(
            TYPES_PG_SELECT,
            TYPES_MYSQL_SELECT,
            CONVERGE,
            normalize_typed,
        )
        .await;
    assert_eq!(rows.len(), 4);
    // The conversions that matter most, checked against literal expectations as well.
    assert_eq!(rows[0][3].as_deref(), Some("9223372036854775807"));
    assert_eq!(
        rows[0][4].as_deref(),
        Some("12345678901234567890123456789012345.1234567890123456789012345")
    );
    assert_eq!(rows[0][13].as_deref(), Some("2024-03-31 00:59:59.999999"));
    assert_eq!(rows[1][13].as_deref(), Some("2024-03-31 01:00:00.000000"));
    assert_eq!(rows[2][13].as_deref(), Some("2024-10-27 00:30:00.000000"));
    assert_eq!(rows[3][13].as_deref(), Some("2024-10-27 01:30:00.000000"));
    assert_eq!(
        rows[0][10].as_deref(),
        Some("ab"),
        "char(n) pads; both sides strip on read"
    );
    assert_eq!(rows[0][9].as_deref(), Some("trailing   "));
    assert_eq!(rows[1][8].as_deref(), Some(""));
    assert_eq!(rows[2][8], None);
    assert_eq!(rows[0][17].as_deref(), Some("00010200ff00"));

    // Updates and deletes of typed rows arrive too.
    pg.batch_execute(
        "UPDATE typed SET c_text = c_text || '!', c_numeric = c_numeric / 3 WHERE id IN (1, 2);
         DELETE FROM typed WHERE id = 3;",
    )
    .await
    .unwrap();
    let rows = databases
        .wait_until_equal_by(
            TYPES_PG_SELECT,
            TYPES_MYSQL_SELECT,
            CONVERGE,
            normalize_typed,
        )
        .await;
    assert_eq!(rows.len(), 3);

    assert!(daemon.stop().success());
    databases.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_documents_compare_equal_as_json() {
    // MariaDB keeps the JSON text as sent, MySQL 8 normalizes it; compare parsed documents.
    let databases = Databases::create("json").await;
    databases
        .create_tables(
            // Columns named like the trigger's row aliases (n, o) must not confuse capture.
            "CREATE TABLE docs (id int PRIMARY KEY, doc json, docb jsonb, n jsonb, o text)",
            "CREATE TABLE docs (id INT PRIMARY KEY, doc JSON, docb JSON, n JSON, o TEXT) ENGINE=InnoDB",
        )
        .await;
    let pipeline = Pipeline::new(&databases, "public.docs");
    pipeline.setup();
    let mut daemon = pipeline.start();
    let pg = databases.pg().await;
    pg.batch_execute(
        "INSERT INTO docs VALUES (1, E'{\\n  \"a\" : \"line\\\\nbreak\",\\n  \"b\": [1,\\n 2]\\n}', '{\"x\": {\"y\": \"\\\\u0000-free\"}}', '{\"id\": 999}', 'alias');
         UPDATE docs SET o = 'moved', id = 2 WHERE id = 1;",
    )
    .await
    .unwrap();

    let rows = databases
        .wait_until_equal(
            "SELECT id::text, o FROM docs",
            "SELECT id, o FROM docs",
            CONVERGE,
        )
        .await;
    assert_eq!(
        rows,
        vec![vec![Some("2".to_string()), Some("moved".to_string())]]
    );
    let pg_rows = databases
        .pg_rows("SELECT doc::text, docb::text, n::text FROM docs")
        .await;
    let mysql_rows = databases.mysql_rows("SELECT doc, docb, n FROM docs").await;
    for column in 0..3 {
        let expected: serde_json::Value =
            serde_json::from_str(pg_rows[0][column].as_deref().unwrap()).unwrap();
        let actual: serde_json::Value =
            serde_json::from_str(mysql_rows[0][column].as_deref().unwrap()).unwrap();
        assert_eq!(expected, actual, "column {column}");
    }

    assert!(daemon.stop().success());
    databases.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_rows_are_captured_and_applied() {
    let databases = Databases::create("large").await;
    databases
        .create_tables(
            "CREATE TABLE blobs (id int PRIMARY KEY, body text, data bytea)",
            "CREATE TABLE blobs (id INT PRIMARY KEY, body LONGTEXT, data LONGBLOB) ENGINE=InnoDB",
        )
        .await;
    let pipeline = Pipeline::new(&databases, "public.blobs");
    pipeline.setup();
    let mut daemon = pipeline.start();

    // The original service failed the user's own INSERT for rows over 8,000 bytes.
    let pg = databases.pg().await;
    pg.batch_execute(
        "INSERT INTO blobs VALUES (1, repeat('x', 9000), NULL);
         INSERT INTO blobs VALUES (2, repeat('abc😀', 1048576 * 5 / 7), decode(repeat('00ff', 300000), 'hex'));",
    )
    .await
    .unwrap();

    let rows = databases
        .wait_until_equal(
            "SELECT id::text, length(body)::text, md5(body), md5(coalesce(data, ''::bytea)) FROM blobs ORDER BY id",
            "SELECT id, CHAR_LENGTH(body), MD5(body), MD5(COALESCE(data, '')) FROM blobs ORDER BY id",
            CONVERGE,
        )
        .await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0][1].as_deref(), Some("9000"));
    let long: usize = rows[1][1].as_deref().unwrap().parse().unwrap();
    assert!(
        long * 4 >= 5 * 1024 * 1024 / 2,
        "the second row is several MB"
    );

    assert!(daemon.stop().success());
    databases.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_update_delete_and_truncate_arrive() {
    let databases = Databases::create("ops").await;
    let pipeline = items_pipeline(&databases).await;
    let mut daemon = pipeline.start();
    let pg = databases.pg().await;

    pg.batch_execute(
        "INSERT INTO items SELECT g, 'item ' || g, g, g * 1.5, now() FROM generate_series(1, 500) g",
    )
    .await
    .unwrap();
    assert_eq!(items_equal(&databases, CONVERGE).await.len(), 500);

    pg.batch_execute(
        "UPDATE items SET qty = qty + 1, name = NULL WHERE id % 3 = 0;
         DELETE FROM items WHERE id % 10 = 0;",
    )
    .await
    .unwrap();
    assert_eq!(items_equal(&databases, CONVERGE).await.len(), 450);

    pg.batch_execute("TRUNCATE items; INSERT INTO items VALUES (7, 'after truncate', 1, 2, now())")
        .await
        .unwrap();
    let rows = items_equal(&databases, CONVERGE).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0][1].as_deref(), Some("after truncate"));

    assert!(daemon.stop().success());
    databases.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_b_a_in_one_transaction_ends_as_a() {
    let databases = Databases::create("aba").await;
    let pipeline = items_pipeline(&databases).await;
    let mut daemon = pipeline.start();
    let pg = databases.pg().await;

    // The original merged identical notifications, so A→B→A arrived as A→B.
    pg.batch_execute(
        "BEGIN;
         INSERT INTO items VALUES (1, 'A', 1, 1, '2024-01-01 00:00:00+00');
         UPDATE items SET name = 'B' WHERE id = 1;
         UPDATE items SET name = 'A' WHERE id = 1;
         COMMIT;",
    )
    .await
    .unwrap();
    let rows = items_equal(&databases, CONVERGE).await;
    assert_eq!(rows[0][1].as_deref(), Some("A"));

    assert!(daemon.stop().success());
    databases.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_key_update_moves_the_row() {
    let databases = Databases::create("pkmove").await;
    databases
        .create_tables(
"CREATE TABLE lines (order_id bigint, line int, sku text, PRIMARY KEY (order_id, line))",
            // LINES is a reserved word in MySQL, so this also checks identifier quoting.
            "CREATE TABLE `lines` (order_id BIGINT, line INT, sku VARCHAR(50), PRIMARY KEY (order_id, line)) ENGINE=InnoDB",
        )
        .await;
    let pipeline = Pipeline::new(&databases, "public.lines");
    pipeline.setup();
    let mut daemon = pipeline.start();
    let pg = databases.pg().await;
    let pg_select = "SELECT order_id::text, line::text, sku FROM lines ORDER BY order_id, line";
    let mysql_select = "SELECT order_id, line, sku FROM `lines` ORDER BY 1, 2";

    pg.batch_execute("INSERT INTO lines SELECT o, l, o || '-' || l FROM generate_series(1, 3) o, generate_series(1, 4) l")
        .await
        .unwrap();
    databases
        .wait_until_equal(pg_select, mysql_select, CONVERGE)
        .await;

    // Move every key of one order in one statement, move one row to another order, delete one.
    pg.batch_execute(
        "UPDATE lines SET line = line + 10 WHERE order_id = 1;
         UPDATE lines SET order_id = 9 WHERE order_id = 2 AND line = 1;
         DELETE FROM lines WHERE order_id = 3 AND line = 4;",
    )
    .await
    .unwrap();
    let rows = databases
        .wait_until_equal(pg_select, mysql_select, CONVERGE)
        .await;
    assert_eq!(rows.len(), 11);
    assert!(rows.contains(&vec![
        Some("9".into()),
        Some("1".into()),
        Some("2-1".into())
    ]));
    assert!(
        !rows
            .iter()
            .any(|row| row[0].as_deref() == Some("1") && row[1].as_deref() == Some("1"))
    );

    assert!(daemon.stop().success());
    databases.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_committing_out_of_start_order_all_arrive() {
    let databases = Databases::create("order").await;
    let pipeline = items_pipeline(&databases).await;
    let mut daemon = pipeline.start();

    // The early transaction takes its change-log ids first but commits last.
    let early = databases.pg().await;
    let late = databases.pg().await;
    early
        .batch_execute("BEGIN; INSERT INTO items VALUES (1, 'early', 1, 1, now())")
        .await
        .unwrap();
    late.batch_execute("BEGIN; INSERT INTO items VALUES (2, 'late', 1, 1, now()); COMMIT")
        .await
        .unwrap();
    let rows = items_equal(&databases, CONVERGE).await;
    assert_eq!(rows.len(), 1, "only the committed transaction is visible");
    early
        .batch_execute("UPDATE items SET qty = 5 WHERE id = 1; COMMIT")
        .await
        .unwrap();
    assert_eq!(items_equal(&databases, CONVERGE).await.len(), 2);

    // Many writers with interleaved, randomly delayed commits.
    let mut tasks = Vec::new();
    for writer in 0..8i64 {
        let url = databases.pg_url.clone();
        tasks.push(tokio::spawn(async move {
            let client = crate::support::pg_connect(&url).await;
            for round in 0..25i64 {
                let id = 100 + writer * 1000 + round;
                let tx = format!(
                    "BEGIN;
                     INSERT INTO items VALUES ({id}, 'w{writer}', {round}, 0, now());
                     UPDATE items SET qty = qty + 1 WHERE id BETWEEN 100 AND 9000 AND id % 8 = {writer};
                     SELECT pg_sleep({});
                     COMMIT;",
                    rand::random::<f64>() * 0.01
                );
                client.batch_execute(&tx).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(items_equal(&databases, CONVERGE).await.len(), 202);

    assert!(daemon.stop().success());
    databases.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_keys_differing_in_case_or_trailing_space_stay_apart() {
    // The test databases use utf8mb4_nopad_bin, as the README advises for key columns.
    let databases = Databases::create("textkeys").await;
    databases
        .create_tables(
            "CREATE TABLE tags (k varchar(10) PRIMARY KEY, v int)",
            "CREATE TABLE tags (k VARCHAR(10) PRIMARY KEY, v INT) ENGINE=InnoDB",
        )
        .await;
    let pipeline = Pipeline::new(&databases, "public.tags");
    pipeline.setup();
    let mut daemon = pipeline.start();
    let pg = databases.pg().await;
    pg.batch_execute(
        "INSERT INTO tags VALUES ('a', 1), ('a ', 2), ('A', 3), ('á', 4);
         DELETE FROM tags WHERE k = 'a';
         UPDATE tags SET v = 30 WHERE k = 'A';",
    )
    .await
    .unwrap();
    let rows = databases
        .wait_until_equal(
            "SELECT k || '|', v::text FROM tags ORDER BY convert_to(k, 'UTF8')",
            "SELECT CONCAT(k, '|'), v FROM tags ORDER BY CAST(k AS BINARY)",
            CONVERGE,
        )
        .await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(daemon.stop().success());
    databases.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_from_before_add_column_applies_after_restart() {
    let databases = Databases::create("addcol").await;
    let pipeline = items_pipeline(&databases).await;
    let mut mysql = databases.mysql().await;
    // Keep changes in the journal: apply halts while the MySQL table is away.
    mysql_async::prelude::Queryable::query_drop(&mut mysql, "RENAME TABLE items TO items_away")
        .await
        .unwrap();
    let mut daemon = pipeline.start();
    let pg = databases.pg().await;
    pg.batch_execute(
        "INSERT INTO items VALUES (10, 'before', 1, 1, now());
         ALTER TABLE items ADD COLUMN color text DEFAULT 'red';
         INSERT INTO items VALUES (11, 'after', 1, 1, now(), 'blue');",
    )
    .await
    .unwrap();
    databases.wait_until_journaled().await;
    assert!(daemon.stop().success());

    // The operator makes the same change in MySQL and restarts, as the halt message advises.
    for statement in [
        "RENAME TABLE items_away TO items",
        "ALTER TABLE items ADD COLUMN color LONGTEXT DEFAULT 'red'",
    ] {
        mysql_async::prelude::Queryable::query_drop(&mut mysql, statement)
            .await
            .unwrap();
    }
    let mut daemon = pipeline.start();
    let rows = databases
        .wait_until_equal(
            "SELECT id::text, name, color FROM items ORDER BY items.id",
            "SELECT id, name, color FROM items ORDER BY id",
            CONVERGE,
        )
        .await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0][2].as_deref(), Some("red"));
    assert_eq!(rows[1][2].as_deref(), Some("blue"));
    assert!(daemon.stop().success());
    databases.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numeric_beyond_the_target_scale_halts_instead_of_rounding() {
    let databases = Databases::create("scale").await;
    databases
        .create_tables(
            // An unconstrained numeric passes the check with a warning, and only values with
            // more fraction digits than the target's scale are rejected.
            "CREATE TABLE prices (id int PRIMARY KEY, amount numeric)",
            "CREATE TABLE prices (id INT PRIMARY KEY, amount DECIMAL(12,2)) ENGINE=InnoDB",
        )
        .await;
    let pipeline = Pipeline::new(&databases, "public.prices");
    pipeline.setup();
    let mut daemon = pipeline.start();
    let pg = databases.pg().await;
    pg.batch_execute("INSERT INTO prices VALUES (1, 1.2500)")
        .await
        .unwrap();
    databases
        .wait_until_equal(
            "SELECT id::text, amount::numeric(12,2)::text FROM prices",
            "SELECT id, amount FROM prices",
            CONVERGE,
        )
        .await;

    // MySQL would store 1.26 with only a note; the daemon halts instead.
    pg.batch_execute("INSERT INTO prices VALUES (2, 1.2550)")
        .await
        .unwrap();
    daemon.wait_for_log("apply halted", CONVERGE).await;
    let log = daemon.log();
    assert!(
        log.contains("column amount of table public.prices"),
        "{log}"
    );
    assert!(log.contains("more than the scale 2"), "{log}");
    let rows = databases.mysql_rows("SELECT COUNT(*) FROM prices").await;
    assert_eq!(rows[0][0].as_deref(), Some("1"));
    assert!(daemon.stop().success());
    databases.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_column_while_running_halts_until_restart() {
    let databases = Databases::create("dropcol").await;
    databases
        .create_tables(
            "CREATE TABLE notes (id int PRIMARY KEY, body text, tag text)",
            "CREATE TABLE notes (id INT PRIMARY KEY, body LONGTEXT, tag LONGTEXT) ENGINE=InnoDB",
        )
        .await;
    let pipeline = Pipeline::new(&databases, "public.notes");
    pipeline.setup();
    let mut daemon = pipeline.start();
    let pg = databases.pg().await;
    pg.batch_execute("INSERT INTO notes VALUES (1, 'first', 'old')")
        .await
        .unwrap();
    databases
        .wait_until_equal(
            "SELECT id::text, body, tag FROM notes ORDER BY id",
            "SELECT id, body, tag FROM notes ORDER BY id",
            CONVERGE,
        )
        .await;

    // Without the check, the update would reach MySQL and leave `tag` as it was there.
    pg.batch_execute(
        "ALTER TABLE notes DROP COLUMN tag;
         UPDATE notes SET body = 'second' WHERE id = 1;",
    )
    .await
    .unwrap();
    daemon.wait_for_log("apply halted", CONVERGE).await;
    assert!(
        daemon
            .log()
            .contains("column tag is missing from a change made after the daemon read the table"),
        "{}",
        daemon.log()
    );
    let rows = databases.mysql_rows("SELECT body FROM notes").await;
    assert_eq!(rows[0][0].as_deref(), Some("first"));
    assert!(daemon.stop().success());

    // The operator drops the column in MySQL too and restarts.
    let mut mysql = databases.mysql().await;
    mysql_async::prelude::Queryable::query_drop(&mut mysql, "ALTER TABLE notes DROP COLUMN tag")
        .await
        .unwrap();
    let mut daemon = pipeline.start();
    databases
        .wait_until_equal(
            "SELECT id::text, body FROM notes ORDER BY id",
            "SELECT id, body FROM notes ORDER BY id",
            CONVERGE,
        )
        .await;
    assert!(daemon.stop().success());
    databases.drop_all().await;
}

/// Starts a daemon on a `notes` table with one synced row, for the schema-change tests.
async fn notes_daemon(prefix: &str) -> (Databases, Pipeline, crate::support::Daemon) {
    let databases = Databases::create(prefix).await;
    databases
        .create_tables(
            "CREATE TABLE notes (id int PRIMARY KEY, body text, rank int)",
            "CREATE TABLE notes (id INT PRIMARY KEY, body LONGTEXT, `rank` INT) ENGINE=InnoDB",
        )
        .await;
    let pipeline = Pipeline::new(&databases, "public.notes");
    pipeline.setup();
    let daemon = pipeline.start();
    databases
        .pg()
        .await
        .batch_execute("INSERT INTO notes VALUES (1, 'first', 1)")
        .await
        .unwrap();
    databases
        .wait_until_equal(
            "SELECT id::text, body, rank::text FROM notes",
            "SELECT id, body, `rank` FROM notes",
            CONVERGE,
        )
        .await;
    (databases, pipeline, daemon)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_column_while_running_halts() {
    let (databases, _pipeline, mut daemon) = notes_daemon("renamecol").await;
    databases
        .pg()
        .await
        .batch_execute(
            "ALTER TABLE notes RENAME COLUMN body TO text_body;
             UPDATE notes SET text_body = 'second' WHERE id = 1;",
        )
        .await
        .unwrap();
    daemon.wait_for_log("apply halted", CONVERGE).await;
    assert!(
        daemon
            .log()
            .contains("column body is missing and column text_body is new"),
        "{}",
        daemon.log()
    );
    assert!(
        daemon
            .log()
            .contains("make the same change to the MySQL table and restart"),
        "{}",
        daemon.log()
    );
    let rows = databases.mysql_rows("SELECT body FROM notes").await;
    assert_eq!(
        rows[0][0].as_deref(),
        Some("first"),
        "nothing of the new shape applied"
    );
    assert!(daemon.stop().success());
    databases.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn column_type_change_halts_on_unconvertible_value() {
    let (databases, _pipeline, mut daemon) = notes_daemon("typecol").await;
    databases
        .pg()
        .await
        .batch_execute(
            "ALTER TABLE notes ALTER COLUMN rank TYPE text;
             UPDATE notes SET rank = 'high' WHERE id = 1;",
        )
        .await
        .unwrap();
    daemon.wait_for_log("apply halted", CONVERGE).await;
    assert!(
        daemon.log().contains("column rank of table public.notes"),
        "{}",
        daemon.log()
    );
    let rows = databases.mysql_rows("SELECT `rank` FROM notes").await;
    assert_eq!(rows[0][0].as_deref(), Some("1"));
    assert!(daemon.stop().success());
    databases.drop_all().await;
}
