//! Draining the PostgreSQL change log into the journal.
//!
//! # Invariants
//!
//! - A change-log row is deleted only in the transaction that read it, after the journal batch
//!   holding it is durable. A crash at any step therefore leaves every change in the change
//!   log, in the journal, or in both; never in neither.
//! - "Both" happens when the process stops, or the connection drops, after the journal fsync
//!   but before the delete commits. The journaled rows of that batch are kept as pending keys
//!   (recovered from the journal after a restart) and deleted first on the next connection,
//!   before anything else is drained, so they are journaled exactly once.
//! - Rows are read in change-log id order. Ids are taken when the trigger runs, so a transaction
//!   that commits late can hold lower ids than rows already drained, and no "highest id seen"
//!   cursor is used. Two changes of one row cannot be reordered: the second writer waits on the
//!   first one's row lock, so its trigger runs, and takes its id, after the first commits.
//! - Only one process drains a database: each session holds a PostgreSQL advisory lock.
//!
//! Delivery to the journal is exactly once; the durable sequence number is published to the
//! apply stage through a watch channel after each fsync.

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::connection::{ConnectError, PgConnection, connect_pg};
use super::install::{CAPTURE_SCHEMA, NOTIFY_CHANNEL};
use crate::backoff::{Backoff, sleep_or_shutdown};
use crate::config::Secret;
use crate::journal::{
    ChangeLogKey, JournalError, JournalWriter, NewChange, Operation, compact_json, parse_row_image,
    write_row_image,
};
use crate::status::{Board, count_change};
use crate::telemetry::ErrorChain;

/// Advisory lock key held by the draining session.
const DRAIN_LOCK_KEY: i64 = 0x7067_746f_6d79_0002;

/// Tuning of the drain loop.
#[derive(Debug, Clone)]
pub struct DrainSettings {
    /// Maximum rows journaled per batch (one fsync and one PostgreSQL transaction each).
    pub max_batch_rows: usize,
    /// Row-image bytes after which a batch is closed early, to bound memory.
    pub max_batch_bytes: usize,
    /// Rows fetched per round trip inside a batch.
    pub fetch_rows: i32,
    /// How often to look for changes when no notification arrives. Notifications are only a
    /// wake-up, and concurrent writers skip them (see the capture triggers). This interval
    /// bounds the delay of a change whose notification was skipped or lost.
    pub poll_interval: Duration,
}

impl Default for DrainSettings {
    fn default() -> Self {
        DrainSettings {
            max_batch_rows: 5_000,
            max_batch_bytes: 8 * 1024 * 1024,
            fetch_rows: 500,
            poll_interval: Duration::from_millis(250),
        }
    }
}

/// Errors of the capture stage.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// A PostgreSQL call failed; the session reconnects.
    #[error("failed to {action}")]
    Postgres {
        /// Action that failed.
        action: &'static str,
        /// The cause.
        #[source]
        source: tokio_postgres::Error,
    },
    /// No connection could be made.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The connection to PostgreSQL closed.
    #[error("the connection to PostgreSQL closed")]
    ConnectionClosed,
    /// Another process drains the same change log.
    #[error("another pg-to-mysql-sync process is draining this PostgreSQL database; stop it first")]
    AlreadyDraining,
    /// A change-log row has content that no trigger of this version writes.
    #[error("change-log row {cid} is invalid: {reason}")]
    InvalidRow {
        /// The change-log id.
        cid: i64,
        /// Problem found.
        reason: String,
    },
    /// The journal failed; this stops the daemon.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

impl CaptureError {
    /// Tells whether reconnecting and trying again can help. A failed journal write (a full disk,
    /// say) is retried, since the writer has removed the partial batch. Any other journal error
    /// needs a restart or an operator.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            CaptureError::Postgres { .. }
                | CaptureError::ConnectionClosed
                | CaptureError::Connect(ConnectError::Connect(_))
                | CaptureError::AlreadyDraining
                | CaptureError::Journal(JournalError::Io { .. })
        )
    }
}

fn pg_error(action: &'static str) -> impl FnOnce(tokio_postgres::Error) -> CaptureError {
    move |source| CaptureError::Postgres { action, source }
}

