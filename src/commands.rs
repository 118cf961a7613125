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
use pg_to_mysql_sync::status::Board;
use pg_to_mysql_sync::{capture, schema};
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
