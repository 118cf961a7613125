//! Creating MySQL target tables from PostgreSQL definitions, for `setup --create-tables`.
//!
//! Column types follow docs/types.md. Every column keeps its name, NOT NULL and the primary
//! key carry over, the table is InnoDB with utf8mb4, and text key columns get a binary no-pad
//! collation, so that keys distinct in PostgreSQL by case, accent or trailing space stay
//! distinct in MySQL.
//!
//! Plain unique indexes are created too, with the same exact collation on their text columns.
//! Apply then writes the table with an UPDATE and an INSERT by primary key rather than
//! `INSERT … ON DUPLICATE KEY UPDATE`, which would match rows by every unique index.

use std::collections::HashMap;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use crate::apply::{quote_mysql_ident, write_string_literal};
use crate::check::{SourceColumn, source_columns};
use crate::schema::{PgType, TableSchema};

/// Longest MySQL identifier, in characters. PostgreSQL's own limit of 63 bytes keeps names
/// below it, unless the server was built with a larger `NAMEDATALEN`.
const MAX_IDENTIFIER_CHARS: usize = 64;

/// Longest InnoDB index key in bytes, with the DYNAMIC row format of MySQL 8 and MariaDB 10.3+.
const MAX_KEY_BYTES: usize = 3072;

/// Bytes per character of utf8mb4.
const UTF8MB4_BYTES: usize = 4;

/// VARCHAR lengths up to this many characters are created as VARCHAR; longer or unbounded
/// text becomes LONGTEXT, which does not count towards MySQL's 65,535-byte row limit.
const MAX_VARCHAR_CHARS: i32 = 255;

/// A table that cannot be created as it is.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// A name does not fit MySQL.
    #[error("cannot create the MySQL table for {table}: {reason}")]
    Name {
        /// Source table.
        table: String,
        /// The problem and its fix.
        reason: String,
    },
    /// A catalog query failed.
    #[error(transparent)]
    Catalog(#[from] crate::check::CheckError),
    /// The CREATE TABLE failed.
    #[error("failed to create the MySQL table for {table}: {}", crate::apply::describe_mysql_error(.cause))]
    Create {
        /// Source table.
        table: String,
        /// The cause; not the error's `source`, so that its server text is never chained.
        cause: mysql_async::Error,
    },
}

/// Server kind. MariaDB and MySQL name their exact collation differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// MariaDB: `utf8mb4_nopad_bin`.
    MariaDb,
    /// MySQL 8: `utf8mb4_0900_bin`.
    MySql,
}

impl Flavor {
    /// Reads the server's flavor from its version string.
    pub async fn detect(mysql: &mut Conn) -> Result<Flavor, mysql_async::Error> {
        let version: Option<String> = mysql.query_first("SELECT VERSION()").await?;
        Ok(
            if version.is_some_and(|version| version.to_ascii_lowercase().contains("mariadb")) {
                Flavor::MariaDb
            } else {
                Flavor::MySql
            },
        )
    }

    fn exact_collation(self) -> &'static str {
        match self {
            Flavor::MariaDb => "utf8mb4_nopad_bin",
            Flavor::MySql => "utf8mb4_0900_bin",
        }
    }
}

/// Tells whether the table's MySQL table exists.
pub async fn table_exists(
    mysql: &mut Conn,
    schema: &TableSchema,
) -> Result<bool, mysql_async::Error> {
    let mut sql = format!(
        "SELECT COUNT(*) FROM information_schema.TABLES WHERE {} AND TABLE_NAME = ",
        schema.target_schema_condition()
    );
    write_string_literal(&mut sql, &schema.target_table);
    let count: Option<u64> = mysql.query_first(sql).await?;
    Ok(count.unwrap_or(0) > 0)
}

