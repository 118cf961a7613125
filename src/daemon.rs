//! The daemon: runs capture and apply side by side until a signal arrives.
//!
//! Start-up order: open the journal (lock and recovery), read the table definitions and check
//! the capture objects in PostgreSQL, then start both stages. On SIGTERM or SIGINT both stages
//! stop taking work. A journal batch or MySQL transaction in flight finishes or is not started,
//! and the process exits 0.
//!
//! Under systemd (`Type=notify`), the daemon reports `READY=1` once both stages run,
//! `STOPPING=1` on shutdown, and pings the watchdog when the unit sets `WatchdogSec`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use sd_notify::NotifyState;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::keys::KeyRing;
use crate::api::server::{self, ApiState};
use crate::api::tls::load_or_generate;
use crate::apply::{Applier, ApplyHandle, ApplySettings};
use crate::backoff::{Backoff, sleep_or_shutdown};
use crate::capture::{self, CaptureHandle, ConnectError, DrainSettings, Drainer, connect_pg};
use crate::config::{ApiConfig, ApiProtocol, Config, ConfigError, Mode, Secret};
use crate::jobs::Jobs;
use crate::journal::{DEFAULT_MAX_SEGMENT_BYTES, Journal, segment_usage};
use crate::schema::{TableSchema, TxidSnapshot, load_synced_schemas, read_txid_snapshot};
use crate::snapshot::CopyContext;
use crate::status::Board;
use crate::telemetry::ErrorChain;

/// How long a stop waits for the batch in flight before abandoning it. Below systemd's
/// TimeoutStopSec of 60 s in the shipped unit, so the daemon exits on its own.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Runs the daemon until a shutdown signal, or until a stage fails in a way that needs an
/// operator.
pub async fn run(config: Config, api: ApiConfig, version: &'static str) -> anyhow::Result<()> {
    if api.protocol != ApiProtocol::Off {
        api.require_jwt_secret()?;
    }
    if config.mode == Mode::Manual && api.protocol == ApiProtocol::Off {
        return Err(ConfigError::Invalid {
            key: "MODE",
            reason: "MODE=manual applies changes only when the API asks, but API=off; enable \
                     the API or choose MODE=automatic or auto-check"
                .to_string(),
        }
        .into());
    }
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone())?;

    let mut journal = Journal::open(&config.data_dir, DEFAULT_MAX_SEGMENT_BYTES)
        .with_context(|| format!("open the journal in {}", config.data_dir.display()))?;
    let recovery = journal.recovery().clone();
    if recovery.truncated_bytes > 0 {
        warn!(
            bytes = recovery.truncated_bytes,
            next_seq = recovery.next_seq,
            "journal ended in a torn record, left by a crash during a write; truncated it. The \
             changes it held are still in the PostgreSQL change log"
        );
    }
    info!(
        journal_id = journal.id(),
        data_dir = %config.data_dir.display(),
        next_seq = recovery.next_seq,
        "journal opened"
    );

    let board = Arc::new(Board::new(config.mode, config.failed_change_policy));
    let usage = segment_usage(journal.dir()).unwrap_or_default();
    board.journal_opened(
        recovery.next_seq - 1,
        usage.oldest_modified.unwrap_or_else(SystemTime::now),
    );
    let (apply_handle, requests) = ApplyHandle::channel();
    let jobs = Jobs::new(board.clone());
    if api.protocol != ApiProtocol::Off {
        start_api(
            &config,
            &api,
            board.clone(),
            apply_handle.clone(),
            jobs.clone(),
            version,
            &shutdown,
        )
        .await?;
    }

    let channel = (apply_handle, requests);
    let Some(pipeline) =
        Pipeline::start(&config, &mut journal, board.clone(), channel, &shutdown).await?
    else {
        info!("stopped before start-up finished");
        return Ok(());
    };
    jobs.attach(pipeline.copy_context(&config), pipeline.schemas.clone());
    jobs.clone().spawn_pending_snapshots(shutdown.clone());
    if let Some(interval) = config.verify_interval {
        jobs.clone()
            .spawn_periodic_verify(interval, shutdown.clone());
    }
    info!(
        mode = config.mode.name(),
        failed_change_policy = config.failed_change_policy.name(),
        tables = config.tables.len(),
        "daemon started"
    );
    notify_systemd(&[NotifyState::Ready, NotifyState::Status("syncing")]);
    spawn_watchdog(shutdown.clone());

    shutdown.cancelled().await;
    notify_systemd(&[NotifyState::Stopping]);
    pipeline.stop().await?;
    info!("daemon stopped");

    Ok(())
}

