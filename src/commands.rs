//! Commands that manage a running daemon through its API, manage API keys, or apply the
//! journal without a daemon.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use pg_to_mysql_sync::api::client::ApiClient;
use pg_to_mysql_sync::api::keys::{self, KeyRing};
use pg_to_mysql_sync::api::token::JwtKeys;
use pg_to_mysql_sync::apply::{Applier, ApplySettings};
use pg_to_mysql_sync::config::{
    ApiArgs, ApiConfig, Config, DEFAULT_DATA_DIR, FailedChangePolicy, Mode, Secret,
};
use pg_to_mysql_sync::journal::{DEFAULT_MAX_SEGMENT_BYTES, Journal};
use pg_to_mysql_sync::snapshot::{LogProgress, ProgressEvent, ProgressSink, copy_table};
use pg_to_mysql_sync::status::{Board, SnapshotStatus};
use pg_to_mysql_sync::verify::{VerifyOptions, VerifyReport, verify_tables};
use pg_to_mysql_sync::{capture, daemon, schema};
use reqwest::{Method, StatusCode};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Settings of the commands that call the daemon's API.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Directory of the journal; the generated certificate to trust is in its tls folder.
    #[arg(long, env = "DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub api: ApiArgs,
    /// Base URL of the API, when the certificate names a host: e.g. https://sync.example:3000.
    #[arg(long)]
    pub url: Option<String>,
}

/// Operations on the failed-change log.
#[derive(Debug, Clone, Subcommand)]
pub enum FailedAction {
    /// List parked changes as JSON.
    List,
    /// Retry parked changes: all, or the given ids with the earlier changes of their rows.
    Retry {
        /// Ids (journal sequence numbers) from `failed list`.
        ids: Vec<u64>,
    },
    /// Discard one parked change; MySQL never receives it.
    Delete {
        /// Id (journal sequence number) from `failed list`.
        id: u64,
    },
}

/// Operations on API keys.
#[derive(Debug, Clone, Subcommand)]
pub enum KeysAction {
    /// Create a key and print it once; only its SHA-256 digest is stored.
    Create {
        /// A name that says who uses the key, e.g. "monitoring".
        name: String,
    },
    /// List the keys: id, name and creation time.
    List,
    /// Revoke a key by its id; a running daemon rejects it from the next request on.
    Revoke {
        /// The key's id from `keys list`.
        id: String,
    },
}

fn client(args: &ClientArgs) -> anyhow::Result<ApiClient> {
    let api = ApiConfig::from_args(&args.api)?;
    ApiClient::new(&api, &args.data_dir, args.url.as_deref())
}

/// Prints a JSON body, or fails with the API's error message.
fn print_response(status: StatusCode, body: &serde_json::Value) -> anyhow::Result<()> {
    if status.is_success() {
        if !body.is_null() {
            println!("{}", serde_json::to_string_pretty(body)?);
        }
        return Ok(());
    }
    let message = body
        .get("message")
        .and_then(|message| message.as_str())
        .map_or_else(|| body.to_string(), str::to_string);
    anyhow::bail!("the daemon responded with HTTP {status}: {message}")
}

pub async fn status(args: &ClientArgs) -> anyhow::Result<()> {
    let (status, body) = client(args)?.call(Method::GET, "/status", None).await?;
    print_response(status, &body)
}

pub async fn sync(api: &ApiConfig, data_dir: &Path, url: Option<&str>) -> anyhow::Result<()> {
    let client = ApiClient::new(api, data_dir, url)?;
    let (status, body) = client.call(Method::POST, "/sync", None).await?;
    print_response(status, &body)
}

pub async fn failed(args: &ClientArgs, action: FailedAction) -> anyhow::Result<()> {
    let client = client(args)?;
    let (status, body) = match action {
        FailedAction::List => client.call(Method::GET, "/sync/failed", None).await?,
        FailedAction::Retry { ids } => {
            let body = (!ids.is_empty()).then(|| serde_json::json!({ "ids": ids }));
            let (status, body) = client
                .call(Method::POST, "/sync/failed/retry", body)
                .await?;
            print_response(status, &body)?;
            // A script must see a retry that left changes parked.
            let count = |field: &str| body[field].as_array().map_or(0, Vec::len);
            let (still_failed, not_found) = (count("still_failed"), count("not_found"));
            if still_failed + not_found > 0 {
                anyhow::bail!(
                    "{} still parked and {} not found; `failed list` shows the entries and \
                     their errors",
                    pg_to_mysql_sync::telemetry::count_of(
                        still_failed as u64,
                        "change is",
                        "changes are"
                    ),
                    pg_to_mysql_sync::telemetry::count_of(not_found as u64, "id was", "ids were")
                );
            }
            return Ok(());
        }
        FailedAction::Delete { id } => {
            let (status, body) = client
                .call(Method::DELETE, &format!("/sync/failed/{id}"), None)
                .await?;
            if status == StatusCode::NO_CONTENT {
                println!("discarded failed change {id}");
            }
            (status, body)
        }
    };
    print_response(status, &body)
}

