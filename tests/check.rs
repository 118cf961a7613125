//! The `check` command against a matching and a deliberately broken target schema.

use crate::support::{Databases, Pipeline};

const SOURCE: &str = "CREATE TABLE accounts (
    id bigint PRIMARY KEY,
    code varchar(50) NOT NULL,
    balance numeric(12,4),
    opened timestamptz,
    note text,
    photo bytea,
    visits integer
);
CREATE TABLE parents (id varchar(20) PRIMARY KEY);";

const GOOD_TARGET: &str = "CREATE TABLE accounts (
    id BIGINT PRIMARY KEY,
    code VARCHAR(50) NOT NULL,
    balance DECIMAL(12,4),
    opened DATETIME(6),
    note LONGTEXT,
    photo LONGBLOB,
    visits INT
) ENGINE=InnoDB;
CREATE TABLE parents (id VARCHAR(20) PRIMARY KEY) ENGINE=InnoDB;";

const BROKEN_TARGET: &str = "CREATE TABLE accounts (
    id INT PRIMARY KEY,
    code VARCHAR(20) CHARACTER SET latin1 NOT NULL,
    balance DECIMAL(12,2),
    opened DATETIME,
    note LONGTEXT NOT NULL,
    photo LONGTEXT,
    extra INT NOT NULL,
    UNIQUE KEY accounts_code (code)
) ENGINE=InnoDB;
CREATE TABLE parents (
    id VARCHAR(20) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci PRIMARY KEY
) ENGINE=MyISAM;
CREATE TRIGGER accounts_audit BEFORE INSERT ON accounts FOR EACH ROW SET NEW.extra = 1;";

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn check_passes_matching_schema() {
    let databases = Databases::create("checkgood").await;
    databases.create_tables(SOURCE, GOOD_TARGET).await;
    let pipeline = Pipeline::new(&databases, "public.accounts,public.parents");
    let output = pipeline.run_cli(&["check"]);
    assert!(
        output.status.success(),
        "{}{}",
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout(&output).contains("2 tables checked: 0 errors"),
        "{}",
        stdout(&output)
    );
    assert!(
        stdout(&output).contains("max_allowed_packet") && stdout(&output).contains("sql_mode"),
        "{}",
        stdout(&output)
    );
    databases.drop_all().await;
}

