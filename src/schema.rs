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
    /// `money`, captured as `numeric` so that the value does not depend on `lc_monetary`.
    Money,
    /// `citext` from the extension of that name, synced as its text.
    Citext,
    /// An enum type, synced as its label.
    Enum,
    /// `time without time zone`.
    Time,
    /// `time with time zone`.
    Timetz,
    /// `interval`, captured in ISO 8601 form (`P1Y2M3DT4H5M6.5S`).
    Interval,
    /// `bit(n)`.
    Bit,
    /// `bit varying(n)`.
    Varbit,
    /// `inet`.
    Inet,
    /// `cidr`.
    Cidr,
    /// `macaddr`.
    Macaddr,
    /// `macaddr8`.
    Macaddr8,
    /// `xml`.
    Xml,
    /// `tsvector`.
    Tsvector,
    /// `hstore` from the extension of that name, synced as a JSON object.
    Hstore,
    /// An array of a type that [`PgType::classify`] accepts as an element, synced as a JSON
    /// array. The element type is checked at setup and shapes only the JSON that `to_json`
    /// writes, so the apply side needs no more than this.
    Array,
    /// A composite type whose fields [`PgType::classify`] accepts, synced as a JSON object.
    Composite,
    /// PostGIS `geometry`.
    Geometry,
    /// PostGIS `geography`.
    Geography,
}

impl PgType {
    /// Maps the name of a built-in type in `pg_catalog` (`pg_type.typname`) to a supported
    /// scalar type.
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
            "money" => PgType::Money,
            "time" => PgType::Time,
            "timetz" => PgType::Timetz,
            "interval" => PgType::Interval,
            "bit" => PgType::Bit,
            "varbit" => PgType::Varbit,
            "inet" => PgType::Inet,
            "cidr" => PgType::Cidr,
            "macaddr" => PgType::Macaddr,
            "macaddr8" => PgType::Macaddr8,
            "xml" => PgType::Xml,
            "tsvector" => PgType::Tsvector,
            _ => return None,
        })
    }

    /// Maps a type that an extension owns, by extension and type name.
    fn from_extension_type(extension: &str, name: &str) -> Option<PgType> {
        match (extension, name) {
            ("citext", "citext") => Some(PgType::Citext),
            ("hstore", "hstore") => Some(PgType::Hstore),
            ("postgis", "geometry") => Some(PgType::Geometry),
            ("postgis", "geography") => Some(PgType::Geography),
            _ => None,
        }
    }

    /// Decides how a type is synced, following domains to their base type and checking the
    /// elements of arrays and the fields of composite types. `place` is where the type
    /// occurs. It matters because arrays and composites are synced as JSON through `to_json`,
    /// which is exact for fewer types than the top level.
    async fn classify(
        client: &tokio_postgres::Client,
        oid: u32,
        place: TypePlace,
    ) -> Result<Result<PgType, TypeRejection>, tokio_postgres::Error> {
        let mut oid = oid;
        // Domains can be based on domains. A chain this long only comes from a damaged catalog.
        for _ in 0..MAX_TYPE_DEPTH {
            let row = client.query_one(TYPE_QUERY, &[&oid]).await?;
            let name: String = row.get(0);
            let kind: String = row.get(1);
            let namespace: String = row.get(2);
            let base: u32 = row.get(3);
            let relation: u32 = row.get(4);
            let element: Option<u32> = row.get(5);
            let extension: Option<String> = row.get(6);
            let display: String = row.get(7);
            if kind == "d" {
                oid = base;
                continue;
            }
            let pg_type = if let Some(element) = element {
                if place != TypePlace::Column {
                    return Ok(Err(TypeRejection::NestedArray { display }));
                }
                match Box::pin(PgType::classify(client, element, TypePlace::ArrayElement)).await? {
                    Ok(_) => PgType::Array,
                    Err(rejection) => return Ok(Err(rejection)),
                }
            } else if kind == "e" {
                PgType::Enum
            } else if kind == "c" {
                for field in client.query(FIELDS_QUERY, &[&relation]).await? {
                    let field_type: u32 = field.get(0);
                    let classified = Box::pin(PgType::classify(
                        client,
                        field_type,
                        TypePlace::CompositeField,
                    ))
                    .await?;
                    if let Err(rejection) = classified {
                        return Ok(Err(rejection));
                    }
                }
                PgType::Composite
            } else if let Some(pg_type) = extension
                .as_deref()
                .and_then(|extension| PgType::from_extension_type(extension, &name))
            {
                pg_type
            } else if let Some(pg_type) = Some(namespace.as_str())
                .filter(|&namespace| namespace == "pg_catalog")
                .and_then(|_| PgType::from_type_name(&name))
            {
                pg_type
            } else {
                return Ok(Err(TypeRejection::Unknown { display, place }));
            };
            if place != TypePlace::Column
                && matches!(pg_type, PgType::Money | PgType::Json | PgType::Jsonb)
            {
                return Ok(Err(TypeRejection::NotInJson { display, place }));
            }

            return Ok(Ok(pg_type));
        }

        Ok(Err(TypeRejection::Unknown {
            display: format!("type {oid}"),
            place,
        }))
    }

    /// Tells whether the row image carries this column as `to_json` writes it. Columns where
    /// it does not get another form from the capture triggers (see the install module).
    pub fn is_exact_in_to_json(self) -> bool {
        !matches!(
            self,
            PgType::Json
                | PgType::Jsonb
                | PgType::Money
                | PgType::Array
                | PgType::Geometry
                | PgType::Geography
        )
    }
}