/// Asks a running [`Drainer`] to drain the change log now.
///
/// A snapshot or a verify run uses it after reading rows from PostgreSQL: once a flush
/// returns, every change committed before the flush began is in the journal, at or below the
/// returned sequence number.
#[derive(Debug, Clone)]
pub struct CaptureHandle {
    requests: mpsc::Sender<oneshot::Sender<u64>>,
}

impl CaptureHandle {
    /// Drains everything committed so far and returns the last durable sequence number.
    /// Waits while PostgreSQL is unreachable; returns `None` when capture has stopped.
    pub async fn flush(&self) -> Option<u64> {
        let (reply, response) = oneshot::channel();
        self.requests.send(reply).await.ok()?;
        response.await.ok()
    }
}

/// The capture stage: owns the journal writer and drains the change log until shutdown.
pub struct Drainer {
    pg_url: Secret,
    settings: DrainSettings,
    writer: Option<JournalWriter>,
    pending_keys: Vec<ChangeLogKey>,
    durable_seq: watch::Sender<u64>,
    board: Arc<Board>,
    flushes: mpsc::Receiver<oneshot::Sender<u64>>,
    /// Source of the handles; it also keeps `flushes` open while the drainer runs.
    flush_sender: mpsc::Sender<oneshot::Sender<u64>>,
    /// Flush requests waiting for the next complete drain; kept across reconnections.
    waiting_flushes: Vec<oneshot::Sender<u64>>,
}

impl Drainer {
    /// Creates the drainer. `pending_keys` are the rows of the last journaled batch, from
    /// journal recovery; `durable_seq` receives the last durable sequence number; `board`
    /// receives the connection state and the counts for `/status` and `/metrics`.
    pub fn new(
        pg_url: Secret,
        settings: DrainSettings,
        writer: JournalWriter,
        pending_keys: Vec<ChangeLogKey>,
        durable_seq: watch::Sender<u64>,
        board: Arc<Board>,
    ) -> Self {
        let (flush_sender, flushes) = mpsc::channel(16);
        Drainer {
            pg_url,
            settings,
            writer: Some(writer),
            pending_keys,
            durable_seq,
            board,
            flushes,
            flush_sender,
            waiting_flushes: Vec::new(),
        }
    }

    /// Returns a handle that asks this drainer to drain now.
    pub fn handle(&self) -> CaptureHandle {
        CaptureHandle {
            requests: self.flush_sender.clone(),
        }
    }

    /// Drains until `shutdown`, reconnecting with backoff after transient errors. Returns an
    /// error only for failures that need an operator, such as a journal write error.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), CaptureError> {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
        while !shutdown.is_cancelled() {
            let error = match self.session(&shutdown, &mut backoff).await {
                Ok(()) => break,
                Err(error) if error.is_transient() => error,
                Err(error) => {
                    error!(error = %ErrorChain(&error), "capture stopped");
                    self.board.capture_state(false, Some(error.to_string()));
                    return Err(error);
                }
            };
            self.board.capture_state(false, Some(error.to_string()));
            let delay = backoff.next_delay();
            warn!(
                error = %ErrorChain(&error),
                attempt = backoff.attempt(),
                delay_ms = delay.as_millis() as u64,
                "capture failed, reconnecting to PostgreSQL"
            );
            if !sleep_or_shutdown(delay, &shutdown).await {
                break;
            }
        }
        info!("capture stopped");

