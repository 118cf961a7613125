//! Apply: the MySQL side of the pipeline.
//!
//! # Delivery
//!
//! The [`Applier`] reads journal records in sequence order and applies them in MySQL
//! transactions. Each transaction also writes the sequence number of its last record to the
//! checkpoint table, so the data and the position commit together. After any stop, apply
//! resumes after the committed checkpoint: records are applied exactly once in effect, and in
//! journal order. Batches end at a source-transaction boundary where one is near, so MySQL
//! rarely shows half of a source transaction.
//!
//! Positions: `applied_seq <= durable_seq`. `durable_seq` comes from the capture stage after
//! each journal fsync; `applied_seq` is what MySQL has committed. Segments at or below
//! `applied_seq` are deleted only after that commit.
//!
//! # Failures
//!
//! Errors are classified once, in [`classify`]. Lost connections, deadlocks and lock timeouts
//! are transient: apply reconnects and retries the same batch with a short backoff. Anything
//! else (a rejected value, a missing table, denied access, a value MySQL cannot store) halts
//! apply with an ERROR log and retries it with a longer backoff, so that the change order is
//! kept and the pipeline resumes by itself once the operator fixes the cause. Capture goes on
//! meanwhile, so nothing is lost.

mod statement;
mod target;
mod value;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, TxOpts};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

pub use statement::{
    PlanError, Statement, StatementLimits, TablePlan, build_statements, quote_mysql_ident,
};
pub use target::{
    CHECKPOINT_TABLE, check_target_tables, connect, drop_checkpoint_table, ensure_checkpoint_table,
    read_checkpoint, read_checkpoint_if_present,
};
pub use value::write_literal;

use crate::backoff::{Backoff, sleep_or_shutdown};
use crate::config::Secret;
use crate::journal::{JournalError, JournalReader, JournalRecord, release_segments};
use crate::schema::TableSchema;

/// Tuning of the apply loop.
#[derive(Debug, Clone)]
pub struct ApplySettings {
    /// Records per MySQL transaction, before extending to the end of a source transaction.
    pub max_batch_records: usize,
    /// Row-image bytes per MySQL transaction, before extending likewise.
    pub max_batch_bytes: usize,
    /// Hard limit on records per transaction, even inside one large source transaction.
    pub hard_max_batch_records: usize,
    /// Rows per multi-row statement.
    pub max_statement_rows: usize,
}

impl Default for ApplySettings {
    fn default() -> Self {
        ApplySettings {
            max_batch_records: 5_000,
            max_batch_bytes: 8 * 1024 * 1024,
            hard_max_batch_records: 50_000,
            max_statement_rows: 1_000,
        }
    }
}

/// Handling class of an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Retry soon: the connection was lost, or MySQL chose this transaction as a deadlock or
    /// lock-wait victim.
    Transient,
    /// Retry only after a person changed something: the data, the schema or the rights.
    NeedsOperator,
}

/// Errors of the apply stage.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A MySQL call failed.
    #[error("failed to {action}: {}", describe_mysql_error(.source))]
    Mysql {
        /// Action that failed.
        action: &'static str,
        /// The cause; its server message can quote row values, so it is logged at DEBUG only.
        source: mysql_async::Error,
    },
    /// MySQL rejected a statement; the transaction was rolled back.
    #[error(
        "MySQL rejected the {operation} of journal records {first_seq} to {last_seq} into the \
         table of {table}: {}",
        describe_mysql_error(.source)
    )]
    Rejected {
        /// Source table as `schema.table`.
        table: String,
        /// `upsert`, `delete` or `truncate`.
        operation: &'static str,
        /// First journal record of the statement.
        first_seq: u64,
        /// Last journal record of the statement.
        last_seq: u64,
        /// The cause.
        source: mysql_async::Error,
    },
    /// Another daemon applies to the same MySQL database; two would race each other.
    #[error(
        "another pg-to-mysql-sync process applies changes to this MySQL database; stop it, or \
         give each daemon its own target database"
    )]
    AlreadyApplying,
    /// Records cannot be turned into statements.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The target tables do not match the source.
    #[error("the MySQL target is not ready:\n{}", .0.join("\n"))]
    Target(Vec<String>),
    /// The journal could not be read.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// MySQL's checkpoint is ahead of the journal.
    #[error(
        "MySQL's checkpoint says journal record {checkpoint} is applied, but the journal ends at \
         {journal_end}: DATA_DIR was replaced or restored from an older backup. Restore the \
         matching DATA_DIR, or resync the tables with a snapshot"
    )]
    CheckpointAhead {
        /// Applied sequence number in MySQL.
        checkpoint: u64,
        /// Last durable sequence number in the journal.
        journal_end: u64,
    },
}