pub async fn set_mode(args: &ClientArgs, mode: &str) -> anyhow::Result<()> {
    let mode: Mode = mode.parse()?;
    let body = serde_json::json!({ "mode": mode.name() });
    let (status, body) = client(args)?.call(Method::PUT, "/mode", Some(body)).await?;
    print_response(status, &body)
}

pub fn keys(data_dir: &Path, action: KeysAction) -> anyhow::Result<()> {
    match action {
        KeysAction::Create { name } => {
            let (info, key) = keys::create_key(data_dir, &name)?;
            println!("{key}");
            eprintln!(
                "created API key {} ({}); it is shown only now, so store it safely",
                info.id, info.name
            );
        }
        KeysAction::List => {
            for info in keys::list_keys(data_dir)? {
                println!(
                    "{}\t{}\t{}",
                    info.id,
                    info.created_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    info.name
                );
            }
        }
        KeysAction::Revoke { id } => {
            let info = keys::revoke_key(data_dir, &id)?;
            println!("revoked API key {} ({})", info.id, info.name);
        }
    }

    Ok(())
}

pub fn token(data_dir: &Path, api: &ApiConfig) -> anyhow::Result<()> {
    let secret = api.require_jwt_secret()?;
    let api_key = api.api_key.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "API_KEY is missing: a JWT is issued for one API key; set API_KEY to the daemon's \
             API_KEY or to a key from `keys create`"
        )
    })?;
    let ring = KeyRing::load(data_dir, api.api_key.as_ref().map(Secret::expose))?;
    let key_id = ring
        .verify(api_key.expose())
        .context("API_KEY matches no key")?;
    let (token, expires_at) = JwtKeys::new(secret.expose())?.issue(&key_id, api.jwt_ttl)?;
    println!("{token}");
    eprintln!(
        "JWT for API key {key_id}, valid until {}",
        expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );

    Ok(())
}

/// Applies the journal to MySQL without a daemon. Opening the journal takes the DATA_DIR
/// lock, so this fails while a daemon runs. PostgreSQL is read only for the table
/// definitions; nothing is captured.
pub async fn sync_offline(config: &Config) -> anyhow::Result<()> {
    let journal = Journal::open(&config.data_dir, DEFAULT_MAX_SEGMENT_BYTES)
        .with_context(|| format!("open the journal in {}", config.data_dir.display()))?;
    let pg = capture::connect_pg(&config.pg_url).await?.client;
    let schemas = schema::load_synced_schemas(&pg, config).await?;

    let durable = journal.recovery().next_seq - 1;
    let (_durable_tx, durable_rx) = watch::channel(durable);
    let (applied_tx, _applied_rx) = watch::channel(0);
    let board = Arc::new(Board::new(Mode::Manual, config.failed_change_policy));
    let mut applier = Applier::new(
        config.mysql_url.clone(),
        journal.dir().to_path_buf(),
        journal.id().to_string(),
        schemas,
        ApplySettings {
            value_policy: config.value_policy,
            ..ApplySettings::default()
        },
        durable_rx,
        applied_tx,
        board,
    )
    .with_preflight(config.pg_url.clone());
    let report = applier.apply_pending(&CancellationToken::new()).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if report.parked > 0 && config.failed_change_policy == FailedChangePolicy::Park {
        eprintln!(
            "{} parked in the failed-change log; start the daemon and run `failed \
             list` to see them",
            pg_to_mysql_sync::telemetry::count_of(report.parked, "change was", "changes were")
        );
    }

    Ok(())
}

/// Route of the `snapshot` and `verify` commands to the pipeline.
enum Runner {
    /// No daemon runs: capture and apply start in this process.
    Offline,
    /// A daemon has the DATA_DIR lock; its API runs the job.
    Daemon(ApiClient),
}

