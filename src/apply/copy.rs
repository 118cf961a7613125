//! The MySQL side of a snapshot: writing copied rows at the right place in the change stream.
//!
//! # Hand-off invariants
//!
//! A snapshot copies a table in chunks read from PostgreSQL while changes keep arriving. Each
//! chunk is written by the apply task, between two journal batches, so a chunk and the changes
//! are never applied at the same time. For a row in a chunk read at snapshot `S`:
//!
//! 1. Every change that `S` sees was committed before the read, so it is journaled at or below
//!    the sequence number returned by the capture flush that follows the read (`through`). The
//!    chunk is written only after apply has reached `through`, so it never goes under one of
//!    those changes.
//! 2. Every change that `S` does not see commits after the read began. If apply wrote it
//!    before the chunk, the row was changed after `read_from` (the applied position when the
//!    read began), and the watch below recorded its key: the chunk leaves that row alone,
//!    because MySQL already holds a newer state. Otherwise the change is applied after the
//!    chunk, as for any row.
//!
//! The watch of a table records, for every change applied while the table is copied, the key
//! and the sequence number. A TRUNCATE makes the whole chunk stale, and it is read again.
//!
//! The target table is emptied when a snapshot starts, in its own step, so rows that
//! PostgreSQL no longer has go away. A row then reaches MySQL either from a chunk or from a
//! change applied after the emptying; both hold the row as PostgreSQL had it at that point.
//!
//! # Durability and resumption
//!
//! The progress of a snapshot (the key of the last row copied, and the row count) lives in
//! the `pg_to_mysql_sync_snapshot` table, written in the same transaction as the chunk and the
//! checkpoint. After a crash the copy resumes after that key; rows of later chunks that
//! changes have written since are consistent by the same rules, since every chunk is handed
//! off on its own. A keyless table is copied in one chunk that replaces the whole table, while
//! the PostgreSQL table is locked against writes, so a resumed copy starts it over.

use std::collections::HashMap;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, TxOpts};
use serde::Serialize;
use tracing::warn;

use super::load::{self, LoadData};
use super::statement::TablePlan;
use super::statement::{build_statements, quote_mysql_ident};
use super::value::write_string;
use super::{Applier, ApplyError, mysql_error};
use crate::journal::JournalRecord;

/// Turns the target's foreign key checks off for a snapshot's own statements. PostgreSQL
/// checks its foreign keys, so the copied rows satisfy them once every table is copied; in
/// between, a child table may be copied before its parent, and a referenced table must be
/// emptied. Apply's changes always run with the checks on: every path that turns them off
/// turns them on again before the connection is used for anything else, and an error drops
/// the connection.
const FOREIGN_KEYS_OFF: &str = "SET SESSION foreign_key_checks = 0";
/// Turns the checks on again.
const FOREIGN_KEYS_ON: &str = "SET SESSION foreign_key_checks = 1";

/// MySQL table with the state of every snapshot.
pub const SNAPSHOT_TABLE: &str = "pg_to_mysql_sync_snapshot";

/// State of a table's snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyState {
    /// Requested by `setup`; the daemon copies the table when it starts.
    Pending,
    /// Started and not finished; a new start resumes it.
    Copying,
    /// Finished.
    Done,
}

impl CopyState {
    fn name(self) -> &'static str {
        match self {
            CopyState::Pending => "pending",
            CopyState::Copying => "copying",
            CopyState::Done => "done",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(CopyState::Pending),
            "copying" => Some(CopyState::Copying),
            "done" => Some(CopyState::Done),
            _ => None,
        }
    }
}

/// A row of the snapshot table.
#[derive(Debug, Clone, Serialize)]
pub struct CopyProgress {
    /// Source table as `schema.table`.
    pub table: String,
    /// The state.
    pub state: CopyState,
    /// Rows written so far.
    pub rows_copied: u64,
    /// When the last copy started, in UTC, if one did.
    pub started_at: Option<String>,
    /// When the last copy finished, in UTC, if one did.
    pub finished_at: Option<String>,
    /// Key of the last row copied; the copy resumes after it.
    #[serde(skip)]
    pub after_key: Option<String>,
}

