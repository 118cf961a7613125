//! Long-running jobs of the daemon next to capture and apply: snapshots and verify runs.
//!
//! Jobs start when `setup` left snapshots pending, when the API asks, and every
//! `VERIFY_INTERVAL`. One snapshot job and one verify run at a time; their progress goes to
//! the status board, so `/status`, `/snapshot` and the metrics show it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::backoff::{Backoff, sleep_or_shutdown};
use crate::schema::TableSchema;
use crate::snapshot::{
    CopyContext, LogProgress, ProgressEvent, ProgressSink, SnapshotError, copy_table,
};
use crate::status::{Board, SnapshotStatus};
use crate::verify::{VerifyError, VerifyOptions, VerifyReport, verify_tables};

/// Reason a job cannot start.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JobError {
    /// The pipeline has not finished starting.
    #[error("the daemon is still starting; try again in a few seconds")]
    Starting,
    /// A job of the same kind runs.
    #[error("a {0} is already running; wait for it to finish")]
    Busy(&'static str),
    /// A table named in the request is not synced.
    #[error("table {0} is not in SYNC_TABLES; name a synced table as schema.table")]
    UnknownTable(String),
}

struct Attached {
    context: CopyContext,
    schemas: Vec<TableSchema>,
}

/// The daemon's jobs.
pub struct Jobs {
    board: Arc<Board>,
    attached: Mutex<Option<Attached>>,
    snapshot_running: Mutex<bool>,
    verify_running: tokio::sync::Mutex<()>,
}

impl Jobs {
    /// Creates the jobs of a daemon; they can start once [`Jobs::attach`] is called.
    pub fn new(board: Arc<Board>) -> Arc<Jobs> {
        Arc::new(Jobs {
            board,
            attached: Mutex::new(None),
            snapshot_running: Mutex::new(false),
            verify_running: tokio::sync::Mutex::new(()),
        })
    }

    /// Connects the jobs to the running pipeline.
    pub fn attach(&self, context: CopyContext, schemas: Vec<TableSchema>) {
        *self
            .attached
            .lock()
            .expect("the jobs lock is never poisoned") = Some(Attached { context, schemas });
    }

    fn attached(&self) -> Result<(CopyContext, Vec<TableSchema>), JobError> {
        self.attached
            .lock()
            .expect("the jobs lock is never poisoned")
            .as_ref()
            .map(|attached| (attached.context.clone(), attached.schemas.clone()))
            .ok_or(JobError::Starting)
    }

    /// Picks the schemas of `tables` (names as `schema.table`); all synced tables when empty.
    fn select(schemas: &[TableSchema], tables: &[String]) -> Result<Vec<TableSchema>, JobError> {
        if tables.is_empty() {
            return Ok(schemas.to_vec());
        }
        let mut seen = std::collections::HashSet::new();
        let selected: Result<Vec<TableSchema>, JobError> = tables
            .iter()
            .map(|name| {
                let wanted = crate::config::TableName::parse(name)
                    .map(|table| table.qualified())
                    .unwrap_or_else(|_| name.clone());
                schemas
                    .iter()
                    .find(|schema| schema.name.qualified() == wanted)
                    .cloned()
                    .ok_or_else(|| JobError::UnknownTable(name.clone()))
            })
            .collect();
        // A table named twice is copied or compared once.
        let mut selected = selected?;
        selected.retain(|schema| seen.insert(schema.name.qualified()));
        Ok(selected)
    }

    /// Starts a snapshot of `tables` (all synced tables when empty) in the background.
    /// Returns the tables it copies, in order.
    pub fn start_snapshot(
        self: &Arc<Self>,
        tables: &[String],
        shutdown: CancellationToken,
    ) -> Result<Vec<String>, JobError> {
        let (context, schemas) = self.attached()?;
        let selected = Self::select(&schemas, tables)?;
        {
            let mut running = self
                .snapshot_running
                .lock()
                .expect("the jobs lock is never poisoned");
            if *running {
                return Err(JobError::Busy("snapshot"));
            }
            *running = true;
        }
        let names = selected
            .iter()
            .map(|schema| schema.name.qualified())
            .collect();
        let jobs = self.clone();
        tokio::spawn(async move {
            jobs.run_snapshots(&context, &selected, &shutdown).await;
            *jobs
                .snapshot_running
                .lock()
                .expect("the jobs lock is never poisoned") = false;
        });
        Ok(names)
    }

