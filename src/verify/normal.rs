//! Normalized values: one text per value, equal on both sides exactly when MySQL holds what
//! apply would write.
//!
//! The PostgreSQL side starts from the literal that apply writes for a value (so the value
//! policies, target scales and target types count as they do in apply). The MySQL side starts
//! from the column's text as MySQL returns it, read through [`mysql_expression`] where the raw
//! text would not compare. Both then go through the same rule of the column's [`Norm`].

use crate::apply::{TablePlan, quote_mysql_ident};
use crate::schema::PgType;

/// Comparison rule of a column's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norm {
    /// Text as it is: strings, dates and times, text forms.
    Exact,
    /// Exact decimal numbers; trailing fraction zeros do not count (MySQL pads to the scale).
    Number,
    /// Floating-point numbers, compared as binary64 values.
    Float,
    /// `real`, compared as binary32 values. MySQL prints a FLOAT with 6 digits, so it is
    /// read as a DOUBLE, which holds the stored value exactly.
    Float32,
    /// Booleans, as 1 and 0.
    Bool,
    /// `char(n)`: MySQL drops the trailing spaces that PostgreSQL pads with.
    Padded,
    /// Bytes, as lowercase hex.
    Binary,
    /// JSON documents, compared as parsed values.
    Json,
    /// Geometries, as SRID and well-known binary.
    Geometry,
}

/// Returns the comparison rule of column `index` of `plan`.
pub fn norm_of(plan: &TablePlan, index: usize) -> Norm {
    match plan.schema.columns[index].pg_type {
        PgType::Int2 | PgType::Int4 | PgType::Int8 => Norm::Number,
        PgType::Numeric | PgType::Money if plan.text_target(index) => Norm::Exact,
        PgType::Numeric | PgType::Money => Norm::Number,
        PgType::Float4 => Norm::Float32,
        PgType::Float8 => Norm::Float,
        PgType::Bool => Norm::Bool,
        PgType::Bpchar => Norm::Padded,
        PgType::Bytea => Norm::Binary,
        PgType::Uuid if plan.binary_target(index) => Norm::Binary,
        PgType::Json | PgType::Jsonb | PgType::Array | PgType::Composite | PgType::Hstore => {
            Norm::Json
        }
        PgType::Geometry | PgType::Geography => Norm::Geometry,
        _ => Norm::Exact,
    }
}

/// Returns the SQL that reads column `target` (a MySQL column name) for comparison.
pub fn mysql_expression(target: &str, norm: Norm, long_lat_axis: bool) -> String {
    let column = quote_mysql_ident(target);
    match norm {
        Norm::Binary => format!("HEX({column})"),
        Norm::Geometry => {
            let axis = if long_lat_axis {
                ", 'axis-order=long-lat'"
            } else {
                ""
            };
            format!("CONCAT(ST_SRID({column}), ',', HEX(ST_AsBinary({column}{axis})))")
        }
        // Arithmetic with a DOUBLE literal turns a FLOAT into a DOUBLE on MySQL and MariaDB
        // alike; CAST(… AS DOUBLE) needs MySQL 8.0.17.
        Norm::Float32 => format!("({column} + 0E0)"),
        _ => column,
    }
}

/// Normalizes a literal that apply writes; `None` stands for NULL.
pub fn from_literal(norm: Norm, literal: &str) -> Option<String> {
    if literal == "NULL" {
        return None;
    }
    let text = match literal {
        "TRUE" => "1".to_string(),
        "FALSE" => "0".to_string(),
        _ if literal.starts_with("X'") => literal[2..literal.len() - 1].to_string(),
        _ if literal.starts_with("ST_GeomFromWKB(X'") => {
            let rest = &literal["ST_GeomFromWKB(X'".len()..];
            let (hex, rest) = rest.split_once('\'').unwrap_or((rest, ""));
            let srid: String = rest
                .trim_start_matches([',', ' '])
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            format!("{srid},{hex}")
        }
        _ if literal.starts_with('\'') => literal[1..literal.len() - 1].replace("''", "'"),
        _ => literal.to_string(),
    };
    Some(canonical(norm, &text))
}

/// Normalizes a value as MySQL returned it; `None` stands for NULL.
pub fn from_mysql(norm: Norm, value: Option<&[u8]>) -> Option<String> {
    let value = value?;
    let text = String::from_utf8_lossy(value);
    Some(canonical(norm, &text))
}

fn canonical(norm: Norm, text: &str) -> String {
    match norm {
        Norm::Exact => text.to_string(),
        Norm::Number => canonical_decimal(text),
        Norm::Float => match text.trim().parse::<f64>() {
            Ok(value) => format!("{value:?}"),
            Err(_) => text.to_string(),
        },
        Norm::Float32 => match text.trim().parse::<f64>() {
            Ok(value) => format!("{:?}", value as f32),
            Err(_) => text.to_string(),
        },
        Norm::Bool => match text {
            "1" | "true" | "t" => "1".to_string(),
            "0" | "false" | "f" => "0".to_string(),
            other => other.to_string(),
        },
        Norm::Padded => text.trim_end_matches(' ').to_string(),
        Norm::Binary | Norm::Geometry => text.to_ascii_lowercase(),
        Norm::Json => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(value) => value.to_string(),
            Err(_) => text.to_string(),
        },
    }
}

/// Drops a leading `+`, trailing fraction zeros and a trailing point; `-0` becomes `0`.
fn canonical_decimal(text: &str) -> String {
    let text = text.trim().trim_start_matches('+');
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        text
    };
    match text {
        "-0" | "" => "0".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_mysql_text_meet() {
        let pairs: [(Norm, &str, &str); 11] = [
            (Norm::Float32, "0.1", "0.10000000149011612"),
            (Norm::Float32, "1.2345679", "1.2345678806304932"),
            (Norm::Number, "19.9", "19.90"),
            (Norm::Number, "-0.000", "0"),
            (Norm::Bool, "TRUE", "1"),
            (Norm::Exact, "'O''Brien'", "O'Brien"),
            (Norm::Padded, "'ab  '", "ab"),
            (Norm::Binary, "X'0aff'", "0AFF"),
            (Norm::Float, "1.5e3", "1500"),
            (
                Norm::Json,
                r#"'{"b": 1, "a": [1, 2]}'"#,
                r#"{"a":[1,2],"b":1}"#,
            ),
            (
                Norm::Geometry,
                "ST_GeomFromWKB(X'0101', 4326, 'axis-order=long-lat')",
                "4326,0101",
            ),
        ];
        for (norm, literal, mysql) in pairs {
            assert_eq!(
                from_literal(norm, literal),
                from_mysql(norm, Some(mysql.as_bytes())),
                "{literal} against {mysql}"
            );
        }
    }

    #[test]
    fn differences_stay_visible() {
        let pairs: [(Norm, &str, Option<&str>); 6] = [
            (Norm::Float32, "1.2345679", Some("1.2345677614212036")),
            (Norm::Exact, "''", None),
            (
                Norm::Exact,
                "'2024-01-01 00:00:00.000001'",
                Some("2024-01-01 00:00:00.000000"),
            ),
            (Norm::Number, "1.5", Some("1.05")),
            (Norm::Exact, "'a '", Some("a")),
            (Norm::Binary, "X'00'", Some("0000")),
        ];
        for (norm, literal, mysql) in pairs {
            assert_ne!(
                from_literal(norm, literal),
                from_mysql(norm, mysql.map(str::as_bytes)),
                "{literal} against {mysql:?}"
            );
        }
    }
}