        Ok(())
    }

    /// Runs one connection: connect, listen, then drain on every wake-up.
    async fn session(
        &mut self,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Result<(), CaptureError> {
        let PgConnection {
            mut client,
            notifications: wake,
            closed,
        } = connect_pg(&self.pg_url).await?;
        client
            .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))
            .await
            .map_err(pg_error("listen for notifications"))?;
        let locked: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&DRAIN_LOCK_KEY])
            .await
            .map_err(pg_error("take the drain lock"))?
            .get(0);
        if !locked {
            return Err(CaptureError::AlreadyDraining);
        }
        info!("capture connected to PostgreSQL");
        self.board.capture_state(true, None);
        self.delete_pending(&mut client).await?;

        loop {
            // Drain everything visible; a full batch means more may be waiting.
            while self.drain_batch(&mut client).await? >= self.settings.max_batch_rows {
                if shutdown.is_cancelled() {
                    return Ok(());
                }
            }
            // Each flush request arrived before the drain above began, so the drain saw every
            // change committed before the request.
            for reply in self.waiting_flushes.drain(..) {
                let _ = reply.send(*self.durable_seq.borrow());
            }
            // Only a completed drain counts as recovery; a session that connects and then
            // fails at once (a full disk, say) keeps backing off.
            backoff.reset();
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = closed.cancelled() => return Err(CaptureError::ConnectionClosed),
                _ = wake.notified() => {}
                Some(reply) = self.flushes.recv() => self.waiting_flushes.push(reply),
                _ = tokio::time::sleep(self.settings.poll_interval) => {}
            }
            while let Ok(reply) = self.flushes.try_recv() {
                self.waiting_flushes.push(reply);
            }
        }
    }

    /// Deletes change-log rows that are already journaled but whose deletion may not have
    /// committed.
    async fn delete_pending(&mut self, client: &mut Client) -> Result<(), CaptureError> {
        if self.pending_keys.is_empty() {
            return Ok(());
        }
        let tx = client
            .transaction()
            .await
            .map_err(pg_error("begin a transaction"))?;
        let deleted = delete_keys(&tx, &self.pending_keys).await?;
        tx.commit()
            .await
            .map_err(pg_error("commit the deletion of journaled rows"))?;
        // Usually 0: the previous session's delete committed, and this only confirms it.
        debug!(
            journaled = self.pending_keys.len(),
            deleted, "checked that the change-log rows of the last journal batch are deleted"
        );
        self.pending_keys.clear();

        Ok(())
    }

    /// Moves one batch from the change log to the journal. Returns the number of rows moved.
    async fn drain_batch(&mut self, client: &mut Client) -> Result<usize, CaptureError> {
        let tx = client
            .transaction()
            .await
            .map_err(pg_error("begin a transaction"))?;
        let statement = tx
            .prepare(&format!(
                "SELECT id, txid, table_name, op::text, new_row::text, old_key::text, json_text::text \
                 FROM {CAPTURE_SCHEMA}.change_log ORDER BY id LIMIT {}",
                self.settings.max_batch_rows
            ))
            .await
            .map_err(pg_error("prepare the change-log query"))?;
        let portal = tx
            .bind(&statement, &[])
            .await
            .map_err(pg_error("query the change log"))?;

        let mut changes = Vec::new();
        let mut keys = Vec::new();
        let mut bytes = 0;
        while changes.len() < self.settings.max_batch_rows && bytes < self.settings.max_batch_bytes
        {
            let rows = tx
                .query_portal(&portal, self.settings.fetch_rows)
                .await
                .map_err(pg_error("read the change log"))?;
            let done = rows.len() < self.settings.fetch_rows as usize;
            for row in rows {
                let change = change_from_row(&row)?;
                bytes += change.new.as_ref().map_or(0, |raw| raw.get().len());
                keys.push(ChangeLogKey {
                    cid: change.cid,
                    xid: change.xid,
                });
                changes.push(change);
            }
            if done {
                break;
            }
        }
        if changes.is_empty() {
            return Ok(0);
        }

        let count = changes.len();
        // A batch touches few tables, so a short list beats a map that copies every name.
        let mut counts: Vec<(String, &'static str, u64)> = Vec::new();
        for change in &changes {
            let operation = change.op.name();
            match counts
                .iter_mut()
                .find(|(table, op, _)| *op == operation && *table == change.table)
            {
                Some((_, _, count)) => *count += 1,
                None => counts.push((change.table.clone(), operation, 1)),
            }
        }
        let appended = self.append(changes).await?;
        self.pending_keys = keys;
        // The records are durable from here on, whether or not the delete below commits.
        self.durable_seq.send_replace(appended.last_seq);
        self.board.batch_journaled(appended.last_seq);
        for (table, operation, count) in counts {
            count_change(&self.board.metrics.captured, &table, operation, count);
        }
        debug!(
            rows = count,
            batch = appended.batch,
            last_seq = appended.last_seq,
            "journaled batch"
        );

        crate::failpoint::hit("capture-after-fsync");
        delete_keys(&tx, &self.pending_keys).await?;
        crate::failpoint::hit("capture-before-commit");
        tx.commit()
            .await
            .map_err(pg_error("commit the drained batch"))?;
        self.pending_keys.clear();

        Ok(count)
    }

    /// Appends on a blocking thread, since the write ends with an fsync.
    async fn append(
        &mut self,
        changes: Vec<NewChange>,
    ) -> Result<crate::journal::AppendedBatch, CaptureError> {
        let mut writer = self
            .writer
            .take()
            .expect("the writer is returned after every append");
        let (writer, result) = tokio::task::spawn_blocking(move || {
            let result = writer.append_batch(changes);
            (writer, result)
        })
        .await
        .expect("the journal append task does not panic");
        self.writer = Some(writer);

        Ok(result?)
    }
}

