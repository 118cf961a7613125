//! Turning journal records into MySQL statements.
//!
//! Records keep their order. Consecutive changes of one kind to one table merge into one
//! multi-row statement, which is safe because:
//! - inserts and updates both become an upsert of the full row image (`INSERT … ON DUPLICATE
//!   KEY UPDATE`), and within one such statement MySQL applies rows in order, so the last image
//!   of a key wins, as it did in PostgreSQL;
//! - deletes of several keys commute with each other.
//!
//! A statement is closed when it reaches [`StatementLimits::max_rows`] rows or
//! [`StatementLimits::max_bytes`] bytes, the latter kept below `max_allowed_packet`. Values are
//! written as literals (see [`super::value`]), so no placeholder limit applies.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::value::RawValue;

use super::value::{
    check_decimal_scale, replacement_for, write_geometry, write_literal, write_number_as_text,
    write_uuid_bytes,
};
use crate::config::ValuePolicy;
use crate::journal::{JournalRecord, Operation, parse_row_image};
use crate::schema::{PgType, TableSchema, TxidSnapshot};

/// Size limits for one statement.
#[derive(Debug, Clone, Copy)]
pub struct StatementLimits {
    /// Maximum rows in one multi-row statement.
    pub max_rows: usize,
    /// Maximum bytes in one statement. A single row larger than this is an error.
    pub max_bytes: usize,
}

/// Failure to turn a batch into statements. Nothing was sent to MySQL.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PlanError {
    /// The record names a table that is not synced.
    #[error(
        "the journal holds a change of table {table}, which is not among the tables this \
         process read at start. If you added it to SYNC_TABLES, run setup and restart the \
         daemon; if you removed it, add it back until its changes are applied"
    )]
    UnknownTable {
        /// The table.
        table: String,
    },
    /// The row image does not match the table definition read at start.
    #[error(
        "a change of table {table} (journal record {seq}) does not match the table definition \
         read at start: {detail}. The PostgreSQL table was altered; make the same change to the \
         MySQL table and restart the daemon"
    )]
    ShapeMismatch {
        /// The table.
        table: String,
        /// The journal sequence number.
        seq: u64,
        /// Which column differs.
        detail: String,
    },
    /// A value cannot be stored exactly in MySQL.
    #[error("column {column} of table {table} (journal record {seq}): {reason}")]
    Value {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// The journal sequence number.
        seq: u64,
        /// Problem found, without the value.
        reason: String,
    },
    /// One row needs a statement larger than `max_allowed_packet` allows.
    #[error(
        "a change of table {table} (journal record {seq}) needs a {bytes}-byte statement, more \
         than the {max_bytes} bytes allowed; raise max_allowed_packet on the MySQL server"
    )]
    RowTooLarge {
        /// The table.
        table: String,
        /// The journal sequence number.
        seq: u64,
        /// The statement size.
        bytes: usize,
        /// The limit.
        max_bytes: usize,
    },
}

/// How to write to one target table, derived once from its PostgreSQL definition.
#[derive(Debug, Clone)]
pub struct TablePlan {
    /// The source definition.
    pub schema: TableSchema,
    /// `INSERT INTO `t` (`a`,`b`) VALUES ` prefix.
    insert_prefix: String,
    /// ` ON DUPLICATE KEY UPDATE …` suffix.
    upsert_suffix: String,
    /// `DELETE FROM `t` WHERE ` prefix, with `key IN (` for a single-column key.
    delete_prefix: String,
    /// Per column, the digits after the decimal point that the MySQL column keeps, for
    /// `numeric` and `money` columns whose target is a DECIMAL or integer type.
    target_scales: Vec<Option<u32>>,
    /// Whether geometries need MySQL 8's `axis-order=long-lat` option (see `write_geometry`).
    long_lat_axis: bool,
    /// Per column, whether the MySQL column is a text type, for `numeric` and `money` columns:
    /// their digits are then written as a string, which keeps values beyond DECIMAL(65,30)
    /// and NaN exact.
    text_targets: Vec<bool>,
    /// Per column, whether the MySQL column is BINARY or VARBINARY, for `uuid` columns: the
    /// 16 bytes are then written instead of the text.
    binary_targets: Vec<bool>,
    /// Replacements for values MySQL cannot store.
    value_policy: ValuePolicy,
    /// Snapshot taken before the table definition was read. A change committed after it that
    /// lacks a column was made after a `DROP COLUMN`, not before an `ADD COLUMN`.
    schema_snapshot: Option<TxidSnapshot>,
    /// Whether the target has a unique index besides the primary key. Upserts then use an
    /// UPDATE by primary key and an INSERT of a missing row, because `INSERT … ON DUPLICATE
    /// KEY UPDATE` would match a row by any unique index and could update a different row.
    guarded: bool,
}

