//! Reading rows of a synced table from PostgreSQL, in the form capture gives them.
//!
//! Each row becomes a JSON object of its column values, as a capture trigger would have
//! journaled the same row, with the triggers' value expressions and session settings. Key
//! columns are read with `to_json`, so a key equals, byte for byte, the key of a journaled
//! change. Other columns of simple types are read as their text, which costs PostgreSQL less,
//! and turned into the same JSON value here. Apply then writes every value with the same
//! conversions as a captured change.
//!
//! Rows are streamed with `COPY … TO STDOUT` in primary-key order, one chunk of at most
//! `limit` rows after a given key per statement. One statement reads one snapshot.

use futures_util::{StreamExt, pin_mut};
use serde_json::value::RawValue;

use crate::capture::captured_value_expression;
use crate::config::quote_pg_ident;
use crate::journal::{JournalRecord, Operation};
use crate::schema::{PgType, TableSchema};

/// Session settings of the capture trigger functions, which fix the text of every value.
pub const CAPTURE_SESSION_SETTINGS: &str = "SET bytea_output = 'hex'; \
     SET extra_float_digits = 1; SET \"TimeZone\" = 'UTC'; SET intervalstyle = 'iso_8601'; \
     SET standard_conforming_strings = on";

/// Failure to read rows.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A PostgreSQL call failed.
    #[error("failed to {action}")]
    Postgres {
        /// What failed.
        action: String,
        /// The cause.
        #[source]
        source: tokio_postgres::Error,
    },
    /// PostgreSQL sent rows this reader cannot parse.
    #[error("PostgreSQL sent a row of {table} that cannot be read: {reason}")]
    Malformed {
        /// The table.
        table: String,
        /// The problem, without the value.
        reason: String,
    },
    /// The table's key cannot be used to read it in chunks.
    #[error(
        "table {table} cannot be copied in key order: its key column {column} has type \
         {type_display}, which has no exact text form to resume from"
    )]
    UnsupportedKey {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// Its type.
        type_display: String,
    },
}

/// A chunk of rows read from PostgreSQL.
#[derive(Debug, Default)]
pub struct Chunk {
    /// Rows as insert records with sequence number 0, in key order.
    pub rows: Vec<JournalRecord>,
    /// Key values of the last row, as a JSON array in key-column order; the next chunk starts
    /// after it.
    pub last_key: Option<String>,
}

/// Reads rows of one table in the capture form.
#[derive(Debug, Clone)]
pub struct SourceReader {
    table: String,
    /// Number of columns in each COPY line.
    columns: Vec<String>,
    /// `{"name":` prefixes, JSON-encoded, one per column.
    prefixes: Vec<String>,
    /// Total length of `prefixes`.
    prefixes_len: usize,
    /// The form of each column's COPY field, which sets how it becomes a JSON value.
    forms: Vec<Form>,
    /// Positions of the key columns.
    key: Vec<usize>,
    /// Key columns quoted for SQL, joined for `ORDER BY` and row comparisons.
    key_list: String,
    /// Casts of the key columns, to turn key text back into values.
    key_types: Vec<String>,
    /// `SELECT … FROM table t`.
    select: String,
}