/// Maximum length of a chain of domains over domains that [`PgType::classify`] follows.
const MAX_TYPE_DEPTH: usize = 32;

/// Position of a type in a column: the column type itself, an array element or a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypePlace {
    /// The column's own type.
    Column,
    /// The element type of an array column.
    ArrayElement,
    /// A field of a composite type, at any depth.
    CompositeField,
}

/// Reason a column type cannot be synced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeRejection {
    /// The type, or a type inside it, is not supported at all.
    Unknown {
        /// The unsupported type as PostgreSQL prints it.
        display: String,
        /// Its position in the column.
        place: TypePlace,
    },
    /// `money`, `json` or `jsonb` inside an array or a composite type, where `to_json` is not
    /// exact: it writes money in the format of `lc_monetary`, and a JSON `null` document the
    /// same way as an SQL NULL.
    NotInJson {
        /// The type as PostgreSQL prints it.
        display: String,
        /// Its position in the column.
        place: TypePlace,
    },
    /// An array inside a composite type. Its lower bounds cannot be checked inside the JSON
    /// object, and a JSON array drops them.
    NestedArray {
        /// The array type as PostgreSQL prints it.
        display: String,
    },
}

impl fmt::Display for TypeRejection {
    /// Writes the clause that follows "column c of table t has type T, ".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let place_text = |place: &TypePlace| match place {
            TypePlace::Column => "",
            TypePlace::ArrayElement => " as the array element type",
            TypePlace::CompositeField => " as a field of a composite type",
        };
        match self {
            TypeRejection::Unknown {
                place: TypePlace::Column,
                ..
            } => write!(
                f,
                "which this version cannot sync; supported types are {SUPPORTED_TYPES}. Change \
                 the column type or remove the table from SYNC_TABLES"
            ),
            TypeRejection::Unknown { display, place } => write!(
                f,
                "which contains {display}{}, a type this version cannot sync; supported types \
                 are {SUPPORTED_TYPES}. Change the column type or remove the table from \
                 SYNC_TABLES",
                place_text(place)
            ),
            TypeRejection::NotInJson { display, place } => write!(
                f,
                "which contains {display}{}; arrays and composite types are synced as JSON, \
                 where to_json writes money in the format of lc_monetary and a JSON null the \
                 same way as an SQL NULL. Use numeric in place of money, or one jsonb column in \
                 place of an array or composite type of json values",
                place_text(place)
            ),
            TypeRejection::NestedArray { display } => write!(
                f,
                "which contains the array type {display} as a field of a composite type; a JSON \
                 array loses non-default lower bounds, and they cannot be checked inside a \
                 composite value. Make the field a jsonb document, or the array a column of its \
                 own"
            ),
        }
    }
}

