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

mod copy;
mod failed;
pub mod load;
mod statement;
mod target;
mod value;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, TxOpts};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

pub use copy::{
    ChunkOutcome, CopyChunk, CopyProgress, CopyStart, CopyState, SNAPSHOT_TABLE,
    drop_snapshot_table, ensure_snapshot_table, read_snapshot_states, request_snapshots,
};
pub use failed::{
    FAILED_TABLE, FailedChange, count_failed_if_present, drop_failed_table, ensure_failed_table,
};
use failed::{NewFailure, ParkedKeys, StillParked, StoredFailure};

pub use statement::{
    Literals, PlanError, Statement, StatementLimits, TablePlan, build_statements,
    canonical_key_value, quote_mysql_ident,
};
pub use target::{
    CHECKPOINT_TABLE, check_target_tables, connect, drop_checkpoint_table, ensure_checkpoint_table,
    read_checkpoint, read_checkpoint_if_present,
};
pub use value::write_literal;

/// Builds the plans of `schemas` as apply uses them: with the value policy and what the
/// target tables' definitions decide (column scales and types, unique indexes, server kind).
pub async fn prepare_plans(
    conn: &mut Conn,
    schemas: &[TableSchema],
    value_policy: crate::config::ValuePolicy,
) -> Result<HashMap<String, TablePlan>, mysql_async::Error> {
    let mut plans: HashMap<String, TablePlan> = schemas
        .iter()
        .map(|schema| {
            let mut plan = TablePlan::new(schema.clone());
            plan.set_value_policy(value_policy);
            (schema.name.qualified(), plan)
        })
        .collect();
    target::read_target_scales(conn, plans.values_mut()).await?;
    target::read_secondary_unique(conn, plans.values_mut()).await?;
    let is_mysql = crate::create::Flavor::detect(conn).await? == crate::create::Flavor::MySql;
    for plan in plans.values_mut() {
        plan.set_mysql_server(is_mysql);
    }
    Ok(plans)
}

/// Appends `text` as a MySQL string literal, for sessions with `NO_BACKSLASH_ESCAPES`.
pub fn write_string_literal(out: &mut String, text: &str) {
    value::write_string(out, text);
}

use crate::backoff::Backoff;
use crate::config::{FailedChangePolicy, Mode, Secret};
use crate::journal::{JournalError, JournalReader, JournalRecord, release_segments};
use crate::schema::TableSchema;
use crate::status::{ApplyPhase, Board, RunReport, count_change};

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
    /// Time between runs in the auto-check mode, counted from the end of a run.
    pub auto_check_interval: Duration,
    /// Replacements for values MySQL cannot store.
    pub value_policy: crate::config::ValuePolicy,
}

impl Default for ApplySettings {
    fn default() -> Self {
        ApplySettings {
            max_batch_records: 5_000,
            max_batch_bytes: 8 * 1024 * 1024,
            hard_max_batch_records: 50_000,
            max_statement_rows: 1_000,
            auto_check_interval: Duration::from_secs(300),
            value_policy: crate::config::ValuePolicy::default(),
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
    #[error("failed to {action}: {}", describe_mysql_error(.cause))]
    Mysql {
        /// Action that failed.
        action: &'static str,
        /// The cause; its server message can quote row values, so it is logged at DEBUG only.
        /// The field is not the error's `source`, so that error chains printed with `{:#}`
        /// never show that message.
        cause: mysql_async::Error,
    },
    /// MySQL rejected a statement; the transaction was rolled back.
    #[error(
        "MySQL rejected the {operation} of journal records {first_seq} to {last_seq} into the \
         MySQL table for {table}: {}",
        describe_mysql_error(.cause)
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
        cause: mysql_async::Error,
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
    /// The preflight check could not read a catalog.
    #[error("the preflight check failed: {0}")]
    Preflight(String),
    /// A parked change stored in the failed-change log cannot be read back.
    #[error("{0}")]
    Stored(String),
    /// A fatal error ended the apply stage earlier.
    #[error("apply stopped: {0}")]
    Stopped(String),
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
            ApplyError::Mysql { cause: source, .. }
            | ApplyError::Rejected { cause: source, .. } => classify(source),
            ApplyError::AlreadyApplying => ErrorClass::Transient,
            _ => ErrorClass::NeedsOperator,
        }
    }

    /// Tells whether retrying can never help, because the local state is inconsistent.
    fn is_fatal(&self) -> bool {
        matches!(
            self,
            ApplyError::Journal(_) | ApplyError::CheckpointAhead { .. } | ApplyError::Stopped(_)
        )
    }

    /// Tells whether MySQL rejected a change for its data, or a value cannot be stored, as
    /// opposed to an outage or a problem with the schema or rights. Only these are parked.
    pub fn is_data_rejection(&self) -> bool {
        match self {
            ApplyError::Rejected {
                cause: mysql_async::Error::Server(server),
                ..
            } => DATA_ERROR_CODES.contains(&server.code),
            ApplyError::Plan(PlanError::Value { .. } | PlanError::RowTooLarge { .. }) => true,
            _ => false,
        }
    }

    /// Tells whether the change no longer fits the table definition read at start, because
    /// the PostgreSQL table was altered. Under `park` such a change stops its table only: it
    /// is parked with every later change of the table until the daemon restarts with the new
    /// definition and a retry applies them.
    pub fn is_table_change(&self) -> bool {
        matches!(self, ApplyError::Plan(PlanError::ShapeMismatch { .. }))
    }