impl TablePlan {
    /// Prepares the statement parts for a table, with the MySQL names of the table and its
    /// columns (the PostgreSQL names unless the mapping file renames them).
    pub fn new(schema: TableSchema) -> Self {
        let table = schema.target_sql();
        let columns: Vec<String> = schema
            .columns
            .iter()
            .map(|c| quote_mysql_ident(&c.target))
            .collect();
        let key_targets: Vec<&str> = schema.key_columns().map(|c| c.target.as_str()).collect();
        // VALUES(col) rather than an alias: MariaDB has no `AS new` row alias. Key columns
        // are assigned too when every column is part of the key, since the clause needs one.
        let mut updates: Vec<String> = schema
            .columns
            .iter()
            .filter(|c| !key_targets.contains(&c.target.as_str()))
            .map(|c| format!("{0}=VALUES({0})", quote_mysql_ident(&c.target)))
            .collect();
        if updates.is_empty() {
            updates.push(format!(
                "{0}=VALUES({0})",
                quote_mysql_ident(key_targets[0])
            ));
        }

        TablePlan {
            target_scales: vec![None; schema.columns.len()],
            long_lat_axis: false,
            text_targets: vec![false; schema.columns.len()],
            binary_targets: vec![false; schema.columns.len()],
            value_policy: ValuePolicy::default(),
            schema_snapshot: None,
            guarded: false,
            insert_prefix: format!("INSERT INTO {table} ({}) VALUES ", columns.join(",")),
            // A keyless table has no key to update by: its rows are plain inserts.
            upsert_suffix: if schema.keyless {
                String::new()
            } else {
                format!(" ON DUPLICATE KEY UPDATE {}", updates.join(","))
            },
            // Single-column keys use `key IN (…)`, which MySQL turns into index lookups.
            delete_prefix: match key_targets.as_slice() {
                [key] => format!("DELETE FROM {table} WHERE {} IN (", quote_mysql_ident(key)),
                _ => format!("DELETE FROM {table} WHERE "),
            },
            schema,
        }
    }

    /// Records the scale of the MySQL column for a `numeric` or `money` column.
    pub fn set_target_scale(&mut self, column: &str, scale: u32) {
        let position = self
            .schema
            .columns
            .iter()
            .position(|c| c.target.eq_ignore_ascii_case(column));
        if let Some(index) = position.filter(|&i| {
            matches!(
                self.schema.columns[i].pg_type,
                PgType::Numeric | PgType::Money
            )
        }) {
            self.target_scales[index] = Some(scale);
        }
    }

    /// Records the MySQL data type of a column, which decides how `numeric`, `money` and
    /// `uuid` values are written.
    pub fn set_target_type(&mut self, column: &str, data_type: &str) {
        let Some(index) = self
            .schema
            .columns
            .iter()
            .position(|c| c.target.eq_ignore_ascii_case(column))
        else {
            return;
        };
        let data_type = data_type.to_ascii_lowercase();
        let text = matches!(
            data_type.as_str(),
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext"
        );
        let binary = matches!(data_type.as_str(), "binary" | "varbinary");
        self.text_targets[index] = text
            && matches!(
                self.schema.columns[index].pg_type,
                PgType::Numeric | PgType::Money
            );
        self.binary_targets[index] = binary && self.schema.columns[index].pg_type == PgType::Uuid;
    }

    /// Records the snapshot taken before the table definition was read.
    pub fn set_schema_snapshot(&mut self, snapshot: TxidSnapshot) {
        self.schema_snapshot = Some(snapshot);
    }

    /// Sets what to write for values MySQL cannot store.
    pub fn set_value_policy(&mut self, policy: ValuePolicy) {
        self.value_policy = policy;
    }

    /// Tells the plan whether the target table has a unique index besides the primary key.
    pub fn set_secondary_unique(&mut self, present: bool) {
        // Keyless tables are written with plain inserts, which never update a row.
        self.guarded = present && !self.schema.keyless;
    }

    /// Tells the plan whether the server is MySQL rather than MariaDB, which changes how
    /// geometries are written.
    pub fn set_mysql_server(&mut self, is_mysql: bool) {
        self.long_lat_axis = is_mysql;
    }

    /// Writes the literal of column `index`, checked against the target column's scale.
    fn write_value(
        &self,
        record: &JournalRecord,
        index: usize,
        value: &RawValue,
        out: &mut String,
    ) -> Result<(), PlanError> {
        let column = &self.schema.columns[index];
        if let Some(scale) = self.target_scales[index] {
            check_decimal_scale(value, scale)
                .map_err(|reason| self.value_error(record, &column.name, reason))?;
        }
        let written = match column.pg_type {
            PgType::Geometry | PgType::Geography => {
                write_geometry(out, value.get(), self.long_lat_axis)
            }
            PgType::Numeric | PgType::Money if self.text_targets[index] => {
                write_number_as_text(out, value.get())
            }
            PgType::Uuid if self.binary_targets[index] => write_uuid_bytes(out, value.get()),
            pg_type => {
                let start = out.len();
                let written = write_literal(out, pg_type, value);
                // A key value is never replaced: two keys could become one, and a delete
                // would then remove the wrong row.
                let replaceable = !self.schema.key.contains(&index);
                match written {
                    Err(_)
                        if replaceable
                            && let Some(replacement) =
                                replacement_for(pg_type, value.get(), self.value_policy) =>
                    {
                        out.truncate(start);
                        out.push_str(replacement);
                        Ok(())
                    }
                    written => written,
                }
            }
        };
        written.map_err(|reason| self.value_error(record, &column.name, reason))
    }