/// Builds the CREATE TABLE statement for a synced table, with notes on what was left out.
pub async fn create_table_statement(
    pg: &tokio_postgres::Client,
    schema: &TableSchema,
    flavor: Flavor,
) -> Result<(String, Vec<String>), CreateError> {
    check_names(schema)?;
    let source = source_columns(pg, schema).await?;

    let (unique_indexes, mut notes) = unique_indexes(pg, schema).await?;
    // Each text column in an index gets a share of InnoDB's key size limit; a column in
    // several indexes gets the smallest share.
    let mut indexed_chars: HashMap<usize, usize> = HashMap::new();
    // A keyless table gets no primary key; its `key` lists every column.
    let primary_key: &[usize] = if schema.keyless { &[] } else { &schema.key };
    let indexes =
        std::iter::once(primary_key).chain(unique_indexes.iter().map(|(_, c)| c.as_slice()));
    for columns in indexes.filter(|columns| !columns.is_empty()) {
        let budget = text_budget(schema, columns);
        for &column in columns {
            indexed_chars
                .entry(column)
                .and_modify(|chars| *chars = (*chars).min(budget))
                .or_insert(budget);
        }
    }

    let mut lines = Vec::new();
    for (index, column) in schema.columns.iter().enumerate() {
        let is_key = primary_key.contains(&index);
        let details = source.get(&column.name);
        let column_type = match &column.type_override {
            Some(type_override) => type_override.clone(),
            None => column_type(
                column.pg_type,
                details,
                indexed_chars.get(&index).copied(),
                flavor,
            ),
        };
        let mut line = format!("{} {column_type}", quote_mysql_ident(&column.target));
        let nullable = details.is_none_or(|details| details.nullable);
        if is_key || !nullable {
            line.push_str(" NOT NULL");
        }
        lines.push(line);
    }
    let key: Vec<String> = primary_key
        .iter()
        .map(|&index| quote_mysql_ident(&schema.columns[index].target))
        .collect();
    if !key.is_empty() {
        lines.push(format!("PRIMARY KEY ({})", key.join(", ")));
    }
    for (name, columns) in &unique_indexes {
        let names: Vec<String> = columns
            .iter()
            .map(|&index| quote_mysql_ident(&schema.columns[index].target))
            .collect();
        lines.push(format!(
            "UNIQUE KEY {} ({})",
            quote_mysql_ident(name),
            names.join(", ")
        ));
    }
    if !unique_indexes.is_empty() {
        notes.push(
            "changes to this table are applied as an UPDATE and an INSERT by primary key, \
             because of its unique indexes"
                .to_string(),
        );
    }

    let mut comment = String::new();
    write_string_literal(
        &mut comment,
        &format!("created by pg-to-mysql-sync from {}", schema.name),
    );
    // Every text column compares exactly, as in PostgreSQL, not only the key columns.
    let sql = format!(
        "CREATE TABLE {} (\n  {}\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={} \
         COMMENT={comment}",
        schema.target_sql(),
        lines.join(",\n  "),
        flavor.exact_collation(),
    );

    Ok((sql, notes))
}

/// Reads the table's unique indexes other than the primary key, as column positions. Indexes
/// MySQL cannot build (partial, on expressions, or on columns synced as JSON or geometry) are
/// left out, with a note each.
async fn unique_indexes(
    pg: &tokio_postgres::Client,
    schema: &TableSchema,
) -> Result<(Vec<(String, Vec<usize>)>, Vec<String>), CreateError> {
    let rows = pg
        .query(
            "SELECT i.relname::text, x.indpred IS NOT NULL OR x.indexprs IS NOT NULL, \
             coalesce(array_agg(a.attname::text ORDER BY k.ord) \
                 FILTER (WHERE a.attname IS NOT NULL), '{}') \
             FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
             CROSS JOIN LATERAL unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
             LEFT JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum \
             WHERE x.indrelid = $1::text::regclass AND x.indisunique AND NOT x.indisprimary \
             GROUP BY i.relname, x.indpred, x.indexprs ORDER BY i.relname",
            &[&schema.name.quoted()],
        )
        .await
        .map_err(crate::check::CheckError::from)?;
    let mut indexes = Vec::new();
    let mut notes = Vec::new();
    for row in rows {
        let name: String = row.get(0);
        let partial_or_expression: bool = row.get(1);
        let names: Vec<String> = row.get(2);
        let columns: Vec<usize> = names
            .iter()
            .filter_map(|name| schema.columns.iter().position(|c| &c.name == name))
            .collect();
        let indexable = columns.len() == names.len()
            && columns.iter().all(|&index| {
                !matches!(
                    schema.columns[index].pg_type,
                    PgType::Json
                        | PgType::Jsonb
                        | PgType::Hstore
                        | PgType::Array
                        | PgType::Composite
                        | PgType::Geometry
                        | PgType::Geography
                )
            });
        if partial_or_expression || !indexable {
            notes.push(format!(
                "the unique index {name} was left out: MySQL cannot build it (it is partial, on \
                 an expression, on a column synced as JSON or geometry, or on a column the \
                 mapping file leaves out)"
            ));
            continue;
        }
        indexes.push((name, columns));
    }

    Ok((indexes, notes))
}

