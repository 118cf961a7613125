//! Table definitions read from the PostgreSQL catalog: columns, their types and the primary key.
//!
//! Column types decide how values are converted for MySQL, so they come from the catalog and
//! never from the JSON values themselves.

use std::fmt;

use crate::config::TableName;

/// A PostgreSQL column type that this version can sync. Domains count as their base type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgType {
    /// `smallint`.
    Int2,
    /// `integer`.
    Int4,
    /// `bigint`.
    Int8,
    /// `numeric` / `decimal`.
    Numeric,
    /// `real`.
    Float4,
    /// `double precision`.
    Float8,
    /// `boolean`.
    Bool,
    /// `text`.
    Text,
    /// `varchar`.
    Varchar,
    /// `char(n)`.
    Bpchar,
    /// `date`.
    Date,
    /// `timestamp without time zone`.
    Timestamp,
    /// `timestamp with time zone`.
    Timestamptz,
    /// `json`.
    Json,
    /// `jsonb`.
    Jsonb,
    /// `uuid`.
    Uuid,
    /// `bytea`.
    Bytea,
}

impl PgType {
    /// Maps a catalog type name (`pg_type.typname`) to a supported type.
    pub fn from_type_name(name: &str) -> Option<PgType> {
        Some(match name {
            "int2" => PgType::Int2,
            "int4" => PgType::Int4,
            "int8" => PgType::Int8,
            "numeric" => PgType::Numeric,
            "float4" => PgType::Float4,
            "float8" => PgType::Float8,
            "bool" => PgType::Bool,
            "text" => PgType::Text,
            "varchar" => PgType::Varchar,
            "bpchar" => PgType::Bpchar,
            "date" => PgType::Date,
            "timestamp" => PgType::Timestamp,
            "timestamptz" => PgType::Timestamptz,
            "json" => PgType::Json,
            "jsonb" => PgType::Jsonb,
            "uuid" => PgType::Uuid,
            "bytea" => PgType::Bytea,
            _ => return None,
        })
    }
}

/// The supported types, as listed in error messages.
pub const SUPPORTED_TYPES: &str = "smallint, integer, bigint, numeric, real, double precision, \
     boolean, text, varchar, char, date, timestamp, timestamptz, json, jsonb, uuid, bytea";

/// One column of a synced table.
#[derive(Debug, Clone)]
pub struct Column {
    /// Column name, as in the catalog; the MySQL column has the same name.
    pub name: String,
    /// Type used for value conversion.
    pub pg_type: PgType,
    /// Type as PostgreSQL prints it, e.g. `numeric(12,2)`, for messages.
    pub type_display: String,
}

/// A synced table as the catalog describes it.
#[derive(Debug, Clone)]
pub struct TableSchema {
    /// Source table.
    pub name: TableName,
    /// Columns in catalog order.
    pub columns: Vec<Column>,
    /// Positions in `columns` of the primary-key columns, in key order.
    pub key: Vec<usize>,
}

impl TableSchema {
    /// Returns the key columns, in key order.
    pub fn key_columns(&self) -> impl Iterator<Item = &Column> {
        self.key.iter().map(|&index| &self.columns[index])
    }
}

/// Something about a synced table that prevents syncing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaProblem {
    /// The table does not exist in PostgreSQL.
    TableNotFound(TableName),
    /// The name refers to a view, a sequence or another kind of relation.
    NotATable(TableName),
    /// The table has no primary key.
    NoPrimaryKey(TableName),
    /// The table is partitioned, a partition, or part of an inheritance tree. Statement
    /// triggers on one table miss writes made directly to its partitions or children.
    PartOfHierarchy(TableName),
    /// The primary key is DEFERRABLE, so keys can repeat inside a transaction and a change
    /// cannot be matched to one row.
    DeferrableKey(TableName),
    /// A primary-key column cannot identify rows in MySQL.
    UnsupportedKeyColumn {
        /// The table.
        table: TableName,
        /// The column.
        column: String,
        /// Why, and what to do.
        reason: &'static str,
    },
    /// A column's type is not supported.
    UnsupportedType {
        /// The table.
        table: TableName,
        /// The column.
        column: String,
        /// The type as PostgreSQL prints it.
        type_display: String,
    },
}

impl fmt::Display for SchemaProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaProblem::TableNotFound(table) => write!(
                f,
                "table {table} does not exist in PostgreSQL; create it or remove it from SYNC_TABLES"
            ),
            SchemaProblem::NotATable(table) => write!(
                f,
                "{table} is not an ordinary or partitioned table; only tables can be synced"
            ),
            SchemaProblem::NoPrimaryKey(table) => write!(
                f,
                "table {table} has no primary key; add one (ALTER TABLE … ADD PRIMARY KEY) so that \
                 updates and deletes find their row in MySQL"
            ),
            SchemaProblem::PartOfHierarchy(table) => write!(
                f,
                "table {table} is partitioned, a partition, or has inheritance parents or \
                 children; writes to a partition or child would not be captured, so this version \
                 does not sync such tables"
            ),
            SchemaProblem::DeferrableKey(table) => write!(
                f,
                "the primary key of table {table} is DEFERRABLE, so a key can repeat inside a \
                 transaction and changes cannot be matched to rows; make it NOT DEFERRABLE"
            ),
            SchemaProblem::UnsupportedKeyColumn {
                table,
                column,
                reason,
            } => {
                write!(f, "primary-key column {column} of table {table} {reason}")
            }
            SchemaProblem::UnsupportedType {
                table,
                column,
                type_display,
            } => write!(
                f,
                "column {column} of table {table} has type {type_display}, which this version \
                 cannot sync; supported types are {SUPPORTED_TYPES}. Change the column type or \
                 remove the table from SYNC_TABLES"
            ),
        }
    }
}

