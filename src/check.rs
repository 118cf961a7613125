//! The preflight check: compares each synced PostgreSQL table with its MySQL target and
//! reports what would make apply fail or lose data, before any data moves.
//!
//! Errors are problems that make apply halt or store a value other than the source's: a
//! missing table or column, a narrower column type, a smaller DECIMAL scale or DATETIME
//! precision, a character set other than utf8mb4, a key collation that compares differently,
//! a different primary key. Warnings are settings that can reject some rows later: a
//! length limit below PostgreSQL's, target triggers and foreign keys, secondary unique
//! indexes, a small `max_allowed_packet`.

use std::collections::HashMap;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use serde::Serialize;

use crate::schema::{PgType, TableSchema};

/// Seriousness of a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Apply would halt, or store a value other than the source's.
    Error,
    /// Some rows may be rejected later, or a setting is unusual.
    Warning,
}

/// One problem found.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Source table as `schema.table`, or `(server)` for a server setting.
    pub table: String,
    /// Error or warning.
    pub severity: Severity,
    /// The problem and its fix.
    pub message: String,
}

/// The result of a check.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// The MySQL server and the settings that matter for apply.
    pub server: ServerSettings,
    /// Tables checked.
    pub tables: usize,
    /// Problems found, errors first.
    pub findings: Vec<Finding>,
}

/// The MySQL server's version and the settings that decide what apply can write.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerSettings {
    /// `VERSION()`.
    pub version: String,
    /// The global `sql_mode`, which other writers use; apply sets a strict mode for its own
    /// sessions.
    pub sql_mode: String,
    /// `max_allowed_packet` in bytes, the largest statement, and so the largest row.
    pub max_allowed_packet: u64,
}

impl Report {
    /// Returns the number of findings of a severity.
    pub fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|finding| finding.severity == severity)
            .count()
    }

    /// Formats the findings as a table for a terminal, with a summary line.
    pub fn render(&self) -> String {
        let width = self
            .findings
            .iter()
            .map(|finding| finding.table.chars().count())
            .max()
            .unwrap_or(0)
            .max("TABLE".len());
        let mut text = String::new();
        if !self.findings.is_empty() {
            text.push_str(&format!("{:width$}  {:7}  PROBLEM\n", "TABLE", "LEVEL"));
            for finding in &self.findings {
                let level = match finding.severity {
                    Severity::Error => "error",
                    Severity::Warning => "warning",
                };
                text.push_str(&format!(
                    "{:width$}  {level:7}  {}\n",
                    finding.table, finding.message
                ));
            }
        }
        text.push_str(&format!(
            "MySQL {}, max_allowed_packet {} bytes, global sql_mode {}\n",
            self.server.version,
            self.server.max_allowed_packet,
            if self.server.sql_mode.is_empty() {
                "(empty)"
            } else {
                &self.server.sql_mode
            }
        ));
        text.push_str(&format!(
            "{} checked: {}, {}\n",
            crate::telemetry::count_of(self.tables as u64, "table", "tables"),
            crate::telemetry::count_of(self.count(Severity::Error) as u64, "error", "errors"),
            crate::telemetry::count_of(self.count(Severity::Warning) as u64, "warning", "warnings")
        ));
        text
    }
}

/// A PostgreSQL column's details from `information_schema.columns`.
#[derive(Debug, Clone)]
pub(crate) struct SourceColumn {
    pub(crate) nullable: bool,
    pub(crate) max_length: Option<i32>,
    pub(crate) precision: Option<i32>,
    pub(crate) scale: Option<i32>,
    pub(crate) datetime_precision: Option<i32>,
}

/// A MySQL column as `information_schema.COLUMNS` describes it.
#[derive(Debug, Clone)]
struct TargetColumn {
    name: String,
    data_type: String,
    column_type: String,
    nullable: bool,
    has_default: bool,
    generated: bool,
    max_length: Option<u64>,
    precision: Option<u64>,
    scale: Option<u64>,
    datetime_precision: Option<u64>,
    charset: Option<String>,
    collation: Option<String>,
}