/// Creates the snapshot table if it is missing.
pub async fn ensure_snapshot_table(conn: &mut Conn) -> Result<(), mysql_async::Error> {
    conn.query_drop(format!(
        "CREATE TABLE IF NOT EXISTS {} (
             table_name VARCHAR(512) NOT NULL PRIMARY KEY,
             state VARCHAR(16) CHARACTER SET ascii NOT NULL,
             after_key LONGTEXT NULL,
             rows_copied BIGINT UNSIGNED NOT NULL,
             started_at DATETIME(6) NULL,
             finished_at DATETIME(6) NULL
         ) ENGINE=InnoDB",
        quote_mysql_ident(SNAPSHOT_TABLE)
    ))
    .await
}

/// Drops the snapshot table.
pub async fn drop_snapshot_table(conn: &mut Conn) -> Result<(), mysql_async::Error> {
    conn.query_drop(format!(
        "DROP TABLE IF EXISTS {}",
        quote_mysql_ident(SNAPSHOT_TABLE)
    ))
    .await
}

/// Marks tables as waiting for a snapshot, which the daemon runs when it starts. A table
/// that is being copied starts over.
pub async fn request_snapshots(
    conn: &mut Conn,
    tables: &[String],
) -> Result<(), mysql_async::Error> {
    ensure_snapshot_table(conn).await?;
    for table in tables {
        let mut sql = format!(
            "INSERT INTO {} (table_name, state, after_key, rows_copied) VALUES (",
            quote_mysql_ident(SNAPSHOT_TABLE)
        );
        write_string(&mut sql, table);
        sql.push_str(
            ", 'pending', NULL, 0) ON DUPLICATE KEY UPDATE state = 'pending', after_key = NULL, \
             rows_copied = 0, started_at = NULL, finished_at = NULL",
        );
        conn.query_drop(sql).await?;
    }
    Ok(())
}

/// Reads the state of every table that has had a snapshot; empty when the table is missing.
pub async fn read_snapshot_states(
    conn: &mut Conn,
) -> Result<Vec<CopyProgress>, mysql_async::Error> {
    let sql = format!(
        "SELECT table_name, state, after_key, rows_copied, \
         DATE_FORMAT(started_at, '%Y-%m-%dT%H:%i:%s.%fZ'), \
         DATE_FORMAT(finished_at, '%Y-%m-%dT%H:%i:%s.%fZ') FROM {} ORDER BY table_name",
        quote_mysql_ident(SNAPSHOT_TABLE)
    );
    type Row = (
        String,
        String,
        Option<String>,
        u64,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<Row> = match conn.query(sql).await {
        // 1146: no such table, so no snapshot ever ran.
        Err(mysql_async::Error::Server(error)) if error.code == 1146 => return Ok(Vec::new()),
        result => result?,
    };
    Ok(rows
        .into_iter()
        .filter_map(
            |(table, state, after_key, rows_copied, started_at, finished_at)| {
                Some(CopyProgress {
                    table,
                    state: CopyState::parse(&state)?,
                    rows_copied,
                    started_at,
                    finished_at,
                    after_key,
                })
            },
        )
        .collect())
}

/// Starting point of a snapshot, with the plan that its load data is built from.
#[derive(Debug, Clone)]
pub struct CopyStart {
    /// Key of the last row already copied, when an interrupted copy resumes.
    pub after_key: Option<String>,
    /// Rows copied before an interruption.
    pub rows_copied: u64,
    /// The table's plan, with what apply read from the target table, so that the snapshot
    /// can turn rows into load data while the previous chunk is written.
    pub plan: TablePlan,
}

/// A chunk of rows to write, with its place in the change stream.
#[derive(Debug)]
pub struct CopyChunk {
    /// Source table as `schema.table`.
    pub table: String,
    /// The rows, as insert records in the capture form.
    pub rows: Vec<JournalRecord>,
    /// Applied sequence number when the read began.
    pub read_from: u64,
    /// Durable sequence number of a capture flush that completed after the read.
    pub through: u64,
    /// Key of the last row of the chunk, stored as the point to resume after.
    pub after_key: Option<String>,
    /// Whether this is the last chunk; the snapshot is then done.
    pub last: bool,
    /// Whether the chunk holds the whole table and replaces the target's rows: for keyless
    /// tables, copied while PostgreSQL blocks writes to them.
    pub replace_all: bool,
    /// Rows to delete, as delete records with the key in the capture form: a verify repair
    /// removes rows that PostgreSQL does not have. The same rule as for `rows` applies.
    pub deletes: Vec<JournalRecord>,
    /// Whether the chunk belongs to a snapshot, whose progress is recorded with it; a verify
    /// repair has none.
    pub snapshot: bool,
    /// The rows as `LOAD DATA` input, built by the snapshot from [`CopyStart::plan`].
    pub prepared: Option<LoadData>,
}

/// Outcome of a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkOutcome {
    /// Written; `skipped` rows were left alone because changes had already written them.
    Written {
        /// Rows written.
        written: u64,
        /// Rows left to the newer changes.
        skipped: u64,
        /// Rows MySQL rejected for their data, left out under the `park` policy.
        rejected: u64,
    },
    /// The table was truncated after the read began; read the chunk again.
    Reread,
}