impl ApplyError {
    /// Classifies the error; the single place that decides how an apply error is handled.
    pub fn class(&self) -> ErrorClass {
        match self {
            ApplyError::Mysql { source, .. } | ApplyError::Rejected { source, .. } => {
                classify(source)
            }
            ApplyError::AlreadyApplying => ErrorClass::Transient,
            _ => ErrorClass::NeedsOperator,
        }
    }

    /// Tells whether retrying can never help, because the local state is inconsistent.
    fn is_fatal(&self) -> bool {
        matches!(
            self,
            ApplyError::Journal(_) | ApplyError::CheckpointAhead { .. }
        )
    }
}

fn mysql_error(action: &'static str) -> impl FnOnce(mysql_async::Error) -> ApplyError {
    move |source| ApplyError::Mysql { action, source }
}

/// Classifies a MySQL error. Unknown server errors count as needing an operator, which halts
/// apply rather than skipping anything.
pub fn classify(error: &mysql_async::Error) -> ErrorClass {
    use mysql_async::{DriverError, Error};
    match error {
        Error::Io(_) => ErrorClass::Transient,
        Error::Driver(DriverError::ConnectionClosed | DriverError::PoolDisconnected) => {
            ErrorClass::Transient
        }
        Error::Server(server) => match server.code {
            // 1040 too many connections, 1053 server shutdown, 1205 lock wait timeout,
            // 1213 deadlock, 1927 connection killed, 2006/2013 server gone or lost,
            // 4031 MySQL 8 idle disconnect, 1792 read-only transaction (failover).
            1040 | 1053 | 1205 | 1213 | 1927 | 2006 | 2013 | 4031 | 1792 => ErrorClass::Transient,
            _ => ErrorClass::NeedsOperator,
        },
        _ => ErrorClass::NeedsOperator,
    }
}

/// Server errors whose message names columns, constraints or tables but never quotes a row
/// value, so it may be logged: 1048 column cannot be null, 1054 unknown column, 1142 command
/// denied, 1146 no such table, 1264 value out of range, 1406 data too long, 1451 and 1452
/// foreign key, 3819 check constraint (MySQL), 4025 constraint failed (MariaDB).
const MESSAGES_WITHOUT_VALUES: [u16; 10] =
    [1048, 1054, 1142, 1146, 1264, 1406, 1451, 1452, 3819, 4025];

/// Describes a MySQL error. The server's message is included only where it cannot quote row
/// values; others, such as "Duplicate entry 'alice@example.com'…", show the code alone.
pub fn describe_mysql_error(error: &mysql_async::Error) -> String {
    match error {
        mysql_async::Error::Server(server) if MESSAGES_WITHOUT_VALUES.contains(&server.code) => {
            format!(
                "MySQL error {} (SQLSTATE {}): {}",
                server.code, server.state, server.message
            )
        }
        mysql_async::Error::Server(server) => format!(
            "MySQL error {} (SQLSTATE {}); RUST_LOG=debug logs the server's message, which can \
             contain row values",
            server.code, server.state
        ),
        other => other.to_string(),
    }
}