/// Checks every synced table and the MySQL server settings.
pub async fn check(
    pg: &tokio_postgres::Client,
    mysql: &mut Conn,
    schemas: &[TableSchema],
) -> Result<Report, CheckError> {
    let mut report = Report {
        server: ServerSettings::default(),
        tables: schemas.len(),
        findings: Vec::new(),
    };
    check_server(mysql, &mut report).await?;
    for schema in schemas {
        check_table(pg, mysql, schema, &mut report).await?;
    }
    report.findings.sort_by_key(|finding| finding.severity);

    Ok(report)
}

/// Failure to read a catalog.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// A PostgreSQL catalog query failed.
    #[error("failed to read the PostgreSQL catalog: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// A MySQL catalog query failed. The error is not chained as a source, because its server
    /// text could quote values.
    #[error("failed to read the MySQL catalog: {}", crate::apply::describe_mysql_error(.0))]
    Mysql(mysql_async::Error),
}

impl From<mysql_async::Error> for CheckError {
    fn from(error: mysql_async::Error) -> Self {
        CheckError::Mysql(error)
    }
}

async fn check_server(mysql: &mut Conn, report: &mut Report) -> Result<(), CheckError> {
    let row: Option<(String, String, u64)> = mysql
        .query_first("SELECT VERSION(), @@GLOBAL.sql_mode, @@GLOBAL.max_allowed_packet")
        .await?;
    let Some((version, sql_mode, packet)) = row else {
        return Ok(());
    };
    report.server = ServerSettings {
        version,
        sql_mode: sql_mode.clone(),
        max_allowed_packet: packet,
    };
    let mut push = |message: String| {
        report.findings.push(Finding {
            table: "(server)".to_string(),
            severity: Severity::Warning,
            message,
        });
    };
    if packet < 16 * 1024 * 1024 {
        push(format!(
            "max_allowed_packet is {packet} bytes; a row whose statement is larger halts \
             apply. Raise it, e.g. SET GLOBAL max_allowed_packet = 67108864, and in the \
             server's configuration"
        ));
    }
    if !sql_mode.contains("STRICT_") {
        push(format!(
            "the server's default sql_mode ({sql_mode}) is not strict. pg-to-mysql-sync sets \
             a strict mode for its own sessions, but other writers to these tables can store \
             truncated values"
        ));
    }

    Ok(())
}

/// Reads the details of a table's columns, by column name.
pub(crate) async fn source_columns(
    pg: &tokio_postgres::Client,
    schema: &TableSchema,
) -> Result<HashMap<String, SourceColumn>, CheckError> {
    let rows = pg
        .query(
            "SELECT column_name::text, is_nullable::text = 'YES', \
             character_maximum_length::int4, numeric_precision::int4, numeric_scale::int4, \
             datetime_precision::int4 \
             FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2",
            &[&schema.name.schema, &schema.name.name],
        )
        .await?;

    Ok(rows
        .iter()
        .map(|row| {
            (
                row.get::<_, String>(0),
                SourceColumn {
                    nullable: row.get(1),
                    max_length: row.get(2),
                    precision: row.get(3),
                    scale: row.get(4),
                    datetime_precision: row.get(5),
                },
            )
        })
        .collect())
}

