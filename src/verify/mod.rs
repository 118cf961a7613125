//! Verify: proof that MySQL holds what PostgreSQL holds, and the repair of what differs.
//!
//! # Method
//!
//! A table is read from PostgreSQL in primary-key chunks, in the capture form (see
//! [`crate::snapshot::source`]). For each chunk, MySQL returns the rows with those keys, and
//! every value is compared in normalized form ([`normal`]): PostgreSQL's value as the literal
//! apply would write, MySQL's as it stores it. A second pass reads every key in MySQL and
//! finds the rows PostgreSQL does not have. Keyless tables are compared as multisets of rows.
//!
//! # Live changes
//!
//! Both sides change while a table is read, so a row can differ only because its change is
//! on its way. Every difference is therefore checked again:
//!
//! 1. the apply task starts watching the table, and its applied position `A` is noted;
//! 2. the differing rows are read again from PostgreSQL;
//! 3. capture is flushed and apply catches up, so MySQL holds every change that the reads of
//!    step 2 saw;
//! 4. the rows are read again from MySQL and compared.
//!
//! A row that a change reached after `A` is reported as in flight, not as a difference. For
//! any other row, MySQL has taken no change since step 1 and holds all that step 2 saw, so a
//! remaining difference is real.
//!
//! # Repair
//!
//! With `--repair`, the rows read in step 2 are written, and the extra rows deleted, by the
//! apply task in the same way as a snapshot chunk, between two journal batches, skipping the
//! rows the watch saw change. Live changes therefore keep their order around the repair.

pub mod normal;

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::time::Instant;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::apply::{ChunkOutcome, CopyChunk, Literals, RunError, TablePlan, canonical_key_value};
use crate::capture::connect_pg;
use crate::journal::{JournalRecord, Operation};
use crate::schema::TableSchema;
use crate::snapshot::source::{CAPTURE_SESSION_SETTINGS, SourceError, SourceReader};
use crate::snapshot::{CopyContext, SnapshotError};
use crate::status::{DriftStatus, TableDrift};
use normal::{Norm, from_literal, from_mysql, mysql_expression, norm_of};

/// Options of a verify run.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Write the differing rows again from PostgreSQL, and delete extra rows.
    pub repair: bool,
    /// Most differing keys listed per table.
    pub max_keys: usize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            repair: false,
            max_keys: 100,
        }
    }
}

/// Failure of a verify run as a whole.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// PostgreSQL could not be reached.
    #[error(transparent)]
    Connect(#[from] crate::capture::ConnectError),
    /// MySQL failed.
    #[error("failed to {action}: {}", crate::apply::describe_mysql_error(.cause))]
    Mysql {
        /// What failed.
        action: String,
        /// The cause, kept out of error chains (see [`crate::apply::ApplyError`]).
        cause: mysql_async::Error,
    },
    /// Rows could not be read from PostgreSQL.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The apply or capture stage failed.
    #[error("{0}")]
    Pipeline(String),
    /// A row could not be turned into MySQL values.
    #[error(transparent)]
    Plan(#[from] crate::apply::PlanError),
    /// A stop was requested.
    #[error("the verify run was interrupted")]
    Interrupted,
}

impl From<RunError> for VerifyError {
    fn from(error: RunError) -> Self {
        VerifyError::Pipeline(error.to_string())
    }
}

impl From<SnapshotError> for VerifyError {
    fn from(error: SnapshotError) -> Self {
        VerifyError::Pipeline(error.to_string())
    }
}

fn mysql_error(action: impl Into<String>) -> impl FnOnce(mysql_async::Error) -> VerifyError {
    let action = action.into();
    move |cause| VerifyError::Mysql { action, cause }
}

/// Kind of a difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiffKind {
    /// The row exists on both sides with other values.
    Changed,
    /// MySQL lacks the row.
    Missing,
    /// MySQL has a row that PostgreSQL lacks.
    Extra,
}

impl DiffKind {
    /// Returns the kind's name as reports and metrics write it.
    pub fn as_str(self) -> &'static str {
        match self {
            DiffKind::Changed => "changed",
            DiffKind::Missing => "missing",
            DiffKind::Extra => "extra",
        }
    }
}