/// The capture and apply stages, running as tasks until the shutdown token is cancelled.
pub struct Pipeline {
    /// The apply stage.
    pub apply: ApplyHandle,
    /// The capture stage.
    pub capture: CaptureHandle,
    /// Applied sequence number, published by the apply stage.
    pub applied: watch::Receiver<u64>,
    /// The synced tables, as read at start.
    pub schemas: Vec<TableSchema>,
    shutdown: CancellationToken,
    capture_task: tokio::task::JoinHandle<Result<(), capture::CaptureError>>,
    apply_task: tokio::task::JoinHandle<Result<(), crate::apply::ApplyError>>,
}

impl Pipeline {
    /// Reads the table definitions, then starts capture and apply on `journal`, which must
    /// have its writer. Apply serves `requests` and runs as `board`'s mode says. Returns
    /// `None` when `shutdown` came first. Whichever stage ends first stops the other one.
    pub async fn start(
        config: &Config,
        journal: &mut Journal,
        board: Arc<Board>,
        (apply, requests): (
            ApplyHandle,
            tokio::sync::mpsc::Receiver<crate::apply::ApplyRequest>,
        ),
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Option<Pipeline>> {
        let Some((schemas, schema_snapshot)) = load_schemas(config, shutdown).await? else {
            return Ok(None);
        };
        let recovery = journal.recovery().clone();
        let writer = journal
            .take_writer()
            .expect("a freshly opened journal has its writer");
        let durable = recovery.next_seq - 1;
        let (durable_tx, durable_rx) = watch::channel(durable);
        let (applied_tx, applied_rx) = watch::channel(0);
        let drainer = Drainer::new(
            config.pg_url.clone(),
            DrainSettings::default(),
            writer,
            recovery.last_batch_keys.clone(),
            durable_tx,
            board.clone(),
        );
        let capture = drainer.handle();
        let settings = ApplySettings {
            auto_check_interval: config.auto_check_interval,
            value_policy: config.value_policy,
            ..ApplySettings::default()
        };
        let applier = Applier::new(
            config.mysql_url.clone(),
            journal.dir().to_path_buf(),
            journal.id().to_string(),
            schemas.clone(),
            settings,
            durable_rx,
            applied_tx,
            board,
        )
        .with_preflight(config.pg_url.clone())
        .with_schema_snapshot(schema_snapshot);

        let capture_token = shutdown.clone();
        let capture_task = tokio::spawn(async move {
            let result = drainer.run(capture_token.clone()).await;
            capture_token.cancel();
            result
        });
        let apply_token = shutdown.clone();
        let apply_task = tokio::spawn(async move {
            let result = applier.run(requests, apply_token.clone()).await;
            apply_token.cancel();
            result
        });

        Ok(Some(Pipeline {
            apply,
            capture,
            applied: applied_rx,
            schemas,
            shutdown: shutdown.clone(),
            capture_task,
            apply_task,
        }))
    }

    /// Returns what a snapshot or a verify run needs from this pipeline.
    pub fn copy_context(&self, config: &Config) -> CopyContext {
        CopyContext {
            pg_url: config.pg_url.clone(),
            mysql_url: config.mysql_url.clone(),
            value_policy: config.value_policy,
            apply: self.apply.clone(),
            capture: self.capture.clone(),
            applied: self.applied.clone(),
            chunk_rows: config.snapshot_chunk_rows,
        }
    }

    /// Cancels the shutdown token, if not done yet, and waits for both stages. Work in flight
    /// that does not end within the grace period is abandoned.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let (capture_abort, apply_abort) = (
            self.capture_task.abort_handle(),
            self.apply_task.abort_handle(),
        );
        let both = async { tokio::join!(self.capture_task, self.apply_task) };
        let Ok((capture_result, apply_result)) = tokio::time::timeout(SHUTDOWN_GRACE, both).await
        else {
            // A server that stopped answering holds a query open. Abandoning it is safe: an
            // uncommitted MySQL transaction rolls back, an unacknowledged journal batch is
            // deleted from the change log again, and both are redone at the next start.
            capture_abort.abort();
            apply_abort.abort();
            warn!(
                grace_s = SHUTDOWN_GRACE.as_secs(),
                "work in flight did not finish in time after the stop request; abandoned it, \
                 and the next start redoes it"
            );
            return Ok(());
        };
        capture_result
            .context("capture task panicked")?
            .context("capture failed")?;
        apply_result
            .context("apply task panicked")?
            .context("apply failed")?;
        Ok(())
    }
}