async fn target_columns(
    mysql: &mut Conn,
    schema: &TableSchema,
) -> Result<Vec<TargetColumn>, CheckError> {
    let mut sql = format!(
        "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE = 'YES', \
         COLUMN_DEFAULT IS NOT NULL OR EXTRA LIKE '%auto_increment%', \
         EXTRA LIKE '%GENERATED%' OR EXTRA IN ('VIRTUAL', 'PERSISTENT', 'STORED'), \
         CHARACTER_MAXIMUM_LENGTH, NUMERIC_PRECISION, NUMERIC_SCALE, DATETIME_PRECISION, \
         CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLUMNS \
         WHERE {} AND TABLE_NAME = ",
        schema.target_schema_condition()
    );
    crate::apply::write_string_literal(&mut sql, &schema.target_table);
    sql.push_str(" ORDER BY ORDINAL_POSITION");
    let rows: Vec<mysql_async::Row> = mysql.query(sql).await?;

    Ok(rows
        .into_iter()
        .map(|mut row| TargetColumn {
            name: row.take(0).unwrap_or_default(),
            data_type: row
                .take::<String, _>(1)
                .unwrap_or_default()
                .to_ascii_lowercase(),
            column_type: row.take(2).unwrap_or_default(),
            nullable: row.take::<i64, _>(3).unwrap_or(0) == 1,
            has_default: row.take::<i64, _>(4).unwrap_or(0) == 1,
            generated: row.take::<i64, _>(5).unwrap_or(0) == 1,
            max_length: row.take(6).flatten(),
            precision: row.take(7).flatten(),
            scale: row.take(8).flatten(),
            datetime_precision: row.take(9).flatten(),
            charset: row.take(10).flatten(),
            collation: row.take(11).flatten(),
        })
        .collect())
}

async fn check_table(
    pg: &tokio_postgres::Client,
    mysql: &mut Conn,
    schema: &TableSchema,
    report: &mut Report,
) -> Result<(), CheckError> {
    let source_name = schema.name.to_string();
    let table = &schema.target_table;
    let mut findings = Vec::new();
    let mut error = |message: String| findings.push((Severity::Error, message));

    let mut sql = format!(
        "SELECT ENGINE FROM information_schema.TABLES WHERE {} AND TABLE_NAME = ",
        schema.target_schema_condition()
    );
    crate::apply::write_string_literal(&mut sql, table);
    let engine: Option<Option<String>> = mysql.query_first(sql).await?;
    let Some(engine) = engine else {
        error(format!(
            "the MySQL table `{table}` does not exist; create it with the same column names and \
             primary key (docs/types.md lists the column type for each PostgreSQL type)"
        ));
        push_all(report, &source_name, findings);
        return Ok(());
    };
    if !engine
        .as_deref()
        .is_some_and(|engine| engine.eq_ignore_ascii_case("InnoDB"))
    {
        error(format!(
            "the MySQL table `{table}` uses the {} engine, which has no transactions; convert \
             it with ALTER TABLE {} ENGINE=InnoDB",
            engine.as_deref().unwrap_or("unknown"),
            schema.target_sql()
        ));
    }

    let source = source_columns(pg, schema).await?;
    let target = target_columns(mysql, schema).await?;
    for column in &schema.columns {
        let Some(target_column) = target
            .iter()
            .find(|candidate| candidate.name.eq_ignore_ascii_case(&column.target))
        else {
            findings.push((
                Severity::Error,
                format!(
                    "column `{}` ({} in PostgreSQL) is missing from the MySQL table; add it",
                    column.target, column.type_display
                ),
            ));
            continue;
        };
        let is_key = schema
            .key_columns()
            .any(|key_column| key_column.name == column.name);
        let details = source.get(&column.name);
        // A type set in the mapping file is the user's choice; only its NULL handling is
        // checked.
        let problems = match &column.type_override {
            Some(_) => compare_column(PgType::Text, details, target_column, false)
                .into_iter()
                .filter(|(_, problem)| problem.starts_with("NULL is allowed"))
                .collect(),
            None => compare_column(column.pg_type, details, target_column, is_key),
        };
        for (severity, problem) in problems {
            findings.push((
                severity,
                format!(
                    "column `{}` ({} in PostgreSQL, {} in MySQL): {problem}",
                    column.target, column.type_display, target_column.column_type
                ),
            ));
        }
    }
    for target_column in &target {
        let synced = schema
            .columns
            .iter()
            .any(|column| column.target.eq_ignore_ascii_case(&target_column.name));
        if !synced
            && !target_column.nullable
            && !target_column.has_default
            && !target_column.generated
        {
            findings.push((
                Severity::Error,
                format!(
                    "the MySQL column `{}` is not in PostgreSQL, is NOT NULL and has no default, \
                     so every insert fails; give it a default or make it nullable",
                    target_column.name
                ),
            ));
        }
    }

    check_indexes(mysql, schema, &mut findings).await?;
    check_triggers_and_foreign_keys(mysql, schema, &mut findings).await?;
    push_all(report, &source_name, findings);

    Ok(())
}