/// A differing row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiffKey {
    /// What differs.
    pub kind: DiffKind,
    /// The key values, in key-column order, in PostgreSQL's JSON form.
    pub key: serde_json::Value,
}

/// Result of one table.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TableReport {
    /// Source table as `schema.table`.
    pub table: String,
    /// Rows read from PostgreSQL.
    pub rows_compared: u64,
    /// Rows read from MySQL.
    pub mysql_rows: u64,
    /// Rows with other values in MySQL.
    pub changed: u64,
    /// Rows MySQL lacks.
    pub missing: u64,
    /// Rows only MySQL has.
    pub extra: u64,
    /// Rows that differed while changes to them were on their way; not counted as drift.
    pub in_flight: u64,
    /// Rows written or deleted by the repair.
    pub repaired: u64,
    /// Differing keys, at most the run's limit.
    pub keys: Vec<DiffKey>,
    /// Whether more keys differ than are listed.
    pub keys_truncated: bool,
    /// Reason the table could not be compared.
    pub error: Option<String>,
    /// Duration in seconds.
    pub seconds: f64,
}

impl TableReport {
    /// Rows that differ.
    pub fn differences(&self) -> u64 {
        self.changed + self.missing + self.extra
    }
}

/// Result of a verify run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VerifyReport {
    /// One entry per table, in the order compared.
    pub tables: Vec<TableReport>,
}

impl VerifyReport {
    /// Rows that differ, over all tables.
    pub fn differences(&self) -> u64 {
        self.tables.iter().map(TableReport::differences).sum()
    }

    /// Rows compared, over all tables.
    pub fn rows_compared(&self) -> u64 {
        self.tables.iter().map(|table| table.rows_compared).sum()
    }

    /// Tells whether both sides are equal and every table could be compared.
    pub fn is_clean(&self) -> bool {
        self.tables
            .iter()
            .all(|table| table.differences() == 0 && table.error.is_none())
    }

    /// Returns the summary for `/status` and the metrics. Repaired rows no longer count as
    /// drift.
    pub fn drift(&self) -> DriftStatus {
        DriftStatus {
            finished_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            tables: self
                .tables
                .iter()
                .map(|table| TableDrift {
                    table: table.table.clone(),
                    rows_compared: table.rows_compared,
                    differences: table.differences().saturating_sub(table.repaired),
                    error: table.error.clone(),
                })
                .collect(),
        }
    }
}

/// Compares `schemas` one after another. A table that cannot be compared gets an error in
/// the report, and the next one goes on.
pub async fn verify_tables(
    context: &CopyContext,
    schemas: &[TableSchema],
    options: &VerifyOptions,
    shutdown: &CancellationToken,
) -> Result<VerifyReport, VerifyError> {
    let mut mysql = crate::apply::connect(&context.mysql_url)
        .await
        .map_err(mysql_error("connect to MySQL"))?;
    let plans = crate::apply::prepare_plans(&mut mysql, schemas, context.value_policy)
        .await
        .map_err(mysql_error("read the target table definitions"))?;
    let mut pg = connect_pg(&context.pg_url).await?.client;
    pg.batch_execute(CAPTURE_SESSION_SETTINGS)
        .await
        .map_err(|source| SourceError::Postgres {
            action: "set the session settings for reading".into(),
            source,
        })?;
    let postgis = crate::capture::postgis_schema(&pg)
        .await
        .map_err(|source| SourceError::Postgres {
            action: "look up the PostGIS schema".into(),
            source,
        })?;

    let mut report = VerifyReport::default();
    for schema in schemas {
        if shutdown.is_cancelled() {
            return Err(VerifyError::Interrupted);
        }
        let table = schema.name.qualified();
        let plan = &plans[&table];
        let started = Instant::now();
        let mut run = TableRun {
            context,
            plan,
            options,
            mysql: &mut mysql,
            pg: &mut pg,
            postgis: postgis.as_deref(),
            report: TableReport {
                table: table.clone(),
                ..TableReport::default()
            },
            norms: (0..plan.schema.columns.len())
                .map(|index| norm_of(plan, index))
                .collect(),
        };
        let result = if schema.keyless {
            run.keyless(shutdown).await
        } else {
            run.keyed(shutdown).await
        };
        let mut table_report = run.report;
        if let Err(error) = result {
            if matches!(error, VerifyError::Interrupted) {
                return Err(error);
            }
            table_report.error = Some(error.to_string());
        }
        table_report.seconds = started.elapsed().as_secs_f64();
        info!(
            table = %table,
            rows = table_report.rows_compared,
            changed = table_report.changed,
            missing = table_report.missing,
            extra = table_report.extra,
            in_flight = table_report.in_flight,
            repaired = table_report.repaired,
            seconds = table_report.seconds,
            "verified table"
        );
        report.tables.push(table_report);
    }

    Ok(report)
}