/// The apply stage: reads the journal and writes to MySQL until shutdown.
pub struct Applier {
    mysql_url: Secret,
    journal_dir: PathBuf,
    journal_id: String,
    plans: HashMap<String, TablePlan>,
    settings: ApplySettings,
    durable_seq: watch::Receiver<u64>,
    applied_seq: watch::Sender<u64>,
}

impl Applier {
    /// Creates the applier. `durable_seq` comes from capture; `applied_seq` is updated after
    /// every commit.
    pub fn new(
        mysql_url: Secret,
        journal_dir: PathBuf,
        journal_id: String,
        schemas: Vec<TableSchema>,
        settings: ApplySettings,
        durable_seq: watch::Receiver<u64>,
        applied_seq: watch::Sender<u64>,
    ) -> Self {
        let plans = schemas
            .into_iter()
            .map(|schema| (schema.name.qualified(), TablePlan::new(schema)))
            .collect();
        Applier {
            mysql_url,
            journal_dir,
            journal_id,
            plans,
            settings,
            durable_seq,
            applied_seq,
        }
    }

    /// Applies until `shutdown`. A batch in flight is committed or rolled back before this
    /// returns. Returns an error only when local state is inconsistent.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), ApplyError> {
        let mut transient = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut halted = Backoff::new(Duration::from_secs(5), Duration::from_secs(60));
        while !shutdown.is_cancelled() {
            let error = match self.session(&shutdown, &mut transient, &mut halted).await {
                Ok(()) => break,
                Err(error) if error.is_fatal() => {
                    error!(error = %error, "apply stopped");
                    return Err(error);
                }
                Err(error) => error,
            };
            let delay = match error.class() {
                ErrorClass::Transient => {
                    let delay = transient.next_delay();
                    warn!(
                        error = %error,
                        attempt = transient.attempt(),
                        delay_ms = delay.as_millis() as u64,
                        "apply failed, retrying"
                    );
                    delay
                }
                ErrorClass::NeedsOperator => {
                    let delay = halted.next_delay();
                    error!(
                        error = %error,
                        attempt = halted.attempt(),
                        delay_ms = delay.as_millis() as u64,
                        "apply halted until the cause is fixed; capture continues"
                    );
                    if let ApplyError::Mysql { source, .. } | ApplyError::Rejected { source, .. } =
                        &error
                    {
                        debug!(error = %source, "MySQL error detail");
                    }
                    delay
                }
            };
            if !sleep_or_shutdown(delay, &shutdown).await {
                break;
            }
        }
        info!("apply stopped");

