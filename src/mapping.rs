//! The mapping file (`MAPPING_FILE`): MySQL names, columns and types for synced tables.
//!
//! ```toml
//! [tables."public.orders"]
//! table = "orders_copy"          # MySQL table; default: the PostgreSQL table's name
//! database = "archive"           # MySQL database; default: the one in MYSQL_DATABASE_URL
//! exclude = ["internal_note"]    # or include = ["id", "total"]; key columns always stay
//! rename = { total = "amount" }  # PostgreSQL column = MySQL column
//! types = { total = "DECIMAL(14,2)" }  # MySQL type for setup --create-tables
//! ```
//!
//! Every problem is reported with the file, the line and the fix. Excluded columns are still
//! captured and journaled, because the capture triggers write whole rows; apply never writes
//! them to MySQL.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::config::TableName;
use crate::schema::TableSchema;

/// Longest MySQL identifier, in characters.
const MAX_IDENTIFIER_CHARS: usize = 64;

/// Tells whether `text` is a type name, an optional `(n)` or `(n,m)`, and an optional
/// `UNSIGNED`: enough for the types of docs/types.md, and nothing that could add a clause to
/// CREATE TABLE.
fn is_plain_type(text: &str) -> bool {
    let text = text.trim();
    let (text, _) = match text.to_ascii_uppercase().strip_suffix(" UNSIGNED") {
        Some(_) => (text[..text.len() - " UNSIGNED".len()].trim_end(), true),
        None => (text, false),
    };
    let (name, arguments) = match text.split_once('(') {
        Some((name, rest)) => match rest.strip_suffix(')') {
            Some(arguments) => (name.trim_end(), Some(arguments)),
            None => return false,
        },
        None => (text, None),
    };
    let name_ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphabetic());
    let arguments_ok = arguments.is_none_or(|arguments| {
        let parts: Vec<&str> = arguments.split(',').map(str::trim).collect();
        parts.len() <= 2
            && parts
                .iter()
                .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_digit()))
    });
    name_ok && arguments_ok
}