/// Finds out whether a daemon owns `config.data_dir`.
fn runner(config: &Config, api: &ApiArgs, url: Option<&str>) -> anyhow::Result<Runner> {
    match Journal::open(&config.data_dir, DEFAULT_MAX_SEGMENT_BYTES) {
        // The lock is released when the journal is dropped here, before the job opens it.
        Ok(_) => Ok(Runner::Offline),
        Err(pg_to_mysql_sync::journal::JournalError::Locked { .. }) => {
            let api = ApiConfig::from_args(api)?;
            if api.protocol == pg_to_mysql_sync::config::ApiProtocol::Off {
                anyhow::bail!(
                    "a daemon runs with DATA_DIR {}, and API=off, so this command cannot ask \
                     it; enable the API and restart the daemon, or stop the daemon and run the \
                     command again",
                    config.data_dir.display()
                );
            }
            Ok(Runner::Daemon(ApiClient::new(&api, &config.data_dir, url)?))
        }
        Err(error) => {
            Err(error).with_context(|| format!("open the journal in {}", config.data_dir.display()))
        }
    }
}

/// Progress display of the `snapshot` command: bars on a terminal, log lines otherwise.
struct TerminalProgress {
    bars: indicatif::MultiProgress,
    by_table: std::sync::Mutex<std::collections::HashMap<String, indicatif::ProgressBar>>,
}

impl TerminalProgress {
    /// Starts drawing; log lines go around the bars until the value is dropped.
    fn new() -> Self {
        let bars = indicatif::MultiProgress::new();
        pg_to_mysql_sync::telemetry::set_progress_bars(Some(bars.clone()));
        TerminalProgress {
            bars,
            by_table: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    fn bar(&self, table: &str, estimate: Option<u64>) -> indicatif::ProgressBar {
        let mut bars = self
            .by_table
            .lock()
            .expect("the progress lock is never poisoned");
        bars.entry(table.to_string())
            .or_insert_with(|| {
                let bar = self
                    .bars
                    .add(indicatif::ProgressBar::new(estimate.unwrap_or(0)));
                // indicatif's own {per_sec} prints the rate with all its fraction digits.
                let style = indicatif::ProgressStyle::with_template(
                    "{prefix:30} [{bar:30}] {human_pos:>11}/{human_len:11} rows {rate:>14} ETA {eta}",
                )
                .expect("the template is valid")
                .with_key(
                    "rate",
                    |state: &indicatif::ProgressState, out: &mut dyn std::fmt::Write| {
                        let rate = indicatif::HumanCount(state.per_sec() as u64);
                        let _ = write!(out, "{rate} rows/s");
                    },
                )
                .progress_chars("=> ");
                bar.set_style(style);
                bar.set_prefix(table.to_string());
                bar
            })
            .clone()
    }
}

impl Drop for TerminalProgress {
    fn drop(&mut self) {
        pg_to_mysql_sync::telemetry::set_progress_bars(None);
    }
}

impl ProgressSink for TerminalProgress {
    fn event(&self, event: &ProgressEvent) {
        match event {
            ProgressEvent::Started {
                table,
                estimate,
                resumed_rows,
            } => {
                let bar = self.bar(table, *estimate);
                bar.set_position(*resumed_rows);
                // The rate counts only the rows of this run.
                bar.reset_eta();
            }
            ProgressEvent::Chunk { table, rows } => {
                let bar = self.bar(table, None);
                if bar.length().is_some_and(|length| *rows > length) {
                    bar.set_length(*rows);
                }
                bar.set_position(*rows);
            }
            ProgressEvent::Finished { table, rows, .. } => {
                let bar = self.bar(table, None);
                bar.set_length(*rows);
                bar.set_position(*rows);
                bar.finish();
            }
        }
    }
}

/// Copies the existing rows of `tables` (all synced tables when empty) into MySQL.
pub async fn snapshot(
    config: &Config,
    api: &ApiArgs,
    url: Option<&str>,
    tables: Vec<String>,
) -> anyhow::Result<()> {
    check_table_names(config, &tables)?;
    match runner(config, api, url)? {
        Runner::Offline => snapshot_offline(config, tables).await,
        Runner::Daemon(client) => snapshot_through_daemon(&client, tables).await,
    }
}

async fn snapshot_offline(config: &Config, tables: Vec<String>) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let sink: Arc<dyn ProgressSink> = if std::io::stderr().is_terminal() {
        Arc::new(TerminalProgress::new())
    } else {
        Arc::new(LogProgress::default())
    };
    daemon::run_offline(config, |context, schemas, shutdown| async move {
        let selected = select_tables(&schemas, &tables)?;
        let mut summary = Vec::new();
        for schema in &selected {
            let started = std::time::Instant::now();
            let report = copy_table(&context, schema, &sink, &shutdown)
                .await
                .with_context(|| format!("snapshot of {}", schema.name))?;
            summary.push(serde_json::json!({
                "table": schema.name.qualified(),
                "state": "done",
                "rows": report.rows,
                "skipped_rows": report.skipped,
                "seconds": started.elapsed().as_secs_f64(),
            }));
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "tables": summary }))?
        );
        Ok(())
    })
    .await
}

