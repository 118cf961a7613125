//! Commands, configuration errors and the guards around them.

use std::time::Duration;

use crate::support::{Databases, ITEMS_MYSQL, ITEMS_PG, Pipeline, items_pipeline};

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_is_idempotent_and_teardown_guards_pending_changes() {
    let databases = Databases::create("setup").await;
    let pipeline = items_pipeline(&databases).await;
    pipeline.setup();
    let triggers = databases
        .pg_rows("SELECT count(*)::text FROM pg_trigger WHERE tgrelid = 'items'::regclass AND NOT tgisinternal")
        .await;
    assert_eq!(triggers[0][0].as_deref(), Some("4"));

    let pg = databases.pg().await;
    pg.batch_execute("INSERT INTO items VALUES (1, 'pending', 1, 1, now())")
        .await
        .unwrap();
    let output = pipeline.run_cli(&["teardown"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("still holds 1 change that"),
        "{}",
        stderr(&output)
    );

    let output = pipeline.run_cli(&["teardown", "--force"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let schemas = databases
        .pg_rows("SELECT count(*)::text FROM pg_namespace WHERE nspname = 'pg2mysql_sync'")
        .await;
    assert_eq!(schemas[0][0].as_deref(), Some("0"));
    let triggers = databases
        .pg_rows("SELECT count(*)::text FROM pg_trigger WHERE tgrelid = 'items'::regclass AND NOT tgisinternal")
        .await;
    assert_eq!(triggers[0][0].as_deref(), Some("0"));
    // Writes work without capture installed.
    pg.batch_execute("INSERT INTO items VALUES (2, 'plain', 1, 1, now())")
        .await
        .unwrap();
    databases.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_types_and_missing_keys_are_rejected_by_name() {
    let databases = Databases::create("reject").await;
    databases
        .create_tables(
            "CREATE TABLE shapes (id int PRIMARY KEY, box point, tags int4range);
             CREATE TABLE loose (a int, b text);
             CREATE TABLE floaty (id real PRIMARY KEY);
             CREATE TABLE deferred (id int PRIMARY KEY DEFERRABLE INITIALLY DEFERRED);
             CREATE TABLE parted (id int PRIMARY KEY) PARTITION BY RANGE (id);
             CREATE TABLE parent (id int PRIMARY KEY);
             CREATE TABLE child (extra int) INHERITS (parent);",
            "CREATE TABLE shapes (id INT PRIMARY KEY, box TEXT, tags TEXT);
             CREATE TABLE loose (a INT, b TEXT);",
        )
        .await;
    let pipeline = Pipeline::new(
        &databases,
        "public.shapes,public.loose,public.missing,public.floaty,public.deferred,public.parted,public.parent",
    );
    let output = pipeline.run_cli(&["setup"]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("column box of table public.shapes has type point"),
        "{message}"
    );
    assert!(
        message.contains("column tags of table public.shapes has type int4range"),
        "{message}"
    );
    assert!(
        message.contains("table public.loose has no primary key"),
        "{message}"
    );
    assert!(
        message.contains("table public.missing does not exist"),
        "{message}"
    );

    // The daemon checks the same at start.
    let output = pipeline.run_cli(&["run"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("has type point"),
        "{}",
        stderr(&output)
    );
    databases.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_mysql_table_is_reported_at_setup() {
    let databases = Databases::create("notarget").await;
    databases.create_tables(ITEMS_PG, "").await;
    let pipeline = Pipeline::new(&databases, "public.items");
    let output = pipeline.run_cli(&["setup"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("the MySQL table `items` (for public.items) does not exist"),
        "{}",
        stderr(&output)
    );
    databases.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_without_setup_names_the_fix() {
    let databases = Databases::create("nosetup").await;
    databases.create_tables(ITEMS_PG, ITEMS_MYSQL).await;
    let pipeline = Pipeline::new(&databases, "public.items");
    let output = pipeline.run_cli(&["run"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("run `pg-to-mysql-sync setup`"),
        "{}",
        stderr(&output)
    );
    databases.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_daemon_on_one_data_dir_is_refused() {
    let databases = Databases::create("lock").await;
    let pipeline = items_pipeline(&databases).await;
    let mut first = pipeline.start();
    first
        .wait_for_log("daemon started", Duration::from_secs(20))
        .await;

    let output = pipeline.run_cli(&["run"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("is in use by another pg-to-mysql-sync process"),
        "{}",
        stderr(&output)
    );
    assert!(first.stop().success());
    databases.drop_all().await;
}

#[test]
fn configuration_errors_name_the_key_and_hide_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let run = |env: &[(&str, &str)]| {
        let mut command = std::process::Command::new(crate::support::BINARY);
        command.arg("run").current_dir(dir.path());
        crate::support::clear_settings(&mut command);
        command.envs(env.iter().copied());
        command.output().unwrap()
    };
    let pg = (
        "PG_DATABASE_URL",
        "postgres://u:hunter2secret@127.0.0.1:1/db",
    );
    let mysql = (
        "MYSQL_DATABASE_URL",
        "mysql://u:hunter2secret@127.0.0.1:1/app",
    );
    let tables = ("SYNC_TABLES", "public.items");

    let output = run(&[mysql, tables]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("PG_DATABASE_URL is missing"),
        "{}",
        stderr(&output)
    );

    let output = run(&[pg, mysql, ("SYNC_TABLES", "items")]);
    assert!(
        stderr(&output).contains("SYNC_TABLES is invalid"),
        "{}",
        stderr(&output)
    );

    let output = run(&[pg, mysql, tables, ("MODE", "sometimes")]);
    assert!(
        stderr(&output).contains("MODE is invalid"),
        "{}",
        stderr(&output)
    );

    let output = run(&[
        pg,
        ("MYSQL_DATABASE_URL", "mysql://u:hunter2secret@127.0.0.1:1"),
        tables,
    ]);
    assert!(
        stderr(&output).contains("names no database"),
        "{}",
        stderr(&output)
    );

    for output in [
        run(&[pg, mysql]),
        run(&[pg, ("MYSQL_DATABASE_URL", "mysql://u:hunter2secret@[bad")]),
    ] {
        assert!(
            !stderr(&output).contains("hunter2secret"),
            "{}",
            stderr(&output)
        );
    }

    let help = std::process::Command::new(crate::support::BINARY)
        .args(["run", "--help"])
        .env("PG_DATABASE_URL", pg.1)
        .env("JWT_SECRET", "hunter2secret-jwt-0123456789abcdefghij")
        .env("API_KEY", "hunter2secret-key-0123456789abcdefghij")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("PG_DATABASE_URL"), "{help}");
    assert!(help.contains("JWT_SECRET"), "{help}");
    assert!(!help.contains("hunter2secret"), "{help}");
}

#[test]
fn dotenv_file_is_read_and_environment_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "PG_DATABASE_URL=postgres://u:p@127.0.0.1:1/db\nMYSQL_DATABASE_URL=mysql://u:p@127.0.0.1:1/app\nSYNC_TABLES=items\n",
    )
    .unwrap();
    let mut command = std::process::Command::new(crate::support::BINARY);
    command.arg("run").current_dir(dir.path());
    crate::support::clear_settings(&mut command);
    let output = command.output().unwrap();
    assert!(
        stderr(&output).contains("SYNC_TABLES is invalid"),
        "the .env value is used: {}",
        stderr(&output)
    );

    let output = command
        .env("MODE", "sometimes")
        .env("SYNC_TABLES", "public.items")
        .output()
        .unwrap();
    assert!(
        stderr(&output).contains("MODE is invalid"),
        "the environment wins: {}",
        stderr(&output)
    );
}

/// Makes a CA and a server certificate for 127.0.0.1 with the openssl command.
pub fn make_certificates(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let output = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            stderr(&output)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_verifies_the_server_certificate() {
    // Turn TLS on in the shared test server; clients without sslmode=require are unaffected.
    let certificates = tempfile::tempdir().unwrap();
    make_certificates(certificates.path());
    let postgres_files =
        std::path::Path::new(&std::env::var("PGSYNC_TEST_DIR").expect("run with scripts/test.sh"))
            .join("tls");
    std::fs::create_dir_all(&postgres_files).unwrap();
    for name in ["server.pem", "server.key"] {
        std::fs::copy(certificates.path().join(name), postgres_files.join(name)).unwrap();
    }
    let status = std::process::Command::new("chown")
        .arg("-R")
        .arg("postgres:postgres")
        .arg(&postgres_files)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::set_permissions(
        postgres_files.join("server.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let admin = crate::support::pg_connect(&std::env::var("PGSYNC_TEST_PG_URL").unwrap()).await;
    // ALTER SYSTEM refuses to run in a multi-statement batch, which is one transaction.
    for statement in [
        format!(
            "ALTER SYSTEM SET ssl_cert_file = '{}/server.pem'",
            postgres_files.display()
        ),
        format!(
            "ALTER SYSTEM SET ssl_key_file = '{}/server.key'",
            postgres_files.display()
        ),
        "ALTER SYSTEM SET ssl = on".to_string(),
        "SELECT pg_reload_conf()".to_string(),
    ] {
        admin.batch_execute(&statement).await.unwrap();
    }
    // The reload is asynchronous; new sessions see the setting once it is done.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let session =
            crate::support::pg_connect(&std::env::var("PGSYNC_TEST_PG_URL").unwrap()).await;
        let ssl: String = session.query_one("SHOW ssl", &[]).await.unwrap().get(0);
        if ssl == "on" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "ssl stayed {ssl}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let databases = Databases::create("tls").await;
    databases.create_tables(ITEMS_PG, ITEMS_MYSQL).await;
    let mut pipeline = Pipeline::new(&databases, "public.items");
    let tls_url = format!("{}?sslmode=require", databases.pg_url);
    pipeline.env[0].1 = tls_url;

    // The test CA is not in the system store, so verification fails until it is named.
    let output = pipeline.run_cli(&["setup"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("failed to connect to PostgreSQL"),
        "{}",
        stderr(&output)
    );

    pipeline.env.push((
        "PG_SSL_ROOT_CERT".to_string(),
        certificates.path().join("ca.pem").display().to_string(),
    ));
    pipeline.setup();
    let ssl_in_use = databases
        .pg_rows("SELECT count(*)::text FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE s.ssl AND a.datname = current_database()")
        .await;
    assert_eq!(
        ssl_in_use[0][0].as_deref(),
        Some("0"),
        "setup has disconnected"
    );
    let mut daemon = pipeline.start();
    databases
        .pg()
        .await
        .batch_execute("INSERT INTO items VALUES (1, 'over TLS', 1, 1, now())")
        .await
        .unwrap();
    crate::support::items_equal(&databases, Duration::from_secs(30)).await;
    let ssl_in_use = databases
        .pg_rows("SELECT count(*)::text FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE s.ssl AND a.datname = current_database()")
        .await;
    assert_eq!(
        ssl_in_use[0][0].as_deref(),
        Some("1"),
        "the daemon's capture session uses TLS"
    );
    assert!(daemon.stop().success());
    databases.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_checks_and_removes_the_journal() {
    let databases = Databases::create("reinstall").await;
    let pipeline = items_pipeline(&databases).await;
    let pg = databases.pg().await;
    let mut mysql = databases.mysql().await;

    // A journaled change that MySQL has not applied blocks teardown.
    mysql_async::prelude::Queryable::query_drop(&mut mysql, "RENAME TABLE items TO items_away")
        .await
        .unwrap();
    pg.batch_execute("INSERT INTO items VALUES (1, 'first', 1, 1, now())")
        .await
        .unwrap();
    let mut daemon = pipeline.start();
    daemon
        .wait_for_log("does not exist", Duration::from_secs(20))
        .await;
    databases.wait_until_journaled().await;
    assert!(daemon.stop().success());
    let output = pipeline.run_cli(&["teardown"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("holds 1 change not yet applied"),
        "{}",
        stderr(&output)
    );

    // Once caught up, teardown removes the journal, so a later setup starts afresh instead of
    // replaying old changes over rows changed in between.
    mysql_async::prelude::Queryable::query_drop(&mut mysql, "RENAME TABLE items_away TO items")
        .await
        .unwrap();
    let mut daemon = pipeline.start();
    crate::support::items_equal(&databases, Duration::from_secs(30)).await;
    assert!(daemon.stop().success());
    let output = pipeline.run_cli(&["teardown"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(crate::support::segments(&pipeline.data_dir()).is_empty());

    pg.batch_execute("UPDATE items SET qty = 5").await.unwrap();
    mysql_async::prelude::Queryable::query_drop(&mut mysql, "UPDATE items SET qty = 5")
        .await
        .unwrap();
    pipeline.setup();
    let mut daemon = pipeline.start();
    pg.batch_execute("INSERT INTO items VALUES (2, 'second', 1, 1, now())")
        .await
        .unwrap();
    let rows = crate::support::items_equal(&databases, Duration::from_secs(30)).await;
    assert_eq!(
        rows[0][2].as_deref(),
        Some("5"),
        "the old journal was not replayed"
    );
    assert!(daemon.stop().success());
    databases.drop_all().await;
}

#[test]
fn invalid_dotenv_is_reported_without_its_content() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "MYSQL_DATABASE_URL=\"mysql://root:hunter2secret@h/db\nX=1\n",
    )
    .unwrap();
    let output = std::process::Command::new(crate::support::BINARY)
        .arg("run")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains(".env in the working directory is invalid"),
        "{}",
        stderr(&output)
    );
    assert!(
        !stderr(&output).contains("hunter2secret"),
        "{}",
        stderr(&output)
    );
}

/// Starts `run` against an unreachable PostgreSQL, so that it logs the journal's opening and
/// then retries, and returns the first log line.
fn first_log_line(extra_env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("log");
    let mut command = std::process::Command::new(crate::support::BINARY);
    crate::support::clear_settings(&mut command);
    command
        .arg("run")
        .current_dir(dir.path())
        .env("PG_DATABASE_URL", "postgres://u:p@127.0.0.1:1/db")
        .env("MYSQL_DATABASE_URL", "mysql://u:p@127.0.0.1:1/app")
        .env("SYNC_TABLES", "public.items")
        .env("API", "off")
        .env_remove("JOURNAL_STREAM")
        .envs(extra_env.iter().copied())
        .stderr(std::fs::File::create(&log_path).unwrap());
    let mut child = command.spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let line = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(line) = log.lines().find(|line| line.contains("journal opened")) {
            break line.to_string();
        }
        assert!(std::time::Instant::now() < deadline, "no log line: {log}");
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    line
}

#[test]
fn log_lines_suit_terminals_journald_and_collectors() {
    let plain = first_log_line(&[]);
    assert!(
        plain.starts_with("20"),
        "text lines start with a time stamp: {plain}"
    );

    // journald stamps lines itself, and systemd announces it with JOURNAL_STREAM.
    let journald = first_log_line(&[("JOURNAL_STREAM", "8:12345")]);
    assert!(journald.trim_start().starts_with("INFO"), "{journald}");

    let json = first_log_line(&[("LOG_FORMAT", "json")]);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["level"], "INFO");
    assert_eq!(value["fields"]["message"], "journal opened");
}

#[test]
fn env_example_as_shipped_starts_the_daemon() {
    // `.env.example` with only the required values filled in, as the install script and a
    // user copying it produce, must pass the configuration checks.
    let dir = tempfile::tempdir().unwrap();
    let example = include_str!("../.env.example")
        .replace(
            "JWT_SECRET=\n",
            "JWT_SECRET=example-secret-0123456789abcdef0123456789\n",
        )
        .replace(
            "API_KEY=\n",
            "API_KEY=example-key-0123456789abcdef0123456789\n",
        )
        .replace("BIND_ADDRESS=0.0.0.0", "BIND_ADDRESS=127.0.0.1")
        .replace(
            "PORT=3000",
            &format!("PORT={}", crate::support::free_port()),
        )
        .replace("127.0.0.1:5432", "127.0.0.1:1")
        .replace("127.0.0.1:3306", "127.0.0.1:1");
    std::fs::write(dir.path().join(".env"), example).unwrap();
    let log_path = dir.path().join("log");
    let mut command = std::process::Command::new(crate::support::BINARY);
    crate::support::clear_settings(&mut command);
    command
        .arg("run")
        .current_dir(dir.path())
        .env_remove("JOURNAL_STREAM")
        .stderr(std::fs::File::create(&log_path).unwrap());
    let mut child = command.spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.contains("API listening") {
            break;
        }
        let exited = child.try_wait().unwrap();
        assert!(
            exited.is_none() && std::time::Instant::now() < deadline,
            "the daemon did not start its API: {log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn teardown_without_drop_right_keeps_capture() {
    use mysql_async::prelude::Queryable;

    let databases = crate::support::Databases::create("nodrop").await;
    let mut pipeline = crate::support::items_pipeline(&databases).await;
    // A MySQL user with the rights apply needs, but not DROP.
    let user = format!("u_{}", &databases.name[2..]);
    let mut admin = databases.mysql().await;
    for statement in [
        format!("CREATE USER '{user}'@'%' IDENTIFIED BY 'pw-nodrop'"),
        format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE, CREATE ON `{}`.* TO '{user}'@'%'",
            databases.name
        ),
    ] {
        admin.query_drop(statement).await.unwrap();
    }
    let port = std::env::var("PGSYNC_TEST_MYSQL_PORT").unwrap();
    pipeline.set(
        "MYSQL_DATABASE_URL",
        &format!(
            "mysql://{user}:pw-nodrop@127.0.0.1:{port}/{}",
            databases.name
        ),
    );

    let output = pipeline.run_cli(&["teardown"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("needs the DROP privilege"),
        "{}",
        stderr(&output)
    );
    assert!(
        !stderr(&output).contains("pw-nodrop"),
        "{}",
        stderr(&output)
    );
    let schema = databases
        .pg_rows("SELECT count(*)::text FROM pg_namespace WHERE nspname = 'pg2mysql_sync'")
        .await;
    assert_eq!(
        schema[0][0].as_deref(),
        Some("1"),
        "capture stays installed"
    );

    admin
        .query_drop(format!("DROP USER '{user}'@'%'"))
        .await
        .unwrap();
    databases.drop_all().await;
}