    /// Writes `(v1,v2,…)` for a row image. Returns the positions of the columns written when
    /// the image lacks some columns, which happens to changes journaled before an
    /// `ADD COLUMN`; `None` means every column. A missing key column, or a column the table
    /// definition does not have, is an error.
    fn write_row(
        &self,
        record: &JournalRecord,
        raw: &RawValue,
        out: &mut String,
    ) -> Result<Option<Vec<usize>>, PlanError> {
        let literals = self.row_literals(record, raw)?;
        out.push('(');
        for (position, (_, literal)) in literals.iter().enumerate() {
            if position > 0 {
                out.push(',');
            }
            out.push_str(literal);
        }
        out.push(')');
        let present: Vec<usize> = literals.into_iter().map(|(index, _)| index).collect();

        Ok((present.len() < self.schema.columns.len()).then_some(present))
    }

    /// Returns the literal of each column in a row image with the column's position, checking
    /// the image against the table definition as [`Self::write_row`] describes.
    fn row_literals(
        &self,
        record: &JournalRecord,
        raw: &RawValue,
    ) -> Result<Vec<(usize, String)>, PlanError> {
        let mut literals = Literals::default();
        self.write_row_literals(record, raw, &mut literals)?;
        Ok(literals
            .iter()
            .map(|(index, literal)| (index, literal.to_string()))
            .collect())
    }

    /// Writes the literal of each column in a row image into `literals`, which it clears
    /// first; [`Self::row_literals`] without an allocation per value.
    fn write_row_literals(
        &self,
        record: &JournalRecord,
        raw: &RawValue,
        literals: &mut Literals,
    ) -> Result<(), PlanError> {
        literals.clear();
        let image = parse_image(self, record, raw)?;
        for (index, column) in self.schema.columns.iter().enumerate() {
            let Some(value) = find_value(&image, index, &column.name) else {
                if self.schema.key.contains(&index) {
                    let detail = format!("key column {} is missing", column.name);
                    return Err(self.shape_error(record, detail));
                }
                // Only a change committed before the definition was read can predate an
                // ADD COLUMN; a later one without the column follows a DROP COLUMN.
                if self
                    .schema_snapshot
                    .as_ref()
                    .is_some_and(|snapshot| !snapshot.saw_committed(record.xid))
                {
                    let ignored =
                        |name: &str| self.schema.ignored_columns.iter().any(|c| c == name);
                    let new_column = image.iter().find(|(name, _)| {
                        !ignored(name) && !self.schema.columns.iter().any(|c| c.name == *name)
                    });
                    let detail = match new_column {
                        Some((new_name, _)) => format!(
                            "column {} is missing and column {new_name} is new in a change made \
                             after the daemon read the table, so a column was renamed or \
                             replaced in PostgreSQL",
                            column.name
                        ),
                        None => format!(
                            "column {} is missing from a change made after the daemon read the \
                             table, so it was dropped in PostgreSQL",
                            column.name
                        ),
                    };
                    return Err(self.shape_error(record, detail));
                }
                continue;
            };
            self.write_value(record, index, value, &mut literals.text)?;
            literals.ends.push((index, literals.text.len()));
        }
        // Columns that the mapping excludes are in the image but never written.
        let ignored = |name: &str| self.schema.ignored_columns.iter().any(|c| c == name);
        let written = image.iter().filter(|(name, _)| !ignored(name)).count();
        if written != literals.ends.len() {
            let extra = image
                .iter()
                .filter(|(name, _)| !ignored(name))
                .find(|(name, _)| !self.schema.columns.iter().any(|c| c.name == *name))
                .map_or_else(
                    || "a column is repeated".to_string(),
                    |(name, _)| format!("column {name} is new"),
                );
            return Err(self.shape_error(record, extra));
        }

        Ok(())
    }

    /// Builds the two statements of an upsert on a table with secondary unique indexes: an
    /// UPDATE of the row with the record's primary key, and an INSERT of the row when no row
    /// has that key. Neither can touch a row with another key; a clash with another row's
    /// unique value makes MySQL reject the change instead.
    fn guarded_upsert(
        &self,
        record: &JournalRecord,
        raw: &RawValue,
    ) -> Result<(Option<String>, String), PlanError> {
        let literals = self.row_literals(record, raw)?;
        let table = self.schema.target_sql();
        let condition = self
            .column_terms(&literals, "=", |index| self.schema.key.contains(&index))
            .join(" AND ");
        let assignments =
            self.column_terms(&literals, "=", |index| !self.schema.key.contains(&index));
        let update = (!assignments.is_empty()).then(|| {
            format!(
                "UPDATE {table} SET {} WHERE {condition}",
                assignments.join(",")
            )
        });
        let names: Vec<String> = literals
            .iter()
            .map(|(index, _)| quote_mysql_ident(&self.schema.columns[*index].target))
            .collect();
        let values: Vec<&str> = literals
            .iter()
            .map(|(_, literal)| literal.as_str())
            .collect();
        let insert = format!(
            "INSERT INTO {table} ({}) SELECT {} FROM DUAL WHERE NOT EXISTS \
             (SELECT 1 FROM {table} WHERE {condition})",
            names.join(","),
            values.join(",")
        );

        Ok((update, insert))
    }