/// Checks, before any connection, that each of `names` is a table of SYNC_TABLES.
fn check_table_names(config: &Config, names: &[String]) -> anyhow::Result<()> {
    for name in names {
        let table = pg_to_mysql_sync::config::TableName::parse(name)
            .map_err(|reason| anyhow::anyhow!("{reason}"))?;
        if !config.tables.contains(&table) {
            anyhow::bail!(
                "table {name} is not in SYNC_TABLES; name a synced table as schema.table"
            );
        }
    }
    Ok(())
}

/// Picks the synced tables named `schema.table`; every table when `names` is empty.
fn select_tables(
    schemas: &[pg_to_mysql_sync::schema::TableSchema],
    names: &[String],
) -> anyhow::Result<Vec<pg_to_mysql_sync::schema::TableSchema>> {
    if names.is_empty() {
        return Ok(schemas.to_vec());
    }
    let mut selected: Vec<pg_to_mysql_sync::schema::TableSchema> = Vec::new();
    for name in names {
        let wanted = pg_to_mysql_sync::config::TableName::parse(name)
            .map_err(|reason| anyhow::anyhow!("{reason}"))?
            .qualified();
        let schema = schemas
            .iter()
            .find(|schema| schema.name.qualified() == wanted)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "table {name} is not in SYNC_TABLES; name a synced table as schema.table"
                )
            })?;
        // A table named twice is copied or compared once.
        if !selected.iter().any(|seen| seen.name == schema.name) {
            selected.push(schema.clone());
        }
    }
    Ok(selected)
}

async fn snapshot_through_daemon(client: &ApiClient, tables: Vec<String>) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    // The API rejects an empty list; no list means every synced table.
    let request = if tables.is_empty() {
        serde_json::json!({})
    } else {
        serde_json::json!({ "tables": tables })
    };
    let (status, body) = client
        .call(Method::POST, "/snapshot", Some(request))
        .await?;
    if !status.is_success() {
        return print_response(status, &body);
    }
    let started: Vec<String> = serde_json::from_value(body["tables"].clone()).unwrap_or_default();
    eprintln!("the daemon copies {}", started.join(", "));
    let display: Option<TerminalProgress> =
        std::io::stderr().is_terminal().then(TerminalProgress::new);
    let mut shown = std::collections::HashSet::new();
    let rows = loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let (status, body) = client.call(Method::GET, "/snapshot", None).await?;
        if !status.is_success() {
            return print_response(status, &body);
        }
        let statuses: Vec<SnapshotStatus> =
            serde_json::from_value(body["tables"].clone()).context("read the snapshot status")?;
        let rows: Vec<SnapshotStatus> = statuses
            .into_iter()
            .filter(|row| started.contains(&row.table))
            .collect();
        if let Some(display) = &display {
            for row in &rows {
                show_daemon_progress(display, &mut shown, row);
            }
        }
        if !body["running"].as_bool().unwrap_or(false) {
            break rows;
        }
    };
    drop(display);

    let summary: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            serde_json::json!({
                "table": row.table,
                "state": row.state,
                "rows": row.rows_copied,
                "skipped_rows": row.skipped_rows,
                "seconds": row.seconds,
                "error": row.error,
            })
        })
        .collect();
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({ "tables": summary }))?
    );
    let failed = rows.iter().filter(|row| row.state != "done").count();
    if failed > 0 {
        anyhow::bail!(
            "{} failed; the daemon's log gives the cause, and a new snapshot resumes",
            pg_to_mysql_sync::telemetry::count_of(failed as u64, "snapshot", "snapshots")
        );
    }
    Ok(())
}