/// The supported types, as listed in error messages.
pub const SUPPORTED_TYPES: &str = "smallint, integer, bigint, numeric, real, double precision, \
     boolean, text, varchar, char, date, timestamp, timestamptz, json, jsonb, uuid, bytea, \
     money, citext, enums, time, timetz, interval, bit, varbit, inet, cidr, macaddr, macaddr8, \
     xml, tsvector, hstore, arrays and composite types of these, and domains over all of them";

/// One column of a synced table.
#[derive(Debug, Clone)]
pub struct Column {
    /// Column name, as in the catalog; the MySQL column has the same name.
    pub name: String,
    /// Type used for value conversion.
    pub pg_type: PgType,
    /// Type as PostgreSQL prints it, e.g. `numeric(12,2)`, for messages.
    pub type_display: String,
    /// Name of the MySQL column: the PostgreSQL name, unless the mapping file renames it.
    pub target: String,
    /// MySQL column type from the mapping file, used by `setup --create-tables`; the check
    /// then leaves the column's type to the user.
    pub type_override: Option<String>,
}

/// A synced table as the catalog describes it.
#[derive(Debug, Clone)]
pub struct TableSchema {
    /// Source table.
    pub name: TableName,
    /// Columns in catalog order.
    pub columns: Vec<Column>,
    /// Positions in `columns` of the primary-key columns, in key order. For a keyless table,
    /// every column: a row is then identified by all its values.
    pub key: Vec<usize>,
    /// Whether the table has no primary key and was listed in `KEYLESS_TABLES`. Its rows are
    /// matched on all columns with NULL-safe comparison, and a delete removes one row.
    pub keyless: bool,
    /// Name of the MySQL table: the PostgreSQL table's name, unless the mapping file names
    /// another.
    pub target_table: String,
    /// MySQL database of the table, when the mapping file names one; otherwise the database of
    /// `MYSQL_DATABASE_URL`.
    pub target_database: Option<String>,
    /// Columns that the mapping file excludes: present in row images, never written.
    pub ignored_columns: Vec<String>,
}

impl TableSchema {
    /// Returns the MySQL table as SQL, quoted, with its database when the mapping names one.
    pub fn target_sql(&self) -> String {
        let table = crate::apply::quote_mysql_ident(&self.target_table);
        match &self.target_database {
            Some(database) => format!("{}.{table}", crate::apply::quote_mysql_ident(database)),
            None => table,
        }
    }