/// A problem in the mapping file.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {message}", .file.display(), .line.map(|line| format!(":{line}")).unwrap_or_default())]
pub struct MappingError {
    /// The mapping file.
    pub file: PathBuf,
    /// Line of the problem, when known.
    pub line: Option<usize>,
    /// The problem and its fix.
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileContent {
    #[serde(default)]
    tables: BTreeMap<Spanned<String>, Spanned<TableEntry>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableEntry {
    table: Option<Spanned<String>>,
    database: Option<Spanned<String>>,
    include: Option<Vec<Spanned<String>>>,
    exclude: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    rename: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    types: BTreeMap<Spanned<String>, Spanned<String>>,
}

/// A parsed and checked mapping file.
#[derive(Debug, Clone)]
pub struct Mapping {
    file: PathBuf,
    text: String,
    tables: Vec<(TableName, Spanned<TableEntry>)>,
}

impl Mapping {
    /// Reads and checks the mapping file. Its tables must be in `SYNC_TABLES`.
    pub fn load(file: &Path, sync_tables: &[TableName]) -> Result<Mapping, MappingError> {
        let text = std::fs::read_to_string(file).map_err(|error| MappingError {
            file: file.to_path_buf(),
            line: None,
            message: format!("cannot be read: {error}; fix MAPPING_FILE or the file's rights"),
        })?;
        let mut mapping = Mapping {
            file: file.to_path_buf(),
            text,
            tables: Vec::new(),
        };
        let content: FileContent = toml::from_str(&mapping.text).map_err(|error| {
            let line = error.span().map(|span| mapping.line_of(span.start));
            mapping.error_at(
                line,
                format!(
                    "invalid TOML: {}; each table is a [tables.\"schema.table\"] section",
                    error.message().trim()
                ),
            )
        })?;

        for (name, entry) in content.tables {
            let line = Some(mapping.line_of(name.span().start));
            let table = TableName::parse(name.get_ref()).map_err(|reason| {
                mapping.error_at(line, format!("{reason}, in the section name"))
            })?;
            if !sync_tables.contains(&table) {
                return Err(mapping.error_at(
                    line,
                    format!(
                        "table {table} is not in SYNC_TABLES; add it there or remove the section"
                    ),
                ));
            }
            mapping.check_entry(entry.get_ref())?;
            mapping.tables.push((table, entry));
        }

        Ok(mapping)
    }

    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn error_at(&self, line: Option<usize>, message: String) -> MappingError {
        MappingError {
            file: self.file.clone(),
            line,
            message,
        }
    }

    fn error_on<T>(&self, spanned: &Spanned<T>, message: String) -> MappingError {
        self.error_at(Some(self.line_of(spanned.span().start)), message)
    }

    /// Checks what can be checked without the table's definition.
    fn check_entry(&self, entry: &TableEntry) -> Result<(), MappingError> {
        if let (Some(_), Some(exclude)) = (&entry.include, &entry.exclude)
            && let Some(first) = exclude.first()
        {
            return Err(self.error_on(
                first,
                "a table has either include or exclude, not both; keep one".to_string(),
            ));
        }
        let names = entry
            .table
            .iter()
            .chain(entry.database.iter())
            .chain(entry.rename.values());
        for name in names {
            let text = name.get_ref();
            if text.is_empty() || text.chars().count() > MAX_IDENTIFIER_CHARS {
                return Err(self.error_on(
                    name,
                    format!(
                        "the MySQL name `{text}` is empty or longer than \
                         {MAX_IDENTIFIER_CHARS} characters; choose another"
                    ),
                ));
            }
        }
        for column_type in entry.types.values() {
            // The type goes into CREATE TABLE as it is, so only plain type syntax is allowed.
            let text = column_type.get_ref();
            if !is_plain_type(text) {
                return Err(self.error_on(
                    column_type,
                    format!(
                        "the type `{text}` is not a plain MySQL type; write a type name with \
                         an optional length or precision and UNSIGNED, such as DECIMAL(14,2), \
                         VARCHAR(64) or INT UNSIGNED"
                    ),
                ));
            }
        }

        Ok(())
    }

    /// Applies the mapping to the tables read from PostgreSQL. `default_database` is the
    /// database of `MYSQL_DATABASE_URL`, to compare targets.
    pub fn apply(
        &self,
        schemas: Vec<TableSchema>,
        default_database: &str,
    ) -> Result<Vec<TableSchema>, MappingError> {
        let mut mapped = Vec::with_capacity(schemas.len());
        for schema in schemas {
            match self.tables.iter().find(|(table, _)| *table == schema.name) {
                Some((_, entry)) => mapped.push(self.apply_to(schema, entry)?),
                None => mapped.push(schema),
            }
        }
        self.check_distinct_targets(&mapped, default_database)?;

        Ok(mapped)
    }

    fn apply_to(
        &self,
        mut schema: TableSchema,
        entry: &Spanned<TableEntry>,
    ) -> Result<TableSchema, MappingError> {
        let section = entry;
        let entry = entry.get_ref();
        let find = |name: &Spanned<String>| {
            schema
                .columns
                .iter()
                .position(|column| column.name == *name.get_ref())
                .ok_or_else(|| {
                    self.error_on(
                        name,
                        format!(
                            "table {} has no column `{}`; use the PostgreSQL column name",
                            schema.name,
                            name.get_ref()
                        ),
                    )
                })
        };

        // Columns to drop, by position.
        let mut dropped = vec![false; schema.columns.len()];
        if let Some(include) = &entry.include {
            let kept: Vec<usize> = include.iter().map(find).collect::<Result<_, _>>()?;
            for (index, drop) in dropped.iter_mut().enumerate() {
                *drop = !kept.contains(&index);
            }
        }
        if let Some(exclude) = &entry.exclude {
            for name in exclude {
                dropped[find(name)?] = true;
            }
        }
        if dropped.iter().any(|&drop| drop) {
            if schema.keyless {
                return Err(self.error_on(
                    section,
                    format!(
                        "table {} has no primary key, so its rows are matched on all columns \
                         and none can be left out; remove include and exclude",
                        schema.name
                    ),
                ));
            }
            if let Some(&key) = schema.key.iter().find(|&&index| dropped[index]) {
                return Err(self.error_on(
                    section,
                    format!(
                        "column `{}` of table {} is part of the primary key and cannot be left \
                         out; keep it in include, or remove it from exclude",
                        schema.columns[key].name, schema.name
                    ),
                ));
            }
        }
        let renames: Vec<(usize, String)> = entry
            .rename
            .iter()
            .map(|(name, target)| Ok((find(name)?, target.get_ref().clone())))
            .collect::<Result<_, MappingError>>()?;
        let types: Vec<(usize, String)> = entry
            .types
            .iter()
            .map(|(name, column_type)| Ok((find(name)?, column_type.get_ref().trim().to_string())))
            .collect::<Result<_, MappingError>>()?;
        for (index, target) in renames {
            schema.columns[index].target = target;
        }
        for (index, column_type) in types {
            schema.columns[index].type_override = Some(column_type);
        }
        // MySQL column names ignore case, so two kept columns may not share one.
        for (index, column) in schema.columns.iter().enumerate() {
            if dropped[index] {
                continue;
            }
            let clash = schema.columns[..index]
                .iter()
                .enumerate()
                .find(|(other, other_column)| {
                    !dropped[*other] && other_column.target.eq_ignore_ascii_case(&column.target)
                });
            if let Some((_, other)) = clash {
                return Err(self.error_on(
                    section,
                    format!(
                        "columns `{}` and `{}` of table {} would both be the MySQL column `{}`; \
                         rename one of them",
                        other.name, column.name, schema.name, column.target
                    ),
                ));
            }
        }
        if let Some(table) = &entry.table {
            schema.target_table = table.get_ref().clone();
        }
        if let Some(database) = &entry.database {
            schema.target_database = Some(database.get_ref().clone());
        }

        // Remove dropped columns and renumber the key.
        let mut new_position = Vec::with_capacity(schema.columns.len());
        let mut kept_columns = Vec::new();
        for (index, column) in schema.columns.into_iter().enumerate() {
            if dropped[index] {
                schema.ignored_columns.push(column.name);
                new_position.push(usize::MAX);
            } else {
                new_position.push(kept_columns.len());
                kept_columns.push(column);
            }
        }
        schema.columns = kept_columns;
        schema.key = schema
            .key
            .iter()
            .map(|&index| new_position[index])
            .collect();

        Ok(schema)
    }

    /// Rejects two synced tables that would write to one MySQL table.
    fn check_distinct_targets(
        &self,
        schemas: &[TableSchema],
        default_database: &str,
    ) -> Result<(), MappingError> {
        let database = |schema: &TableSchema| {
            schema
                .target_database
                .clone()
                .unwrap_or_else(|| default_database.to_string())
        };
        for (index, schema) in schemas.iter().enumerate() {
            let clash = schemas[..index].iter().find(|other| {
                other
                    .target_table
                    .eq_ignore_ascii_case(&schema.target_table)
                    && database(other) == database(schema)
            });
            if let Some(other) = clash {
                return Err(self.error_at(
                    None,
                    format!(
                        "{} and {} would both sync to the MySQL table `{}`; map one of them \
                         to another table",
                        other.name, schema.name, schema.target_table
                    ),
                ));
            }
        }

        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Mapping, MappingError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mapping.toml");
        std::fs::write(&file, text).unwrap();
        let tables = [
            TableName::parse("public.orders").unwrap(),
            TableName::parse("public.items").unwrap(),
        ];
        Mapping::load(&file, &tables)
    }

    #[test]
    fn valid_file_loads() {
        let mapping = load(
            "[tables.\"public.orders\"]\ntable = \"orders_copy\"\ndatabase = \"archive\"\n\
             exclude = [\"note\"]\nrename = { total = \"amount\" }\n\
             types = { total = \"DECIMAL(14,2)\" }\n",
        )
        .unwrap();
        assert_eq!(mapping.tables.len(), 1);
    }

    #[test]
    fn errors_name_file_and_line() {
        let error = load("\n[tables.\"public.nothing\"]\ntable = \"x\"\n").unwrap_err();
        let message = error.to_string();
        assert!(message.contains("mapping.toml:2:"), "{message}");
        assert!(message.contains("not in SYNC_TABLES"), "{message}");

        let error = load("[tables.\"public.orders\"]\ncolour = 1\n").unwrap_err();
        assert!(error.to_string().contains(":2:"), "{error}");

        for bad in [
            "INT); DROP TABLE x; --",
            "INT, evil INT, UNIQUE KEY u (note)",
            "INT GENERATED ALWAYS AS (1) VIRTUAL",
            "DECIMAL(14,2,3)",
            "VARCHAR(a)",
        ] {
            let text = format!("[tables.\"public.orders\"]\ntypes = {{ a = \"{bad}\" }}\n");
            let error = load(&text).unwrap_err();
            assert!(
                error.to_string().contains("not a plain MySQL type"),
                "{bad}: {error}"
            );
        }
        for good in [
            "DECIMAL(14,2)",
            "VARCHAR(64)",
            "INT UNSIGNED",
            "DOUBLE",
            "BINARY(16)",
        ] {
            assert!(is_plain_type(good), "{good}");
        }

        let error =
            load("[tables.\"public.orders\"]\ninclude = [\"a\"]\nexclude = [\"b\"]\n").unwrap_err();
        assert!(
            error.to_string().contains("either include or exclude"),
            "{error}"
        );
        assert_eq!(error.line, Some(3));
    }
}
