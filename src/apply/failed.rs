//! The failed-change log: changes that MySQL rejected for their data, set aside under the
//! `park` policy.
//!
//! # Invariants
//!
//! - The log is a table in the target database, written in the same transaction as the
//!   checkpoint. A change is therefore applied, parked or still ahead of the checkpoint, and
//!   a crash never leaves it in two of these states or in none.
//! - While a row key has a parked change, every later change of that key is parked behind it,
//!   so that the key's changes still reach MySQL in order. A parked TRUNCATE, or a TRUNCATE of a
//!   table with parked changes, parks every later change of that table.
//! - A retry applies parked changes in journal order and deletes each applied entry in the
//!   same transaction. A key's later entries are retried only after its earlier ones applied.

use std::collections::{HashMap, HashSet};

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use serde::Serialize;

use super::statement::quote_mysql_ident;
use super::value::write_string;
use crate::journal::JournalRecord;

/// Table in the target database that contains parked changes.
pub const FAILED_TABLE: &str = "pg_to_mysql_sync_failed";

/// Creates the failed-change table if it is missing.
pub async fn ensure_failed_table(conn: &mut Conn) -> Result<(), mysql_async::Error> {
    conn.query_drop(format!(
        "CREATE TABLE IF NOT EXISTS {} (
             journal_id CHAR(36) CHARACTER SET ascii NOT NULL,
             seq BIGINT UNSIGNED NOT NULL,
             table_name VARCHAR(512) NOT NULL,
             operation VARCHAR(16) CHARACTER SET ascii NOT NULL,
             row_key LONGTEXT NULL,
             error VARCHAR(1024) NOT NULL,
             error_code INT UNSIGNED NULL,
             waits_for BIGINT UNSIGNED NULL,
             attempts INT UNSIGNED NOT NULL,
             parked_at DATETIME(6) NOT NULL,
             record LONGTEXT NOT NULL,
             PRIMARY KEY (journal_id, seq)
         ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        quote_mysql_ident(FAILED_TABLE)
    ))
    .await
}

/// Drops the failed-change table.
pub async fn drop_failed_table(conn: &mut Conn) -> Result<(), mysql_async::Error> {
    conn.query_drop(format!(
        "DROP TABLE IF EXISTS {}",
        quote_mysql_ident(FAILED_TABLE)
    ))
    .await
}

/// Counts the entries of a journal; 0 when the table does not exist.
pub async fn count_failed_if_present(
    conn: &mut Conn,
    journal_id: &str,
) -> Result<u64, mysql_async::Error> {
    let mut sql = format!(
        "SELECT COUNT(*) FROM {} WHERE journal_id = ",
        quote_mysql_ident(FAILED_TABLE)
    );
    write_string(&mut sql, journal_id);
    match conn.query_first::<u64, _>(sql).await {
        Ok(count) => Ok(count.unwrap_or(0)),
        // 1146: no such table.
        Err(mysql_async::Error::Server(error)) if error.code == 1146 => Ok(0),
        Err(error) => Err(error),
    }
}

/// One parked change, as the API and the command line list it.
#[derive(Debug, Clone, Serialize)]
pub struct FailedChange {
    /// Journal sequence number of the change; the id used by retry and delete.
    pub id: u64,
    /// Source table as `schema.table`.
    pub table: String,
    /// `insert`, `update`, `delete` or `truncate`.
    pub operation: String,
    /// Primary-key values as a JSON array in key-column order; absent for a TRUNCATE and for a
    /// change of an altered table, which stand for the whole table.
    pub key: Option<serde_json::Value>,
    /// Why MySQL rejected it: the error code and SQLSTATE, or the value problem found before
    /// sending. The server's message is not kept because it can quote row values.
    pub error: String,
    /// MySQL error code, when MySQL rejected the change.
    pub error_code: Option<u16>,
    /// The earlier parked change of the same key (or table, for a TRUNCATE) that this one
    /// waits behind, if any.
    pub waits_for: Option<u64>,
    /// Apply attempts so far.
    pub attempts: u32,
    /// Time the change was parked, RFC 3339 UTC.
    pub parked_at: String,
}

/// A change to park, built while applying a batch.
#[derive(Debug, Clone)]
pub(super) struct NewFailure {
    pub(super) record: JournalRecord,
    pub(super) key: Option<String>,
    pub(super) error: String,
    pub(super) error_code: Option<u16>,
    pub(super) waits_for: Option<u64>,
}