    /// Builds the INSERT prefix and upsert suffix for a row image with only some columns.
    fn subset_parts(&self, present: &[usize]) -> (String, String) {
        let table = self.schema.target_sql();
        let names: Vec<String> = present
            .iter()
            .map(|&index| quote_mysql_ident(&self.schema.columns[index].target))
            .collect();
        let mut updates: Vec<String> = present
            .iter()
            .filter(|index| !self.schema.key.contains(index))
            .map(|&index| {
                format!(
                    "{0}=VALUES({0})",
                    quote_mysql_ident(&self.schema.columns[index].target)
                )
            })
            .collect();
        if updates.is_empty() {
            let key = quote_mysql_ident(
                &self
                    .schema
                    .key_columns()
                    .next()
                    .expect("a key has a column")
                    .target,
            );
            updates.push(format!("{key}=VALUES({key})"));
        }

        let suffix = if self.schema.keyless {
            String::new()
        } else {
            format!(" ON DUPLICATE KEY UPDATE {}", updates.join(","))
        };
        (
            format!("INSERT INTO {table} ({}) VALUES ", names.join(",")),
            suffix,
        )
    }

    /// Builds the DELETE of one row of a keyless table: every column compared NULL-safely
    /// with the old row's value, and `LIMIT 1`, so that of two identical rows one remains.
    fn keyless_delete(&self, record: &JournalRecord, raw: &RawValue) -> Result<String, PlanError> {
        let literals = self.row_literals(record, raw)?;
        if literals.len() < self.schema.columns.len() {
            return Err(self.shape_error(record, "the old row misses a column".to_string()));
        }
        let conditions = self.column_terms(&literals, "<=>", |_| true);
        Ok(format!(
            "DELETE FROM {} WHERE {} LIMIT 1",
            self.schema.target_sql(),
            conditions.join(" AND ")
        ))
    }

    /// Writes `column<operator>literal` for each selected column of a row, with MySQL column
    /// names.
    fn column_terms(
        &self,
        literals: &[(usize, String)],
        operator: &str,
        selected: impl Fn(usize) -> bool,
    ) -> Vec<String> {
        literals
            .iter()
            .filter(|(index, _)| selected(*index))
            .map(|(index, literal)| {
                let column = quote_mysql_ident(&self.schema.columns[*index].target);
                format!("{column}{operator}{literal}")
            })
            .collect()
    }

    /// Writes the condition that matches one primary key.
    fn write_key_condition(
        &self,
        record: &JournalRecord,
        raw: &RawValue,
        out: &mut String,
    ) -> Result<(), PlanError> {
        let image = parse_image(self, record, raw)?;
        let single = self.schema.key.len() == 1;
        if !single {
            out.push('(');
        }
        for (position, column) in self.schema.key_columns().enumerate() {
            let value = image
                .iter()
                .find(|(name, _)| *name == column.name)
                .map(|(_, v)| *v)
                .ok_or_else(|| {
                    self.shape_error(record, format!("key column {} is missing", column.name))
                })?;
            if single {
                self.write_value(record, self.schema.key[position], value, out)?;
            } else {
                if position > 0 {
                    out.push_str(" AND ");
                }
                out.push_str(&quote_mysql_ident(&column.target));
                out.push('=');
                self.write_value(record, self.schema.key[position], value, out)?;
            }
        }
        if !single {
            out.push(')');
        }

        Ok(())
    }

    /// Returns the MySQL literal of every written column of an insert or update record, with
    /// the column's position, exactly as apply writes them. Verify compares these with what
    /// MySQL holds.
    pub fn literals(&self, record: &JournalRecord) -> Result<Vec<(usize, String)>, PlanError> {
        let raw = record
            .new
            .as_deref()
            .ok_or_else(|| self.shape_error(record, "the row image is missing".into()))?;
        self.row_literals(record, raw)
    }

    /// Writes what [`Self::literals`] returns into `literals`, reusing its memory: the
    /// snapshot calls this for every row it loads.
    pub fn write_literals(
        &self,
        record: &JournalRecord,
        literals: &mut Literals,
    ) -> Result<(), PlanError> {
        let raw = record
            .new
            .as_deref()
            .ok_or_else(|| self.shape_error(record, "the row image is missing".into()))?;
        self.write_row_literals(record, raw, literals)
    }