impl SourceReader {
    /// Prepares the reader of `schema`'s table. `postgis_schema` is the quoted schema of the
    /// PostGIS extension, where installed.
    pub fn new(schema: &TableSchema, postgis_schema: Option<&str>) -> Result<Self, SourceError> {
        let forms: Vec<Form> = schema
            .columns
            .iter()
            .enumerate()
            .map(|(index, column)| Form::of(column.pg_type, schema.key.contains(&index)))
            .collect();
        let expressions: Vec<String> = schema
            .columns
            .iter()
            .zip(&forms)
            .map(|(column, form)| {
                let value = if column.pg_type.is_exact_in_to_json() {
                    format!("t.{}", quote_pg_ident(&column.name))
                } else {
                    captured_value_expression(column, "t", postgis_schema)
                };
                match form {
                    Form::Json => format!("to_json({value})"),
                    Form::Number | Form::Bool | Form::String => value,
                }
            })
            .collect();
        let prefixes: Vec<String> = schema
            .columns
            .iter()
            .enumerate()
            .map(|(index, column)| {
                let name = serde_json::to_string(&column.name).expect("a string serializes");
                if index == 0 {
                    format!("{{{name}:")
                } else {
                    format!(",{name}:")
                }
            })
            .collect();
        let mut key_types = Vec::new();
        if !schema.keyless {
            for column in schema.key_columns() {
                let cast = match column.pg_type {
                    PgType::Money => "numeric".to_string(),
                    PgType::Json
                    | PgType::Jsonb
                    | PgType::Array
                    | PgType::Composite
                    | PgType::Hstore
                    | PgType::Geometry
                    | PgType::Geography => {
                        return Err(SourceError::UnsupportedKey {
                            table: schema.name.to_string(),
                            column: column.name.clone(),
                            type_display: column.type_display.clone(),
                        });
                    }
                    _ => column.type_display.clone(),
                };
                key_types.push(cast);
            }
        }
        let key_list = schema
            .key_columns()
            .map(|column| {
                let quoted = format!("t.{}", quote_pg_ident(&column.name));
                match column.pg_type {
                    PgType::Money => format!("{quoted}::numeric"),
                    _ => quoted,
                }
            })
            .collect::<Vec<_>>()
            .join(", ");

        Ok(SourceReader {
            table: schema.name.qualified(),
            columns: schema.columns.iter().map(|c| c.name.clone()).collect(),
            prefixes_len: prefixes.iter().map(String::len).sum(),
            prefixes,
            forms,
            key: schema.key.clone(),
            key_list,
            key_types,
            select: format!(
                "SELECT {} FROM {} t",
                expressions.join(", "),
                schema.name.quoted()
            ),
        })
    }

    /// Returns the query for the rows after `after` (a key from [`Chunk::last_key`]), in key
    /// order, at most `limit` of them.
    pub fn chunk_query(&self, after: Option<&str>, limit: usize) -> Result<String, SourceError> {
        let mut query = self.select.clone();
        if let Some(after) = after {
            query.push_str(&format!(
                " WHERE ({}) > ({})",
                self.key_list,
                self.key_values(after)?
            ));
        }
        query.push_str(&format!(" ORDER BY {} LIMIT {limit}", self.key_list));
        Ok(query)
    }

    /// Returns the query for the rows whose keys are in `keys` (from
    /// [`crate::apply::TablePlan::record_key`]).
    pub fn keys_query(&self, keys: &[String]) -> Result<String, SourceError> {
        let mut tuples = Vec::with_capacity(keys.len());
        for key in keys {
            tuples.push(format!("({})", self.key_values(key)?));
        }
        Ok(format!(
            "{} WHERE ({}) IN ({})",
            self.select,
            self.key_list,
            tuples.join(", ")
        ))
    }

    /// Returns the query for every row, in no particular order.
    pub fn all_query(&self) -> String {
        self.select.clone()
    }

    /// Turns a key, a JSON array of captured values, into SQL values of the key's types.
    fn key_values(&self, key: &str) -> Result<String, SourceError> {
        let values: Vec<serde_json::Value> =
            serde_json::from_str(key).map_err(|_| self.malformed("a key is not a JSON array"))?;
        if values.len() != self.key_types.len() {
            return Err(self.malformed("a key has the wrong number of values"));
        }
        let mut parts = Vec::with_capacity(values.len());
        for (value, cast) in values.iter().zip(&self.key_types) {
            let text = match value {
                serde_json::Value::String(text) => text.clone(),
                serde_json::Value::Number(number) => number.to_string(),
                serde_json::Value::Bool(flag) => flag.to_string(),
                _ => return Err(self.malformed("a key value is null or not a scalar")),
            };
            parts.push(format!("'{}'::{cast}", text.replace('\'', "''")));
        }
        Ok(parts.join(", "))
    }

    /// Runs `query` (from this reader) as a COPY and returns its rows. The key of the last row
    /// is read only when `with_last_key` is set.
    pub async fn read(
        &self,
        client: &tokio_postgres::Transaction<'_>,
        query: &str,
        with_last_key: bool,
    ) -> Result<Chunk, SourceError> {
        let copy = format!("COPY ({query}) TO STDOUT");
        let stream = client
            .copy_out(&copy)
            .await
            .map_err(|source| SourceError::Postgres {
                action: format!("read rows of {}", self.table),
                source,
            })?;
        pin_mut!(stream);
        let mut rows = Vec::new();
        let mut partial: Vec<u8> = Vec::new();
        while let Some(data) = stream.next().await {
            let data = data.map_err(|source| SourceError::Postgres {
                action: format!("read rows of {}", self.table),
                source,
            })?;
            let mut start = 0;
            for end in memchr_newlines(&data) {
                if partial.is_empty() {
                    rows.push(self.record(&data[start..end])?);
                } else {
                    partial.extend_from_slice(&data[start..end]);
                    let line = std::mem::take(&mut partial);
                    rows.push(self.record(&line)?);
                }
                start = end + 1;
            }
            partial.extend_from_slice(&data[start..]);
        }
        if !partial.is_empty() {
            return Err(self.malformed("the last line has no end"));
        }
        let last_key = match rows.last() {
            Some(record) if with_last_key => Some(self.key_of(record)?),
            _ => None,
        };

        Ok(Chunk { rows, last_key })
    }