/// Appends the INSERT of new entries to `sql`. Row values are in the record and the key, so
/// the statement is never logged.
pub(super) fn insert_statement(journal_id: &str, failures: &[NewFailure]) -> String {
    let mut sql = format!(
        "INSERT INTO {} (journal_id, seq, table_name, operation, row_key, error, error_code, \
         waits_for, attempts, parked_at, record) VALUES ",
        quote_mysql_ident(FAILED_TABLE)
    );
    for (index, failure) in failures.iter().enumerate() {
        if index > 0 {
            sql.push(',');
        }
        sql.push('(');
        write_string(&mut sql, journal_id);
        sql.push_str(&format!(",{},", failure.record.seq));
        write_string(&mut sql, &failure.record.table);
        sql.push(',');
        write_string(&mut sql, failure.record.op.name());
        sql.push(',');
        match &failure.key {
            Some(key) => write_string(&mut sql, key),
            None => sql.push_str("NULL"),
        }
        sql.push(',');
        write_string(&mut sql, &truncate_chars(&failure.error, 1024));
        // A change that only waits behind another was never tried.
        let attempts = if failure.waits_for.is_some() { 0 } else { 1 };
        sql.push_str(&format!(
            ",{},{},{attempts},UTC_TIMESTAMP(6),",
            failure
                .error_code
                .map_or_else(|| "NULL".to_string(), |code| code.to_string()),
            failure
                .waits_for
                .map_or_else(|| "NULL".to_string(), |seq| seq.to_string()),
        ));
        let record =
            serde_json::to_string(&failure.record).expect("a journal record always serializes");
        write_string(&mut sql, &record);
        sql.push(')');
    }
    // A replay after a crash before the checkpoint commit cannot meet an existing entry,
    // because the entry committed with the checkpoint. The update keeps a retry idempotent.
    sql.push_str(" ON DUPLICATE KEY UPDATE attempts = attempts");
    sql
}