        Ok(())
    }

    /// Runs one connection: connect, check, find the checkpoint, then apply batches.
    async fn session(
        &mut self,
        shutdown: &CancellationToken,
        transient: &mut Backoff,
        halted: &mut Backoff,
    ) -> Result<(), ApplyError> {
        let mut conn = connect(&self.mysql_url)
            .await
            .map_err(mysql_error("connect to MySQL"))?;
        if !target::take_apply_lock(&mut conn)
            .await
            .map_err(mysql_error("take the apply lock"))?
        {
            return Err(ApplyError::AlreadyApplying);
        }
        let problems = check_target_tables(&mut conn, self.plans.values())
            .await
            .map_err(mysql_error("check the target tables"))?;
        if !problems.is_empty() {
            return Err(ApplyError::Target(problems));
        }
        target::read_target_scales(&mut conn, self.plans.values_mut())
            .await
            .map_err(mysql_error("read the target column scales"))?;
        let packet = target::max_allowed_packet(&mut conn)
            .await
            .map_err(mysql_error("read max_allowed_packet"))?;
        let limits = StatementLimits {
            max_rows: self.settings.max_statement_rows,
            // Leave room for the packet header and the protocol's own bytes.
            max_bytes: packet.saturating_sub(1024),
        };
        let checkpoint = read_checkpoint(&mut conn, &self.journal_id)
            .await
            .map_err(mysql_error("read the checkpoint"))?;
        let durable = *self.durable_seq.borrow();
        if checkpoint > durable {
            return Err(ApplyError::CheckpointAhead {
                checkpoint,
                journal_end: durable,
            });
        }
        info!(
            applied_seq = checkpoint,
            durable_seq = durable,
            "apply connected to MySQL"
        );
        self.applied_seq.send_replace(checkpoint);
        transient.reset();

        let mut reader = JournalReader::new(&self.journal_dir, checkpoint + 1);
        let mut applied = checkpoint;
        loop {
            let durable = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                durable = wait_beyond(&mut self.durable_seq, applied) => durable,
            };
            let (batch, returned) = read_batch(reader, durable, &self.settings).await;
            reader = returned;
            let batch = batch?;
            let Some(last) = batch.last() else { continue };
            let last_seq = last.seq;

            let started = Instant::now();
            self.apply_batch(&mut conn, &batch, last_seq, limits)
                .await?;
            halted.reset();
            applied = last_seq;
            self.applied_seq.send_replace(applied);
            debug!(
                records = batch.len(),
                applied_seq = applied,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "applied batch"
            );
            release(&self.journal_dir, applied).await?;
        }
    }

    /// Applies one batch and its checkpoint in one MySQL transaction.
    async fn apply_batch(
        &self,
        conn: &mut Conn,
        batch: &[JournalRecord],
        last_seq: u64,
        limits: StatementLimits,
    ) -> Result<(), ApplyError> {
        let statements = build_statements(batch, &self.plans, limits)?;
        let mut tx = conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(mysql_error("start a transaction"))?;
        for statement in statements {
            let Statement {
                sql,
                table,
                operation,
                first_seq,
                last_seq,
            } = statement;
            tx.query_drop(sql)
                .await
                .map_err(|source| ApplyError::Rejected {
                    table,
                    operation,
                    first_seq,
                    last_seq,
                    source,
                })?;
        }
        crate::failpoint::hit("apply-before-checkpoint");
        tx.query_drop(target::checkpoint_statement(&self.journal_id, last_seq))
            .await
            .map_err(mysql_error("write the checkpoint"))?;
        crate::failpoint::hit("apply-before-commit");
        tx.commit().await.map_err(mysql_error("commit a batch"))?;
        crate::failpoint::hit("apply-after-commit");

        Ok(())
    }
}

/// Waits until the durable position passes `applied` and returns it.
async fn wait_beyond(durable_seq: &mut watch::Receiver<u64>, applied: u64) -> u64 {
    loop {
        let durable = *durable_seq.borrow_and_update();
        if durable > applied {
            return durable;
        }
        if durable_seq.changed().await.is_err() {
            // Capture has stopped; nothing more will arrive.
            std::future::pending::<()>().await;
        }
    }
}

/// Reads a batch on a blocking thread, handing the reader back.
async fn read_batch(
    mut reader: JournalReader,
    durable: u64,
    settings: &ApplySettings,
) -> (Result<Vec<JournalRecord>, JournalError>, JournalReader) {
    let settings = settings.clone();
    tokio::task::spawn_blocking(move || {
        let batch = reader.read_batch(
            durable,
            settings.max_batch_records,
            settings.max_batch_bytes,
            settings.hard_max_batch_records,
        );
        (batch, reader)
    })
    .await
    .expect("the journal read task does not panic")
}

async fn release(dir: &std::path::Path, applied: u64) -> Result<(), ApplyError> {
    let dir = dir.to_path_buf();
    let deleted = tokio::task::spawn_blocking(move || release_segments(&dir, applied))
        .await
        .expect("the segment release task does not panic")?;
    if deleted > 0 {
        debug!(
            segments = deleted,
            applied_seq = applied,
            "deleted applied journal segments"
        );
    }

    Ok(())
}
