//! Snapshots: copying the existing rows of synced tables into MySQL, consistently with the
//! change stream.
//!
//! A snapshot reads a table from PostgreSQL in primary-key chunks and hands each chunk to
//! the apply task, which writes it between two journal batches. The rules that make a chunk
//! and the concurrent changes meet without loss or reordering are in
//! [`crate::apply::CopyChunk`]'s module, where they are kept. This module reads the chunks and
//! reports progress. While a chunk is written, the next one is read.
//!
//! A snapshot runs inside the process that owns `DATA_DIR`: the daemon, or a command run
//! while no daemon runs. It needs the capture stage, to flush changes after each read, and
//! the apply stage, to write.

pub mod source;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::apply::load::{self, LoadData};
use crate::apply::{ApplyHandle, ChunkOutcome, CopyChunk, RunError, TablePlan};
use crate::capture::{CaptureHandle, ConnectError, connect_pg};
use crate::config::Secret;
use crate::schema::TableSchema;
use source::{CAPTURE_SESSION_SETTINGS, Chunk, SourceError, SourceReader};

/// Rows per chunk unless configured otherwise.
pub const DEFAULT_CHUNK_ROWS: usize = 20_000;

/// Failure of a snapshot. The rows copied so far stay, and a new start resumes.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// PostgreSQL could not be reached.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// Rows could not be read.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The apply stage failed to write.
    #[error("{0}")]
    Apply(#[from] RunError),
    /// The capture stage stopped.
    #[error("the capture stage stopped, so the snapshot cannot continue")]
    CaptureStopped,
    /// A stop was requested.
    #[error("the snapshot was interrupted; run it again to resume")]
    Interrupted,
}

impl SnapshotError {
    /// Tells whether the copy failed because a server was unreachable for a while, so that
    /// running it again later can succeed without an operator.
    pub fn is_transient(&self) -> bool {
        match self {
            SnapshotError::Connect(_) | SnapshotError::Apply(RunError::Unavailable(_)) => true,
            // No database error means the connection broke; 08 is a connection exception and
            // 57P a shutdown or a server still starting.
            SnapshotError::Source(SourceError::Postgres { source, .. }) => {
                source.as_db_error().is_none_or(|error| {
                    let code = error.code().code();
                    code.starts_with("08") || code.starts_with("57P")
                })
            }
            _ => false,
        }
    }
}

/// Handles and settings that a copy or a verify run takes from the running pipeline.
#[derive(Debug, Clone)]
pub struct CopyContext {
    /// PostgreSQL to read from.
    pub pg_url: Secret,
    /// MySQL, for verify runs, which read the target tables.
    pub mysql_url: Secret,
    /// Replacements for values MySQL cannot store, as apply uses them.
    pub value_policy: crate::config::ValuePolicy,
    /// The apply stage, which writes chunks.
    pub apply: ApplyHandle,
    /// The capture stage, flushed after each read.
    pub capture: CaptureHandle,
    /// Applied sequence number, published by the apply stage.
    pub applied: watch::Receiver<u64>,
    /// Rows per chunk.
    pub chunk_rows: usize,
}

/// A step of a copy, for progress displays and logs.
#[derive(Debug, Clone)]
pub enum ProgressEvent {
    /// The copy of a table began or resumed.
    Started {
        /// The table.
        table: String,
        /// PostgreSQL's estimate of the row count, when it has one.
        estimate: Option<u64>,
        /// Rows copied before an interruption.
        resumed_rows: u64,
    },
    /// A chunk was written.
    Chunk {
        /// The table.
        table: String,
        /// Rows copied in total.
        rows: u64,
    },
    /// The copy of a table finished.
    Finished {
        /// The table.
        table: String,
        /// Rows copied in total.
        rows: u64,
        /// Rows left alone because changes had written them during the copy.
        skipped: u64,
        /// Duration of this run.
        elapsed: Duration,
    },
}

/// Receives progress events.
pub trait ProgressSink: Send + Sync {
    /// Called for every event.
    fn event(&self, event: &ProgressEvent);
}

/// A sink that writes each event to the log at INFO, at most every few seconds per table.
#[derive(Debug, Default)]
pub struct LogProgress {
    last: std::sync::Mutex<Option<Instant>>,
}