/// Normalized values of one row, in column order.
type Values = Vec<Option<String>>;

/// A row of a chunk from PostgreSQL, normalized.
struct SourceRow {
    record: JournalRecord,
    /// Key in the capture form, as the watch records it.
    key: String,
    /// Normalized key values, to match MySQL rows.
    normal_key: String,
    values: Values,
    /// The key's literals, as one value or a `(a,b)` tuple, for an `IN` list in MySQL.
    condition: String,
}

/// A difference found in the first pass.
enum Candidate {
    /// Keyed by the capture form of the key.
    Source(String),
    /// A MySQL row without a PostgreSQL row: its key values as MySQL returned them.
    Extra(Vec<Option<String>>),
}

struct TableRun<'a> {
    context: &'a CopyContext,
    plan: &'a TablePlan,
    options: &'a VerifyOptions,
    mysql: &'a mut Conn,
    pg: &'a mut Client,
    postgis: Option<&'a str>,
    report: TableReport,
    /// The normalization of each column's values, by column position.
    norms: Vec<Norm>,
}

impl TableRun<'_> {
    fn norms(&self) -> Vec<Norm> {
        self.norms.clone()
    }

    /// Returns the MySQL select list of the columns at `positions`.
    fn mysql_columns(&self, positions: &[usize]) -> String {
        let norms = self.norms();
        positions
            .iter()
            .map(|&index| {
                let column = &self.plan.schema.columns[index];
                mysql_expression(&column.target, norms[index], self.plan.long_lat_axis())
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Positions of the columns written to MySQL.
    fn written_columns(&self) -> Vec<usize> {
        let ignored = &self.plan.schema.ignored_columns;
        (0..self.plan.schema.columns.len())
            .filter(|&index| !ignored.contains(&self.plan.schema.columns[index].name))
            .collect()
    }

    /// Normalizes a row read from PostgreSQL.
    fn source_row(
        &self,
        record: JournalRecord,
        written: &[usize],
    ) -> Result<SourceRow, VerifyError> {
        let norms = &self.norms;
        let mut literals = Literals::default();
        self.plan.write_literals(&record, &mut literals)?;
        let mut by_column: Vec<Option<&str>> = vec![None; norms.len()];
        for (index, literal) in literals.iter() {
            by_column[index] = Some(literal);
        }
        let normalize = |index: usize| by_column[index].and_then(|l| from_literal(norms[index], l));
        let values: Values = written.iter().map(|&index| normalize(index)).collect();
        let normal_key = self
            .plan
            .schema
            .key
            .iter()
            .map(|&index| normalize(index).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\u{1f}");
        let key = self
            .plan
            .record_key(&record)?
            .expect("an insert record has a key");
        let condition = self.key_tuple(|index| by_column[index]);
        Ok(SourceRow {
            key,
            normal_key,
            values,
            condition,
            record,
        })
    }

    /// Reads the MySQL rows of `rows` by key, normalized, keyed by the normalized key.
    async fn mysql_rows(
        &mut self,
        conditions: &[&str],
        written: &[usize],
    ) -> Result<HashMap<String, Values>, VerifyError> {
        if conditions.is_empty() {
            return Ok(HashMap::new());
        }
        let norms = self.norms();
        let schema = &self.plan.schema;
        let key_positions: Vec<usize> = schema
            .key
            .iter()
            .map(|index| {
                written
                    .iter()
                    .position(|w| w == index)
                    .expect("key columns are written")
            })
            .collect();
        let key_columns: Vec<String> = schema
            .key_columns()
            .map(|column| crate::apply::quote_mysql_ident(&column.target))
            .collect();
        let filter = if key_columns.len() == 1 {
            format!("{} IN ({})", key_columns[0], conditions.join(","))
        } else {
            format!("({}) IN ({})", key_columns.join(","), conditions.join(","))
        };
        let sql = format!(
            "SELECT {} FROM {} WHERE {filter}",
            self.mysql_columns(written),
            schema.target_sql()
        );
        let rows: Vec<mysql_async::Row> = self
            .mysql
            .query(sql)
            .await
            .map_err(mysql_error(format!("read rows of {}", schema.target_sql())))?;
        let mut found = HashMap::with_capacity(rows.len());
        for row in rows {
            let values: Values = written
                .iter()
                .enumerate()
                .map(|(position, &index)| from_mysql(norms[index], raw_bytes(&row, position)))
                .collect();
            let key = key_positions
                .iter()
                .map(|&position| values[position].clone().unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\u{1f}");
            found.insert(key, values);
        }
        Ok(found)
    }

    /// Compares a table with a key.
    async fn keyed(&mut self, shutdown: &CancellationToken) -> Result<(), VerifyError> {
        let schema = self.plan.schema.clone();
        let reader = SourceReader::new(&schema, self.postgis)?;
        let written = self.written_columns();
        let chunk_rows = self.context.chunk_rows;
        let mut seen: HashSet<u64> = HashSet::new();
        let mut candidates: Vec<Candidate> = Vec::new();
        let mut after: Option<String> = None;

        // First pass: every PostgreSQL row against MySQL.
        loop {
            if shutdown.is_cancelled() {
                return Err(VerifyError::Interrupted);
            }
            let query = reader.chunk_query(after.as_deref(), chunk_rows)?;
            let chunk = reader.read_alone(self.pg, &query, true).await?;
            let count = chunk.rows.len();
            let rows = chunk
                .rows
                .into_iter()
                .map(|record| self.source_row(record, &written))
                .collect::<Result<Vec<_>, _>>()?;
            let conditions: Vec<&str> = rows.iter().map(|row| row.condition.as_str()).collect();
            let found = self.mysql_rows(&conditions, &written).await?;
            for row in &rows {
                seen.insert(hash_of(&row.normal_key));
                if found.get(&row.normal_key) != Some(&row.values) {
                    candidates.push(Candidate::Source(row.key.clone()));
                }
            }
            self.report.rows_compared += count as u64;
            if count < chunk_rows {
                break;
            }
            after = chunk.last_key;
        }

        // Second pass: every MySQL key against the PostgreSQL keys.
        let norms = self.norms();
        let key_sql = schema
            .key
            .iter()
            .map(|&index| mysql_expression(&schema.columns[index].target, norms[index], false))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!("SELECT {key_sql} FROM {}", schema.target_sql());
        let mut result = self
            .mysql
            .query_iter(sql)
            .await
            .map_err(mysql_error(format!(
                "read the keys of {}",
                schema.target_sql()
            )))?;
        let mut extras = Vec::new();
        let mut mysql_rows = 0;
        while let Some(row) = result.next().await.map_err(mysql_error(format!(
            "read the keys of {}",
            schema.target_sql()
        )))? {
            mysql_rows += 1;
            let raw: Vec<Option<String>> = (0..schema.key.len())
                .map(|position| {
                    raw_bytes(&row, position).map(|b| String::from_utf8_lossy(b).into_owned())
                })
                .collect();
            let normal = schema
                .key
                .iter()
                .zip(&raw)
                .map(|(&index, value)| {
                    from_mysql(norms[index], value.as_deref().map(str::as_bytes))
                        .unwrap_or_default()
                })
                .collect::<Vec<_>>()
                .join("\u{1f}");
            if !seen.contains(&hash_of(&normal)) {
                extras.push(Candidate::Extra(raw));
            }
        }
        drop(result);
        self.report.mysql_rows = mysql_rows;
        candidates.extend(extras);
        if candidates.is_empty() {
            return Ok(());
        }
        self.recheck(&reader, &written, candidates).await
    }

    /// Checks the differences of the first pass again, with the watch described in the
    /// module notes, then counts, lists and repairs those that remain.
    async fn recheck(
        &mut self,
        reader: &SourceReader,
        written: &[usize],
        candidates: Vec<Candidate>,
    ) -> Result<(), VerifyError> {
        let table = self.plan.schema.name.qualified();
        let apply = self.context.apply.clone();
        let watch_from = apply.start_watch(&table).await?;
        let result = self
            .recheck_watched(reader, written, candidates, watch_from)
            .await;
        apply.end_watch(&table).await;
        result
    }

    async fn recheck_watched(
        &mut self,
        reader: &SourceReader,
        written: &[usize],
        candidates: Vec<Candidate>,
        watch_from: u64,
    ) -> Result<(), VerifyError> {
        let schema = self.plan.schema.clone();
        let table = schema.name.qualified();
        // Keys in the capture form; extra rows get theirs from PostgreSQL's own conversion.
        let mut keys: Vec<String> = Vec::new();
        for candidate in candidates {
            match candidate {
                Candidate::Source(key) => keys.push(key),
                Candidate::Extra(values) => keys.push(self.capture_key(&values).await?),
            }
        }
        keys.sort();
        keys.dedup();

        // Step 2: the rows as PostgreSQL has them now.
        let mut source: HashMap<String, SourceRow> = HashMap::new();
        for batch in keys.chunks(self.context.chunk_rows.max(1)) {
            let query = reader.keys_query(batch)?;
            let chunk = reader.read_alone(self.pg, &query, false).await?;
            for record in chunk.rows {
                let row = self.source_row(record, written)?;
                source.insert(canonical_key(&schema, &row.key), row);
            }
        }

        // Step 3: MySQL catches up with everything those reads saw.
        let through = self
            .context
            .capture
            .flush()
            .await
            .ok_or_else(|| VerifyError::Pipeline("the capture stage stopped".into()))?;
        self.context.apply.sync().await?;

        // Step 4: MySQL's rows, compared again.
        let mut conditions = Vec::with_capacity(keys.len());
        let mut delete_records = HashMap::new();
        for key in &keys {
            let canonical = canonical_key(&schema, key);
            match source.get(&canonical) {
                Some(row) => conditions.push(row.condition.clone()),
                None => {
                    let record = self.delete_record(key)?;
                    let literals: HashMap<usize, String> = self
                        .plan
                        .literals(&insert_form(&record))?
                        .into_iter()
                        .collect();
                    conditions
                        .push(self.key_tuple(|index| literals.get(&index).map(String::as_str)));
                    delete_records.insert(canonical, record);
                }
            }
        }
        let mut target: HashMap<String, Values> = HashMap::new();
        for batch in conditions.chunks(self.context.chunk_rows.max(1)) {
            let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
            target.extend(self.mysql_rows(&refs, written).await?);
        }
        let (moved, truncated) = self.context.apply.watched_keys(&table, watch_from).await?;
        let moved: HashSet<String> = moved
            .iter()
            .map(|key| canonical_key(&schema, key))
            .collect();

        let mut repair_rows = Vec::new();
        let mut repair_deletes = Vec::new();
        for key in &keys {
            let canonical = canonical_key(&schema, key);
            if truncated || moved.contains(&canonical) {
                self.report.in_flight += 1;
                continue;
            }
            let kind = match source.get(&canonical) {
                Some(row) => match target.get(&row.normal_key) {
                    Some(values) if *values == row.values => continue,
                    Some(_) => DiffKind::Changed,
                    None => DiffKind::Missing,
                },
                None => {
                    let record = &delete_records[&canonical];
                    if target.contains_key(&self.normal_key_of(record)?) {
                        DiffKind::Extra
                    } else {
                        continue;
                    }
                }
            };
            match kind {
                DiffKind::Changed => self.report.changed += 1,
                DiffKind::Missing => self.report.missing += 1,
                DiffKind::Extra => self.report.extra += 1,
            }
            if self.report.keys.len() < self.options.max_keys {
                self.report.keys.push(DiffKey {
                    kind,
                    key: serde_json::from_str(key).unwrap_or(serde_json::Value::Null),
                });
            } else {
                self.report.keys_truncated = true;
            }
            match source.remove(&canonical) {
                Some(row) => repair_rows.push(row.record),
                None => {
                    repair_deletes.push(delete_records.remove(&canonical).expect("listed above"))
                }
            }
        }

        if self.options.repair && !(repair_rows.is_empty() && repair_deletes.is_empty()) {
            let outcome = self
                .context
                .apply
                .copy_chunk(CopyChunk {
                    table: table.clone(),
                    rows: repair_rows,
                    read_from: watch_from,
                    through,
                    after_key: None,
                    last: false,
                    replace_all: false,
                    deletes: repair_deletes,
                    snapshot: false,
                    prepared: None,
                })
                .await?;
            if let ChunkOutcome::Written { written, .. } = outcome {
                self.report.repaired = written;
            }
        }
        Ok(())
    }

    /// Returns the key's literals as one value, or as a `(a,b)` tuple for a longer key.
    fn key_tuple<'s>(&self, literal: impl Fn(usize) -> Option<&'s str>) -> String {
        let values: Vec<&str> = self
            .plan
            .schema
            .key
            .iter()
            .map(|&index| literal(index).unwrap_or("NULL"))
            .collect();
        if values.len() == 1 {
            values[0].to_string()
        } else {
            format!("({})", values.join(","))
        }
    }

    /// Returns the normalized key values of a delete record, to match MySQL rows.
    fn normal_key_of(&self, record: &JournalRecord) -> Result<String, VerifyError> {
        let norms = self.norms();
        let literals: HashMap<usize, String> = self
            .plan
            .literals(&insert_form(record))?
            .into_iter()
            .collect();
        Ok(self
            .plan
            .schema
            .key
            .iter()
            .map(|index| {
                literals
                    .get(index)
                    .and_then(|literal| from_literal(norms[*index], literal))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\u{1f}"))
    }

    /// Returns the capture form of a key that MySQL holds, as PostgreSQL converts its text.
    async fn capture_key(&mut self, values: &[Option<String>]) -> Result<String, VerifyError> {
        let schema = &self.plan.schema;
        let norms = self.norms();
        let mut expressions = Vec::with_capacity(values.len());
        for (&index, value) in schema.key.iter().zip(values) {
            let column = &schema.columns[index];
            let text = value.clone().unwrap_or_default();
            let text = match norms[index] {
                Norm::Binary if column.pg_type == crate::schema::PgType::Bytea => {
                    format!("\\x{text}")
                }
                _ => text,
            };
            let cast = match column.pg_type {
                crate::schema::PgType::Money => "numeric".to_string(),
                _ => column.type_display.clone(),
            };
            expressions.push(format!(
                "to_json('{}'::{cast})::text",
                text.replace('\'', "''")
            ));
        }
        let sql = format!("SELECT {}", expressions.join(", "));
        let row = self
            .pg
            .query_one(&sql, &[])
            .await
            .map_err(|source| SourceError::Postgres {
                action: format!("convert a MySQL key of {} to PostgreSQL", schema.name),
                source,
            })?;
        let parts: Vec<String> = (0..values.len()).map(|i| row.get::<_, String>(i)).collect();
        Ok(format!("[{}]", parts.join(",")))
    }

    /// Builds a delete record for a key in the capture form.
    fn delete_record(&self, key: &str) -> Result<JournalRecord, VerifyError> {
        let schema = &self.plan.schema;
        let values: Vec<Box<RawValue>> = serde_json::from_str(key).map_err(|_| {
            VerifyError::Pipeline(format!("a key of {} is not a JSON array", schema.name))
        })?;
        let pairs: Vec<(std::borrow::Cow<'_, str>, &RawValue)> = schema
            .key_columns()
            .zip(&values)
            .map(|(column, value)| {
                (
                    std::borrow::Cow::Borrowed(column.name.as_str()),
                    value.as_ref(),
                )
            })
            .collect();
        Ok(JournalRecord {
            seq: 0,
            batch: 0,
            xid: 0,
            cid: 0,
            table: schema.name.qualified(),
            op: Operation::Delete,
            new: None,
            old: Some(crate::journal::write_row_image(&pairs)),
        })
    }

    /// Compares a keyless table as a multiset of rows, and copies it again when asked to
    /// repair a difference.
    async fn keyless(&mut self, shutdown: &CancellationToken) -> Result<(), VerifyError> {
        let schema = self.plan.schema.clone();
        let reader = SourceReader::new(&schema, self.postgis)?;
        let written = self.written_columns();
        let mut differences = self.count_keyless(&reader, &written).await?;
        if differences > 0 {
            // Changes on their way are the usual cause; compare once more after they land.
            self.context
                .capture
                .flush()
                .await
                .ok_or_else(|| VerifyError::Pipeline("the capture stage stopped".into()))?;
            self.context.apply.sync().await?;
            differences = self.count_keyless(&reader, &written).await?;
        }
        self.report.changed = differences;
        if differences > 0 && self.options.repair {
            let sink: std::sync::Arc<dyn crate::snapshot::ProgressSink> =
                std::sync::Arc::new(crate::snapshot::LogProgress::default());
            let copied =
                crate::snapshot::copy_table(self.context, &schema, &sink, shutdown).await?;
            self.report.repaired = copied.rows;
        }
        Ok(())
    }

    /// Counts rows that one side has more often than the other.
    async fn count_keyless(
        &mut self,
        reader: &SourceReader,
        written: &[usize],
    ) -> Result<u64, VerifyError> {
        let norms = self.norms();
        let mut counts: HashMap<u64, i64> = HashMap::new();
        let tx = self
            .pg
            .transaction()
            .await
            .map_err(|source| SourceError::Postgres {
                action: "begin a read transaction".into(),
                source,
            })?;
        let chunk = reader.read(&tx, &reader.all_query(), false).await?;
        tx.commit().await.map_err(|source| SourceError::Postgres {
            action: "end a read transaction".into(),
            source,
        })?;
        self.report.rows_compared = chunk.rows.len() as u64;
        for record in &chunk.rows {
            let literals: HashMap<usize, String> =
                self.plan.literals(record)?.into_iter().collect();
            let values: Values = written
                .iter()
                .map(|index| {
                    literals
                        .get(index)
                        .and_then(|l| from_literal(norms[*index], l))
                })
                .collect();
            *counts.entry(hash_of(&values)).or_default() += 1;
        }
        let sql = format!(
            "SELECT {} FROM {}",
            self.mysql_columns(written),
            self.plan.schema.target_sql()
        );
        let rows: Vec<mysql_async::Row> = self.mysql.query(sql).await.map_err(mysql_error(
            format!("read rows of {}", self.plan.schema.target_sql()),
        ))?;
        self.report.mysql_rows = rows.len() as u64;
        for row in rows {
            let values: Values = written
                .iter()
                .enumerate()
                .map(|(position, &index)| from_mysql(norms[index], raw_bytes(&row, position)))
                .collect();
            *counts.entry(hash_of(&values)).or_default() -= 1;
        }
        Ok(counts.values().map(|count| count.unsigned_abs()).sum())
    }
}

/// Returns a delete record as an insert of its key columns, whose literals the plan writes
/// as it writes a row's.
fn insert_form(record: &JournalRecord) -> JournalRecord {
    JournalRecord {
        op: Operation::Insert,
        new: record.old.clone(),
        old: None,
        ..record.clone()
    }
}

/// Returns the key in the capture form with numeric values canonical, as the watch has it.
fn canonical_key(schema: &TableSchema, key: &str) -> String {
    let Ok(values) = serde_json::from_str::<Vec<Box<RawValue>>>(key) else {
        return key.to_string();
    };
    let parts: Vec<String> = schema
        .key_columns()
        .zip(&values)
        .map(|(column, value)| canonical_key_value(column.pg_type, value.get()).into_owned())
        .collect();
    format!("[{}]", parts.join(","))
}

fn raw_bytes(row: &mysql_async::Row, position: usize) -> Option<&[u8]> {
    match row.as_ref(position)? {
        mysql_async::Value::Bytes(bytes) => Some(bytes),
        _ => None,
    }
}

fn hash_of(value: &impl Hash) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}