    /// Returns the MySQL server error code, if MySQL returned one.
    pub fn server_code(&self) -> Option<u16> {
        match self {
            ApplyError::Mysql {
                cause: mysql_async::Error::Server(server),
                ..
            }
            | ApplyError::Rejected {
                cause: mysql_async::Error::Server(server),
                ..
            } => Some(server.code),
            _ => None,
        }
    }

    /// Describes the error without any server message, for API responses and the
    /// failed-change log.
    pub fn summary(&self) -> String {
        match self {
            ApplyError::Mysql {
                action,
                cause: source,
            } => {
                format!("failed to {action}: {}", describe_code(source))
            }
            ApplyError::Rejected {
                table,
                operation,
                first_seq,
                last_seq,
                cause: source,
            } => format!(
                "MySQL rejected the {operation} of journal records {first_seq} to {last_seq} \
                 into the MySQL table for {table}: {}",
                describe_code(source)
            ),
            other => other.to_string(),
        }
    }
}

/// Server errors that reject a change for its data: 1048 column cannot be null, 1062 and 1586
/// duplicate entry, 1169 unique constraint, 1264 and 1690 out of range, 1265 data truncated,
/// 1292 incorrect value, 1366 incorrect string value, 1406 data too long, 1416 invalid
/// geometry, 1451 and 1452 foreign key, 3140 invalid JSON (MySQL), 3819 check constraint
/// (MySQL), 4025 constraint failed (MariaDB).
const DATA_ERROR_CODES: [u16; 16] = [
    1048, 1062, 1169, 1264, 1265, 1292, 1366, 1406, 1416, 1451, 1452, 1586, 1690, 3140, 3819, 4025,
];

/// Describes a MySQL error by its code, without the server's message.
fn describe_code(error: &mysql_async::Error) -> String {
    match error {
        mysql_async::Error::Server(server) => {
            format!("MySQL error {} (SQLSTATE {})", server.code, server.state)
        }
        other => other.to_string(),
    }
}

fn mysql_error(action: &'static str) -> impl FnOnce(mysql_async::Error) -> ApplyError {
    move |source| ApplyError::Mysql {
        action,
        cause: source,
    }
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

/// Server errors whose message names users, databases, columns, constraints or tables but
/// never quotes a row value, so it may be logged: 1044 database access denied, 1045 login
/// denied, 1048 column cannot be null, 1049 unknown database, 1054 unknown column, 1142
/// command denied, 1146 no such table, 1264 value out of range, 1406 data too long, 1451 and
/// 1452 foreign key, 3819 check constraint (MySQL), 4025 constraint failed (MariaDB).
const MESSAGES_WITHOUT_VALUES: [u16; 13] = [
    1044, 1045, 1048, 1049, 1054, 1142, 1146, 1264, 1406, 1451, 1452, 3819, 4025,
];

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

/// A request to the apply stage from the API or the command line. Requests run one at a
/// time, between apply runs, so they never overlap with each other or with a run.
#[derive(Debug)]
pub enum ApplyRequest {
    /// Apply everything journaled so far.
    Sync(oneshot::Sender<Result<RunReport, RunError>>),
    /// List the failed-change log.
    ListFailed(oneshot::Sender<Result<Vec<FailedChange>, RunError>>),
    /// Retry parked changes: all of them, or the given ids with the earlier changes of the
    /// same rows.
    RetryFailed {
        /// Ids to retry; `None` for all.
        ids: Option<Vec<u64>>,
        /// Channel for the result.
        reply: oneshot::Sender<Result<RetryReport, RunError>>,
    },
    /// Discard one parked change.
    DeleteFailed {
        /// The id.
        id: u64,
        /// Channel for the result: whether the entry existed.
        reply: oneshot::Sender<Result<bool, RunError>>,
    },
    /// Start or resume the snapshot of a table, and watch its changes.
    CopyBegin {
        /// Source table as `schema.table`.
        table: String,
        /// Channel for the result.
        reply: oneshot::Sender<Result<CopyStart, RunError>>,
    },
    /// Write a chunk of a snapshot.
    CopyChunk {
        /// The chunk.
        chunk: CopyChunk,
        /// Channel for the result.
        reply: oneshot::Sender<Result<ChunkOutcome, RunError>>,
    },
    /// Stop watching a table for a snapshot or a verify run.
    EndWatch {
        /// Source table as `schema.table`.
        table: String,
    },
    /// Start watching a table for a verify run.
    StartWatch {
        /// Source table as `schema.table`.
        table: String,
        /// Channel for the applied sequence number when the watch began.
        reply: oneshot::Sender<u64>,
    },
    /// Read the state of every snapshot.
    CopyStates(oneshot::Sender<Result<Vec<CopyProgress>, RunError>>),
    /// List the keys of a watched table changed after a sequence number.
    WatchedKeys {
        /// Source table as `schema.table`.
        table: String,
        /// Changes after this sequence number count.
        after: u64,
        /// Channel for the keys, and whether a TRUNCATE came after `after`.
        reply: oneshot::Sender<(Vec<String>, bool)>,
    },
}

impl ApplyRequest {
    /// Tells whether the request is one step of a snapshot or a verify run, after which
    /// the connection stays open in every mode: more steps follow.
    fn is_part_of_a_job(&self) -> bool {
        matches!(
            self,
            ApplyRequest::CopyBegin { .. }
                | ApplyRequest::CopyChunk { .. }
                | ApplyRequest::StartWatch { .. }
                | ApplyRequest::WatchedKeys { .. }
        )
    }
}

/// Reason a requested operation could not be done. Messages contain neither server text nor
/// row values, so they can be returned to API clients.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RunError {
    /// MySQL cannot be reached; the backlog is kept and applied later.
    #[error("MySQL is unavailable: {0}")]
    Unavailable(String),
    /// MySQL rejected a change or the target is not ready; an operator must act.
    #[error("apply is halted: {0}")]
    Halted(String),
    /// The daemon is stopping.
    #[error("the daemon is stopping")]
    Stopping,
}

