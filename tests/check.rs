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