impl ProgressSink for LogProgress {
    fn event(&self, event: &ProgressEvent) {
        match event {
            ProgressEvent::Started {
                table,
                estimate,
                resumed_rows,
            } => info!(
                table = %table,
                estimated_rows = estimate.unwrap_or(0),
                resumed_rows,
                "snapshot started"
            ),
            ProgressEvent::Chunk { table, rows } => {
                let mut last = self
                    .last
                    .lock()
                    .expect("the progress lock is never poisoned");
                if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(5)) {
                    *last = Some(Instant::now());
                    info!(table = %table, rows, "snapshot progress");
                }
            }
            ProgressEvent::Finished {
                table,
                rows,
                skipped,
                elapsed,
            } => info!(
                table = %table,
                rows,
                skipped_rows = skipped,
                seconds = elapsed.as_secs_f64(),
                rows_per_second = (*rows as f64 / elapsed.as_secs_f64().max(0.001)) as u64,
                "snapshot finished"
            ),
        }
    }
}

/// Counts of one table's copy.
#[derive(Debug, Clone, Default)]
pub struct CopyReport {
    /// Rows copied in total, including those of an interrupted run.
    pub rows: u64,
    /// Rows left alone because changes had already written them.
    pub skipped: u64,
    /// Rows MySQL rejected for their data, left out under the `park` policy.
    pub rejected: u64,
}

/// A chunk read from PostgreSQL with its place in the change stream.
struct ReadChunk {
    chunk: Chunk,
    read_from: u64,
    through: u64,
    /// The rows as load data, built here so that it overlaps the write of the chunk before.
    prepared: Option<LoadData>,
}

/// Copies one table. The target table is emptied first, unless an interrupted copy resumes.
pub async fn copy_table(
    context: &CopyContext,
    schema: &TableSchema,
    progress: &Arc<dyn ProgressSink>,
    shutdown: &CancellationToken,
) -> Result<CopyReport, SnapshotError> {
    let table = schema.name.qualified();
    let mut connection = connect_pg(&context.pg_url).await?;
    let client = &mut connection.client;
    client
        .batch_execute(CAPTURE_SESSION_SETTINGS)
        .await
        .map_err(pg_error("set the session settings for reading"))?;
    let postgis = crate::capture::postgis_schema(&*client)
        .await
        .map_err(pg_error("look up the PostGIS schema"))?;
    let reader = SourceReader::new(schema, postgis.as_deref())?;
    let estimate = estimate_rows(client, schema).await?;

    let start = context.apply.copy_begin(&table).await?;
    let result = if schema.keyless {
        copy_locked(
            context, &reader, client, schema, &table, estimate, progress, shutdown,
        )
        .await
    } else {
        copy_chunks(
            context, &reader, client, &table, start, estimate, progress, shutdown,
        )
        .await
    };
    context.apply.end_watch(&table).await;
    result
}

/// Copies a table with a key in chunks, reading the next chunk while one is written.
#[allow(clippy::too_many_arguments)]
async fn copy_chunks(
    context: &CopyContext,
    reader: &SourceReader,
    client: &mut Client,
    table: &str,
    start: crate::apply::CopyStart,
    estimate: Option<u64>,
    progress: &Arc<dyn ProgressSink>,
    shutdown: &CancellationToken,
) -> Result<CopyReport, SnapshotError> {
    let started = Instant::now();
    progress.event(&ProgressEvent::Started {
        table: table.to_string(),
        estimate,
        resumed_rows: start.rows_copied,
    });
    let mut report = CopyReport {
        rows: start.rows_copied,
        ..CopyReport::default()
    };
    let plan = &start.plan;
    let mut after = start.after_key.clone();
    let mut current = read_chunk(context, reader, plan, client, after.as_deref()).await?;
    loop {
        if shutdown.is_cancelled() {
            return Err(SnapshotError::Interrupted);
        }
        let last = current.chunk.rows.len() < context.chunk_rows;
        let next_after = current.chunk.last_key.clone().or_else(|| after.clone());
        let chunk = CopyChunk {
            table: table.to_string(),
            rows: std::mem::take(&mut current.chunk.rows),
            read_from: current.read_from,
            through: current.through,
            after_key: next_after.clone(),
            last,
            replace_all: false,
            deletes: Vec::new(),
            snapshot: true,
            prepared: current.prepared.take(),
        };
        let outcome = if last {
            context.apply.copy_chunk(chunk).await?
        } else {
            let write = context.apply.copy_chunk(chunk);
            let read = read_chunk(context, reader, plan, client, next_after.as_deref());
            let (written, read) = tokio::join!(write, read);
            let outcome = written?;
            if outcome != ChunkOutcome::Reread {
                current = read?;
            }
            outcome
        };
        match outcome {
            ChunkOutcome::Reread => {
                current = read_chunk(context, reader, plan, client, after.as_deref()).await?;
                continue;
            }
            ChunkOutcome::Written {
                written,
                skipped,
                rejected,
            } => {
                report.rows += written;
                report.skipped += skipped;
                report.rejected += rejected;
                after = next_after;
                progress.event(&ProgressEvent::Chunk {
                    table: table.to_string(),
                    rows: report.rows,
                });
            }
        }
        if last {
            break;
        }
    }
    progress.event(&ProgressEvent::Finished {
        table: table.to_string(),
        rows: report.rows,
        skipped: report.skipped,
        elapsed: started.elapsed(),
    });

    Ok(report)
}