impl RunError {
    fn from_apply(error: &ApplyError) -> Self {
        match error.class() {
            ErrorClass::Transient => RunError::Unavailable(error.summary()),
            ErrorClass::NeedsOperator => RunError::Halted(error.summary()),
        }
    }
}

/// Result of a retry of parked changes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetryReport {
    /// Ids applied and removed from the log.
    pub applied: Vec<u64>,
    /// Ids still parked: rejected again, or waiting behind an earlier change of their row.
    pub still_failed: Vec<u64>,
    /// Requested ids that are not in the log.
    pub not_found: Vec<u64>,
    /// Duration in milliseconds.
    pub duration_ms: u64,
}

/// Sends requests to a running apply stage.
#[derive(Debug, Clone)]
pub struct ApplyHandle {
    requests: mpsc::Sender<ApplyRequest>,
}

impl ApplyHandle {
    /// Creates a handle and the receiver that [`Applier::run`] takes.
    pub fn channel() -> (ApplyHandle, mpsc::Receiver<ApplyRequest>) {
        let (requests, receiver) = mpsc::channel(16);
        (ApplyHandle { requests }, receiver)
    }

    async fn call<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<T, RunError>>) -> ApplyRequest,
    ) -> Result<T, RunError> {
        let (reply, response) = oneshot::channel();
        self.requests
            .send(request(reply))
            .await
            .map_err(|_| RunError::Stopping)?;
        response.await.map_err(|_| RunError::Stopping)?
    }

    /// Applies everything journaled so far and returns the counts.
    pub async fn sync(&self) -> Result<RunReport, RunError> {
        self.call(ApplyRequest::Sync).await
    }

    /// Lists the failed-change log.
    pub async fn list_failed(&self) -> Result<Vec<FailedChange>, RunError> {
        self.call(ApplyRequest::ListFailed).await
    }

    /// Retries parked changes.
    pub async fn retry_failed(&self, ids: Option<Vec<u64>>) -> Result<RetryReport, RunError> {
        self.call(|reply| ApplyRequest::RetryFailed { ids, reply })
            .await
    }

    /// Discards one parked change; returns whether it existed.
    pub async fn delete_failed(&self, id: u64) -> Result<bool, RunError> {
        self.call(|reply| ApplyRequest::DeleteFailed { id, reply })
            .await
    }

    /// Starts or resumes the snapshot of `table`.
    pub async fn copy_begin(&self, table: &str) -> Result<CopyStart, RunError> {
        let table = table.to_string();
        self.call(|reply| ApplyRequest::CopyBegin { table, reply })
            .await
    }

    /// Writes a chunk of a snapshot.
    pub async fn copy_chunk(&self, chunk: CopyChunk) -> Result<ChunkOutcome, RunError> {
        self.call(|reply| ApplyRequest::CopyChunk { chunk, reply })
            .await
    }

    /// Reads the state of every snapshot.
    pub async fn copy_states(&self) -> Result<Vec<CopyProgress>, RunError> {
        self.call(ApplyRequest::CopyStates).await
    }

    /// Starts watching `table`; returns the applied sequence number at that moment.
    pub async fn start_watch(&self, table: &str) -> Result<u64, RunError> {
        let (reply, response) = oneshot::channel();
        let table = table.to_string();
        self.requests
            .send(ApplyRequest::StartWatch { table, reply })
            .await
            .map_err(|_| RunError::Stopping)?;
        response.await.map_err(|_| RunError::Stopping)
    }

    /// Returns the keys of a watched table changed after `after`, and whether a TRUNCATE
    /// came after it.
    pub async fn watched_keys(
        &self,
        table: &str,
        after: u64,
    ) -> Result<(Vec<String>, bool), RunError> {
        let (reply, response) = oneshot::channel();
        let table = table.to_string();
        self.requests
            .send(ApplyRequest::WatchedKeys {
                table,
                after,
                reply,
            })
            .await
            .map_err(|_| RunError::Stopping)?;
        response.await.map_err(|_| RunError::Stopping)
    }

    /// Stops watching `table`, for a snapshot or a verify run that ended.
    pub async fn end_watch(&self, table: &str) {
        let table = table.to_string();
        let _ = self.requests.send(ApplyRequest::EndWatch { table }).await;
    }
}

/// Event that woke the apply loop.
enum Wake {
    /// Automatic mode: changes are waiting, or a retry is due.
    Work,
    /// Auto-check mode: the interval elapsed.
    Check,
    /// The mode changed.
    ModeChanged,
    /// A request arrived.
    Request(ApplyRequest),
}

/// An open MySQL connection with what was read at connect time.
struct Session {
    conn: Conn,
    limits: StatementLimits,
    applied: u64,
    reader: Option<JournalReader>,
    parked: ParkedKeys,
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
    board: Arc<Board>,
    session: Option<Session>,
    transient: Backoff,
    halted: Backoff,
    /// PostgreSQL URL for the preflight check at every connect; `None` skips it.
    preflight_pg_url: Option<Secret>,
    /// Whether the check's warnings were logged already; they are logged once.
    warnings_logged: bool,
    /// Tables being copied or verified, with the changes applied to them meanwhile.
    watches: HashMap<String, copy::Watch>,
    /// Whether snapshots may try `LOAD DATA LOCAL INFILE`; cleared when the server refuses it.
    load_data_available: bool,
}