/// Returns the characters each text column of an index may have, so that the index stays
/// within InnoDB's key size limit.
fn text_budget(schema: &TableSchema, columns: &[usize]) -> usize {
    let text_columns = columns
        .iter()
        .filter(|&&index| is_text_key(schema.columns[index].pg_type))
        .count();
    let fixed_bytes: usize = columns
        .iter()
        .filter(|&&index| !is_text_key(schema.columns[index].pg_type))
        .map(|&index| fixed_key_bytes(schema.columns[index].pg_type))
        .sum();
    (MAX_KEY_BYTES.saturating_sub(fixed_bytes) / UTF8MB4_BYTES)
        .checked_div(text_columns)
        .unwrap_or(0)
        .max(1)
}

/// Creates the table. Returns the statement and notes on what was left out.
pub async fn create_table(
    pg: &tokio_postgres::Client,
    mysql: &mut Conn,
    schema: &TableSchema,
    flavor: Flavor,
) -> Result<(String, Vec<String>), CreateError> {
    let (sql, notes) = create_table_statement(pg, schema, flavor).await?;
    mysql
        .query_drop(&sql)
        .await
        .map_err(|cause| CreateError::Create {
            table: schema.name.to_string(),
            cause,
        })?;
    Ok((sql, notes))
}

/// Rejects names longer than MySQL allows, and column names that MySQL, which compares them
/// without case, would take as one.
fn check_names(schema: &TableSchema) -> Result<(), CreateError> {
    let error = |reason: String| CreateError::Name {
        table: schema.name.to_string(),
        reason,
    };
    if schema.target_table.chars().count() > MAX_IDENTIFIER_CHARS {
        return Err(error(format!(
            "the table name has more than {MAX_IDENTIFIER_CHARS} characters, MySQL's limit; \
             map it to a shorter name in the mapping file (MAPPING_FILE)"
        )));
    }
    for (index, column) in schema.columns.iter().enumerate() {
        if column.target.chars().count() > MAX_IDENTIFIER_CHARS {
            return Err(error(format!(
                "column `{}` has more than {MAX_IDENTIFIER_CHARS} characters, MySQL's limit; \
                 rename it in the mapping file (MAPPING_FILE)",
                column.target
            )));
        }
        let folded = column.target.to_lowercase();
        if let Some(other) = schema.columns[..index]
            .iter()
            .find(|other| other.target.to_lowercase() == folded)
        {
            return Err(error(format!(
                "columns `{}` and `{}` differ only in case, and MySQL column names ignore case; \
                 map one of them to another name in the mapping file (MAPPING_FILE), or rename \
                 it in PostgreSQL",
                other.target, column.target
            )));
        }
    }

    Ok(())
}

/// Tells whether a key column of this type becomes a text column in MySQL.
fn is_text_key(pg_type: PgType) -> bool {
    !matches!(
        pg_type,
        PgType::Int2
            | PgType::Int4
            | PgType::Int8
            | PgType::Numeric
            | PgType::Money
            | PgType::Bool
            | PgType::Date
            | PgType::Timestamp
            | PgType::Timestamptz
            | PgType::Time
            | PgType::Uuid
            | PgType::Bytea
    )
}