/// Reads the chunk after `after`, then flushes capture.
async fn read_chunk(
    context: &CopyContext,
    reader: &SourceReader,
    plan: &TablePlan,
    client: &mut Client,
    after: Option<&str>,
) -> Result<ReadChunk, SnapshotError> {
    let read_from = *context.applied.borrow();
    let query = reader.chunk_query(after, context.chunk_rows)?;
    let chunk = reader.read_alone(client, &query, true).await?;
    let through = context
        .capture
        .flush()
        .await
        .ok_or(SnapshotError::CaptureStopped)?;

    // A value that cannot be written shows when apply writes the chunk with statements.
    let prepared = load::build(plan, &chunk.rows).ok().flatten();

    Ok(ReadChunk {
        chunk,
        read_from,
        through,
        prepared,
    })
}

/// Copies a keyless table in one chunk while PostgreSQL blocks writes to it, since its rows
/// have no key to tell a copied row from a changed one.
#[allow(clippy::too_many_arguments)]
async fn copy_locked(
    context: &CopyContext,
    reader: &SourceReader,
    client: &mut Client,
    schema: &TableSchema,
    table: &str,
    estimate: Option<u64>,
    progress: &Arc<dyn ProgressSink>,
    shutdown: &CancellationToken,
) -> Result<CopyReport, SnapshotError> {
    let started = Instant::now();
    progress.event(&ProgressEvent::Started {
        table: table.to_string(),
        estimate,
        resumed_rows: 0,
    });
    let tx = client
        .transaction()
        .await
        .map_err(pg_error("begin a read transaction"))?;
    // SHARE mode waits for writers in flight and blocks new ones until the chunk is written;
    // readers go on.
    tx.batch_execute(&format!(
        "LOCK TABLE {} IN SHARE MODE",
        schema.name.quoted()
    ))
    .await
    .map_err(pg_error(format!("lock {table} against writes")))?;
    let (rows, rejected) = loop {
        let read_from = *context.applied.borrow();
        let chunk = reader.read(&tx, &reader.all_query(), false).await?;
        if shutdown.is_cancelled() {
            return Err(SnapshotError::Interrupted);
        }
        let through = context
            .capture
            .flush()
            .await
            .ok_or(SnapshotError::CaptureStopped)?;
        let outcome = context
            .apply
            .copy_chunk(CopyChunk {
                table: table.to_string(),
                rows: chunk.rows,
                read_from,
                through,
                after_key: None,
                last: true,
                replace_all: true,
                deletes: Vec::new(),
                snapshot: true,
                prepared: None,
            })
            .await?;
        match outcome {
            ChunkOutcome::Written {
                written, rejected, ..
            } => break (written, rejected),
            // A TRUNCATE committed before the lock was applied after the read began. The
            // lock still holds, so a new read after it sees the same rows with a later start.
            ChunkOutcome::Reread => continue,
        }
    };
    tx.commit()
        .await
        .map_err(pg_error(format!("unlock {table}")))?;
    progress.event(&ProgressEvent::Finished {
        table: table.to_string(),
        rows,
        skipped: 0,
        elapsed: started.elapsed(),
    });

    Ok(CopyReport {
        rows,
        skipped: 0,
        rejected,
    })
}

/// Returns PostgreSQL's estimate of a table's row count, or the count itself when the table
/// has no statistics yet.
async fn estimate_rows(
    client: &Client,
    schema: &TableSchema,
) -> Result<Option<u64>, SnapshotError> {
    let row = client
        .query_one(
            "SELECT reltuples::float8 FROM pg_class WHERE oid = $1::text::regclass",
            &[&schema.name.quoted()],
        )
        .await
        .map_err(pg_error("read the row estimate"))?;
    let estimate: f64 = row.get(0);
    if estimate >= 0.0 {
        return Ok(Some(estimate as u64));
    }
    // Never analyzed (PostgreSQL 14 and later say -1): count, which reads the table once.
    let row = client
        .query_one(
            &format!("SELECT count(*) FROM {}", schema.name.quoted()),
            &[],
        )
        .await
        .map_err(pg_error("count the rows"))?;
    let count: i64 = row.get(0);
    Ok(Some(count.max(0) as u64))
}

fn pg_error(action: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> SnapshotError {
    let action = action.into();
    move |source| SnapshotError::Source(SourceError::Postgres { action, source })
}