fn truncate_chars(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// Lists a journal's entries in journal order.
pub(super) async fn list(
    conn: &mut Conn,
    journal_id: &str,
) -> Result<Vec<FailedChange>, mysql_async::Error> {
    let mut sql = format!(
        "SELECT seq, table_name, operation, row_key, error, error_code, waits_for, attempts, \
         DATE_FORMAT(parked_at, '%Y-%m-%dT%H:%i:%s.%fZ') FROM {} WHERE journal_id = ",
        quote_mysql_ident(FAILED_TABLE)
    );
    write_string(&mut sql, journal_id);
    sql.push_str(" ORDER BY seq");
    type Row = (
        u64,
        String,
        String,
        Option<String>,
        String,
        Option<u16>,
        Option<u64>,
        u32,
        String,
    );
    let rows: Vec<Row> = conn.query(sql).await?;

    Ok(rows
        .into_iter()
        .map(
            |(id, table, operation, key, error, error_code, waits_for, attempts, parked_at)| {
                FailedChange {
                    id,
                    table,
                    operation,
                    key: key.and_then(|text| serde_json::from_str(&text).ok()),
                    error,
                    error_code,
                    waits_for,
                    attempts,
                    parked_at,
                }
            },
        )
        .collect())
}

/// A stored entry with its record, for a retry.
pub(super) struct StoredFailure {
    pub(super) seq: u64,
    pub(super) table: String,
    pub(super) key: Option<String>,
    /// The journal record, or why it cannot be read back.
    pub(super) record: Result<JournalRecord, String>,
}

/// Reads a journal's entries with their records, in journal order.
pub(super) async fn load_for_retry(
    conn: &mut Conn,
    journal_id: &str,
) -> Result<Vec<StoredFailure>, mysql_async::Error> {
    let mut sql = format!(
        "SELECT seq, table_name, row_key, record FROM {} WHERE journal_id = ",
        quote_mysql_ident(FAILED_TABLE)
    );
    write_string(&mut sql, journal_id);
    sql.push_str(" ORDER BY seq");
    let rows: Vec<(u64, String, Option<String>, String)> = conn.query(sql).await?;

    Ok(rows
        .into_iter()
        .map(|(seq, table, key, record)| StoredFailure {
            seq,
            table,
            key,
            record: serde_json::from_str(&record)
                .map_err(|error| format!("the stored record cannot be read: {error}")),
        })
        .collect())
}

/// Builds the statement that deletes one entry.
pub(super) fn delete_statement(journal_id: &str, seq: u64) -> String {
    let mut sql = format!(
        "DELETE FROM {} WHERE journal_id = ",
        quote_mysql_ident(FAILED_TABLE)
    );
    write_string(&mut sql, journal_id);
    sql.push_str(&format!(" AND seq = {seq}"));
    sql
}

/// Builds the statement that records another failed attempt of one entry.
pub(super) fn update_statement(
    journal_id: &str,
    seq: u64,
    error: &str,
    code: Option<u16>,
) -> String {
    let mut sql = format!("UPDATE {} SET error = ", quote_mysql_ident(FAILED_TABLE));
    write_string(&mut sql, &truncate_chars(error, 1024));
    sql.push_str(&format!(
        ", error_code = {}, attempts = attempts + 1 WHERE journal_id = ",
        code.map_or_else(|| "NULL".to_string(), |code| code.to_string())
    ));
    write_string(&mut sql, journal_id);
    sql.push_str(&format!(" AND seq = {seq}"));
    sql
}

/// The keys with parked changes, which later changes must wait behind.
#[derive(Debug, Default, Clone)]
pub(super) struct ParkedKeys {
    /// Per table, each parked key and the newest parked change of it.
    keys: HashMap<String, HashMap<String, u64>>,
    /// Tables with a parked TRUNCATE, and its newest parked change.
    blocked_tables: HashMap<String, u64>,
    /// Number of entries.
    count: u64,
}

impl ParkedKeys {
    /// Reads the parked keys of a journal.
    pub(super) async fn load(
        conn: &mut Conn,
        journal_id: &str,
    ) -> Result<Self, mysql_async::Error> {
        let mut sql = format!(
            "SELECT seq, table_name, row_key FROM {} WHERE journal_id = ",
            quote_mysql_ident(FAILED_TABLE)
        );
        write_string(&mut sql, journal_id);
        sql.push_str(" ORDER BY seq");
        let rows: Vec<(u64, String, Option<String>)> = conn.query(sql).await?;
        let mut parked = ParkedKeys::default();
        for (seq, table, key) in rows {
            parked.add(&table, key.as_deref(), seq);
        }

        Ok(parked)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub(super) fn count(&self) -> u64 {
        self.count
    }

    /// Returns the newest parked change that a change of `table` with `key` (`None` for a
    /// TRUNCATE) must wait behind.
    pub(super) fn blocker(&self, table: &str, key: Option<&str>) -> Option<u64> {
        if let Some(&seq) = self.blocked_tables.get(table) {
            return Some(seq);
        }
        let keys = self.keys.get(table)?;
        match key {
            Some(key) => keys.get(key).copied(),
            // A TRUNCATE waits for every parked change of its table.
            None => keys.values().copied().max(),
        }
    }

    /// Records a parked change.
    pub(super) fn add(&mut self, table: &str, key: Option<&str>, seq: u64) {
        self.count += 1;
        match key {
            Some(key) => {
                self.keys
                    .entry(table.to_string())
                    .or_default()
                    .insert(key.to_string(), seq);
            }
            None => {
                self.blocked_tables.insert(table.to_string(), seq);
            }
        }
    }
}

/// Tracks, during a retry, the keys whose earlier entry is still parked.
#[derive(Debug, Default)]
pub(super) struct StillParked {
    keys: HashSet<(String, Option<String>)>,
    tables: HashSet<String>,
}

impl StillParked {
    pub(super) fn blocks(&self, table: &str, key: Option<&str>) -> bool {
        self.tables.contains(table)
            || match key {
                Some(key) => self
                    .keys
                    .contains(&(table.to_string(), Some(key.to_string()))),
                None => self.keys.iter().any(|(t, _)| t == table),
            }
    }

    pub(super) fn add(&mut self, table: &str, key: Option<&str>) {
        match key {
            Some(key) => {
                self.keys.insert((table.to_string(), Some(key.to_string())));
            }
            None => {
                self.tables.insert(table.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parked_key_blocks_only_its_key() {
        let mut parked = ParkedKeys::default();
        parked.add("public.items", Some("[1]"), 7);
        assert_eq!(parked.blocker("public.items", Some("[1]")), Some(7));
        assert_eq!(parked.blocker("public.items", Some("[2]")), None);
        assert_eq!(parked.blocker("public.other", Some("[1]")), None);
        assert_eq!(parked.count(), 1);
    }

    #[test]
    fn truncate_waits_for_parked_keys() {
        let mut parked = ParkedKeys::default();
        parked.add("public.items", Some("[1]"), 7);
        parked.add("public.items", Some("[2]"), 9);
        assert_eq!(parked.blocker("public.items", None), Some(9));
    }

    #[test]
    fn parked_truncate_blocks_whole_table() {
        let mut parked = ParkedKeys::default();
        parked.add("public.items", None, 11);
        assert_eq!(parked.blocker("public.items", Some("[5]")), Some(11));
        assert_eq!(parked.blocker("public.other", Some("[5]")), None);
    }

    #[test]
    fn still_parked_follows_keys_and_tables() {
        let mut still = StillParked::default();
        still.add("public.items", Some("[1]"));
        assert!(still.blocks("public.items", Some("[1]")));
        assert!(!still.blocks("public.items", Some("[2]")));
        assert!(still.blocks("public.items", None));
        still.add("public.other", None);
        assert!(still.blocks("public.other", Some("[3]")));
    }
}
