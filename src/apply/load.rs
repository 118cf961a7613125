//! `LOAD DATA LOCAL INFILE` data for snapshot chunks, built from the same literals that apply
//! writes, so a loaded value is exactly the value a statement would have written.
//!
//! Each literal becomes one tab-separated field with MySQL's default escapes (`\\`, `\t`,
//! `\n`, `\0`, and `\N` for NULL). Bytes arrive as hex and geometries as `srid,hex`, and the
//! statement's `SET` clause turns them back with `UNHEX` and `ST_GeomFromWKB`, as the
//! literals `X'…'` and `ST_GeomFromWKB(X'…', srid)` do.

use super::statement::{Literals, PlanError, TablePlan, quote_mysql_ident};
use crate::journal::JournalRecord;
use crate::schema::PgType;

/// Form of a column's field in the load data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// Written as it is: numbers, booleans and strings.
    Plain,
    /// `X'…'`: the hex digits, turned back by `UNHEX`.
    Hex,
    /// `ST_GeomFromWKB(X'…', srid…)`: `srid,hex`.
    Geometry,
}

/// A chunk as `LOAD DATA LOCAL INFILE` input.
#[derive(Debug, Clone)]
pub struct LoadData {
    /// The statement.
    pub statement: String,
    /// The lines, one per row.
    pub data: Vec<u8>,
    /// End offset of each row's line in `data`, newline included.
    pub row_ends: Vec<usize>,
}

impl LoadData {
    /// Returns the data without the rows at the positions in `dropped` (ascending).
    pub fn without(self, dropped: &[usize]) -> LoadData {
        if dropped.is_empty() {
            return self;
        }
        let mut data = Vec::with_capacity(self.data.len());
        let mut row_ends = Vec::with_capacity(self.row_ends.len());
        let mut start = 0;
        for (position, &end) in self.row_ends.iter().enumerate() {
            if dropped.binary_search(&position).is_err() {
                data.extend_from_slice(&self.data[start..end]);
                row_ends.push(data.len());
            }
            start = end;
        }
        LoadData {
            statement: self.statement,
            data,
            row_ends,
        }
    }
}

/// Returns the load data of `rows`, or `None` when a row does not fit the form (a row image
/// that lacks a column, say); statements then write the chunk.
pub fn build<R: std::borrow::Borrow<JournalRecord>>(
    plan: &TablePlan,
    rows: &[R],
) -> Result<Option<LoadData>, PlanError> {
    let schema = &plan.schema;
    let mut columns: Option<Vec<usize>> = None;
    let mut data = Vec::with_capacity(rows.len() * 128);
    let mut row_ends = Vec::with_capacity(rows.len());
    let mut literals = Literals::default();
    for row in rows {
        plan.write_literals(row.borrow(), &mut literals)?;
        match &columns {
            None => columns = Some(literals.iter().map(|(index, _)| index).collect()),
            Some(expected)
                if expected.len() != literals.len()
                    || !expected
                        .iter()
                        .zip(literals.iter())
                        .all(|(&expected, (index, _))| expected == index) =>
            {
                return Ok(None);
            }
            Some(_) => {}
        }
        for (position, (index, literal)) in literals.iter().enumerate() {
            if position > 0 {
                data.push(b'\t');
            }
            if !write_field(&mut data, field_of(plan, index), literal) {
                return Ok(None);
            }
        }
        data.push(b'\n');
        row_ends.push(data.len());
    }
    let Some(columns) = columns else {
        return Ok(None);
    };

    let mut targets = Vec::with_capacity(columns.len());
    let mut assignments = Vec::new();
    for &index in &columns {
        let column = quote_mysql_ident(&schema.columns[index].target);
        match field_of(plan, index) {
            Field::Plain => targets.push(column),
            Field::Hex => {
                let variable = format!("@c{index}");
                assignments.push(format!("{column} = UNHEX({variable})"));
                targets.push(variable);
            }
            Field::Geometry => {
                let variable = format!("@c{index}");
                let axis = if plan.long_lat_axis() {
                    ", 'axis-order=long-lat'"
                } else {
                    ""
                };
                assignments.push(format!(
                    "{column} = ST_GeomFromWKB(UNHEX(SUBSTRING_INDEX({variable}, ',', -1)), \
                     SUBSTRING_INDEX({variable}, ',', 1){axis})"
                ));
                targets.push(variable);
            }
        }
    }
    let mut statement = format!(
        "LOAD DATA LOCAL INFILE 'snapshot-chunk' INTO TABLE {} CHARACTER SET utf8mb4 ({})",
        schema.target_sql(),
        targets.join(", ")
    );
    if !assignments.is_empty() {
        statement.push_str(" SET ");
        statement.push_str(&assignments.join(", "));
    }

    Ok(Some(LoadData {
        statement,
        data,
        row_ends,
    }))
}