    /// Returns the condition that selects a row by its key, as apply's deletes write it: the
    /// key's literal for a one-column key, to go in an `IN` list, and
    /// `(`a`=1 AND `b`=2)` for a longer one. `raw` is an image with the key columns.
    pub fn key_condition(
        &self,
        record: &JournalRecord,
        raw: &RawValue,
    ) -> Result<String, PlanError> {
        let mut out = String::new();
        self.write_key_condition(record, raw, &mut out)?;
        Ok(out)
    }

    /// Tells whether column `index` goes to a BINARY or VARBINARY column as bytes.
    pub fn binary_target(&self, index: usize) -> bool {
        self.binary_targets[index]
    }

    /// Tells whether column `index`, a `numeric` or `money`, goes to a text column.
    pub fn text_target(&self, index: usize) -> bool {
        self.text_targets[index]
    }

    /// Tells whether geometries need MySQL 8's `axis-order=long-lat` option.
    pub fn long_lat_axis(&self) -> bool {
        self.long_lat_axis
    }

    /// Returns the primary key of the row a record changes, as a JSON array of the key values
    /// in key-column order, or `None` for a TRUNCATE. Equal keys give equal text, because
    /// journal images are compact JSON written by PostgreSQL.
    pub fn record_key(&self, record: &JournalRecord) -> Result<Option<String>, PlanError> {
        let raw = match record.op {
            Operation::Insert | Operation::Update => record.new.as_deref(),
            Operation::Delete => record.old.as_deref(),
            Operation::Truncate => return Ok(None),
        }
        .ok_or_else(|| self.shape_error(record, "the row image is missing".into()))?;
        let image = parse_image(self, record, raw)?;
        let mut key = String::from("[");
        for (position, column) in self.schema.key_columns().enumerate() {
            let value =
                find_value(&image, self.schema.key[position], &column.name).ok_or_else(|| {
                    self.shape_error(record, format!("key column {} is missing", column.name))
                })?;
            if position > 0 {
                key.push(',');
            }
            key.push_str(&canonical_key_value(column.pg_type, value.get()));
        }
        key.push(']');

        Ok(Some(key))
    }

    fn shape_error(&self, record: &JournalRecord, detail: String) -> PlanError {
        PlanError::ShapeMismatch {
            table: self.schema.name.to_string(),
            seq: record.seq,
            detail,
        }
    }

    fn value_error(&self, record: &JournalRecord, column: &str, reason: String) -> PlanError {
        PlanError::Value {
            table: self.schema.name.to_string(),
            column: column.to_string(),
            seq: record.seq,
            reason,
        }
    }
}

/// Returns a key value's text such that equal keys give equal text. PostgreSQL's `numeric`
/// keeps the scale it was written with, so `1.0` and `1.00` are one key with two texts; their
/// trailing fraction zeros are dropped.
pub fn canonical_key_value(pg_type: PgType, text: &str) -> Cow<'_, str> {
    let numeric = matches!(pg_type, PgType::Numeric | PgType::Money);
    if !numeric || !text.contains('.') {
        return Cow::Borrowed(text);
    }
    Cow::Borrowed(text.trim_end_matches('0').trim_end_matches('.'))
}

/// Quotes a MySQL identifier.
pub fn quote_mysql_ident(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

/// The MySQL literals of one row, in one buffer: each column's position and the end of its
/// literal in the text.
#[derive(Debug, Default)]
pub struct Literals {
    text: String,
    ends: Vec<(usize, usize)>,
}

impl Literals {
    fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
    }

    /// Returns each written column's position and literal, in the table's column order.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &str)> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().map(|&(_, end)| end));
        self.ends
            .iter()
            .zip(starts)
            .map(|(&(index, end), start)| (index, &self.text[start..end]))
    }

    /// Returns the number of written columns.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Tells whether no column was written.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

fn parse_image<'a>(
    plan: &TablePlan,
    record: &JournalRecord,
    raw: &'a RawValue,
) -> Result<Vec<(Cow<'a, str>, &'a RawValue)>, PlanError> {
    parse_row_image(raw)
        .map_err(|_| plan.shape_error(record, "the row image is not a JSON object".to_string()))
}

/// Finds a column's value; `to_json` writes columns in catalog order, so try that position
/// first.
fn find_value<'a>(
    image: &[(Cow<'a, str>, &'a RawValue)],
    index: usize,
    name: &str,
) -> Option<&'a RawValue> {
    match image.get(index) {
        Some((candidate, value)) if candidate == name => Some(*value),
        _ => image
            .iter()
            .find(|(candidate, _)| candidate == name)
            .map(|(_, value)| *value),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum StepKind {
    Upsert,
    Delete,
}

/// One statement and the journal records it applies, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The SQL text; it contains row values, so it is never logged.
    pub sql: String,
    /// Source table as `schema.table`.
    pub table: String,
    /// `upsert`, `delete` or `truncate`; `update` and `insert` for the two statements of an
    /// upsert on a table with secondary unique indexes.
    pub operation: &'static str,
    /// First journal record applied by the statement.
    pub first_seq: u64,
    /// Last journal record applied by the statement.
    pub last_seq: u64,
}