/// Changes applied to a table while it is copied or verified.
#[derive(Debug, Default)]
pub(super) struct Watch {
    /// Per row key, the sequence number of the last applied change.
    keys: HashMap<String, u64>,
    /// Sequence number of the last TRUNCATE, or of a change whose key is unknown.
    truncated_at: u64,
    /// Sequence number of the last change recorded.
    last_seq: u64,
    /// Number of requesters watching; the watch ends with the last one.
    users: usize,
}

impl Watch {
    /// Returns whether the row with `key` was changed after `seq`.
    pub(super) fn changed_after(&self, key: &str, seq: u64) -> bool {
        self.truncated_at > seq || self.keys.get(key).is_some_and(|&at| at > seq)
    }
}

impl Applier {
    /// Starts watching `table`: every change applied from now on is recorded.
    pub(super) fn start_watch(&mut self, table: &str) {
        self.watches.entry(table.to_string()).or_default().users += 1;
    }

    /// Stops one requester's watch of `table`.
    pub(super) fn end_watch(&mut self, table: &str) {
        if let Some(watch) = self.watches.get_mut(table) {
            watch.users = watch.users.saturating_sub(1);
            if watch.users == 0 {
                self.watches.remove(table);
            }
        }
    }

    /// Returns the watch of `table`, if one runs.
    pub(super) fn watch(&self, table: &str) -> Option<&Watch> {
        self.watches.get(table)
    }

    /// Records the changes of an applied batch in the watches.
    pub(super) fn record_watched(&mut self, batch: &[JournalRecord]) {
        if self.watches.is_empty() {
            return;
        }
        for record in batch {
            if !self.watches.contains_key(&record.table) {
                continue;
            }
            let key = self.row_key(record).ok().flatten();
            let watch = self.watches.get_mut(&record.table).expect("checked above");
            match key {
                Some(key) => {
                    watch.keys.insert(key, record.seq);
                }
                None => watch.truncated_at = record.seq,
            }
            watch.last_seq = record.seq;
        }
    }

    /// Starts or resumes the snapshot of `table`: a new one empties the target table.
    pub(super) async fn copy_begin(&mut self, table: &str) -> Result<CopyStart, ApplyError> {
        let plan = synced_plan(&self.plans, table)?;
        let target = plan.schema.target_sql();
        let mut session = self.take_session().await?;
        let conn = &mut session.conn;
        ensure_snapshot_table(conn)
            .await
            .map_err(mysql_error("create the snapshot table"))?;
        let existing = read_snapshot_states(conn)
            .await
            .map_err(mysql_error("read the snapshot table"))?
            .into_iter()
            .find(|progress| progress.table == table);
        let start = match existing {
            Some(progress)
                if progress.state == CopyState::Copying && progress.after_key.is_some() =>
            {
                (progress.after_key, progress.rows_copied)
            }
            _ => {
                let mut sql = format!(
                    "INSERT INTO {} (table_name, state, after_key, rows_copied, started_at) VALUES (",
                    quote_mysql_ident(SNAPSHOT_TABLE)
                );
                write_string(&mut sql, table);
                sql.push_str(
                    ", 'copying', NULL, 0, UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE \
                     state = 'copying', after_key = NULL, rows_copied = 0, \
                     started_at = UTC_TIMESTAMP(6), finished_at = NULL",
                );
                conn.query_drop(sql)
                    .await
                    .map_err(mysql_error("record the start of a snapshot"))?;
                // TRUNCATE commits on its own. A crash right after it leaves the state at
                // "copying" with no key, and the next start empties the table again. Foreign
                // keys of the target are off for the snapshot's own statements (see
                // `without_foreign_keys`), so a referenced table can be emptied too.
                conn.query_drop(FOREIGN_KEYS_OFF)
                    .await
                    .map_err(mysql_error("turn foreign key checks off"))?;
                conn.query_drop(format!("TRUNCATE TABLE {target}"))
                    .await
                    .map_err(|cause| ApplyError::Rejected {
                        table: table.to_string(),
                        operation: "truncate before a snapshot",
                        first_seq: 0,
                        last_seq: 0,
                        cause,
                    })?;
                conn.query_drop(FOREIGN_KEYS_ON)
                    .await
                    .map_err(mysql_error("turn foreign key checks on"))?;
                crate::failpoint::hit("snapshot-after-truncate");
                (None, 0)
            }
        };
        self.session = Some(session);
        self.start_watch(table);

        Ok(CopyStart {
            after_key: start.0,
            rows_copied: start.1,
            plan: self.plans[table].clone(),
        })
    }