    /// Runs `query` as [`Self::read`] does, in a read transaction of its own on `client`.
    pub async fn read_alone(
        &self,
        client: &mut tokio_postgres::Client,
        query: &str,
        with_last_key: bool,
    ) -> Result<Chunk, SourceError> {
        let postgres = |action: &str| {
            let action = action.to_string();
            move |source| SourceError::Postgres { action, source }
        };
        let tx = client
            .transaction()
            .await
            .map_err(postgres("begin a read transaction"))?;
        let chunk = self.read(&tx, query, with_last_key).await?;
        tx.commit()
            .await
            .map_err(postgres("end a read transaction"))?;
        Ok(chunk)
    }

    /// Returns the key of a row read by this reader, as a JSON array of captured values.
    pub fn key_of(&self, record: &JournalRecord) -> Result<String, SourceError> {
        let image = record
            .new
            .as_deref()
            .ok_or_else(|| self.malformed("a row has no image"))?;
        let values = crate::journal::parse_row_image(image)
            .map_err(|_| self.malformed("a row image is not a JSON object"))?;
        let mut key = String::from("[");
        for (position, &index) in self.key.iter().enumerate() {
            let (_, value) = values
                .get(index)
                .ok_or_else(|| self.malformed("a row lacks a key column"))?;
            if position > 0 {
                key.push(',');
            }
            key.push_str(value.get());
        }
        key.push(']');
        Ok(key)
    }

    /// Turns one COPY line into an insert record.
    fn record(&self, line: &[u8]) -> Result<JournalRecord, SourceError> {
        // Tabs are ASCII, so checking the line once makes every field valid UTF-8 too.
        let line = std::str::from_utf8(line).map_err(|_| self.malformed("a field is not UTF-8"))?;
        let mut image = String::with_capacity(line.len() + self.prefixes_len + 1);
        let mut fields = 0;
        for field in line.split('\t') {
            let Some(prefix) = self.prefixes.get(fields) else {
                return Err(self.malformed("a line has more fields than the table has columns"));
            };
            image.push_str(prefix);
            if field == "\\N" {
                image.push_str("null");
            } else {
                let form = self.forms[fields];
                // Most values need neither COPY's escapes undone nor JSON's added, and go
                // straight into the image; the others take the longer path.
                if form == Form::Json && !field.contains('\\') {
                    image.push_str(field);
                } else if !form.write_json_plain(field, &mut image) {
                    let mut text = String::with_capacity(field.len());
                    unescape_copy_text(field, &mut text)
                        .map_err(|reason| self.malformed(reason))?;
                    if form == Form::Json {
                        image.push_str(&text);
                    } else {
                        form.write_json(&text, &mut image);
                    }
                }
            }
            fields += 1;
        }
        if fields != self.columns.len() {
            return Err(self.malformed("a line has fewer fields than the table has columns"));
        }
        image.push('}');
        let image = RawValue::from_string(image)
            .map_err(|_| self.malformed("a value is not valid JSON"))?;

        Ok(JournalRecord {
            seq: 0,
            batch: 0,
            xid: 0,
            cid: 0,
            table: self.table.clone(),
            op: Operation::Insert,
            new: Some(image),
            old: None,
        })
    }

    fn malformed(&self, reason: &str) -> SourceError {
        SourceError::Malformed {
            table: self.table.clone(),
            reason: reason.to_string(),
        }
    }
}

/// The form in which a column is read: as `to_json` writes it, or as its text, which this
/// reader turns into the same JSON value. The text costs PostgreSQL less than `to_json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// `to_json` of the captured value: for key columns, whose JSON text must equal the
    /// journaled keys byte for byte, and for every type whose text differs from its JSON.
    Json,
    /// Integers, `numeric` and floats: a JSON number, or a JSON string for NaN and infinities,
    /// as `to_json` writes them.
    Number,
    /// `true` or `false`, from `t` or `f`.
    Bool,
    /// Types whose JSON value is their text as a JSON string.
    String,
}