    /// Copies the tables one after another. A copy that loses a server is tried again with
    /// backoff, from its stored progress; any other failure is logged and shown in the status,
    /// and the next table goes on.
    async fn run_snapshots(
        self: &Arc<Self>,
        context: &CopyContext,
        schemas: &[TableSchema],
        shutdown: &CancellationToken,
    ) {
        let sink: Arc<dyn ProgressSink> = Arc::new(BoardProgress {
            board: self.board.clone(),
            log: LogProgress::default(),
            estimates: Mutex::new(std::collections::HashMap::new()),
        });
        for schema in schemas {
            if shutdown.is_cancelled() {
                return;
            }
            let table = schema.name.qualified();
            let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
            let result = loop {
                match copy_table(context, schema, &sink, shutdown).await {
                    Err(error) if error.is_transient() && !shutdown.is_cancelled() => {
                        // The stored progress survives, so the next try resumes after the
                        // last written chunk.
                        let delay = backoff.next_delay();
                        warn!(
                            table = %table,
                            error = %error,
                            retry_in_ms = delay.as_millis() as u64,
                            "snapshot paused because a server is unreachable; retrying"
                        );
                        if !sleep_or_shutdown(delay, shutdown).await {
                            break Err(SnapshotError::Interrupted);
                        }
                    }
                    result => break result,
                }
            };
            match result {
                Ok(_) => {}
                Err(_) if shutdown.is_cancelled() => {
                    info!(table = %table, "snapshot interrupted by the stop; it resumes at the next start");
                    return;
                }
                Err(SnapshotError::Interrupted) => {
                    info!(table = %table, "snapshot interrupted by the stop; it resumes at the next start");
                    return;
                }
                Err(error) => {
                    error!(table = %table, error = %error, "snapshot failed; run it again to resume");
                    self.board.snapshot_progress(SnapshotStatus {
                        table,
                        state: "failed".into(),
                        rows_copied: self
                            .board
                            .snapshots()
                            .iter()
                            .find(|status| status.table == schema.name.qualified())
                            .map_or(0, |status| status.rows_copied),
                        rows_estimate: None,
                        skipped_rows: 0,
                        seconds: None,
                        error: Some(error.to_string()),
                    });
                }
            }
        }
    }

    /// Runs the snapshots that `setup` left pending, or that a stop interrupted, once apply
    /// can reach MySQL.
    pub fn spawn_pending_snapshots(self: Arc<Self>, shutdown: CancellationToken) {
        tokio::spawn(async move {
            let Ok((context, schemas)) = self.attached() else {
                return;
            };
            let mut delay = Duration::from_secs(1);
            let states = loop {
                match context.apply.copy_states().await {
                    Ok(states) => break states,
                    Err(crate::apply::RunError::Stopping) => return,
                    Err(error) => {
                        warn!(error = %error, "cannot read the pending snapshots yet; retrying");
                        if !sleep_or_shutdown(delay, &shutdown).await {
                            return;
                        }
                        delay = (delay * 2).min(Duration::from_secs(60));
                    }
                }
            };
            let pending: Vec<String> = states
                .into_iter()
                .filter(|state| state.state != crate::apply::CopyState::Done)
                .map(|state| state.table)
                .filter(|table| {
                    schemas
                        .iter()
                        .any(|schema| &schema.name.qualified() == table)
                })
                .collect();
            if pending.is_empty() {
                return;
            }
            if self.board.mode() == crate::config::Mode::Manual {
                info!(
                    tables = %pending.join(", "),
                    "these tables wait for a snapshot; the manual mode applies nothing on its \
                     own, so run `pg-to-mysql-sync snapshot` to copy them"
                );
                return;
            }
            info!(tables = %pending.join(", "), "starting the pending snapshots");
            if let Err(error) = self.start_snapshot(&pending, shutdown) {
                warn!(error = %error, "cannot start the pending snapshots");
            }
        });
    }