fn field_of(plan: &TablePlan, index: usize) -> Field {
    match plan.schema.columns[index].pg_type {
        PgType::Bytea => Field::Hex,
        PgType::Uuid if plan.binary_target(index) => Field::Hex,
        PgType::Geometry | PgType::Geography => Field::Geometry,
        _ => Field::Plain,
    }
}

/// Appends the field of `literal`; returns `false` when the literal has an unexpected form.
fn write_field(out: &mut Vec<u8>, field: Field, literal: &str) -> bool {
    if literal == "NULL" {
        out.extend_from_slice(b"\\N");
        return true;
    }
    match field {
        Field::Hex => match literal
            .strip_prefix("X'")
            .and_then(|rest| rest.strip_suffix('\''))
        {
            Some(hex) => {
                out.extend_from_slice(hex.as_bytes());
                true
            }
            None => false,
        },
        Field::Geometry => {
            let Some(rest) = literal.strip_prefix("ST_GeomFromWKB(X'") else {
                return false;
            };
            let Some((hex, rest)) = rest.split_once('\'') else {
                return false;
            };
            let srid: String = rest
                .trim_start_matches([',', ' '])
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if srid.is_empty() {
                return false;
            }
            out.extend_from_slice(srid.as_bytes());
            out.push(b',');
            out.extend_from_slice(hex.as_bytes());
            true
        }
        Field::Plain => {
            match literal {
                "TRUE" => out.push(b'1'),
                "FALSE" => out.push(b'0'),
                _ if literal.starts_with('\'') => {
                    let Some(inner) = literal
                        .strip_prefix('\'')
                        .and_then(|rest| rest.strip_suffix('\''))
                    else {
                        return false;
                    };
                    write_escaped(out, inner);
                }
                _ if literal
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) =>
                {
                    out.extend_from_slice(literal.as_bytes());
                }
                _ => return false,
            }
            true
        }
    }
}

/// Writes the text of a string literal (quotes doubled, as `NO_BACKSLASH_ESCAPES` literals
/// are) with LOAD DATA's escapes.
fn write_escaped(out: &mut Vec<u8>, inner: &str) {
    let bytes = inner.as_bytes();
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let escape: &[u8] = match bytes[i] {
            // A doubled quote stands for one.
            b'\'' => b"'",
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            0 => b"\\0",
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[copied..i]);
        out.extend_from_slice(escape);
        // Skip the second quote of a doubled one.
        i += if bytes[i] == b'\'' { 2 } else { 1 };
        copied = i;
    }
    out.extend_from_slice(&bytes[copied..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(kind: Field, literal: &str) -> Option<String> {
        let mut out = Vec::new();
        write_field(&mut out, kind, literal).then(|| String::from_utf8(out).unwrap())
    }

    #[test]
    fn literals_become_escaped_fields() {
        assert_eq!(field(Field::Plain, "NULL").unwrap(), "\\N");
        assert_eq!(field(Field::Plain, "TRUE").unwrap(), "1");
        assert_eq!(field(Field::Plain, "-12.50").unwrap(), "-12.50");
        assert_eq!(
            field(Field::Plain, "'O''Brien\t\\N\n'").unwrap(),
            "O'Brien\\t\\\\N\\n"
        );
        assert_eq!(field(Field::Plain, "''").unwrap(), "");
        assert_eq!(field(Field::Plain, "''''").unwrap(), "'");
        assert_eq!(field(Field::Plain, r"'a''''b\'").unwrap(), r"a''b\\");
        assert_eq!(field(Field::Plain, "'\u{0}'").unwrap(), "\\0");
        assert_eq!(field(Field::Hex, "X'0aff'").unwrap(), "0aff");
        assert_eq!(
            field(
                Field::Geometry,
                "ST_GeomFromWKB(X'0101', 4326, 'axis-order=long-lat')"
            )
            .unwrap(),
            "4326,0101"
        );
    }

    #[test]
    fn without_drops_listed_rows() {
        let data = LoadData {
            statement: "LOAD DATA".to_string(),
            data: b"1\ta\n2\tb\n3\tc\n".to_vec(),
            row_ends: vec![4, 8, 12],
        };
        let kept = data.clone().without(&[0, 2]);
        assert_eq!(kept.data, b"2\tb\n");
        assert_eq!(kept.row_ends, [4]);
        assert_eq!(kept.statement, "LOAD DATA");
        let all = data.clone().without(&[]);
        assert_eq!(all.data, data.data);
        assert_eq!(all.row_ends, data.row_ends);
    }

    #[test]
    fn unexpected_forms_fall_back_to_statements() {
        assert_eq!(field(Field::Plain, "X'00'"), None);
        assert_eq!(field(Field::Hex, "'text'"), None);
        assert_eq!(field(Field::Plain, "NOW()"), None);
    }
}