    /// Returns the condition on `TABLE_SCHEMA` that selects the MySQL table's database in
    /// `information_schema`.
    pub fn target_schema_condition(&self) -> String {
        match &self.target_database {
            Some(database) => {
                let mut condition = "TABLE_SCHEMA = ".to_string();
                crate::apply::write_string_literal(&mut condition, database);
                condition
            }
            None => "TABLE_SCHEMA = DATABASE()".to_string(),
        }
    }

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
    /// A column of a table without a primary key cannot be compared exactly in MySQL.
    UnsupportedKeylessColumn {
        /// The table.
        table: TableName,
        /// The column.
        column: String,
        /// Why, and what to do.
        reason: &'static str,
    },
    /// A column's type, or a type inside it, is not supported.
    UnsupportedType {
        /// The table.
        table: TableName,
        /// The column.
        column: String,
        /// The column type as PostgreSQL prints it.
        type_display: String,
        /// The reason, with the remedy.
        rejection: TypeRejection,
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
                 updates and deletes find their row in MySQL, or list the table in \
                 KEYLESS_TABLES to match rows on all their columns"
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
            SchemaProblem::UnsupportedKeylessColumn {
                table,
                column,
                reason,
            } => {
                write!(
                    f,
                    "column {column} of table {table} (in KEYLESS_TABLES) {reason}"
                )
            }
            SchemaProblem::UnsupportedType {
                table,
                column,
                type_display,
                rejection,
            } => write!(
                f,
                "column {column} of table {table} has type {type_display}, {rejection}"
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
    /// The snapshot could not be read.
    #[error("failed to read the PostgreSQL snapshot: {0}")]
    Snapshot(String),
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
     a.atttypid \
     FROM pg_catalog.pg_attribute a \
     WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum";

/// One type: name, kind (`typtype`), schema, base type of a domain, relation of a composite
/// type, element type of an array, owning extension, and the name as PostgreSQL prints it.
const TYPE_QUERY: &str = "SELECT t.typname::text, t.typtype::text, n.nspname::text, \
     t.typbasetype, t.typrelid, \
     (SELECT e.oid FROM pg_catalog.pg_type e WHERE e.typarray = t.oid), \
     (SELECT x.extname::text FROM pg_catalog.pg_depend d \
         JOIN pg_catalog.pg_extension x ON x.oid = d.refobjid \
         WHERE d.classid = 'pg_catalog.pg_type'::pg_catalog.regclass AND d.objid = t.oid \
         AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass \
         AND d.deptype = 'e' LIMIT 1), \
     pg_catalog.format_type(t.oid, NULL) \
     FROM pg_catalog.pg_type t \
     JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace \
     WHERE t.oid = $1";

/// The field types of a composite type, by its relation.
const FIELDS_QUERY: &str = "SELECT a.atttypid FROM pg_catalog.pg_attribute a \
     WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum";

const KEY_QUERY: &str = "SELECT a.attname::text, coalesce(co.collisdeterministic, true) \
     FROM pg_catalog.pg_index i \
     CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position) \
     JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
     LEFT JOIN pg_catalog.pg_collation co ON co.oid = a.attcollation \
     WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.position";

/// A PostgreSQL snapshot (`txid_current_snapshot()`): which transactions had committed when it
/// was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxidSnapshot {
    xmin: i64,
    xmax: i64,
    in_progress: Vec<i64>,
}

impl TxidSnapshot {
    /// Parses PostgreSQL's text form, `xmin:xmax:xip1,xip2,…`.
    pub fn parse(text: &str) -> Option<TxidSnapshot> {
        let mut parts = text.split(':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let in_progress = match parts.next()? {
            "" => Vec::new(),
            list => list
                .split(',')
                .map(|xid| xid.parse().ok())
                .collect::<Option<Vec<i64>>>()?,
        };
        parts.next().is_none().then_some(TxidSnapshot {
            xmin,
            xmax,
            in_progress,
        })
    }

    /// Tells whether transaction `xid` had committed when the snapshot was taken, as
    /// `txid_visible_in_snapshot` does for a committed transaction.
    pub fn saw_committed(&self, xid: i64) -> bool {
        xid < self.xmin || (xid < self.xmax && !self.in_progress.contains(&xid))
    }
}

/// Reads the current snapshot. Taken before the table definitions, it shows which changes
/// were committed before the definitions were read.
pub async fn read_txid_snapshot(
    client: &tokio_postgres::Client,
) -> Result<TxidSnapshot, SchemaError> {
    let text: String = client
        .query_one("SELECT txid_current_snapshot()::text", &[])
        .await
        .map_err(|source| SchemaError::Snapshot(source.to_string()))?
        .get(0);
    TxidSnapshot::parse(&text)
        .ok_or_else(|| SchemaError::Snapshot(format!("unexpected snapshot text `{text}`")))
}

/// Reads the synced tables' definitions and applies the mapping file, if any.
pub async fn load_synced_schemas(
    client: &tokio_postgres::Client,
    config: &crate::config::Config,
) -> anyhow::Result<Vec<TableSchema>> {
    let schemas = load_table_schemas(client, &config.tables, &config.keyless_tables).await?;
    match &config.mapping {
        Some(mapping) => Ok(mapping.apply(schemas, &config.mysql_database)?),
        None => Ok(schemas),
    }
}

/// Reads every table's definition and checks that it can be synced. All problems are reported
/// together, so one run shows everything to fix.
pub async fn load_table_schemas(
    client: &tokio_postgres::Client,
    tables: &[TableName],
    keyless: &[TableName],
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
            let type_oid: u32 = row.get(2);
            match PgType::classify(client, type_oid, TypePlace::Column)
                .await
                .map_err(query_error)?
            {
                Ok(pg_type) => columns.push(Column {
                    target: name.clone(),
                    name,
                    pg_type,
                    type_display,
                    type_override: None,
                }),
                Err(rejection) => problems.push(SchemaProblem::UnsupportedType {
                    table: table.clone(),
                    column: name,
                    type_display,
                    rejection,
                }),
            }
        }

        let key_rows = client
            .query(KEY_QUERY, &[&oid])
            .await
            .map_err(query_error)?;
        if key_rows.is_empty() {
            if !keyless.contains(table) {
                problems.push(SchemaProblem::NoPrimaryKey(table.clone()));
                continue;
            }
            for column in &columns {
                if let Some(reason) = keyless_type_problem(column.pg_type) {
                    problems.push(SchemaProblem::UnsupportedKeylessColumn {
                        table: table.clone(),
                        column: column.name.clone(),
                        reason,
                    });
                }
            }
            schemas.push(TableSchema {
                name: table.clone(),
                key: (0..columns.len()).collect(),
                columns,
                keyless: true,
                target_table: table.name.clone(),
                target_database: None,
                ignored_columns: Vec::new(),
            });
            continue;
        }
        let key_names: Vec<String> = key_rows.iter().map(|row| row.get(0)).collect();
        for row in &key_rows {
            let name: String = row.get(0);
            let deterministic: bool = row.get(1);
            let type_reason = columns
                .iter()
                .find(|c| c.name == name)
                .and_then(|c| key_type_problem(c.pg_type));
            let reason = if !deterministic {
                "has a nondeterministic collation, so keys that PostgreSQL treats as equal differ \
                 in MySQL; use a deterministic collation"
            } else if let Some(reason) = type_reason {
                reason
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
                keyless: false,
                target_table: table.name.clone(),
                target_database: None,
                ignored_columns: Vec::new(),
            });
        }
    }
    if !problems.is_empty() {
        return Err(SchemaError::Unsupported { problems });
    }

    Ok(schemas)
}