/// Runs `job` with capture and apply started in this process, for the `snapshot` and
/// `verify` commands while no daemon runs. Apply runs only as the job asks, as in the manual
/// mode. Opening the journal takes the `DATA_DIR` lock, so this fails with
/// [`crate::journal::JournalError::Locked`] while a daemon runs. SIGINT and SIGTERM cancel
/// the token the job gets.
pub async fn run_offline<T, F, Fut>(config: &Config, job: F) -> anyhow::Result<T>
where
    F: FnOnce(CopyContext, Vec<TableSchema>, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut journal = Journal::open(&config.data_dir, DEFAULT_MAX_SEGMENT_BYTES)?;
    // A signal stops the job; the pipeline has its own token, so that it keeps running while
    // the job winds down, and stops after it.
    let job_token = CancellationToken::new();
    spawn_signal_handler(job_token.clone())?;
    let shutdown = CancellationToken::new();
    let board = Arc::new(Board::new(Mode::Manual, config.failed_change_policy));
    let channel = ApplyHandle::channel();
    let Some(pipeline) = Pipeline::start(config, &mut journal, board, channel, &shutdown).await?
    else {
        anyhow::bail!("stopped before start-up finished");
    };
    let result = job(
        pipeline.copy_context(config),
        pipeline.schemas.clone(),
        job_token,
    )
    .await;
    pipeline.stop().await?;
    result
}

/// Loads the keys and the certificate, then starts the API server.
async fn start_api(
    config: &Config,
    api: &ApiConfig,
    board: Arc<Board>,
    apply: ApplyHandle,
    jobs: Arc<Jobs>,
    version: &'static str,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let keys = KeyRing::load(&config.data_dir, api.api_key.as_ref().map(Secret::expose))?;
    let tls = if api.protocol == ApiProtocol::Https {
        let data_dir = config.data_dir.clone();
        let (cert, key) = (api.cert_path.clone(), api.key_path.clone());
        let bind = api.bind.ip();
        // A certificate for a specific listening address names that address too.
        let extra_names: Vec<String> = if bind.is_unspecified() || bind.is_loopback() {
            Vec::new()
        } else {
            vec![bind.to_string()]
        };
        let tls = tokio::task::spawn_blocking(move || {
            load_or_generate(&data_dir, cert.as_deref(), key.as_deref(), &extra_names)
        })
        .await
        .context("the certificate task panicked")??;
        Some(tls)
    } else {
        None
    };
    let state = ApiState::new(
        api,
        board,
        apply,
        keys,
        config.data_dir.clone(),
        config.pg_url.clone(),
        config.mysql_url.clone(),
        version,
        jobs,
        shutdown.clone(),
    )?;
    server::start(api, tls, state, shutdown.clone()).await?;

    Ok(())
}

/// Reads table definitions and checks the capture objects, retrying while PostgreSQL is
/// unreachable. Returns `None` if shutdown was requested first.
async fn load_schemas(
    config: &Config,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<(Vec<TableSchema>, TxidSnapshot)>> {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        match connect_pg(&config.pg_url).await {
            Ok(connection) => return load_and_verify(&connection.client, config).await.map(Some),
            Err(error @ ConnectError::Tls(_)) => return Err(error.into()),
            Err(error) => {
                let delay = backoff.next_delay();
                warn!(
                    error = %ErrorChain(&error),
                    attempt = backoff.attempt(),
                    delay_ms = delay.as_millis() as u64,
                    "cannot connect to PostgreSQL, retrying"
                );
                if !sleep_or_shutdown(delay, shutdown).await {
                    return Ok(None);
                }
            }
        }
    }
}

async fn load_and_verify(
    client: &tokio_postgres::Client,
    config: &Config,
) -> anyhow::Result<(Vec<TableSchema>, TxidSnapshot)> {
    let snapshot = read_txid_snapshot(client).await?;
    let schemas = load_synced_schemas(client, config).await?;
    capture::verify(client, &config.tables).await?;

    Ok((schemas, snapshot))
}

/// Sends a state to systemd when it started the process with `Type=notify`; a no-op otherwise.
fn notify_systemd(state: &[NotifyState]) {
    if let Err(error) = sd_notify::notify(state) {
        warn!(error = %error, "failed to notify systemd");
    }
}

/// Pings the systemd watchdog at half its interval while the runtime is alive, when the unit
/// sets `WatchdogSec`.
fn spawn_watchdog(shutdown: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    tokio::spawn(async move {
        while sleep_or_shutdown(interval / 2, &shutdown).await {
            notify_systemd(&[NotifyState::Watchdog]);
        }
    });
}

fn spawn_signal_handler(shutdown: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("install the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("install the SIGINT handler")?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        info!(signal = name, "shutting down");
        shutdown.cancel();
    });

    Ok(())
}