/// Index bytes of a non-text key column; an upper estimate for DECIMAL and binary columns.
fn fixed_key_bytes(pg_type: PgType) -> usize {
    match pg_type {
        PgType::Int2 => 2,
        PgType::Int4 | PgType::Date => 4,
        PgType::Int8 | PgType::Timestamp | PgType::Timestamptz | PgType::Time => 8,
        PgType::Bool => 1,
        PgType::Uuid => 36,
        PgType::Numeric | PgType::Money => 32,
        _ => 256,
    }
}

/// Returns the MySQL type of a column. `indexed_chars` is set for a column in the primary key
/// or a unique index, and gives the characters it may have there.
fn column_type(
    pg_type: PgType,
    source: Option<&SourceColumn>,
    indexed_chars: Option<usize>,
    flavor: Flavor,
) -> String {
    let is_key = indexed_chars.is_some();
    let key_text_chars = indexed_chars.unwrap_or(0);
    let length = source.and_then(|source| source.max_length);
    let exact = flavor.exact_collation();
    // Text that must compare exactly: key columns get a binary no-pad collation.
    let text = |chars: Option<i32>| -> String {
        match (is_key, chars) {
            (true, Some(chars)) if (chars as usize) <= key_text_chars => {
                format!("VARCHAR({chars}) COLLATE {exact}")
            }
            (true, _) => format!("VARCHAR({key_text_chars}) COLLATE {exact}"),
            (false, Some(chars)) if chars <= MAX_VARCHAR_CHARS => format!("VARCHAR({chars})"),
            (false, _) => "LONGTEXT".to_string(),
        }
    };
    match pg_type {
        PgType::Int2 => "SMALLINT".into(),
        PgType::Int4 => "INT".into(),
        PgType::Int8 => "BIGINT".into(),
        PgType::Numeric => match (
            source.and_then(|source| source.precision),
            source.and_then(|source| source.scale),
        ) {
            (Some(precision), Some(scale)) if precision <= 65 && scale <= 30 => {
                format!("DECIMAL({precision},{scale})")
            }
            // Without a declared precision, the widest DECIMAL; values beyond it halt apply.
            _ => "DECIMAL(65,30)".into(),
        },
        PgType::Money => "DECIMAL(19,2)".into(),
        PgType::Float4 => "FLOAT".into(),
        PgType::Float8 => "DOUBLE".into(),
        PgType::Bool => "BOOLEAN".into(),
        PgType::Date => "DATE".into(),
        PgType::Timestamp | PgType::Timestamptz => format!(
            "DATETIME({})",
            source
                .and_then(|source| source.datetime_precision)
                .unwrap_or(6)
        ),
        PgType::Time => format!(
            "TIME({})",
            source
                .and_then(|source| source.datetime_precision)
                .unwrap_or(6)
        ),
        PgType::Uuid => "CHAR(36) CHARACTER SET ascii COLLATE ascii_bin".into(),
        PgType::Bytea if is_key => format!("VARBINARY({})", key_text_chars * UTF8MB4_BYTES),
        PgType::Bytea => "LONGBLOB".into(),
        PgType::Json | PgType::Jsonb | PgType::Hstore | PgType::Array | PgType::Composite => {
            "JSON".into()
        }
        PgType::Geometry | PgType::Geography => "GEOMETRY".into(),
        PgType::Timetz => text(Some(24)),
        PgType::Interval => text(Some(64)),
        PgType::Inet | PgType::Cidr => text(Some(43)),
        PgType::Macaddr => text(Some(17)),
        PgType::Macaddr8 => text(Some(23)),
        // Enum labels are at most 63 bytes.
        PgType::Enum => text(Some(63)),
        PgType::Bit | PgType::Varbit => text(length),
        PgType::Text
        | PgType::Varchar
        | PgType::Bpchar
        | PgType::Citext
        | PgType::Xml
        | PgType::Tsvector => text(length),
    }
}