/// Explains why a primary-key column of this type cannot identify rows in MySQL.
///
/// A key must compare in MySQL as it does in PostgreSQL. Otherwise an UPDATE that changes a
/// key to a value PostgreSQL finds equal (the trigger then records no delete of the old key)
/// writes a second row in MySQL.
/// Rows of a keyless table are found in MySQL by comparing every column with the captured
/// value, so every column must compare exactly there.
fn keyless_type_problem(pg_type: PgType) -> Option<&'static str> {
    match pg_type {
        PgType::Float4 => Some(
            "is a real; in a table without a primary key every column is compared, and MySQL \
             compares a FLOAT column with a value only approximately. Use double precision or \
             add a primary key",
        ),
        PgType::Json
        | PgType::Jsonb
        | PgType::Hstore
        | PgType::Array
        | PgType::Composite
        | PgType::Geometry
        | PgType::Geography => Some(
            "cannot be compared exactly in MySQL, but in a table without a primary key every \
             column is compared to find a row; add a primary key",
        ),
        _ => None,
    }
}

fn key_type_problem(pg_type: PgType) -> Option<&'static str> {
    match pg_type {
        PgType::Float4 | PgType::Float8 => Some(
            "is a floating-point number, which MySQL cannot match exactly in a WHERE clause; \
             use numeric or an integer key",
        ),
        PgType::Interval => Some(
            "is an interval; PostgreSQL treats intervals such as 1 day and 24 hours as equal, \
             but their text in MySQL differs. Use another key",
        ),
        PgType::Citext => Some(
            "is citext, which PostgreSQL compares ignoring case, but the MySQL key column \
             should compare exactly; use a text key, with a unique index on lower() for \
             case-insensitive uniqueness",
        ),
        PgType::Geometry | PgType::Geography => {
            Some("is a PostGIS geometry, which MySQL cannot use as a primary key; use a scalar key")
        }
        PgType::Array | PgType::Composite | PgType::Hstore => Some(
            "is synced as a JSON document, whose text can differ for values PostgreSQL treats \
             as equal (such as 1.0 and 1.00), and which MySQL cannot index; use a scalar key",
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_visibility_follows_postgres() {
        let snapshot = TxidSnapshot::parse("100:105:101,103").unwrap();
        assert!(snapshot.saw_committed(99));
        assert!(snapshot.saw_committed(100));
        assert!(!snapshot.saw_committed(101));
        assert!(snapshot.saw_committed(102));
        assert!(!snapshot.saw_committed(103));
        assert!(!snapshot.saw_committed(105));
        assert_eq!(
            TxidSnapshot::parse("7:7:"),
            Some(TxidSnapshot {
                xmin: 7,
                xmax: 7,
                in_progress: Vec::new()
            })
        );
        assert!(TxidSnapshot::parse("7:x:").is_none());
    }
}