    /// Writes a chunk at the current position of the change stream (see the module notes).
    pub(super) async fn copy_chunk(
        &mut self,
        mut chunk: CopyChunk,
    ) -> Result<ChunkOutcome, ApplyError> {
        let mut session = self.take_session().await?;
        if session.applied < chunk.through {
            // Never cancelled: the chunk must not be written before the changes it follows.
            let shutdown = tokio_util::sync::CancellationToken::new();
            self.apply_until(&mut session, chunk.through, &shutdown)
                .await?;
        }
        let watch = self.watch(&chunk.table).ok_or_else(|| {
            ApplyError::Stored(format!("no snapshot of {} is running", chunk.table))
        })?;
        if watch.truncated_at > chunk.read_from {
            self.session = Some(session);
            return Ok(ChunkOutcome::Reread);
        }
        let plan = synced_plan(&self.plans, &chunk.table)?;
        let prepared = chunk.prepared.take();
        let mut kept = Vec::with_capacity(chunk.rows.len() + chunk.deletes.len());
        let mut dropped = Vec::new();
        let watched = watch.last_seq > chunk.read_from && !chunk.replace_all;
        // Deletes go first: they remove rows PostgreSQL lacks, which could hold a unique value
        // that a written row needs. Load data exists only for chunks without deletes, so the
        // positions in `dropped` are positions in `chunk.rows` there.
        for (position, row) in chunk.deletes.iter().chain(&chunk.rows).enumerate() {
            let key = if watched { plan.record_key(row)? } else { None };
            match key {
                Some(key) if watch.changed_after(&key, chunk.read_from) => dropped.push(position),
                _ => kept.push(row),
            }
        }
        let skipped = (chunk.rows.len() + chunk.deletes.len() - kept.len()) as u64;
        let park = self.board.policy() == crate::config::FailedChangePolicy::Park;
        let loaded = self.load_data_available
            && chunk.snapshot
            && chunk.deletes.is_empty()
            && self
                .load_chunk(&mut session.conn, &chunk, prepared, &kept, &dropped)
                .await?;
        let result = if loaded {
            Ok(0)
        } else {
            self.write_chunk(&mut session.conn, &chunk, &kept, session.limits, false)
                .await
        };
        let rejected = match result {
            Ok(rejected) => rejected,
            Err(error) if park && error.is_data_rejection() => {
                // Row by row, so that the rows MySQL rejects are left out alone.
                self.write_chunk(&mut session.conn, &chunk, &kept, session.limits, true)
                    .await?
            }
            Err(error) => return Err(error),
        };
        self.session = Some(session);
        if rejected > 0 {
            warn!(
                table = %chunk.table,
                rows = rejected,
                "MySQL rejected rows of a snapshot chunk; under FAILED_CHANGE_POLICY=park they \
                 were left out, and `verify` lists their keys as missing"
            );
        }
        let kept = kept.len() - rejected as usize;

        Ok(ChunkOutcome::Written {
            written: kept as u64,
            skipped,
            rejected,
        })
    }