fn push_all(report: &mut Report, table: &str, findings: Vec<(Severity, String)>) {
    for (severity, message) in findings {
        report.findings.push(Finding {
            table: table.to_string(),
            severity,
            message,
        });
    }
}

/// Text types that hold any Unicode text, and so need utf8mb4.
const UNICODE_TEXT: [PgType; 7] = [
    PgType::Text,
    PgType::Varchar,
    PgType::Bpchar,
    PgType::Citext,
    PgType::Enum,
    PgType::Xml,
    PgType::Tsvector,
];

/// Types written as ASCII text, so any character set works.
const ASCII_TEXT: [PgType; 10] = [
    PgType::Uuid,
    PgType::Inet,
    PgType::Cidr,
    PgType::Macaddr,
    PgType::Macaddr8,
    PgType::Interval,
    PgType::Timetz,
    PgType::Bit,
    PgType::Varbit,
    PgType::Bool,
];

const STRING_TYPES: [&str; 7] = [
    "char",
    "varchar",
    "tinytext",
    "text",
    "mediumtext",
    "longtext",
    "enum",
];

const JSON_TYPES: [&str; 5] = ["json", "longtext", "mediumtext", "text", "varchar"];

const GEOMETRY_TYPES: [&str; 8] = [
    "geometry",
    "point",
    "linestring",
    "polygon",
    "multipoint",
    "multilinestring",
    "multipolygon",
    "geometrycollection",
];

const BINARY_TYPES: [&str; 6] = [
    "binary",
    "varbinary",
    "tinyblob",
    "blob",
    "mediumblob",
    "longblob",
];