async fn delete_keys(
    tx: &tokio_postgres::Transaction<'_>,
    keys: &[ChangeLogKey],
) -> Result<u64, CaptureError> {
    let cids: Vec<i64> = keys.iter().map(|key| key.cid).collect();
    let xids: Vec<i64> = keys.iter().map(|key| key.xid).collect();
    // The id range lets the planner scan the primary-key index. Joined with the key list
    // alone, it scans the whole change log, which is slow on a large backlog.
    let lowest = cids.iter().min().copied().unwrap_or(0);
    let highest = cids.iter().max().copied().unwrap_or(0);
    tx.execute(
        &format!(
            "DELETE FROM {CAPTURE_SCHEMA}.change_log c \
             USING unnest($1::bigint[], $2::bigint[]) AS d(id, txid) \
             WHERE c.id = d.id AND c.txid = d.txid AND c.id BETWEEN $3 AND $4"
        ),
        &[&cids, &xids, &lowest, &highest],
    )
    .await
    .map_err(pg_error("delete journaled rows from the change log"))
}

fn change_from_row(row: &tokio_postgres::Row) -> Result<NewChange, CaptureError> {
    let cid: i64 = row.get(0);
    let invalid = |reason: String| CaptureError::InvalidRow { cid, reason };
    let code: String = row.get(3);
    let op = Operation::from_code(&code)
        .ok_or_else(|| invalid(format!("unknown operation `{code}`")))?;
    let raw = |text: Option<String>| -> Result<Option<Box<RawValue>>, CaptureError> {
        let Some(text) = text else { return Ok(None) };
        let text = if text.contains(['\n', '\r']) {
            compact_json(&text)
        } else {
            text
        };
        RawValue::from_string(text)
            .map(Some)
            .map_err(|error| invalid(describe_json_error("JSON", &error)))
    };
    let mut new = raw(row.get(4))?;
    if let (Some(image), Some(json_text)) = (&new, raw(row.get(6))?) {
        new = Some(replace_json_columns(image, &json_text).map_err(invalid)?);
    }
    let change = NewChange {
        xid: row.get(1),
        cid,
        table: row.get(2),
        op,
        new,
        old: raw(row.get(5))?,
    };
    let shape_ok = match op {
        Operation::Insert | Operation::Update => change.new.is_some(),
        Operation::Delete => change.old.is_some(),
        Operation::Truncate => true,
    };
    if !shape_ok {
        return Err(invalid(format!("a {} without its row image", op.name())));
    }

    Ok(change)
}

/// Describes a JSON error by position only: serde_json's message can quote the value it
/// rejected, and values never go to the log.
fn describe_json_error(what: &str, error: &serde_json::Error) -> String {
    format!(
        "invalid {what} ({:?} error at column {})",
        error.classify(),
        error.column()
    )
}

/// Replaces the values of `json` and `jsonb` columns in a row image with their text, as a JSON
/// string (or null for SQL NULL), taken from the trigger's `json_text` object.
fn replace_json_columns(image: &RawValue, json_text: &RawValue) -> Result<Box<RawValue>, String> {
    let mut values =
        parse_row_image(image).map_err(|error| describe_json_error("row image", &error))?;
    let texts =
        parse_row_image(json_text).map_err(|error| describe_json_error("json_text", &error))?;
    for (name, text) in texts {
        match values.iter_mut().find(|(column, _)| *column == name) {
            Some(entry) => entry.1 = text,
            None => {
                return Err(format!(
                    "json_text names column {name}, which the row lacks"
                ));
            }
        }
    }

    Ok(write_row_image(&values))
}