impl Applier {
    /// Creates the applier. `durable_seq` comes from capture; `applied_seq` is updated after
    /// every commit. The mode and the failed-change policy come from `board`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        mysql_url: Secret,
        journal_dir: PathBuf,
        journal_id: String,
        schemas: Vec<TableSchema>,
        settings: ApplySettings,
        durable_seq: watch::Receiver<u64>,
        applied_seq: watch::Sender<u64>,
        board: Arc<Board>,
    ) -> Self {
        let plans = schemas
            .into_iter()
            .map(|schema| {
                let mut plan = TablePlan::new(schema);
                plan.set_value_policy(settings.value_policy);
                (plan.schema.name.qualified(), plan)
            })
            .collect();
        Applier {
            mysql_url,
            journal_dir,
            journal_id,
            plans,
            settings,
            durable_seq,
            applied_seq,
            board,
            session: None,
            transient: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
            halted: Backoff::new(Duration::from_secs(5), Duration::from_secs(60)),
            preflight_pg_url: None,
            warnings_logged: false,
            watches: HashMap::new(),
            load_data_available: true,
        }
    }

    /// Tells the plans which snapshot was taken before the table definitions were read, so that
    /// a change made after a `DROP COLUMN` halts apply instead of leaving the column stale.
    pub fn with_schema_snapshot(mut self, snapshot: crate::schema::TxidSnapshot) -> Self {
        for plan in self.plans.values_mut() {
            plan.set_schema_snapshot(snapshot.clone());
        }
        self
    }

    /// Runs the full preflight check ([`crate::check`]) at every connect, reading the source
    /// definitions from PostgreSQL at `pg_url`. Its errors halt apply until they are fixed.
    pub fn with_preflight(mut self, pg_url: Secret) -> Self {
        self.preflight_pg_url = Some(pg_url);
        self
    }

    /// Runs the preflight check, when configured. Returns its errors; logs its warnings once.
    /// When PostgreSQL cannot be reached the check is skipped with a warning, because the
    /// checks of `check_target_tables` already ran and capture reconnects on its own.
    async fn preflight(&mut self, conn: &mut Conn) -> Result<Vec<String>, ApplyError> {
        let Some(pg_url) = &self.preflight_pg_url else {
            return Ok(Vec::new());
        };
        let pg = match tokio::time::timeout(
            Duration::from_secs(10),
            crate::capture::connect_pg(pg_url),
        )
        .await
        {
            Ok(Ok(connection)) => connection.client,
            Ok(Err(error)) => {
                warn!(error = %error, "cannot reach PostgreSQL for the preflight check; skipped it");
                return Ok(Vec::new());
            }
            Err(_) => {
                warn!("connecting to PostgreSQL for the preflight check timed out; skipped it");
                return Ok(Vec::new());
            }
        };
        let schemas: Vec<TableSchema> = self
            .plans
            .values()
            .map(|plan| plan.schema.clone())
            .collect();
        let report = crate::check::check(&pg, conn, &schemas)
            .await
            .map_err(|error| ApplyError::Preflight(error.to_string()))?;
        if !self.warnings_logged {
            for finding in &report.findings {
                if finding.severity == crate::check::Severity::Warning {
                    warn!(table = %finding.table, "preflight check: {}", finding.message);
                }
            }
            self.warnings_logged = true;
        }

        Ok(report
            .findings
            .into_iter()
            .filter(|finding| finding.severity == crate::check::Severity::Error)
            .map(|finding| format!("{}: {}", finding.table, finding.message))
            .collect())
    }

    /// Applies until `shutdown`, in the mode the board sets, and serves requests. A batch in
    /// flight is committed or rolled back before this returns. Returns an error only when
    /// local state is inconsistent.
    pub async fn run(
        mut self,
        mut requests: mpsc::Receiver<ApplyRequest>,
        shutdown: CancellationToken,
    ) -> Result<(), ApplyError> {
        let mut mode = self.board.watch_mode();
        // Automatic mode connects at once, so that a problem with the target shows at start.
        let mut retry_at = Some(Instant::now());
        let mut retrying = false;
        let mut next_check = Instant::now() + self.settings.auto_check_interval;
        let mut requests_open = true;
        loop {
            let current = *mode.borrow_and_update();
            let applied = *self.applied_seq.borrow();
            let wake = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                request = requests.recv(), if requests_open => match request {
                    Some(request) => Wake::Request(request),
                    None => {
                        requests_open = false;
                        continue;
                    }
                },
                _ = mode.changed() => Wake::ModeChanged,
                () = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)),
                    if current == Mode::Automatic && retry_at.is_some() => Wake::Work,
                () = tokio::time::sleep_until(next_check), if current == Mode::AutoCheck => {
                    Wake::Check
                }
                _ = wait_beyond(&mut self.durable_seq, applied),
                    if current == Mode::Automatic && retry_at.is_none() => Wake::Work,
            };

            match wake {
                Wake::ModeChanged => {
                    let new_mode = *mode.borrow();
                    info!(mode = new_mode.name(), "apply mode changed");
                    retry_at = (new_mode == Mode::Automatic).then(Instant::now);
                    next_check = Instant::now() + self.settings.auto_check_interval;
                    if new_mode != Mode::Automatic {
                        self.disconnect().await;
                    }
                }
                Wake::Work => {
                    if retrying {
                        self.board.metrics.retries.inc();
                    }
                    let target = *self.durable_seq.borrow();
                    match self.catch_up(target, &shutdown).await {
                        Ok(_) => {
                            retry_at = None;
                            retrying = false;
                        }
                        Err(error) => {
                            retry_at = Some(Instant::now() + self.handle_failure(&error)?);
                            retrying = true;
                        }
                    }
                }
                Wake::Check => {
                    let target = *self.durable_seq.borrow();
                    match self.catch_up(target, &shutdown).await {
                        Ok(report) => info!(
                            applied = report.applied,
                            parked = report.parked,
                            "auto-check run finished"
                        ),
                        Err(error) => {
                            self.handle_failure(&error)?;
                        }
                    }
                    self.disconnect().await;
                    // The interval counts from the end of a run, so runs never overlap.
                    next_check = Instant::now() + self.settings.auto_check_interval;
                }
                Wake::Request(request) => {
                    // A snapshot sends its chunks one after another; reconnecting for each
                    // would run the preflight check every time.
                    let keeps_session = request.is_part_of_a_job();
                    let fatal = self.serve(request, &shutdown).await;
                    if let Some(error) = fatal {
                        error!(error = %error, "apply stopped");
                        return Err(error);
                    }
                    if current == Mode::Automatic {
                        if self.session.is_none() {
                            retry_at.get_or_insert_with(Instant::now);
                        }
                    } else if !keeps_session {
                        self.disconnect().await;
                    }
                }
            }
        }
        self.disconnect().await;
        info!("apply stopped");

        Ok(())
    }

    /// Applies everything journaled so far, once; for `sync --offline`.
    pub async fn apply_pending(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Result<RunReport, ApplyError> {
        let target = *self.durable_seq.borrow();
        let result = self.catch_up(target, shutdown).await;
        self.disconnect().await;
        result
    }

    /// Serves one request. Returns the error when it is fatal for the daemon.
    async fn serve(
        &mut self,
        request: ApplyRequest,
        shutdown: &CancellationToken,
    ) -> Option<ApplyError> {
        match request {
            ApplyRequest::Sync(reply) => {
                let target = *self.durable_seq.borrow();
                let result = self.catch_up(target, shutdown).await;
                self.reply(reply, result)
            }
            ApplyRequest::ListFailed(reply) => {
                let result = self.list_failed().await;
                self.reply(reply, result)
            }
            ApplyRequest::RetryFailed { ids, reply } => {
                let result = self.retry_failed(ids).await;
                self.reply(reply, result)
            }
            ApplyRequest::DeleteFailed { id, reply } => {
                let result = self.delete_failed(id).await;
                self.reply(reply, result)
            }
            ApplyRequest::CopyBegin { table, reply } => {
                let result = self.copy_begin(&table).await;
                self.reply(reply, result)
            }
            ApplyRequest::CopyChunk { chunk, reply } => {
                let result = self.copy_chunk(chunk).await;
                self.reply(reply, result)
            }
            ApplyRequest::CopyStates(reply) => {
                let result = self.copy_states().await;
                self.reply(reply, result)
            }
            ApplyRequest::StartWatch { table, reply } => {
                self.start_watch(&table);
                let _ = reply.send(*self.applied_seq.borrow());
                None
            }
            ApplyRequest::EndWatch { table } => {
                self.end_watch(&table);
                None
            }
            ApplyRequest::WatchedKeys {
                table,
                after,
                reply,
            } => {
                let _ = reply.send(self.watched_keys(&table, after));
                None
            }
        }
    }

    /// Sends a result to a requester, logs a failure, and returns it when it is fatal.
    fn reply<T>(
        &mut self,
        reply: oneshot::Sender<Result<T, RunError>>,
        result: Result<T, ApplyError>,
    ) -> Option<ApplyError> {
        match result {
            Ok(value) => {
                // The requester may have gone away; the work is done either way.
                let _ = reply.send(Ok(value));
                None
            }
            Err(error) => {
                let _ = reply.send(Err(RunError::from_apply(&error)));
                if error.is_fatal() {
                    return Some(error);
                }
                // Logged and counted like a failure of a scheduled run; the delay is unused
                // because the requester retries on its own.
                let _ = self.handle_failure(&error);
                None
            }
        }
    }

    /// Logs and counts a failed run, and returns the delay before the next attempt. Returns
    /// the error itself when it is fatal.
    fn handle_failure(&mut self, error: &ApplyError) -> Result<Duration, ApplyError> {
        // A failed run has dropped its session already; the phase is set below.
        self.session = None;
        if error.is_fatal() {
            error!(error = %error, "apply stopped");
            self.board
                .apply_phase(ApplyPhase::Halted, Some(error.summary()));
            return Err(ApplyError::Stopped(error.to_string()));
        }
        let delay = match error.class() {
            ErrorClass::Transient => {
                self.board.metrics.count_failure(true);
                self.board
                    .apply_phase(ApplyPhase::Unavailable, Some(error.summary()));
                let delay = self.transient.next_delay();
                warn!(
                    error = %error,
                    attempt = self.transient.attempt(),
                    delay_ms = delay.as_millis() as u64,
                    "apply failed, retrying"
                );
                delay
            }
            ErrorClass::NeedsOperator => {
                self.board.metrics.count_failure(false);
                self.board
                    .apply_phase(ApplyPhase::Halted, Some(error.summary()));
                let delay = self.halted.next_delay();
                error!(
                    error = %error,
                    attempt = self.halted.attempt(),
                    delay_ms = delay.as_millis() as u64,
                    "apply halted until the cause is fixed; capture continues"
                );
                if let ApplyError::Mysql { cause: source, .. }
                | ApplyError::Rejected { cause: source, .. } = error
                {
                    debug!(error = %source, "MySQL error detail");
                }
                delay
            }
        };

        Ok(delay)
    }

    /// Closes the session. The apply lock is released and the connection closed before this
    /// returns, so that the next run can take the lock at once. A failure to close is only
    /// logged: the server drops the lock with the connection anyway.
    async fn disconnect(&mut self) {
        if let Some(session) = self.session.take() {
            let mut conn = session.conn;
            if let Err(error) = target::release_apply_lock(&mut conn).await {
                debug!(error = %describe_mysql_error(&error), "failed to release the apply lock");
            }
            if let Err(error) = conn.disconnect().await {
                debug!(error = %describe_mysql_error(&error), "failed to close the MySQL connection");
            }
            debug!("apply disconnected from MySQL");
        }
        if self.board.mode() != Mode::Automatic {
            self.board.apply_idle();
        }
    }

    /// Returns the open session, or connects: checks the target, reads the checkpoint and
    /// the parked keys.
    async fn take_session(&mut self) -> Result<Session, ApplyError> {
        if let Some(session) = self.session.take() {
            return Ok(session);
        }
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
        let problems = self.preflight(&mut conn).await?;
        if !problems.is_empty() {
            return Err(ApplyError::Target(problems));
        }
        target::read_target_scales(&mut conn, self.plans.values_mut())
            .await
            .map_err(mysql_error("read the target column scales"))?;
        target::read_secondary_unique(&mut conn, self.plans.values_mut())
            .await
            .map_err(mysql_error("read the target unique indexes"))?;
        let flavor = crate::create::Flavor::detect(&mut conn)
            .await
            .map_err(mysql_error("read the MySQL version"))?;
        for plan in self.plans.values_mut() {
            plan.set_mysql_server(flavor == crate::create::Flavor::MySql);
        }
        let packet = target::max_allowed_packet(&mut conn)
            .await
            .map_err(mysql_error("read max_allowed_packet"))?;
        let limits = StatementLimits {
            max_rows: self.settings.max_statement_rows,
            // Leave room for the packet header and the protocol's own bytes.
            max_bytes: packet.saturating_sub(1024),
        };
        ensure_failed_table(&mut conn)
            .await
            .map_err(mysql_error("create the failed-change table"))?;
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
        let parked = ParkedKeys::load(&mut conn, &self.journal_id)
            .await
            .map_err(mysql_error("read the failed-change log"))?;
        info!(
            applied_seq = checkpoint,
            durable_seq = durable,
            failed_changes = parked.count(),
            "apply connected to MySQL"
        );
        self.applied_seq.send_replace(checkpoint);
        self.board.checkpoint_read(checkpoint);
        self.board.apply_phase(ApplyPhase::Running, None);
        self.transient.reset();

        Ok(Session {
            conn,
            limits,
            applied: checkpoint,
            reader: None,
            parked,
        })
    }

    /// Applies journal records up to `target`, connecting first if needed. Stops early, with
    /// the work done so far committed, when `shutdown` is requested. On error the connection
    /// is closed, so the next run starts again from the checkpoint.
    async fn catch_up(
        &mut self,
        target: u64,
        shutdown: &CancellationToken,
    ) -> Result<RunReport, ApplyError> {
        let started = Instant::now();
        let mut session = self.take_session().await?;
        let mut report = self.apply_until(&mut session, target, shutdown).await?;
        report.applied_seq = session.applied;
        report.duration_ms = started.elapsed().as_millis() as u64;
        self.board
            .run_finished(report.clone(), session.parked.count());
        self.board.apply_phase(ApplyPhase::Running, None);
        self.session = Some(session);

        Ok(report)
    }

    async fn apply_until(
        &mut self,
        session: &mut Session,
        target: u64,
        shutdown: &CancellationToken,
    ) -> Result<RunReport, ApplyError> {
        let mut report = RunReport::default();
        while session.applied < target && !shutdown.is_cancelled() {
            let reader = session
                .reader
                .take()
                .unwrap_or_else(|| JournalReader::new(&self.journal_dir, session.applied + 1));
            let (batch, reader) = read_batch(reader, target, &self.settings).await;
            session.reader = Some(reader);
            let batch = batch?;
            let Some(last) = batch.last() else { break };
            let last_seq = last.seq;

            let started = Instant::now();
            let parked = self.apply_batch(session, &batch, last_seq).await?;
            let elapsed = started.elapsed();
            self.board
                .metrics
                .batch_duration
                .observe(elapsed.as_secs_f64());
            self.halted.reset();
            // `apply_batch` has added the parked records to `session.parked`.
            self.count_applied(&batch, &parked);
            self.record_watched(&batch);
            report.applied += (batch.len() - parked.len()) as u64;
            report.parked += parked.len() as u64;
            session.applied = last_seq;
            self.applied_seq.send_replace(last_seq);
            self.board.applied(last_seq);
            debug!(
                records = batch.len(),
                parked = parked.len(),
                applied_seq = last_seq,
                elapsed_ms = elapsed.as_millis() as u64,
                "applied batch"
            );
            release(&self.journal_dir, last_seq).await?;
        }

        Ok(report)
    }

    /// Adds a batch to the per-table counters, counting per table and operation first, so
    /// that the labels are built once per batch rather than once per record.
    fn count_applied(&self, batch: &[JournalRecord], parked: &[NewFailure]) {
        let mut applied: HashMap<(&str, &'static str), u64> = HashMap::new();
        let mut parked_counts: HashMap<(&str, &'static str), u64> = HashMap::new();
        let mut parked_seqs = parked.iter().map(|failure| failure.record.seq).peekable();
        for record in batch {
            let counts = if parked_seqs.peek() == Some(&record.seq) {
                parked_seqs.next();
                &mut parked_counts
            } else {
                &mut applied
            };
            *counts.entry((&record.table, record.op.name())).or_default() += 1;
        }
        let metrics = &self.board.metrics;
        for (family, counts) in [
            (&metrics.applied, applied),
            (&metrics.parked, parked_counts),
        ] {
            for ((table, operation), count) in counts {
                count_change(family, table, operation, count);
            }
        }
    }

    /// Applies one batch and its checkpoint in one MySQL transaction. Under the `park`
    /// policy, returns the records moved to the failed-change log in that transaction, in
    /// journal order.
    async fn apply_batch(
        &self,
        session: &mut Session,
        batch: &[JournalRecord],
        last_seq: u64,
    ) -> Result<Vec<NewFailure>, ApplyError> {
        let park = self.board.policy() == FailedChangePolicy::Park;
        // Changes of rows with parked changes wait behind them.
        let mut parked = Vec::new();
        let mut kept = Vec::with_capacity(batch.len());
        if session.parked.is_empty() {
            kept.extend(batch.iter());
        } else {
            for record in batch {
                let key = self.row_key(record)?;
                match session.parked.blocker(&record.table, key.as_deref()) {
                    Some(blocker) => {
                        session
                            .parked
                            .add(&record.table, key.as_deref(), record.seq);
                        parked.push(waiting_failure(record, key, blocker));
                    }
                    None => kept.push(record),
                }
            }
        }

        match self
            .apply_statements(&mut session.conn, &kept, &parked, last_seq, session.limits)
            .await
        {
            Ok(()) => {
                parked.sort_by_key(|failure| failure.record.seq);
                return Ok(parked);
            }
            Err(error) if park && (error.is_data_rejection() || error.is_table_change()) => {
                debug!(error = %error, "a batch was rejected; applying it change by change");
            }
            Err(error) => return Err(error),
        }

        // Each change in its own savepoint, so that a rejected one is parked alone.
        let mut tx = session
            .conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(mysql_error("start a transaction"))?;
        for record in kept {
            let mut key = self.row_key(record)?;
            if let Some(blocker) = session.parked.blocker(&record.table, key.as_deref()) {
                session
                    .parked
                    .add(&record.table, key.as_deref(), record.seq);
                parked.push(waiting_failure(record, key, blocker));
                continue;
            }
            if let Err(error) = self.apply_one(&mut tx, record, session.limits).await {
                if error.is_table_change() {
                    // The whole table waits for the new definition.
                    key = None;
                } else if !error.is_data_rejection() {
                    return Err(error);
                }
                let failure = NewFailure {
                    record: record.clone(),
                    key,
                    error: error.summary(),
                    error_code: error.server_code(),
                    waits_for: None,
                };
                error!(
                    error = %error,
                    table = %record.table,
                    operation = record.op.name(),
                    seq = record.seq,
                    "a change could not be applied; parked it in the failed-change log"
                );
                session
                    .parked
                    .add(&record.table, failure.key.as_deref(), record.seq);
                parked.push(failure);
            }
        }
        self.finish_batch(tx, &parked, last_seq).await?;
        // Changes that waited behind earlier entries were collected first; callers count the
        // batch in journal order.
        parked.sort_by_key(|failure| failure.record.seq);

        Ok(parked)
    }

    /// Returns the key of the row a record changes, or `None` for a TRUNCATE and for a record
    /// that no longer fits its table's definition, which then stands for the whole table.
    fn row_key(&self, record: &JournalRecord) -> Result<Option<String>, ApplyError> {
        match self.plan(record)?.record_key(record) {
            Ok(key) => Ok(key),
            Err(PlanError::ShapeMismatch { .. }) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    fn plan(&self, record: &JournalRecord) -> Result<&TablePlan, PlanError> {
        self.plans
            .get(&record.table)
            .ok_or_else(|| PlanError::UnknownTable {
                table: record.table.clone(),
            })
    }

    /// Applies records as multi-row statements, then the parked entries and the checkpoint,
    /// in one transaction.
    async fn apply_statements(
        &self,
        conn: &mut Conn,
        records: &[&JournalRecord],
        parked: &[NewFailure],
        last_seq: u64,
        limits: StatementLimits,
    ) -> Result<(), ApplyError> {
        let statements = build_statements(records.iter().copied(), &self.plans, limits)?;
        let mut tx = conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(mysql_error("start a transaction"))?;
        for statement in statements {
            execute(&mut tx, statement).await?;
        }
        self.finish_batch(tx, parked, last_seq).await
    }

    /// Applies one record inside a savepoint, which is rolled back if MySQL rejects it.
    async fn apply_one(
        &self,
        tx: &mut mysql_async::Transaction<'_>,
        record: &JournalRecord,
        limits: StatementLimits,
    ) -> Result<(), ApplyError> {
        let statements = build_statements(std::iter::once(record), &self.plans, limits)?;
        tx.query_drop("SAVEPOINT pg_to_mysql_sync_change")
            .await
            .map_err(mysql_error("set a savepoint"))?;
        for statement in statements {
            if let Err(error) = execute(tx, statement).await {
                tx.query_drop("ROLLBACK TO SAVEPOINT pg_to_mysql_sync_change")
                    .await
                    .map_err(mysql_error("roll back to a savepoint"))?;
                return Err(error);
            }
        }

        Ok(())
    }

    /// Writes parked entries and the checkpoint, then commits.
    async fn finish_batch(
        &self,
        mut tx: mysql_async::Transaction<'_>,
        parked: &[NewFailure],
        last_seq: u64,
    ) -> Result<(), ApplyError> {
        if !parked.is_empty() {
            tx.query_drop(failed::insert_statement(&self.journal_id, parked))
                .await
                .map_err(mysql_error("write the failed-change log"))?;
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

    async fn list_failed(&mut self) -> Result<Vec<FailedChange>, ApplyError> {
        let mut session = self.take_session().await?;
        let result = failed::list(&mut session.conn, &self.journal_id)
            .await
            .map_err(mysql_error("read the failed-change log"));
        if result.is_ok() {
            self.session = Some(session);
        }
        result
    }

    async fn delete_failed(&mut self, id: u64) -> Result<bool, ApplyError> {
        let mut session = self.take_session().await?;
        session
            .conn
            .query_drop(failed::delete_statement(&self.journal_id, id))
            .await
            .map_err(mysql_error("delete from the failed-change log"))?;
        let existed = session.conn.affected_rows() > 0;
        session.parked = ParkedKeys::load(&mut session.conn, &self.journal_id)
            .await
            .map_err(mysql_error("read the failed-change log"))?;
        if existed {
            warn!(
                id,
                "discarded a change from the failed-change log on request"
            );
        }
        self.board.failed_changes(session.parked.count());
        self.session = Some(session);

        Ok(existed)
    }

    /// Retries parked changes in journal order, in one transaction. A change whose row has an
    /// earlier entry that stays parked is not tried, so each row's changes keep their order.
    async fn retry_failed(&mut self, ids: Option<Vec<u64>>) -> Result<RetryReport, ApplyError> {
        let started = Instant::now();
        let mut session = self.take_session().await?;
        let entries = failed::load_for_retry(&mut session.conn, &self.journal_id)
            .await
            .map_err(mysql_error("read the failed-change log"))?;
        let mut report = RetryReport::default();
        let selected = select_for_retry(&entries, ids.as_deref(), &mut report.not_found);

        let mut still_parked = StillParked::default();
        let mut tx = session
            .conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(mysql_error("start a transaction"))?;
        for (entry, chosen) in entries.iter().zip(selected) {
            let key = entry.key.as_deref();
            if !chosen {
                still_parked.add(&entry.table, key);
                continue;
            }
            if still_parked.blocks(&entry.table, key) {
                // A blocked TRUNCATE must block the later changes of its table too.
                still_parked.add(&entry.table, key);
                report.still_failed.push(entry.seq);
                continue;
            }
            let outcome = match &entry.record {
                Ok(record) => self.apply_one(&mut tx, record, session.limits).await,
                Err(reason) => Err(ApplyError::Stored(reason.clone())),
            };
            match outcome {
                Ok(()) => {
                    tx.query_drop(failed::delete_statement(&self.journal_id, entry.seq))
                        .await
                        .map_err(mysql_error("write the failed-change log"))?;
                    report.applied.push(entry.seq);
                    if let Ok(record) = &entry.record {
                        count_change(
                            &self.board.metrics.applied,
                            &record.table,
                            record.op.name(),
                            1,
                        );
                    }
                }
                // A change of a table no longer synced, or of an altered table, stays parked
                // with its error, rather than stopping the retry of every other entry.
                Err(error)
                    if error.is_data_rejection()
                        || matches!(error, ApplyError::Stored(_) | ApplyError::Plan(_)) =>
                {
                    tx.query_drop(failed::update_statement(
                        &self.journal_id,
                        entry.seq,
                        &error.summary(),
                        error.server_code(),
                    ))
                    .await
                    .map_err(mysql_error("write the failed-change log"))?;
                    still_parked.add(&entry.table, key);
                    report.still_failed.push(entry.seq);
                }
                Err(error) => return Err(error),
            }
        }
        tx.commit().await.map_err(mysql_error("commit the retry"))?;
        session.parked = ParkedKeys::load(&mut session.conn, &self.journal_id)
            .await
            .map_err(mysql_error("read the failed-change log"))?;
        report.duration_ms = started.elapsed().as_millis() as u64;
        info!(
            applied = report.applied.len(),
            still_failed = report.still_failed.len(),
            "retried parked changes"
        );
        self.board.failed_changes(session.parked.count());
        self.session = Some(session);

        Ok(report)
    }
}

/// Marks the entries a retry covers: all, or each requested id with the earlier entries of
/// its row (or table, for a TRUNCATE). Unknown ids go to `not_found`.
fn select_for_retry(
    entries: &[StoredFailure],
    ids: Option<&[u64]>,
    not_found: &mut Vec<u64>,
) -> Vec<bool> {
    let Some(ids) = ids else {
        return vec![true; entries.len()];
    };
    let mut selected = vec![false; entries.len()];
    for &id in ids {
        let Some(target) = entries.iter().find(|entry| entry.seq == id) else {
            not_found.push(id);
            continue;
        };
        for (index, entry) in entries.iter().enumerate() {
            let same_row = entry.table == target.table
                && (entry.key == target.key || entry.key.is_none() || target.key.is_none());
            if entry.seq <= id && same_row {
                selected[index] = true;
            }
        }
    }
    selected
}

fn waiting_failure(record: &JournalRecord, key: Option<String>, blocker: u64) -> NewFailure {
    let scope = if key.is_some() { "row" } else { "table" };
    NewFailure {
        record: record.clone(),
        key,
        error: format!("waits behind the parked change {blocker} of the same {scope}"),
        error_code: None,
        waits_for: Some(blocker),
    }
}

/// Runs one statement, naming its records if MySQL rejects it.
async fn execute(
    tx: &mut mysql_async::Transaction<'_>,
    statement: Statement,
) -> Result<(), ApplyError> {
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
            cause: source,
        })
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