/// Builds the statements for a batch of records, in order.
pub fn build_statements<'r>(
    records: impl IntoIterator<Item = &'r JournalRecord>,
    plans: &HashMap<String, TablePlan>,
    limits: StatementLimits,
) -> Result<Vec<Statement>, PlanError> {
    let mut builder = Builder {
        limits,
        statements: Vec::new(),
        current: None,
    };
    for record in records {
        let plan = plans
            .get(&record.table)
            .ok_or_else(|| PlanError::UnknownTable {
                table: record.table.clone(),
            })?;
        match record.op {
            Operation::Insert | Operation::Update => {
                let raw = record
                    .new
                    .as_deref()
                    .ok_or_else(|| plan.shape_error(record, "the row image is missing".into()))?;
                if plan.guarded {
                    builder.finish();
                    let (update, insert) = plan.guarded_upsert(record, raw)?;
                    for (sql, operation) in update
                        .map(|sql| (sql, "update"))
                        .into_iter()
                        .chain([(insert, "insert")])
                    {
                        if sql.len() > limits.max_bytes {
                            return Err(PlanError::RowTooLarge {
                                table: plan.schema.name.to_string(),
                                seq: record.seq,
                                bytes: sql.len(),
                                max_bytes: limits.max_bytes,
                            });
                        }
                        builder.statements.push(Statement {
                            sql,
                            table: record.table.clone(),
                            operation,
                            first_seq: record.seq,
                            last_seq: record.seq,
                        });
                    }
                    continue;
                }
                let mut row = String::new();
                let columns = plan.write_row(record, raw, &mut row)?;
                builder.add(plan, StepKind::Upsert, columns, record, row)?;
            }
            Operation::Delete => {
                let raw = record
                    .old
                    .as_deref()
                    .ok_or_else(|| plan.shape_error(record, "the key is missing".into()))?;
                if plan.schema.keyless {
                    builder.finish();
                    let sql = plan.keyless_delete(record, raw)?;
                    builder.statements.push(Statement {
                        sql,
                        table: record.table.clone(),
                        operation: "delete",
                        first_seq: record.seq,
                        last_seq: record.seq,
                    });
                    continue;
                }
                let mut condition = String::new();
                plan.write_key_condition(record, raw, &mut condition)?;
                builder.add(plan, StepKind::Delete, None, record, condition)?;
            }
            Operation::Truncate => {
                builder.finish();
                // DELETE, not TRUNCATE: TRUNCATE commits the open transaction in MySQL.
                builder.statements.push(Statement {
                    sql: format!("DELETE FROM {}", plan.schema.target_sql()),
                    table: record.table.clone(),
                    operation: "truncate",
                    first_seq: record.seq,
                    last_seq: record.seq,
                });
            }
        }
    }
    builder.finish();

    Ok(builder.statements)
}

struct OpenStatement<'p> {
    plan: &'p TablePlan,
    kind: StepKind,
    /// Column positions of a partial upsert; `None` for all columns.
    columns: Option<Vec<usize>>,
    /// Text appended when the statement closes.
    suffix: String,
    sql: String,
    rows: usize,
    first_seq: u64,
    last_seq: u64,
}

struct Builder<'p> {
    limits: StatementLimits,
    statements: Vec<Statement>,
    current: Option<OpenStatement<'p>>,
}

impl<'p> Builder<'p> {
    fn add(
        &mut self,
        plan: &'p TablePlan,
        kind: StepKind,
        columns: Option<Vec<usize>>,
        record: &JournalRecord,
        part: String,
    ) -> Result<(), PlanError> {
        let fits = self.current.as_ref().is_some_and(|open| {
            std::ptr::eq(open.plan, plan)
                && open.kind == kind
                && open.columns == columns
                && open.rows < self.limits.max_rows
                && open.sql.len() + part.len() + open.suffix.len() + 8 <= self.limits.max_bytes
        });
        if !fits {
            self.finish();
            let (prefix, suffix) = match (kind, &columns) {
                (StepKind::Upsert, None) => {
                    (plan.insert_prefix.clone(), plan.upsert_suffix.clone())
                }
                (StepKind::Upsert, Some(present)) => plan.subset_parts(present),
                (StepKind::Delete, _) if plan.schema.key.len() == 1 => {
                    (plan.delete_prefix.clone(), ")".to_string())
                }
                (StepKind::Delete, _) => (plan.delete_prefix.clone(), String::new()),
            };
            let size = prefix.len() + part.len() + suffix.len();
            if size > self.limits.max_bytes {
                return Err(PlanError::RowTooLarge {
                    table: plan.schema.name.to_string(),
                    seq: record.seq,
                    bytes: size,
                    max_bytes: self.limits.max_bytes,
                });
            }
            self.current = Some(OpenStatement {
                plan,
                kind,
                columns,
                suffix,
                sql: prefix,
                rows: 0,
                first_seq: record.seq,
                last_seq: record.seq,
            });
        }
        let open = self.current.as_mut().expect("a statement is open");
        if open.rows > 0 {
            let composite_delete = kind == StepKind::Delete && plan.schema.key.len() > 1;
            open.sql
                .push_str(if composite_delete { " OR " } else { "," });
        }
        open.sql.push_str(&part);
        open.rows += 1;
        open.last_seq = record.seq;

        Ok(())
    }