/// Compares one column; returns the problems found.
fn compare_column(
    pg_type: PgType,
    source: Option<&SourceColumn>,
    target: &TargetColumn,
    is_key: bool,
) -> Vec<(Severity, String)> {
    let mut problems = Vec::new();
    let data_type = target.data_type.as_str();
    let error = |message: String| (Severity::Error, message);
    let warning = |message: String| (Severity::Warning, message);

    if target.generated {
        problems.push(error(
            "a generated column cannot be written; map the column elsewhere or make it a plain \
             column"
                .to_string(),
        ));
    }
    if source.is_some_and(|source| source.nullable) && !target.nullable {
        problems.push(error(
            "NULL is allowed in PostgreSQL but not in MySQL, so a NULL halts apply; make the \
             MySQL column nullable"
                .to_string(),
        ));
    }

    let integer_bits = |data_type: &str| match data_type {
        "tinyint" => Some(8),
        "smallint" => Some(16),
        "mediumint" => Some(24),
        "int" | "integer" => Some(32),
        "bigint" => Some(64),
        _ => None,
    };
    match pg_type {
        PgType::Int2 | PgType::Int4 | PgType::Int8 => {
            let needed = match pg_type {
                PgType::Int2 => 16,
                PgType::Int4 => 32,
                _ => 64,
            };
            match integer_bits(data_type) {
                Some(bits) if bits < needed => problems.push(error(format!(
                    "the MySQL type holds {bits}-bit integers, PostgreSQL's {needed}-bit; use \
                     a wider integer type"
                ))),
                Some(_) => {}
                None if data_type == "decimal" && target.scale == Some(0) => {}
                None => problems.push(error("use an integer type of the same width".into())),
            }
        }
        PgType::Numeric | PgType::Money => match data_type {
            "decimal" => {
                let target_scale = target.scale.unwrap_or(0) as i64;
                let target_integer = target.precision.unwrap_or(0) as i64 - target_scale;
                let (precision, scale) = match pg_type {
                    PgType::Money => (Some(19), Some(2)),
                    _ => (
                        source.and_then(|source| source.precision),
                        source.and_then(|source| source.scale),
                    ),
                };
                match (precision, scale) {
                    (Some(precision), Some(scale)) => {
                        let (precision, scale) = (precision as i64, scale as i64);
                        if target_scale < scale {
                            problems.push(error(format!(
                                "MySQL keeps {target_scale} fraction digits, PostgreSQL {scale}; \
                                 a value with more halts apply. Use DECIMAL({precision},{scale})"
                            )));
                        }
                        if target_integer < precision - scale {
                            problems.push(error(format!(
                                "MySQL keeps {target_integer} integer digits, PostgreSQL {}; \
                                 larger values halt apply. Use DECIMAL({precision},{scale})",
                                precision - scale
                            )));
                        }
                    }
                    _ => problems.push(warning(
                        "PostgreSQL's numeric has no precision, so a value with more digits \
                         than the DECIMAL keeps halts apply; declare numeric(p,s) in \
                         PostgreSQL or size the DECIMAL for the largest values"
                            .to_string(),
                    )),
                }
            }
            "varchar" | "text" | "mediumtext" | "longtext" => {}
            _ => problems.push(error(
                "an exact number needs DECIMAL; a float or integer type would round it".into(),
            )),
        },
        PgType::Float4 => {
            if !matches!(data_type, "float" | "double") {
                problems.push(error("use FLOAT or DOUBLE".into()));
            }
        }
        PgType::Float8 => {
            if data_type == "float" {
                problems.push(error(
                    "FLOAT has single precision and would round double values; use DOUBLE".into(),
                ));
            } else if data_type != "double" {
                problems.push(error("use DOUBLE".into()));
            }
        }
        PgType::Bool => {
            if integer_bits(data_type).is_none() && data_type != "bit" {
                problems.push(error("use BOOLEAN (TINYINT(1))".into()));
            }
        }
        PgType::Date => {
            if !matches!(data_type, "date" | "datetime") {
                problems.push(error("use DATE".into()));
            }
        }
        PgType::Timestamp | PgType::Timestamptz | PgType::Time => {
            let expected = if pg_type == PgType::Time {
                &["time"][..]
            } else {
                &["datetime", "timestamp"][..]
            };
            if !expected.contains(&data_type) {
                let name = if pg_type == PgType::Time {
                    "TIME(6)"
                } else {
                    "DATETIME(6)"
                };
                problems.push(error(format!("use {name}")));
            } else {
                let needed = source
                    .and_then(|source| source.datetime_precision)
                    .unwrap_or(6) as u64;
                let kept = target.datetime_precision.unwrap_or(0);
                if kept < needed {
                    problems.push(error(format!(
                        "MySQL keeps {kept} fraction digits of a second, PostgreSQL {needed}; \
                         MySQL would round the rest. Use {}({needed})",
                        data_type.to_ascii_uppercase()
                    )));
                }
                if data_type == "timestamp" {
                    problems.push(warning(
                        "MySQL's TIMESTAMP holds only 1970 to 2038; DATETIME(6) holds every \
                         year from 1000"
                            .to_string(),
                    ));
                }
            }
        }
        PgType::Bytea => {
            if !BINARY_TYPES.contains(&data_type) {
                problems.push(error(
                    "binary data needs a BLOB or VARBINARY type; a text type would reject or \
                     change bytes"
                        .to_string(),
                ));
            }
        }
        PgType::Json | PgType::Jsonb | PgType::Hstore | PgType::Array | PgType::Composite => {
            if !JSON_TYPES.contains(&data_type) {
                problems.push(error("use JSON".into()));
            }
        }
        PgType::Geometry | PgType::Geography => {
            if !GEOMETRY_TYPES.contains(&data_type) {
                problems.push(error("use GEOMETRY".into()));
            } else if data_type != "geometry" {
                problems.push(warning(format!(
                    "the column holds only {}s; other shapes halt apply. GEOMETRY holds all",
                    data_type.to_ascii_uppercase()
                )));
            }
        }
        text_type => {
            let uuid_bytes = text_type == PgType::Uuid
                && matches!(data_type, "binary" | "varbinary")
                && target.max_length == Some(16);
            if uuid_bytes {
                // Written as its 16 bytes.
            } else if !STRING_TYPES.contains(&data_type) {
                problems.push(error(format!(
                    "use a text type such as {}",
                    if ASCII_TEXT.contains(&text_type) {
                        "VARCHAR(64)"
                    } else {
                        "LONGTEXT or VARCHAR(n)"
                    }
                )));
            } else {
                if data_type == "enum" && text_type != PgType::Enum {
                    problems.push(error(
                        "an ENUM column rejects other values; use VARCHAR".into(),
                    ));
                }
                check_length(source, target, &mut problems);
                if UNICODE_TEXT.contains(&text_type)
                    && !target
                        .charset
                        .as_deref()
                        .is_some_and(|charset| charset.starts_with("utf8mb4"))
                {
                    problems.push(error(format!(
                        "the character set is {}, which cannot store every character; use \
                         utf8mb4",
                        target.charset.as_deref().unwrap_or("unknown")
                    )));
                }
            }
        }
    }

    if is_key && STRING_TYPES.contains(&data_type) && !is_exact_collation(target) {
        problems.push(error(format!(
            "the key column's collation {} compares differently from PostgreSQL (case, accents \
             or trailing spaces), so distinct keys could collide; use utf8mb4_nopad_bin on \
             MariaDB or utf8mb4_0900_bin on MySQL 8",
            target.collation.as_deref().unwrap_or("unknown")
        )));
    }

    problems
}