impl Form {
    fn of(pg_type: PgType, key: bool) -> Form {
        if key {
            return Form::Json;
        }
        match pg_type {
            PgType::Int2 | PgType::Int4 | PgType::Int8 | PgType::Numeric => Form::Number,
            PgType::Float4 | PgType::Float8 => Form::Number,
            PgType::Bool => Form::Bool,
            PgType::Text
            | PgType::Varchar
            | PgType::Bpchar
            | PgType::Citext
            | PgType::Enum
            | PgType::Uuid => Form::String,
            _ => Form::Json,
        }
    }

    /// Appends the JSON value of a field as COPY wrote it, when neither COPY's escapes nor
    /// JSON's are involved; returns false, having written nothing, otherwise.
    fn write_json_plain(self, field: &str, out: &mut String) -> bool {
        let plain = |field: &str| field.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\');
        match self {
            Form::Number if is_plain_number(field) => out.push_str(field),
            Form::Bool if field == "t" => out.push_str("true"),
            Form::Bool if field == "f" => out.push_str("false"),
            Form::String if plain(field) => {
                out.push('"');
                out.push_str(field);
                out.push('"');
            }
            _ => return false,
        }
        true
    }

    /// Appends the JSON value of a column's text.
    fn write_json(self, text: &str, out: &mut String) {
        match self {
            Form::Number if is_plain_number(text) => out.push_str(text),
            Form::Bool if text == "t" => out.push_str("true"),
            Form::Bool if text == "f" => out.push_str("false"),
            // NaN, Infinity and anything unexpected become a string, which apply rejects or
            // replaces as it does with the captured form.
            _ => write_json_string(text, out),
        }
    }
}

/// Tells whether PostgreSQL's text of a number is also a JSON number.
fn is_plain_number(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty()
        && digits.as_bytes()[0].is_ascii_digit()
        && digits.bytes().all(|b| {
            b.is_ascii_digit() || b == b'.' || b == b'e' || b == b'E' || b == b'+' || b == b'-'
        })
}

/// Appends `text` as a JSON string.
fn write_json_string(text: &str, out: &mut String) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = std::fmt::Write::write_fmt(out, format_args!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Positions of the line ends in `data`.
fn memchr_newlines(data: &[u8]) -> impl Iterator<Item = usize> + '_ {
    data.iter()
        .enumerate()
        .filter(|(_, byte)| **byte == b'\n')
        .map(|(position, _)| position)
}

/// Appends a field of COPY's text format with its backslash escapes undone.
fn unescape_copy_text(field: &str, out: &mut String) -> Result<(), &'static str> {
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let escaped = chars.next().ok_or("a field ends in a lone backslash")?;
        out.push(match escaped {
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'v' => '\u{b}',
            other => other,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_are_undone() {
        let mut out = String::new();
        unescape_copy_text(r#""a\\"b\\\\c\tz""#, &mut out).unwrap();
        assert_eq!(out, "\"a\\\"b\\\\c\tz\"");
    }

    #[test]
    fn text_forms_match_to_json() {
        let cases: [(Form, &str, &str); 8] = [
            (Form::Number, "-12.50", "-12.50"),
            (Form::Number, "1e+300", "1e+300"),
            (Form::Number, "NaN", r#""NaN""#),
            (Form::Number, "-Infinity", r#""-Infinity""#),
            (Form::Bool, "t", "true"),
            (Form::Bool, "f", "false"),
            (Form::String, "a\"b\\c\n\u{1}", r#""a\"b\\c\n\u0001""#),
            (Form::String, "café ", r#""café ""#),
        ];
        for (form, text, json) in cases {
            let mut out = String::new();
            form.write_json(text, &mut out);
            assert_eq!(out, json, "{text}");
            // The short path gives the same JSON or declines.
            let mut plain = String::new();
            if form.write_json_plain(text, &mut plain) {
                assert_eq!(plain, json, "{text}");
            } else {
                assert!(plain.is_empty(), "{text}");
            }
            let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
            if form == Form::String {
                assert_eq!(parsed, serde_json::Value::String(text.to_string()));
            }
        }
    }

    #[test]
    fn a_lone_backslash_is_an_error() {
        let mut out = String::new();
        assert!(unescape_copy_text("ab\\", &mut out).is_err());
    }
}