    fn finish(&mut self) {
        let Some(mut open) = self.current.take() else {
            return;
        };
        open.sql.push_str(&open.suffix);
        let operation = match open.kind {
            StepKind::Upsert => "upsert",
            StepKind::Delete => "delete",
        };
        self.statements.push(Statement {
            sql: open.sql,
            table: open.plan.schema.name.qualified(),
            operation,
            first_seq: open.first_seq,
            last_seq: open.last_seq,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TableName;
    use crate::schema::{Column, PgType};

    fn plan(key: Vec<usize>) -> TablePlan {
        let column = |name: &str, pg_type| Column {
            target: name.to_string(),
            type_override: None,
            name: name.into(),
            pg_type,
            type_display: String::new(),
        };
        TablePlan::new(TableSchema {
            name: TableName {
                schema: "public".into(),
                name: "or`ders".into(),
            },
            columns: vec![
                column("id", PgType::Int4),
                column("region", PgType::Text),
                column("note", PgType::Text),
            ],
            keyless: key.is_empty(),
            key: if key.is_empty() { vec![0, 1, 2] } else { key },
            target_table: "or`ders".into(),
            target_database: None,
            ignored_columns: Vec::new(),
        })
    }

    #[test]
    fn keyless_table_inserts_and_deletes_one_row() {
        let records = [
            record(
                1,
                Operation::Insert,
                r#"{"id":1,"region":"eu","note":null}"#,
            ),
            record(
                2,
                Operation::Update,
                r#"{"id":1,"region":"eu","note":null}"#,
            ),
            record(
                3,
                Operation::Delete,
                r#"{"id":1,"region":"eu","note":null}"#,
            ),
        ];
        let statements = build_statements(&records, &plans(plan(vec![])), LIMITS).unwrap();
        assert_eq!(statements.len(), 2);
        assert_eq!(
            statements[0].sql,
            "INSERT INTO `or``ders` (`id`,`region`,`note`) VALUES (1,'eu',NULL),(1,'eu',NULL)"
        );
        assert_eq!(
            statements[1].sql,
            "DELETE FROM `or``ders` WHERE `id`<=>1 AND `region`<=>'eu' AND `note`<=>NULL LIMIT 1"
        );
    }

    fn record(seq: u64, op: Operation, json: &str) -> JournalRecord {
        let raw = Some(RawValue::from_string(json.into()).unwrap());
        let (new, old) = if op == Operation::Delete {
            (None, raw)
        } else {
            (raw, None)
        };
        JournalRecord {
            seq,
            batch: 1,
            xid: 1,
            cid: seq as i64,
            table: "public.or`ders".into(),
            op,
            new,
            old,
        }
    }

    fn plans(plan: TablePlan) -> HashMap<String, TablePlan> {
        HashMap::from([("public.or`ders".to_string(), plan)])
    }

    const LIMITS: StatementLimits = StatementLimits {
        max_rows: 1000,
        max_bytes: 1 << 20,
    };

    #[test]
    fn numeric_key_text_ignores_trailing_zeros() {
        assert_eq!(canonical_key_value(PgType::Numeric, "1.00"), "1");
        assert_eq!(canonical_key_value(PgType::Numeric, "1.50"), "1.5");
        assert_eq!(canonical_key_value(PgType::Numeric, "100"), "100");
        assert_eq!(canonical_key_value(PgType::Money, "-0.10"), "-0.1");
        assert_eq!(canonical_key_value(PgType::Text, "\"1.00\""), "\"1.00\"");
    }

    #[test]
    fn consecutive_changes_merge_in_order() {
        let records = vec![
            record(1, Operation::Insert, r#"{"id":1,"region":"eu","note":"a"}"#),
            record(2, Operation::Update, r#"{"id":1,"region":"eu","note":"b"}"#),
            record(3, Operation::Delete, r#"{"id":2}"#),
            record(4, Operation::Delete, r#"{"id":3}"#),
            record(5, Operation::Truncate, "null"),
            record(
                6,
                Operation::Insert,
                r#"{"id":4,"region":"us","note":null}"#,
            ),
        ];
        let statements = build_statements(&records, &plans(plan(vec![0])), LIMITS).unwrap();
        let sql: Vec<&str> = statements.iter().map(|s| s.sql.as_str()).collect();
        assert_eq!(
            statements
                .iter()
                .map(|s| (s.operation, s.first_seq, s.last_seq))
                .collect::<Vec<_>>(),
            vec![
                ("upsert", 1, 2),
                ("delete", 3, 4),
                ("truncate", 5, 5),
                ("upsert", 6, 6)
            ]
        );
        assert_eq!(
            sql,
            vec![
                "INSERT INTO `or``ders` (`id`,`region`,`note`) VALUES (1,'eu','a'),(1,'eu','b') \
                 ON DUPLICATE KEY UPDATE `region`=VALUES(`region`),`note`=VALUES(`note`)",
                "DELETE FROM `or``ders` WHERE `id` IN (2,3)",
                "DELETE FROM `or``ders`",
                "INSERT INTO `or``ders` (`id`,`region`,`note`) VALUES (4,'us',NULL) \
                 ON DUPLICATE KEY UPDATE `region`=VALUES(`region`),`note`=VALUES(`note`)",
            ]
        );
    }

    #[test]
    fn composite_keys_delete_by_each_column() {
        let records = vec![
            record(1, Operation::Delete, r#"{"id":1,"region":"eu"}"#),
            record(2, Operation::Delete, r#"{"id":2,"region":"us"}"#),
        ];
        let statements = build_statements(&records, &plans(plan(vec![0, 1])), LIMITS).unwrap();
        let sql: Vec<&str> = statements.iter().map(|s| s.sql.as_str()).collect();
        assert_eq!(
            sql,
            vec![
                "DELETE FROM `or``ders` WHERE (`id`=1 AND `region`='eu') OR (`id`=2 AND `region`='us')"
            ]
        );
    }

    #[test]
    fn statements_split_at_row_and_byte_limits() {
        let records: Vec<_> = (1..=5)
            .map(|i| {
                record(
                    i,
                    Operation::Insert,
                    &format!(r#"{{"id":{i},"region":"eu","note":"x"}}"#),
                )
            })
            .collect();
        let by_rows = build_statements(
            &records,
            &plans(plan(vec![0])),
            StatementLimits {
                max_rows: 2,
                max_bytes: 1 << 20,
            },
        )
        .unwrap();
        assert_eq!(by_rows.len(), 3);
        let by_bytes = build_statements(
            &records,
            &plans(plan(vec![0])),
            StatementLimits {
                max_rows: 100,
                max_bytes: 160,
            },
        )
        .unwrap();
        assert!(by_bytes.len() > 1);
        assert!(by_bytes.iter().all(|s| s.sql.len() <= 160), "{by_bytes:?}");
    }

    #[test]
    fn oversized_row_is_an_error() {
        let note = "x".repeat(500);
        let records = vec![record(
            9,
            Operation::Insert,
            &format!(r#"{{"id":1,"region":"eu","note":"{note}"}}"#),
        )];
        let error = build_statements(
            &records,
            &plans(plan(vec![0])),
            StatementLimits {
                max_rows: 10,
                max_bytes: 200,
            },
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("raise max_allowed_packet"),
            "{error}"
        );
    }

    #[test]
    fn changed_table_shape_is_an_error() {
        let missing_key = vec![record(
            1,
            Operation::Insert,
            r#"{"region":"eu","note":"a"}"#,
        )];
        let error = build_statements(&missing_key, &plans(plan(vec![0])), LIMITS).unwrap_err();
        assert!(
            error.to_string().contains("key column id is missing"),
            "{error}"
        );
        let extra = vec![record(
            1,
            Operation::Insert,
            r#"{"id":1,"region":"eu","note":"a","added":1}"#,
        )];
        let error = build_statements(&extra, &plans(plan(vec![0])), LIMITS).unwrap_err();
        assert!(error.to_string().contains("column added is new"), "{error}");
    }

    #[test]
    fn rows_journaled_before_add_column_write_their_columns() {
        let records = vec![
            record(1, Operation::Insert, r#"{"id":1,"region":"eu"}"#),
            record(2, Operation::Insert, r#"{"id":2,"region":"us"}"#),
            record(
                3,
                Operation::Insert,
                r#"{"id":3,"region":"us","note":"new"}"#,
            ),
        ];
        let statements = build_statements(&records, &plans(plan(vec![0])), LIMITS).unwrap();
        let sql: Vec<&str> = statements.iter().map(|s| s.sql.as_str()).collect();
        assert_eq!(
            sql,
            vec![
                "INSERT INTO `or``ders` (`id`,`region`) VALUES (1,'eu'),(2,'us') \
                 ON DUPLICATE KEY UPDATE `region`=VALUES(`region`)",
                "INSERT INTO `or``ders` (`id`,`region`,`note`) VALUES (3,'us','new') \
                 ON DUPLICATE KEY UPDATE `region`=VALUES(`region`),`note`=VALUES(`note`)",
            ]
        );
    }

    #[test]
    fn unknown_table_is_an_error() {
        let mut other = record(1, Operation::Insert, r#"{"id":1}"#);
        other.table = "public.other".into();
        let error = build_statements(&[other], &plans(plan(vec![0])), LIMITS).unwrap_err();
        assert!(matches!(error, PlanError::UnknownTable { .. }));
    }
}
