//! Test helpers: per-test databases on the throwaway servers, the daemon as a child process,
//! and table comparison.
//!
//! The servers come from `scripts/test.sh` (through `scripts/servers.sh`), which exports their
//! URLs. A test that finds no server fails; it never skips.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

pub const BINARY: &str = env!("CARGO_BIN_EXE_pg-to-mysql-sync");

/// Rows as text, NULL as `None`.
pub type Rows = Vec<Vec<Option<String>>>;

fn server_url(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| {
        panic!("{key} is not set: run the tests with scripts/test.sh, which starts the servers")
    })
}

/// Connects to PostgreSQL and drives the connection in the background.
pub async fn pg_connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|error| {
            panic!("cannot connect to PostgreSQL ({error}); run scripts/test.sh")
        });
    tokio::spawn(connection);
    client
}

/// Connects to MySQL.
pub async fn mysql_connect(url: &str) -> mysql_async::Conn {
    mysql_async::Conn::from_url(url)
        .await
        .unwrap_or_else(|error| panic!("cannot connect to MySQL ({error}); run scripts/test.sh"))
}

/// A PostgreSQL database and a MySQL database of the same unique name, dropped by `drop_all`.
pub struct Databases {
    pub name: String,
    pub pg_url: String,
    pub mysql_url: String,
}

impl Databases {
    pub async fn create(prefix: &str) -> Databases {
        let name = format!("t_{prefix}_{:08x}", rand::random::<u32>());
        let pg_admin = server_url("PGSYNC_TEST_PG_URL");
        let mysql_admin = server_url("PGSYNC_TEST_MYSQL_URL");

        let admin = pg_connect(&pg_admin).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let mut mysql = mysql_connect(&mysql_admin).await;
        mysql
            .query_drop(format!(
                "CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin"
            ))
            .await
            .unwrap();

        let pg_url = format!("{}/{name}", pg_admin.rsplit_once('/').unwrap().0);
        let mysql_url = format!("{}/{name}", mysql_admin.trim_end_matches('/'));
        Databases {
            name,
            pg_url,
            mysql_url,
        }
    }

    pub async fn pg(&self) -> Client {
        pg_connect(&self.pg_url).await
    }

    pub async fn mysql(&self) -> mysql_async::Conn {
        mysql_connect(&self.mysql_url).await
    }

    /// Runs SQL on both sides: `pg_sql` in PostgreSQL and `mysql_sql` in MySQL.
    pub async fn create_tables(&self, pg_sql: &str, mysql_sql: &str) {
        self.pg().await.batch_execute(pg_sql).await.unwrap();
        let mut mysql = self.mysql().await;
        for statement in mysql_sql.split(';').filter(|s| !s.trim().is_empty()) {
            mysql.query_drop(statement).await.unwrap();
        }
    }

    pub async fn drop_all(self) {
        let admin = pg_connect(&server_url("PGSYNC_TEST_PG_URL")).await;
        admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
            .unwrap();
        let mut mysql = mysql_connect(&server_url("PGSYNC_TEST_MYSQL_URL")).await;
        mysql
            .query_drop(format!("DROP DATABASE IF EXISTS {}", self.name))
            .await
            .unwrap();
    }

    /// Waits until the daemon has moved every captured change into its journal, which is
    /// when the PostgreSQL change log is empty.
    pub async fn wait_until_journaled(&self) {
        self.wait_until_equal(
            "SELECT count(*)::text FROM pg2mysql_sync.change_log",
            "SELECT 0",
            Duration::from_secs(20),
        )
        .await;
    }

    pub async fn pg_rows(&self, sql: &str) -> Rows {
        pg_rows(&self.pg().await, sql).await
    }

    pub async fn mysql_rows(&self, sql: &str) -> Rows {
        mysql_rows(&mut self.mysql().await, sql).await
    }

    /// Polls until both queries return the same rows; panics with both sides after `timeout`.
    pub async fn wait_until_equal(&self, pg_sql: &str, mysql_sql: &str, timeout: Duration) -> Rows {
        self.wait_until_equal_by(pg_sql, mysql_sql, timeout, |_| {})
            .await
    }