    /// Writes the rows of a chunk and its progress in one transaction. `one_by_one` puts
    /// each row in a savepoint and leaves out those MySQL rejects for their data; it returns
    /// their number.
    async fn write_chunk(
        &self,
        conn: &mut Conn,
        chunk: &CopyChunk,
        rows: &[&JournalRecord],
        limits: super::StatementLimits,
        one_by_one: bool,
    ) -> Result<u64, ApplyError> {
        let plan = synced_plan(&self.plans, &chunk.table)?;
        if chunk.snapshot {
            conn.query_drop(FOREIGN_KEYS_OFF)
                .await
                .map_err(mysql_error("turn foreign key checks off"))?;
        }
        let mut tx = conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(mysql_error("start a transaction"))?;
        if chunk.replace_all {
            tx.query_drop(format!("DELETE FROM {}", plan.schema.target_sql()))
                .await
                .map_err(mysql_error("empty a keyless table before its copy"))?;
        }
        let mut rejected = 0;
        if one_by_one {
            for row in rows {
                let statements = build_statements(std::iter::once(*row), &self.plans, limits)?;
                tx.query_drop("SAVEPOINT pg_to_mysql_sync_row")
                    .await
                    .map_err(mysql_error("set a savepoint"))?;
                for statement in statements {
                    if let Err(error) = super::execute(&mut tx, statement).await {
                        if !error.is_data_rejection() {
                            return Err(error);
                        }
                        tx.query_drop("ROLLBACK TO SAVEPOINT pg_to_mysql_sync_row")
                            .await
                            .map_err(mysql_error("roll back to a savepoint"))?;
                        rejected += 1;
                        break;
                    }
                }
            }
        } else {
            let statements = build_statements(rows.iter().copied(), &self.plans, limits)?;
            for statement in statements {
                super::execute(&mut tx, statement).await?;
            }
        }
        if chunk.snapshot {
            tx.query_drop(progress_statement(chunk, rows.len() as u64 - rejected))
                .await
                .map_err(mysql_error("record the progress of a snapshot"))?;
        }
        crate::failpoint::hit("snapshot-before-commit");
        tx.commit()
            .await
            .map_err(mysql_error("commit a snapshot chunk"))?;
        crate::failpoint::hit("snapshot-after-commit");
        if chunk.snapshot {
            conn.query_drop(FOREIGN_KEYS_ON)
                .await
                .map_err(mysql_error("turn foreign key checks on"))?;
        }
        Ok(rejected)
    }

    /// Returns the keys of `table` changed after `seq`, as the watch recorded them, and
    /// whether a TRUNCATE or a change without a known key came after `seq`.
    pub(super) fn watched_keys(&self, table: &str, seq: u64) -> (Vec<String>, bool) {
        match self.watch(table) {
            Some(watch) => (
                watch
                    .keys
                    .iter()
                    .filter(|&(_, &at)| at > seq)
                    .map(|(key, _)| key.clone())
                    .collect(),
                watch.truncated_at > seq,
            ),
            None => (Vec::new(), false),
        }
    }