/// Turns a polled snapshot status into progress events: a start the first time a table is
/// seen, then its row count, and the end once it is done.
fn show_daemon_progress(
    display: &TerminalProgress,
    shown: &mut std::collections::HashSet<String>,
    row: &SnapshotStatus,
) {
    if shown.insert(row.table.clone()) {
        display.event(&ProgressEvent::Started {
            table: row.table.clone(),
            estimate: row.rows_estimate,
            resumed_rows: row.rows_copied,
        });
    } else if row.state == "done" {
        display.event(&ProgressEvent::Finished {
            table: row.table.clone(),
            rows: row.rows_copied,
            skipped: row.skipped_rows,
            elapsed: std::time::Duration::from_secs_f64(row.seconds.unwrap_or(0.0)),
        });
    } else {
        display.event(&ProgressEvent::Chunk {
            table: row.table.clone(),
            rows: row.rows_copied,
        });
    }
}

/// Compares `tables` (all synced tables when empty) with MySQL; fails when they differ.
pub async fn verify(
    config: &Config,
    api: &ApiArgs,
    url: Option<&str>,
    tables: Vec<String>,
    options: VerifyOptions,
    json: bool,
) -> anyhow::Result<()> {
    check_table_names(config, &tables)?;
    let report: VerifyReport = match runner(config, api, url)? {
        Runner::Offline => {
            let options = options.clone();
            daemon::run_offline(config, |context, schemas, shutdown| async move {
                let selected = select_tables(&schemas, &tables)?;
                Ok(verify_tables(&context, &selected, &options, &shutdown).await?)
            })
            .await?
        }
        Runner::Daemon(client) => {
            let (status, body) = client
                .call(
                    Method::POST,
                    "/verify",
                    Some(serde_json::json!({
                        "tables": tables,
                        "repair": options.repair,
                        "max_keys": options.max_keys,
                    })),
                )
                .await?;
            if !status.is_success() {
                return print_response(status, &body);
            }
            serde_json::from_value(body).context("read the verify report")?
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_verify(&report));
    }
    let unrepaired: u64 = report
        .tables
        .iter()
        .map(|table| table.differences().saturating_sub(table.repaired))
        .sum();
    let errors = report
        .tables
        .iter()
        .filter(|table| table.error.is_some())
        .count();
    if errors > 0 {
        anyhow::bail!(
            "{} could not be compared; see the report",
            pg_to_mysql_sync::telemetry::count_of(errors as u64, "table", "tables")
        );
    }
    if report.differences() > 0 && !options.repair {
        anyhow::bail!(
            "{} between PostgreSQL and MySQL; `verify --repair` copies the rows again",
            pg_to_mysql_sync::telemetry::count_of(
                report.differences(),
                "row differs",
                "rows differ"
            )
        );
    }
    if unrepaired > 0 {
        anyhow::bail!(
            "{} after the repair, because changes reached them during the run or MySQL \
             rejected them (the log names the table); run verify again",
            pg_to_mysql_sync::telemetry::count_of(
                unrepaired,
                "row still differs",
                "rows still differ"
            )
        );
    }
    Ok(())
}

/// Renders a verify report as a table, with the differing keys under it.
fn render_verify(report: &VerifyReport) -> String {
    let mut out = format!(
        "{:<40} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
        "table", "rows", "changed", "missing", "extra", "in flight", "repaired"
    );
    for table in &report.tables {
        out.push_str(&format!(
            "{:<40} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
            table.table,
            table.rows_compared,
            table.changed,
            table.missing,
            table.extra,
            table.in_flight,
            table.repaired
        ));
        if let Some(error) = &table.error {
            out.push_str(&format!("  error: {error}\n"));
        }
        for key in &table.keys {
            out.push_str(&format!("  {} key {}\n", key.kind.as_str(), key.key));
        }
        if table.keys_truncated {
            out.push_str("  (more differing keys; raise --max-keys to list them)\n");
        }
    }
    if report.tables.iter().any(|table| table.repaired > 0) {
        out.push_str(
            "changed, missing and extra count the differences found; the repaired rows were \
             copied again from PostgreSQL\n",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use pg_to_mysql_sync::verify::{DiffKey, DiffKind, TableReport, VerifyReport};

    use super::render_verify;

    #[test]
    fn verify_text_keeps_key_case() {
        let report = VerifyReport {
            tables: vec![TableReport {
                table: "public.odd".to_string(),
                extra: 1,
                missing: 1,
                keys: vec![
                    DiffKey {
                        kind: DiffKind::Extra,
                        key: serde_json::json!(["CASE"]),
                    },
                    DiffKey {
                        kind: DiffKind::Missing,
                        key: serde_json::json!(["Case"]),
                    },
                ],
                ..TableReport::default()
            }],
        };
        let text = render_verify(&report);
        assert!(text.contains("  extra key [\"CASE\"]\n"), "{text}");
        assert!(text.contains("  missing key [\"Case\"]\n"), "{text}");
    }
}