    /// Like `wait_until_equal`, comparing after `normalize` has rewritten both sides' rows.
    pub async fn wait_until_equal_by(
        &self,
        pg_sql: &str,
        mysql_sql: &str,
        timeout: Duration,
        normalize: fn(&mut Rows),
    ) -> Rows {
        let deadline = Instant::now() + timeout;
        let pg = self.pg().await;
        let mut mysql = self.mysql().await;
        loop {
            let mut expected = pg_rows(&pg, pg_sql).await;
            let mut actual = mysql_rows(&mut mysql, mysql_sql).await;
            normalize(&mut expected);
            normalize(&mut actual);
            if expected == actual {
                return actual;
            }
            if Instant::now() > deadline {
                let shown = |rows: &Rows| {
                    format!(
                        "{} rows, first {:?}",
                        rows.len(),
                        rows.iter().take(3).collect::<Vec<_>>()
                    )
                };
                let first_difference = expected.iter().zip(actual.iter()).position(|(e, a)| e != a);
                panic!(
                    "MySQL did not match PostgreSQL within {timeout:?}\nPostgreSQL: {}\nMySQL: {}\nfirst differing row index: {first_difference:?} ({:?} vs {:?})",
                    shown(&expected),
                    shown(&actual),
                    first_difference.map(|i| &expected[i]),
                    first_difference.map(|i| &actual[i]),
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub async fn pg_rows(client: &Client, sql: &str) -> Rows {
    client
        .simple_query(sql)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

pub async fn mysql_rows(conn: &mut mysql_async::Conn, sql: &str) -> Rows {
    let rows: Vec<mysql_async::Row> = conn.query(sql).await.unwrap();
    rows.into_iter()
        .map(|row| {
            row.unwrap()
                .into_iter()
                .map(|value| match value {
                    mysql_async::Value::NULL => None,
                    mysql_async::Value::Bytes(bytes) => {
                        Some(String::from_utf8(bytes).expect("compare text columns only"))
                    }
                    other => Some(other.as_sql(true)),
                })
                .collect()
        })
        .collect()
}

/// Removes every setting the binary reads from the environment, so that a child process sees
/// only what its test sets.
pub fn clear_settings(command: &mut Command) {
    for key in [
        "PG_DATABASE_URL",
        "MYSQL_DATABASE_URL",
        "SYNC_TABLES",
        "KEYLESS_TABLES",
        "MAPPING_FILE",
        "DATA_DIR",
        "MODE",
        "LOG_FORMAT",
        "AUTO_CHECK_INTERVAL",
        "VERIFY_INTERVAL",
        "SNAPSHOT_CHUNK_ROWS",
        "FAILED_CHANGE_POLICY",
        "FLOAT_SPECIAL_VALUES",
        "DATE_OUT_OF_RANGE",
        "API",
        "PORT",
        "BIND_ADDRESS",
        "API_KEY",
        "JWT_SECRET",
        "JWT_TTL",
        "HTTPS_CERT_PATH",
        "HTTPS_KEY_PATH",
    ] {
        command.env_remove(key);
    }
}

/// A data directory and the daemon's environment for one test.
pub struct Pipeline {
    pub dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
}

impl Pipeline {
    pub fn new(databases: &Databases, tables: &str) -> Pipeline {
        let dir = tempfile::tempdir().unwrap();
        let env = vec![
            ("PG_DATABASE_URL".to_string(), databases.pg_url.clone()),
            (
                "MYSQL_DATABASE_URL".to_string(),
                databases.mysql_url.clone(),
            ),
            ("SYNC_TABLES".to_string(), tables.to_string()),
            (
                "DATA_DIR".to_string(),
                dir.path().join("datalog").display().to_string(),
            ),
            (
                "RUST_LOG".to_string(),
                std::env::var("PGSYNC_TEST_LOG").unwrap_or_else(|_| "info".into()),
            ),
            // Tests of the data path run without the API; `enable_api` turns it on.
            ("API".to_string(), "off".to_string()),
        ];
        Pipeline { dir, env }
    }

    /// Sets an environment key of the daemon and the commands, replacing an earlier value.
    pub fn set(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// Turns on the HTTPS API on a free loopback port, with a random JWT secret and API key.
    pub fn enable_api(&mut self) -> ApiAccess {
        let port = free_port();
        let access = ApiAccess {
            port,
            api_key: format!("test-key-{:032x}", rand::random::<u128>()),
            jwt_secret: format!(
                "test-secret-{:032x}{:032x}",
                rand::random::<u128>(),
                rand::random::<u128>()
            ),
            data_dir: self.data_dir(),
        };
        self.set("API", "https");
        self.set("PORT", &port.to_string());
        self.set("BIND_ADDRESS", "127.0.0.1");
        self.set("API_KEY", &access.api_key);
        self.set("JWT_SECRET", &access.jwt_secret);
        access
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("datalog")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BINARY);
        command
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        clear_settings(&mut command);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Runs a command to completion.
    pub fn run_cli(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs `setup --no-snapshot` and asserts that it succeeded. The tables of these tests
    /// start empty, and a snapshot at the daemon's start would race with their first writes.
    pub fn setup(&self) {
        let output = self.run_cli(&["setup", "--no-snapshot"]);
        assert!(
            output.status.success(),
            "setup failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Starts the daemon; its log goes to `daemon-N.log` in the test directory.
    pub fn start(&self) -> Daemon {
        let index = fs::read_dir(self.dir.path()).unwrap().count();
        let log_path = self.dir.path().join(format!("daemon-{index}.log"));
        let log = fs::File::create(&log_path).unwrap();
        let child = self
            .command(&["run"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Daemon {
            child: Some(child),
            log_path,
        }
    }
}

/// The daemon as a child process. Dropping it kills the process.
pub struct Daemon {
    child: Option<Child>,
    pub log_path: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends SIGKILL and waits.
    pub fn kill(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Sends SIGTERM and waits up to 60 s for the exit, longer than the daemon's grace period.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                child.kill().unwrap();
                panic!(
                    "the daemon did not exit within 60 s of SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit by itself, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "the daemon did not exit within {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Polls the log until it contains `text`.
    pub async fn wait_for_log(&self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(text) {
            if Instant::now() > deadline {
                panic!(
                    "the daemon log did not show {text:?} within {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Lists the segment files of a data directory, oldest first.
pub fn segments(data_dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(data_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("segment-")
        })
        .collect();
    paths.sort();
    paths
}

/// The common test table: PostgreSQL and MySQL definitions and comparison queries.
pub const ITEMS_PG: &str = "CREATE TABLE items (id bigint PRIMARY KEY, name text, qty integer, \
     price numeric(20,6), updated timestamptz)";
pub const ITEMS_MYSQL: &str = "CREATE TABLE items (id BIGINT PRIMARY KEY, name LONGTEXT, qty INT, \
     price DECIMAL(20,6), updated DATETIME(6)) ENGINE=InnoDB";
pub const ITEMS_PG_SELECT: &str = "SELECT id::text, name, qty::text, price::text, \
     to_char(updated AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') FROM items ORDER BY items.id";
pub const ITEMS_MYSQL_SELECT: &str = "SELECT id, name, qty, price, \
     DATE_FORMAT(updated, '%Y-%m-%d %H:%i:%s.%f') FROM items ORDER BY items.id";

/// Creates `items` on both sides, runs setup and returns the pipeline.
pub async fn items_pipeline(databases: &Databases) -> Pipeline {
    databases.create_tables(ITEMS_PG, ITEMS_MYSQL).await;
    let pipeline = Pipeline::new(databases, "public.items");
    pipeline.setup();
    pipeline
}

pub async fn items_equal(databases: &Databases, timeout: Duration) -> Rows {
    databases
        .wait_until_equal(ITEMS_PG_SELECT, ITEMS_MYSQL_SELECT, timeout)
        .await
}

/// Returns a TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How tests reach a daemon's API.
#[derive(Debug, Clone)]
pub struct ApiAccess {
    pub port: u16,
    pub api_key: String,
    pub jwt_secret: String,
    pub data_dir: PathBuf,
}

impl ApiAccess {
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// A client that trusts only the daemon's generated CA.
    pub fn client(&self) -> reqwest::Client {
        install_crypto_provider();
        let ca =
            pg_to_mysql_sync::api::tls::client_root_certificates(&self.data_dir.join("tls/ca.pem"))
                .expect("the daemon generated its CA");
        reqwest::Client::builder()
            .tls_certs_only(ca)
            .no_proxy()
            .build()
            .unwrap()
    }

    /// Gets a JWT for the API key through POST /auth/token.
    pub async fn token(&self) -> String {
        let response = self
            .client()
            .post(self.url("/auth/token"))
            .header("x-api-key", &self.api_key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "token request failed");
        let body: serde_json::Value = response.json().await.unwrap();
        body["token"].as_str().unwrap().to_string()
    }

    /// Sends an authenticated request and returns the status and the JSON body (`Null` when
    /// empty).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let token = self.token().await;
        let mut request = self
            .client()
            .request(method, self.url(path))
            .header("x-api-key", &self.api_key)
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let value = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
        };
        (status, value)
    }

    /// Waits until GET /health responds, so the API is up.
    pub async fn wait_until_up(&self, daemon: &Daemon) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.data_dir.join("tls/ca.pem").exists() {
                let response = self.client().get(self.url("/health")).send().await;
                if response.is_ok_and(|response| response.status() == 200) {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "the API did not come up within 30 s; log:\n{}",
                    daemon.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Installs the TLS crypto provider that reqwest needs, once per test process.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

/// A TCP forwarder on loopback that a test can cut, to make a server unreachable for one
/// daemon without stopping the shared server.
pub struct TcpProxy {
    pub port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    generation: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
}

impl TcpProxy {
    /// Forwards 127.0.0.1:`port` to 127.0.0.1:`target_port`.
    pub async fn start(target_port: u16) -> TcpProxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let generation = std::sync::Arc::new(tokio::sync::watch::Sender::new(0u64));
        let (accept_up, accept_generation) = (up.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !accept_up.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let mut cut = accept_generation.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        TcpProxy {
            port,
            up,
            generation,
        }
    }

    /// Cuts every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        self.generation.send_modify(|generation| *generation += 1);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