/// Warns when MySQL's length limit is below PostgreSQL's.
fn check_length(
    source: Option<&SourceColumn>,
    target: &TargetColumn,
    problems: &mut Vec<(Severity, String)>,
) {
    let Some(target_length) = target.max_length else {
        return;
    };
    match source.and_then(|source| source.max_length) {
        Some(length) if (length as u64) > target_length => problems.push((
            Severity::Error,
            format!(
                "MySQL holds {target_length} characters, PostgreSQL {length}; longer values \
                 halt apply. Widen the MySQL column"
            ),
        )),
        None if target_length < 16_777_215 => problems.push((
            Severity::Warning,
            format!(
                "PostgreSQL has no length limit but MySQL holds {target_length}; a longer value \
                 halts apply. LONGTEXT has no practical limit"
            ),
        )),
        _ => {}
    }
}

/// Tells whether a text column compares exactly: a binary collation without trailing-space
/// padding. MariaDB names these `*_nopad_bin`; MySQL 8's `utf8mb4_0900_bin` pads nothing.
fn is_exact_collation(target: &TargetColumn) -> bool {
    match target.collation.as_deref() {
        Some(collation) => {
            (collation.contains("nopad") && collation.ends_with("_bin"))
                || collation == "utf8mb4_0900_bin"
                || collation == "binary"
        }
        None => true,
    }
}