/// Failure to read table definitions.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The catalog query failed.
    #[error("failed to read the definition of table {table} from the PostgreSQL catalog")]
    Query {
        /// The table being read.
        table: TableName,
        /// The cause.
        #[source]
        source: tokio_postgres::Error,
    },
    /// One or more tables cannot be synced.
    #[error("{}", problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
    Unsupported {
        /// Every problem found, one per line in the message.
        problems: Vec<SchemaProblem>,
    },
}

const RELATION_QUERY: &str = "SELECT c.oid, c.relkind::text, \
     c.relispartition OR EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i \
         WHERE i.inhrelid = c.oid OR i.inhparent = c.oid), \
     EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k \
         WHERE k.conrelid = c.oid AND k.contype = 'p' AND k.condeferrable) \
     FROM pg_catalog.pg_class c \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = $1 AND c.relname = $2";

const COLUMNS_QUERY: &str = "SELECT a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod), \
     CASE WHEN t.typtype = 'd' THEN bt.typname ELSE t.typname END::text \
     FROM pg_catalog.pg_attribute a \
     JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
     LEFT JOIN pg_catalog.pg_type bt ON bt.oid = t.typbasetype \
     WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum";

const KEY_QUERY: &str = "SELECT a.attname::text, coalesce(co.collisdeterministic, true) \
     FROM pg_catalog.pg_index i \
     CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position) \
     JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
     LEFT JOIN pg_catalog.pg_collation co ON co.oid = a.attcollation \
     WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.position";

/// Reads every table's definition and checks that it can be synced. All problems are reported
/// together, so one run shows everything to fix.
pub async fn load_table_schemas(
    client: &tokio_postgres::Client,
    tables: &[TableName],
) -> Result<Vec<TableSchema>, SchemaError> {
    let mut schemas = Vec::new();
    let mut problems = Vec::new();
    for table in tables {
        let query_error = |source| SchemaError::Query {
            table: table.clone(),
            source,
        };
        let relation = client
            .query_opt(RELATION_QUERY, &[&table.schema, &table.name])
            .await
            .map_err(query_error)?;
        let Some(relation) = relation else {
            problems.push(SchemaProblem::TableNotFound(table.clone()));
            continue;
        };
        let oid: u32 = relation.get(0);
        let kind: String = relation.get(1);
        let in_hierarchy: bool = relation.get(2);
        let deferrable_key: bool = relation.get(3);
        if kind != "r" && kind != "p" {
            problems.push(SchemaProblem::NotATable(table.clone()));
            continue;
        }
        if kind == "p" || in_hierarchy {
            problems.push(SchemaProblem::PartOfHierarchy(table.clone()));
            continue;
        }
        if deferrable_key {
            problems.push(SchemaProblem::DeferrableKey(table.clone()));
        }

        let mut columns = Vec::new();
        for row in client
            .query(COLUMNS_QUERY, &[&oid])
            .await
            .map_err(query_error)?
        {
            let name: String = row.get(0);
            let type_display: String = row.get(1);
            let type_name: String = row.get(2);
            match PgType::from_type_name(&type_name) {
                Some(pg_type) => columns.push(Column {
                    name,
                    pg_type,
                    type_display,
                }),
                None => problems.push(SchemaProblem::UnsupportedType {
                    table: table.clone(),
                    column: name,
                    type_display,
                }),
            }
        }

        let key_rows = client
            .query(KEY_QUERY, &[&oid])
            .await
            .map_err(query_error)?;
        if key_rows.is_empty() {
            problems.push(SchemaProblem::NoPrimaryKey(table.clone()));
            continue;
        }
        let key_names: Vec<String> = key_rows.iter().map(|row| row.get(0)).collect();
        for row in &key_rows {
            let name: String = row.get(0);
            let deterministic: bool = row.get(1);
            let is_float = columns
                .iter()
                .any(|c| c.name == name && matches!(c.pg_type, PgType::Float4 | PgType::Float8));
            let reason = if !deterministic {
                "has a nondeterministic collation, so keys that PostgreSQL treats as equal differ \
                 in MySQL; use a deterministic collation"
            } else if is_float {
                "is a floating-point number, which MySQL cannot match exactly in a WHERE clause; \
                 use numeric or an integer key"
            } else {
                continue;
            };
            problems.push(SchemaProblem::UnsupportedKeyColumn {
                table: table.clone(),
                column: name,
                reason,
            });
        }
        let key = key_names
            .iter()
            .filter_map(|name| columns.iter().position(|column| &column.name == name))
            .collect::<Vec<_>>();
        if key.len() == key_names.len() {
            schemas.push(TableSchema {
                name: table.clone(),
                columns,
                key,
            });
        }
    }
    if !problems.is_empty() {
        return Err(SchemaError::Unsupported { problems });
    }

    Ok(schemas)
}
