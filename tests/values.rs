//! Values MySQL cannot store, mapped as configured, and conversions chosen by the target column
//! type: numeric into a text column, uuid into BINARY(16).

use std::time::Duration;

use crate::support::{Databases, Pipeline};

#[tokio::test]
async fn configured_policies_replace_unstorable_values() {
    let databases = Databases::create("policies").await;
    databases
        .create_tables(
            "CREATE TABLE samples (id int PRIMARY KEY, ratio double precision, day date, \
             at timestamp, seen timestamptz)",
            "CREATE TABLE samples (id INT PRIMARY KEY, ratio DOUBLE, day DATE, at DATETIME(6), \
             seen DATETIME(6)) ENGINE=InnoDB",
        )
        .await;
    let mut pipeline = Pipeline::new(&databases, "public.samples");
    pipeline.set("FLOAT_SPECIAL_VALUES", "null");
    pipeline.set("DATE_OUT_OF_RANGE", "clamp");
    pipeline.setup();
    let mut daemon = pipeline.start();
    databases
        .pg()
        .await
        .batch_execute(
            "INSERT INTO samples VALUES
             (1, 'NaN', 'infinity', 'infinity', 'infinity'),
             (2, '-Infinity', '-infinity', '-infinity', '-infinity'),
             (3, 'Infinity', '0044-03-15 BC', '0044-03-15 12:00 BC', '0044-03-15 12:00+00 BC'),
             (4, 2.5, '10000-01-01', '10000-01-01 00:00', '10000-01-01 00:00+00'),
             (5, 0.1, '2024-02-29', '2024-02-29 12:34:56.789', '2024-02-29 12:34:56.789+00')",
        )
        .await
        .unwrap();
    let expected = [
        [
            "1",
            "",
            "9999-12-31",
            "9999-12-31 23:59:59.999999",
            "9999-12-31 23:59:59.999999",
        ],
        [
            "2",
            "",
            "0001-01-01",
            "0001-01-01 00:00:00.000000",
            "0001-01-01 00:00:00.000000",
        ],
        [
            "3",
            "",
            "0001-01-01",
            "0001-01-01 00:00:00.000000",
            "0001-01-01 00:00:00.000000",
        ],
        [
            "4",
            "2.5",
            "9999-12-31",
            "9999-12-31 23:59:59.999999",
            "9999-12-31 23:59:59.999999",
        ],
        [
            "5",
            "0.1",
            "2024-02-29",
            "2024-02-29 12:34:56.789000",
            "2024-02-29 12:34:56.789000",
        ],
    ];
    let select = "SELECT id, COALESCE(ratio, ''), day, DATE_FORMAT(at, '%Y-%m-%d %H:%i:%s.%f'), \
                  DATE_FORMAT(seen, '%Y-%m-%d %H:%i:%s.%f') FROM samples ORDER BY id";
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let rows = loop {
        let rows = databases.mysql_rows(select).await;
        if rows.len() == expected.len() || std::time::Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|row| row.into_iter().map(Option::unwrap_or_default).collect())
        .collect();
    assert_eq!(rows, expected, "{}", daemon.log());
    assert!(daemon.stop().success(), "{}", daemon.log());
    databases.drop_all().await;
}

#[tokio::test]
async fn target_column_type_chooses_the_conversion() {
    let databases = Databases::create("targettypes").await;
    databases
        .create_tables(
            "CREATE TABLE ledger (id uuid PRIMARY KEY, amount numeric, fee money)",
            "CREATE TABLE ledger (id BINARY(16) PRIMARY KEY, amount LONGTEXT, fee VARCHAR(40)) \
             ENGINE=InnoDB",
        )
        .await;
    let pipeline = Pipeline::new(&databases, "public.ledger");
    pipeline.setup();
    let mut daemon = pipeline.start();
    let pg = databases.pg().await;
    let huge = format!("{}.{}", "9".repeat(70), "1".repeat(40));
    pg.batch_execute(&format!(
        "INSERT INTO ledger VALUES
         ('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', {huge}, '12.34'),
         ('00000000-0000-0000-0000-000000000001', 'NaN', NULL),
         ('ffffffff-ffff-ffff-ffff-ffffffffffff', 1.50, '-0.01')"
    ))
    .await
    .unwrap();
    let rows = databases
        .wait_until_equal(
            "SELECT replace(id::text, '-', ''), amount::text, fee::numeric::text FROM ledger \
             ORDER BY id",
            "SELECT LOWER(HEX(id)), amount, fee FROM ledger ORDER BY id",
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(rows.len(), 3);
    assert_eq!(
        rows[1][1].as_deref(),
        Some(huge.as_str()),
        "every digit kept"
    );
    pg.batch_execute("DELETE FROM ledger WHERE id = '00000000-0000-0000-0000-000000000001'")
        .await
        .unwrap();
    let rows = databases
        .wait_until_equal(
            "SELECT replace(id::text, '-', ''), amount::text, fee::numeric::text FROM ledger \
             ORDER BY id",
            "SELECT LOWER(HEX(id)), amount, fee FROM ledger ORDER BY id",
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(rows.len(), 2, "a delete finds a BINARY(16) key");
    assert!(daemon.stop().success(), "{}", daemon.log());
    databases.drop_all().await;
}

#[tokio::test]
async fn key_values_are_never_replaced() {
    let databases = Databases::create("clampkey").await;
    databases
        .create_tables(
            "CREATE TABLE days (d date PRIMARY KEY, v int)",
            "CREATE TABLE days (d DATE PRIMARY KEY, v INT) ENGINE=InnoDB",
        )
        .await;
    let mut pipeline = Pipeline::new(&databases, "public.days");
    pipeline.set("DATE_OUT_OF_RANGE", "clamp");
    pipeline.setup();
    let mut daemon = pipeline.start();
    // Clamped, both keys would become 9999-12-31 and collide in MySQL.
    databases
        .pg()
        .await
        .batch_execute("INSERT INTO days VALUES ('infinity', 1), ('10000-01-01', 2)")
        .await
        .unwrap();
    daemon
        .wait_for_log("apply halted", Duration::from_secs(30))
        .await;
    assert!(
        daemon.log().contains("column d of table public.days"),
        "{}",
        daemon.log()
    );
    let rows = databases.mysql_rows("SELECT COUNT(*) FROM days").await;
    assert_eq!(rows[0][0].as_deref(), Some("0"));
    assert!(daemon.stop().success(), "{}", daemon.log());
    databases.drop_all().await;
}