async fn check_indexes(
    mysql: &mut Conn,
    schema: &TableSchema,
    findings: &mut Vec<(Severity, String)>,
) -> Result<(), CheckError> {
    let mut sql = format!(
        "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS \
         WHERE {} AND NON_UNIQUE = 0 AND TABLE_NAME = ",
        schema.target_schema_condition()
    );
    crate::apply::write_string_literal(&mut sql, &schema.target_table);
    sql.push_str(" ORDER BY INDEX_NAME, SEQ_IN_INDEX");
    let rows: Vec<(String, String)> = mysql.query(sql).await?;
    let mut unique: Vec<(String, Vec<String>)> = Vec::new();
    for (index, column) in rows {
        match unique.iter_mut().find(|(name, _)| *name == index) {
            Some((_, columns)) => columns.push(column.to_ascii_lowercase()),
            None => unique.push((index, vec![column.to_ascii_lowercase()])),
        }
    }

    let source_key: Vec<String> = schema
        .key_columns()
        .map(|column| column.target.to_ascii_lowercase())
        .collect();
    let primary = unique.iter().find(|(name, _)| name == "PRIMARY");
    if schema.keyless {
        // A surrogate key that PostgreSQL does not have, such as an AUTO_INCREMENT column, is
        // fine. A key on synced columns rejects the identical rows a keyless table can have.
        if let Some((_, columns)) = primary {
            let on_synced = columns.iter().all(|column| {
                schema
                    .columns
                    .iter()
                    .any(|synced| synced.name.eq_ignore_ascii_case(column))
            });
            if on_synced {
                findings.push((
                    Severity::Error,
                    format!(
                        "the table is keyless in PostgreSQL and can hold identical rows, but the \
                         MySQL primary key ({}) rejects them; drop it, or key the MySQL table \
                         on an AUTO_INCREMENT column of its own",
                        columns.join(", ")
                    ),
                ));
            }
        }
        return Ok(());
    }
    match primary {
        None => findings.push((
            Severity::Error,
            format!(
                "the MySQL table has no primary key; add PRIMARY KEY ({}) as in PostgreSQL",
                source_key.join(", ")
            ),
        )),
        Some((_, columns)) if *columns != source_key => findings.push((
            Severity::Error,
            format!(
                "the MySQL primary key is ({}) but PostgreSQL's is ({}); make them the same, or \
                 updates and deletes reach the wrong rows",
                columns.join(", "),
                source_key.join(", ")
            ),
        )),
        Some(_) => {}
    }
    for (name, columns) in unique.iter().filter(|(name, _)| name != "PRIMARY") {
        findings.push((
            Severity::Warning,
            format!(
                "the unique index `{name}` ({}): apply writes each changed row with an UPDATE \
                 and an INSERT by primary key, so no change updates another row, but a value \
                 that clashes with a row only MySQL has halts apply (MySQL error 1062), and \
                 the table is written one row per statement",
                columns.join(", ")
            ),
        ));
    }

    Ok(())
}

async fn check_triggers_and_foreign_keys(
    mysql: &mut Conn,
    schema: &TableSchema,
    findings: &mut Vec<(Severity, String)>,
) -> Result<(), CheckError> {
    let table = schema.target_table.as_str();
    let mut sql = format!(
        "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE {} \
         AND EVENT_OBJECT_TABLE = ",
        schema
            .target_schema_condition()
            .replacen("TABLE_SCHEMA", "EVENT_OBJECT_SCHEMA", 1)
    );
    crate::apply::write_string_literal(&mut sql, table);
    let triggers: Vec<String> = mysql.query(sql).await?;
    for trigger in triggers {
        findings.push((
            Severity::Warning,
            format!(
                "the MySQL trigger `{trigger}` runs on every applied change; if it fails or \
                 writes elsewhere, apply halts or the target holds more than the source"
            ),
        ));
    }

    let mut sql = format!(
        "SELECT CONSTRAINT_NAME, TABLE_NAME, REFERENCED_TABLE_NAME, DELETE_RULE \
         FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE {} AND (TABLE_NAME = ",
        schema
            .target_schema_condition()
            .replacen("TABLE_SCHEMA", "CONSTRAINT_SCHEMA", 1)
    );
    crate::apply::write_string_literal(&mut sql, table);
    sql.push_str(" OR REFERENCED_TABLE_NAME = ");
    crate::apply::write_string_literal(&mut sql, table);
    sql.push(')');
    let foreign_keys: Vec<(String, String, String, String)> = mysql.query(sql).await?;
    for (name, child, parent, delete_rule) in foreign_keys {
        let message = if child == table {
            format!(
                "the foreign key `{name}` to `{parent}` rejects a row whose parent has not \
                 arrived; sync the parent table too, in the same daemon"
            )
        } else {
            format!(
                "the foreign key `{name}` of `{child}` references this table with ON DELETE \
                 {delete_rule}; a delete or TRUNCATE here is rejected or cascades to `{child}` \
                 on MySQL as the rule says"
            )
        };
        findings.push((Severity::Warning, message));
    }

    Ok(())
}