    /// Returns whether a snapshot job runs.
    pub fn snapshot_running(&self) -> bool {
        *self
            .snapshot_running
            .lock()
            .expect("the jobs lock is never poisoned")
    }

    /// Compares `tables` (all synced tables when empty) with MySQL, and repairs them when
    /// asked. Waits for a verify run in progress to finish first.
    pub async fn verify(
        &self,
        tables: &[String],
        options: VerifyOptions,
        shutdown: &CancellationToken,
    ) -> Result<VerifyReport, VerifyJobError> {
        let (context, schemas) = self.attached()?;
        let selected = Self::select(&schemas, tables)?;
        let _running = self.verify_running.lock().await;
        let report = verify_tables(&context, &selected, &options, shutdown).await?;
        self.board.verify_finished(report.drift());
        Ok(report)
    }

    /// Runs a verify of every synced table every `interval`, counted from the end of a run.
    pub fn spawn_periodic_verify(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        tokio::spawn(async move {
            while sleep_or_shutdown(interval, &shutdown).await {
                if self.snapshot_running() {
                    info!("a snapshot runs; the periodic verify waits for the next interval");
                    continue;
                }
                match self.verify(&[], VerifyOptions::default(), &shutdown).await {
                    Ok(report) => {
                        let differences = report.differences();
                        if differences > 0 {
                            warn!(
                                differences,
                                "periodic verify found rows that differ between PostgreSQL and \
                                 MySQL; run `pg-to-mysql-sync verify` to list them"
                            );
                        } else {
                            info!(
                                rows = report.rows_compared(),
                                "periodic verify found no differences"
                            );
                        }
                    }
                    Err(error) => warn!(error = %error, "periodic verify failed"),
                }
            }
        });
    }
}

/// Failure of a verify request.
#[derive(Debug, thiserror::Error)]
pub enum VerifyJobError {
    /// The request cannot start.
    #[error(transparent)]
    Job(#[from] JobError),
    /// The run failed.
    #[error(transparent)]
    Verify(#[from] VerifyError),
}

/// Progress sink of the daemon: the status board and the log.
struct BoardProgress {
    board: Arc<Board>,
    log: LogProgress,
    estimates: Mutex<std::collections::HashMap<String, Option<u64>>>,
}

impl ProgressSink for BoardProgress {
    fn event(&self, event: &ProgressEvent) {
        self.log.event(event);
        let mut estimates = self
            .estimates
            .lock()
            .expect("the progress lock is never poisoned");
        let status = match event {
            ProgressEvent::Started {
                table,
                estimate,
                resumed_rows,
            } => {
                estimates.insert(table.clone(), *estimate);
                SnapshotStatus {
                    table: table.clone(),
                    state: "copying".into(),
                    rows_copied: *resumed_rows,
                    rows_estimate: *estimate,
                    skipped_rows: 0,
                    seconds: None,
                    error: None,
                }
            }
            ProgressEvent::Chunk { table, rows } => SnapshotStatus {
                table: table.clone(),
                state: "copying".into(),
                rows_copied: *rows,
                rows_estimate: estimates.get(table).copied().flatten(),
                skipped_rows: 0,
                seconds: None,
                error: None,
            },
            ProgressEvent::Finished {
                table,
                rows,
                skipped,
                elapsed,
            } => SnapshotStatus {
                table: table.clone(),
                state: "done".into(),
                rows_copied: *rows,
                rows_estimate: estimates.get(table).copied().flatten(),
                skipped_rows: *skipped,
                seconds: Some(elapsed.as_secs_f64()),
                error: None,
            },
        };
        self.board.snapshot_progress(status);
    }
}