    /// Writes a chunk with `LOAD DATA LOCAL INFILE`, the fastest way into MySQL, with its
    /// progress in one transaction. Returns `false`, with nothing written, when the server
    /// does not allow it, or when MySQL reports a warning: with LOCAL, MySQL turns errors
    /// such as a duplicate key or a value it had to change into warnings, so such a chunk is
    /// written again with statements, which fail on them.
    async fn load_chunk(
        &mut self,
        conn: &mut Conn,
        chunk: &CopyChunk,
        prepared: Option<LoadData>,
        rows: &[&JournalRecord],
        dropped: &[usize],
    ) -> Result<bool, ApplyError> {
        let plan = synced_plan(&self.plans, &chunk.table)?;
        let prepared = match prepared {
            Some(prepared) => prepared.without(dropped),
            None => match load::build(plan, rows)? {
                Some(prepared) => prepared,
                None => return Ok(false),
            },
        };
        let LoadData {
            statement, data, ..
        } = prepared;
        conn.query_drop(FOREIGN_KEYS_OFF)
            .await
            .map_err(mysql_error("turn foreign key checks off"))?;
        conn.query_drop("START TRANSACTION")
            .await
            .map_err(mysql_error("start a transaction"))?;
        if chunk.replace_all {
            conn.query_drop(format!("DELETE FROM {}", plan.schema.target_sql()))
                .await
                .map_err(mysql_error("empty a keyless table before its copy"))?;
        }
        // LOAD DATA reads backslash escapes only without NO_BACKSLASH_ESCAPES, which the
        // session sets for literals; it is set again right after.
        conn.query_drop("SET SESSION sql_mode = REPLACE(@@sql_mode, 'NO_BACKSLASH_ESCAPES', '')")
            .await
            .map_err(mysql_error("set the sql_mode for LOAD DATA"))?;
        let data = bytes::Bytes::from(data);
        conn.set_infile_handler(async move {
            Ok(
                Box::pin(futures_util::stream::once(async move { Ok(data) }))
                    as mysql_async::InfileData,
            )
        });
        let loaded = conn.query_drop(statement).await;
        let warnings = conn.get_warnings();
        conn.query_drop("SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')")
            .await
            .map_err(mysql_error("restore the sql_mode"))?;
        match loaded {
            Ok(()) if warnings == 0 => {}
            Ok(()) => {
                conn.query_drop("ROLLBACK")
                    .await
                    .map_err(mysql_error("roll back a snapshot chunk"))?;
                conn.query_drop(FOREIGN_KEYS_ON)
                    .await
                    .map_err(mysql_error("turn foreign key checks on"))?;
                return Ok(false);
            }
            // 1148 and 3948 (MySQL) and 4166 (MariaDB): LOCAL INFILE is disabled.
            Err(mysql_async::Error::Server(error)) if matches!(error.code, 1148 | 3948 | 4166) => {
                conn.query_drop("ROLLBACK")
                    .await
                    .map_err(mysql_error("roll back a snapshot chunk"))?;
                conn.query_drop(FOREIGN_KEYS_ON)
                    .await
                    .map_err(mysql_error("turn foreign key checks on"))?;
                tracing::info!(
                    "the MySQL server does not allow LOAD DATA LOCAL INFILE (local_infile=OFF); \
                     snapshots use INSERT statements, which are slower"
                );
                self.load_data_available = false;
                return Ok(false);
            }
            Err(cause) => {
                return Err(ApplyError::Rejected {
                    table: chunk.table.clone(),
                    operation: "snapshot load",
                    first_seq: 0,
                    last_seq: 0,
                    cause,
                });
            }
        }
        conn.query_drop(progress_statement(chunk, rows.len() as u64))
            .await
            .map_err(mysql_error("record the progress of a snapshot"))?;
        crate::failpoint::hit("snapshot-before-commit");
        conn.query_drop("COMMIT")
            .await
            .map_err(mysql_error("commit a snapshot chunk"))?;
        crate::failpoint::hit("snapshot-after-commit");
        conn.query_drop(FOREIGN_KEYS_ON)
            .await
            .map_err(mysql_error("turn foreign key checks on"))?;
        Ok(true)
    }

    /// Reads the state of every snapshot.
    pub(super) async fn copy_states(&mut self) -> Result<Vec<CopyProgress>, ApplyError> {
        let mut session = self.take_session().await?;
        let result = read_snapshot_states(&mut session.conn)
            .await
            .map_err(mysql_error("read the snapshot table"));
        self.session = Some(session);
        result
    }
}

/// Builds the statement that records a chunk's progress in the snapshot table.
fn progress_statement(chunk: &CopyChunk, written: u64) -> String {
    let mut sql = format!(
        "UPDATE {} SET after_key = ",
        quote_mysql_ident(SNAPSHOT_TABLE)
    );
    match &chunk.after_key {
        Some(key) => write_string(&mut sql, key),
        None => sql.push_str("after_key"),
    }
    sql.push_str(&format!(", rows_copied = rows_copied + {written}"));
    if chunk.last {
        sql.push_str(", state = 'done', finished_at = UTC_TIMESTAMP(6)");
    }
    sql.push_str(" WHERE table_name = ");
    write_string(&mut sql, &chunk.table);
    sql
}

impl CopyState {
    /// Name as stored and shown.
    pub fn as_str(self) -> &'static str {
        self.name()
    }
}

/// Returns the plan of `table`, or an error when the table is not synced.
fn synced_plan<'a>(
    plans: &'a HashMap<String, TablePlan>,
    table: &str,
) -> Result<&'a TablePlan, ApplyError> {
    plans
        .get(table)
        .ok_or_else(|| ApplyError::Stored(format!("table {table} is not among the synced tables")))
}