#[tokio::test]
async fn check_reports_broken_schema() {
    let databases = Databases::create("checkbad").await;
    databases.create_tables(SOURCE, BROKEN_TARGET).await;
    let pipeline = Pipeline::new(&databases, "public.accounts,public.parents");

    let output = pipeline.run_cli(&["check"]);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    let text = stdout(&output);
    for expected in [
        "column `id` (bigint in PostgreSQL, int(11) in MySQL): the MySQL type holds 32-bit",
        "column `code` (character varying(50)",
        "MySQL holds 20 characters, PostgreSQL 50",
        "the character set is latin1",
        "the key column's collation utf8mb4_general_ci compares differently",
        "MySQL keeps 2 fraction digits, PostgreSQL 4",
        "MySQL keeps 0 fraction digits of a second, PostgreSQL 6",
        "column `note` (text in PostgreSQL, longtext in MySQL): NULL is allowed in PostgreSQL",
        "binary data needs a BLOB",
        "column `visits` (integer in PostgreSQL) is missing",
        "the MySQL column `extra` is not in PostgreSQL, is NOT NULL and has no default",
        "the unique index `accounts_code` (code)",
        "the MySQL trigger `accounts_audit`",
        "uses the MyISAM engine",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("fix them first"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let output = pipeline.run_cli(&["check", "--json"]);
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["tables"], 2);
    assert!(report["server"]["max_allowed_packet"].as_u64().unwrap() > 0);
    assert!(
        report["server"]["version"]
            .as_str()
            .unwrap()
            .contains("MariaDB")
    );
    let findings = report["findings"].as_array().unwrap();
    assert!(findings.iter().any(|finding| finding["severity"] == "error"
        && finding["table"] == "public.parents"
        && finding["message"].as_str().unwrap().contains("MyISAM")));
    assert!(
        findings
            .iter()
            .any(|finding| finding["severity"] == "warning")
    );

    databases.drop_all().await;
}

#[tokio::test]
async fn daemon_halts_on_check_errors_until_fixed() {
    use mysql_async::prelude::Queryable;

    let databases = Databases::create("checkdaemon").await;
    databases.create_tables(SOURCE, GOOD_TARGET).await;
    let pipeline = Pipeline::new(&databases, "public.accounts,public.parents");
    pipeline.setup();
    // A later change on the target makes it round fractions of a second.
    let mut mysql = databases.mysql().await;
    mysql
        .query_drop("ALTER TABLE accounts MODIFY opened DATETIME")
        .await
        .unwrap();

    let mut daemon = pipeline.start();
    databases
        .pg()
        .await
        .batch_execute("INSERT INTO accounts (id, code, opened) VALUES (1, 'a', '2024-01-02 03:04:05.678901+00')")
        .await
        .unwrap();
    daemon
        .wait_for_log(
            "MySQL keeps 0 fraction digits of a second",
            std::time::Duration::from_secs(30),
        )
        .await;
    let rows = databases.mysql_rows("SELECT COUNT(*) FROM accounts").await;
    assert_eq!(
        rows[0][0].as_deref(),
        Some("0"),
        "nothing is applied while the check fails"
    );

    mysql
        .query_drop("ALTER TABLE accounts MODIFY opened DATETIME(6)")
        .await
        .unwrap();
    databases
        .wait_until_equal(
            "SELECT id::text, to_char(opened AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') FROM accounts",
            "SELECT id, DATE_FORMAT(opened, '%Y-%m-%d %H:%i:%s.%f') FROM accounts",
            std::time::Duration::from_secs(60),
        )
        .await;
    assert!(daemon.stop().success(), "{}", daemon.log());
    databases.drop_all().await;
}

const CREATED_PG: &str = "CREATE TYPE tier AS ENUM ('basic', 'gold');
CREATE TABLE wide (
    region text,
    id integer,
    code char(5),
    title varchar(300),
    short_name varchar(40) NOT NULL DEFAULT '',
    amount numeric(12,4),
    ratio numeric,
    score real,
    weight double precision,
    active boolean,
    born date,
    seen timestamptz(3),
    at_time time,
    blob bytea,
    doc jsonb,
    tags integer[],
    ref uuid,
    level tier,
    PRIMARY KEY (region, id),
    UNIQUE (short_name)
);
CREATE UNIQUE INDEX wide_title_when_active ON wide (title) WHERE active;";

const CREATED_PG_SELECT: &str = "SELECT region, id::text, code, title, short_name, amount::text,
    ratio::text, score::text, weight::text, active::int::text, born::text,
    to_char(seen AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), to_char(at_time, 'HH24:MI:SS'),
    encode(blob, 'hex'), doc::text, to_json(tags)::text, ref::text, level::text
    FROM wide ORDER BY region COLLATE \"C\", id";

/// An unconstrained numeric becomes DECIMAL(65,30), which pads the fraction with zeros: the
/// same value, written longer.
const CREATED_MYSQL_SELECT: &str = "SELECT region, id, code, title, short_name, amount,
    TRIM(TRAILING '.' FROM TRIM(TRAILING '0' FROM ratio)),
    score, weight, active, born, DATE_FORMAT(seen, '%Y-%m-%d %H:%i:%s.%f'), TIME_FORMAT(at_time, '%H:%i:%s'),
    LOWER(HEX(`blob`)), doc, tags, ref, level
    FROM wide ORDER BY region, id";

#[tokio::test]
async fn created_tables_pass_check_and_round_trip() {
    let databases = Databases::create("createtables").await;
    databases.create_tables(CREATED_PG, "").await;
    let pipeline = Pipeline::new(&databases, "public.wide");
    let output = pipeline.run_cli(&["setup", "--create-tables"]);
    assert!(
        output.status.success(),
        "{}{}",
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in [
        "created the MySQL table for public.wide",
        "UNIQUE KEY `wide_short_name_key` (`short_name`)",
        "`short_name` VARCHAR(40) COLLATE utf8mb4_nopad_bin NOT NULL",
        "the unique index wide_title_when_active was left out",
    ] {
        assert!(
            stdout(&output).contains(expected),
            "missing {expected:?} in:\n{}",
            stdout(&output)
        );
    }
    let output = pipeline.run_cli(&["check"]);
    assert!(output.status.success(), "{}", stdout(&output));
    assert!(stdout(&output).contains("0 errors"), "{}", stdout(&output));

    // A second setup leaves the existing table alone.
    let output = pipeline.run_cli(&["setup", "--create-tables"]);
    assert!(output.status.success());
    assert!(!stdout(&output).contains("created the MySQL table"));

    let mut daemon = pipeline.start();
    databases
        .pg()
        .await
        .batch_execute(
            r#"INSERT INTO wide VALUES
            ('Nord', 1, 'ab', repeat('x', 300), 'Ärger 😀', 12345678.1234, 0.000000000000000000000000000001,
             1.5, 1.5e10, true, '2024-02-29', '2024-05-01 10:00:00.123+02', '23:59:59', '\x00ff',
             '{"a": [1, 2.50]}', '{1,NULL,3}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'gold'),
            ('nord', 1, NULL, NULL, '', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
             NULL, NULL, NULL),
            ('nord ', 1, 'x    ', '', ' ', -1, 123456789012345678901234567890.5, -0.25, -2.5,
             false, '0001-01-01', '1970-01-01 00:00:00+00', '00:00:00', '\x', 'null', '{}',
             NULL, 'basic')"#,
        )
        .await
        .unwrap();
    let rows = databases
        .wait_until_equal(
            CREATED_PG_SELECT,
            CREATED_MYSQL_SELECT,
            std::time::Duration::from_secs(30),
        )
        .await;
    assert_eq!(
        rows.len(),
        3,
        "keys differing in case and trailing space stay apart"
    );
    assert!(daemon.stop().success(), "{}", daemon.log());
    databases.drop_all().await;
}

#[tokio::test]
async fn create_tables_rejects_case_twins() {
    let databases = Databases::create("createnames").await;
    databases
        .create_tables(
            "CREATE TABLE twins (id int PRIMARY KEY, \"Name\" text, name text)",
            "",
        )
        .await;
    let pipeline = Pipeline::new(&databases, "public.twins");
    let output = pipeline.run_cli(&["setup", "--create-tables"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("columns `Name` and `name` differ only in case"),
        "{stderr}"
    );
    assert!(stderr.contains("rename"), "{stderr}");
    databases.drop_all().await;
}
