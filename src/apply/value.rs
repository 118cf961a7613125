//! Conversion of PostgreSQL values, as `to_json` wrote them, into MySQL SQL literals.
//!
//! The rule is: exact, or rejected. Each conversion is chosen by the column's catalog type,
//! never by the shape of the JSON value. Literals rely on the session's `sql_mode` containing
//! `NO_BACKSLASH_ESCAPES`, so that a quote doubled is the only escape a string needs, and on
//! `time_zone = '+00:00'`, so that UTC date-times are stored as they are written.
//!
//! Error messages describe the problem without the value: row values never reach logs.

use std::fmt::Write;

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, Timelike};
use serde_json::value::RawValue;

use crate::schema::PgType;

/// The largest number of digits a MySQL DECIMAL holds. A longer literal would be read as a
/// floating-point number and lose digits.
const MYSQL_MAX_DECIMAL_DIGITS: usize = 65;

/// Appends the MySQL literal for `raw`, a JSON value of a column of type `pg_type`.
/// Returns a description of the problem when the value cannot be stored exactly.
pub fn write_literal(out: &mut String, pg_type: PgType, raw: &RawValue) -> Result<(), String> {
    let text = raw.get();
    if text == "null" {
        out.push_str("NULL");
        return Ok(());
    }
    match pg_type {
        PgType::Int2 | PgType::Int4 | PgType::Int8 => write_integer(out, text),
        PgType::Numeric => write_number(out, text, false),
        PgType::Float4 | PgType::Float8 => write_number(out, text, true),
        PgType::Bool => {
            let literal = match text {
                "true" => "TRUE",
                "false" => "FALSE",
                _ => return Err("a boolean column holds a value that is not true or false".into()),
            };
            out.push_str(literal);
            Ok(())
        }
        PgType::Text | PgType::Varchar | PgType::Bpchar | PgType::Uuid => {
            write_string(out, &json_string(text)?);
            Ok(())
        }
        // Capture sends documents as their text in a JSON string, so that a JSON null stays
        // distinct from SQL NULL. MySQL's JSON type (MariaDB's alias for LONGTEXT) takes the
        // document as a string literal.
        PgType::Json | PgType::Jsonb => {
            write_string(out, &json_string(text)?);
            Ok(())
        }
        PgType::Bytea => write_bytea(out, &json_string(text)?),
        PgType::Date => write_date(out, &json_string(text)?),
        PgType::Timestamp => write_timestamp(out, &json_string(text)?),
        PgType::Timestamptz => write_timestamptz(out, &json_string(text)?),
    }
}

/// Checks that a numeric value fits a MySQL column with `scale` digits after the decimal point.
/// MySQL rounds extra digits away with only a note, even in strict mode, so this check is what
/// keeps such a value from changing silently. Trailing zeros do not count.
pub(super) fn check_decimal_scale(raw: &RawValue, scale: u32) -> Result<(), String> {
    let text = raw.get();
    let Some((_, fraction)) = text.split_once('.') else {
        return Ok(());
    };
    let digits = fraction.trim_end_matches('0').len();
    if digits > scale as usize {
        return Err(format!(
            "a numeric value has {digits} digits after the decimal point, more than the scale \
             {scale} of the MySQL column, which would round it; widen the MySQL column's scale"
        ));
    }

    Ok(())
}

/// Quotes a string for MySQL with `NO_BACKSLASH_ESCAPES` in effect.
pub(super) fn write_string(out: &mut String, value: &str) {
    out.reserve(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' {
            out.push('\'');
        }
        out.push(c);
    }
    out.push('\'');
}

fn json_string(text: &str) -> Result<String, String> {
    serde_json::from_str::<String>(text)
        .map_err(|_| "a text-like value is not a JSON string".to_string())
}

fn write_integer(out: &mut String, text: &str) -> Result<(), String> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("an integer column holds a value that is not an integer".to_string());
    }
    out.push_str(text);

    Ok(())
}

/// Writes a JSON number unchanged, after checking its grammar. PostgreSQL writes NaN and
/// infinities as JSON strings, because JSON has no such numbers; MySQL has none either.
fn write_number(out: &mut String, text: &str, allow_exponent: bool) -> Result<(), String> {
    if text.starts_with('"') {
        return Err(
            "the value is NaN or infinite, which MySQL cannot store; change the value in \
             PostgreSQL or add a CHECK constraint that excludes it"
                .to_string(),
        );
    }
    let (mantissa, has_exponent) = match text.find(['e', 'E']) {
        Some(position) => (&text[..position], true),
        None => (text, false),
    };
    if has_exponent && !allow_exponent {
        return Err("a numeric value uses an exponent, which PostgreSQL never writes".to_string());
    }
    if !is_json_number(text) {
        return Err("a numeric column holds a value that is not a number".to_string());
    }
    if !allow_exponent {
        let digits = mantissa.bytes().filter(u8::is_ascii_digit).count();
        let significant = mantissa
            .trim_start_matches(['-', '0', '.'])
            .bytes()
            .filter(u8::is_ascii_digit)
            .count();
        if significant > MYSQL_MAX_DECIMAL_DIGITS || digits > MYSQL_MAX_DECIMAL_DIGITS + 1 {
            return Err(format!(
                "a numeric value has more than {MYSQL_MAX_DECIMAL_DIGITS} digits, the most a MySQL \
                 DECIMAL holds"
            ));
        }
    }
    out.push_str(text);

    Ok(())
}

/// Checks the JSON number grammar: `-? int frac? exp?`.
fn is_json_number(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut i = 0;
    if bytes.get(i) == Some(&b'-') {
        i += 1;
    }
    let int_start = i;
    while bytes.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    if i == int_start || (bytes[int_start] == b'0' && i - int_start > 1) {
        return false;
    }
    if bytes.get(i) == Some(&b'.') {
        i += 1;
        let frac_start = i;
        while bytes.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == frac_start {
            return false;
        }
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(bytes.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let exp_start = i;
        while bytes.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == exp_start {
            return false;
        }
    }

    i == bytes.len()
}

/// `bytea` arrives in hex output format (`\x0a1b…`); the capture functions pin
/// `bytea_output = 'hex'`. It becomes a MySQL hex literal, which is binary, not text.
fn write_bytea(out: &mut String, text: &str) -> Result<(), String> {
    let hex = text
        .strip_prefix("\\x")
        .ok_or_else(|| "a bytea value is not in hex output format".to_string())?;
    if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("a bytea value has invalid hex digits".to_string());
    }
    out.push_str("X'");
    out.push_str(hex);
    out.push('\'');

    Ok(())
}

fn range_error(kind: &str) -> String {
    format!(
        "a {kind} value is infinite, before year 1 or after year 9999, which MySQL cannot store; \
         change the value in PostgreSQL or add a CHECK constraint that excludes it"
    )
}

fn write_date(out: &mut String, text: &str) -> Result<(), String> {
    let date = parse_date(text).ok_or_else(|| range_error("date"))?;
    // Written by hand: chrono's format() parses its pattern on every call, a measurable cost
    // on the apply path.
    let _ = write!(
        out,
        "'{:04}-{:02}-{:02}'",
        date.year(),
        date.month(),
        date.day()
    );

    Ok(())
}

/// Parses `YYYY-MM-DD` with a four-digit year from 0001 to 9999. PostgreSQL writes BC dates,
/// five-digit years and infinity in other shapes, so they fail here.
fn parse_date(text: &str) -> Option<NaiveDate> {
    let bytes = text.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' || text.starts_with("0000") {
        return None;
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.ffffff]`.
fn parse_date_time(text: &str) -> Option<NaiveDateTime> {
    let (date, time) = text.split_once('T')?;
    let date = parse_date(date)?;
    let time = chrono::NaiveTime::parse_from_str(time, "%H:%M:%S%.f").ok()?;

    Some(date.and_time(time))
}

fn write_date_time(out: &mut String, value: NaiveDateTime, kind: &str) -> Result<(), String> {
    if !(1..=9999).contains(&value.year()) {
        return Err(range_error(kind));
    }
    let _ = write!(
        out,
        "'{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}'",
        value.year(),
        value.month(),
        value.day(),
        value.hour(),
        value.minute(),
        value.second(),
        // A leap second shows as nanoseconds past one billion; MySQL has none, so keep 999999.
        (value.nanosecond() / 1000).min(999_999)
    );

    Ok(())
}

/// Zone-less time stamps are stored as written, never shifted.
fn write_timestamp(out: &mut String, text: &str) -> Result<(), String> {
    let value = parse_date_time(text).ok_or_else(|| range_error("timestamp"))?;
    write_date_time(out, value, "timestamp")
}

/// Time stamps with a time zone are stored in UTC. The capture functions pin `TimeZone` to
/// UTC, but any offset of the form `±HH`, `±HH:MM` or `±HH:MM:SS` is converted correctly.
fn write_timestamptz(out: &mut String, text: &str) -> Result<(), String> {
    let invalid = || range_error("timestamptz");
    let time_start = text.find('T').ok_or_else(invalid)?;
    let offset_start = text[time_start..].rfind(['+', '-']).ok_or_else(invalid)? + time_start;
    let local = parse_date_time(&text[..offset_start]).ok_or_else(invalid)?;
    let offset_seconds = parse_offset(&text[offset_start..]).ok_or_else(invalid)?;
    let utc = local
        .checked_sub_signed(Duration::seconds(offset_seconds))
        .ok_or_else(invalid)?;

    write_date_time(out, utc, "timestamptz")
}

fn parse_offset(text: &str) -> Option<i64> {
    let sign = match text.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let mut seconds = 0;
    let mut parts = 0;
    for (index, part) in text[1..].split(':').enumerate() {
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_digit()) || index > 2 {
            return None;
        }
        let value: i64 = part.parse().ok()?;
        seconds += value * [3600, 60, 1][index];
        parts += 1;
    }
    if parts == 0 {
        return None;
    }

    Some(sign * seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn literal(pg_type: PgType, json: &str) -> Result<String, String> {
        let raw = RawValue::from_string(json.to_string()).unwrap();
        let mut out = String::new();
        write_literal(&mut out, pg_type, &raw).map(|()| out)
    }

    #[test]
    fn integers_and_numerics_keep_every_digit() {
        assert_eq!(
            literal(PgType::Int8, "9223372036854775807").unwrap(),
            "9223372036854775807"
        );
        assert_eq!(
            literal(PgType::Int8, "-9223372036854775808").unwrap(),
            "-9223372036854775808"
        );
        let long = "123456789012345678901234567890.123456789012345678901234567890";
        assert_eq!(literal(PgType::Numeric, long).unwrap(), long);
        assert_eq!(
            literal(PgType::Numeric, "-0.000000000000000000000000000001").unwrap(),
            "-0.000000000000000000000000000001"
        );
        assert_eq!(
            literal(PgType::Float8, "1.7976931348623157e+308").unwrap(),
            "1.7976931348623157e+308"
        );
    }

    #[test]
    fn decimal_scale_counts_significant_fraction_digits() {
        let raw = |text: &str| RawValue::from_string(text.to_string()).unwrap();
        assert!(check_decimal_scale(&raw("1.2500"), 2).is_ok());
        assert!(check_decimal_scale(&raw("12"), 0).is_ok());
        assert!(check_decimal_scale(&raw("null"), 0).is_ok());
        let error = check_decimal_scale(&raw("1.255"), 2).unwrap_err();
        assert!(
            error.contains("3 digits after the decimal point"),
            "{error}"
        );
        assert!(check_decimal_scale(&raw("-0.5"), 0).is_err());
    }

    #[test]
    fn non_finite_numbers_are_rejected() {
        for json in [r#""NaN""#, r#""Infinity""#, r#""-Infinity""#] {
            assert!(
                literal(PgType::Float8, json)
                    .unwrap_err()
                    .contains("NaN or infinite")
            );
            assert!(
                literal(PgType::Numeric, json)
                    .unwrap_err()
                    .contains("NaN or infinite")
            );
        }
    }

    #[test]
    fn numeric_beyond_decimal_65_is_rejected() {
        let too_long = "1".repeat(66);
        assert!(
            literal(PgType::Numeric, &too_long)
                .unwrap_err()
                .contains("more than 65 digits")
        );
        let fits = format!("0.{}", "1".repeat(30));
        assert!(literal(PgType::Numeric, &fits).is_ok());
    }

    #[test]
    fn malformed_numbers_are_rejected() {
        for json in ["true", "[1]", "{}"] {
            assert!(literal(PgType::Float8, json).is_err(), "{json}");
        }
        for text in ["1x", "01", "1.", ".5", "--1", "1e"] {
            assert!(!is_json_number(text), "{text}");
        }
        assert!(literal(PgType::Int4, "1.5").is_err());
    }

    #[test]
    fn strings_double_quotes_only() {
        assert_eq!(
            literal(PgType::Text, r#""it's a \\ back\tslash\n""#).unwrap(),
            "'it''s a \\ back\tslash\n'"
        );
        assert_eq!(literal(PgType::Text, r#""""#).unwrap(), "''");
        assert_eq!(literal(PgType::Text, "null").unwrap(), "NULL");
        assert_eq!(literal(PgType::Text, r#""😀 ""#).unwrap(), "'😀 '");
    }

    #[test]
    fn json_documents_are_quoted_verbatim() {
        assert_eq!(
            literal(PgType::Jsonb, r#""{\"a\": \"x'y\", \"n\": 1.10}""#).unwrap(),
            r#"'{"a": "x''y", "n": 1.10}'"#
        );
        assert_eq!(literal(PgType::Json, r#""null""#).unwrap(), "'null'");
        assert_eq!(literal(PgType::Json, "null").unwrap(), "NULL");
    }

    #[test]
    fn bytea_becomes_hex_literal() {
        assert_eq!(
            literal(PgType::Bytea, r#""\\x00ff10""#).unwrap(),
            "X'00ff10'"
        );
        assert_eq!(literal(PgType::Bytea, r#""\\x""#).unwrap(), "X''");
        assert!(literal(PgType::Bytea, r#""\\000""#).is_err());
    }

    #[test]
    fn dates_and_times_convert_exactly() {
        assert_eq!(
            literal(PgType::Date, r#""2024-02-29""#).unwrap(),
            "'2024-02-29'"
        );
        assert_eq!(
            literal(PgType::Timestamp, r#""2024-03-31T02:30:00.5""#).unwrap(),
            "'2024-03-31 02:30:00.500000'"
        );
        assert_eq!(
            literal(PgType::Timestamptz, r#""2024-03-31T03:30:00.123456+02:00""#).unwrap(),
            "'2024-03-31 01:30:00.123456'"
        );
        assert_eq!(
            literal(PgType::Timestamptz, r#""1900-01-01T00:00:00-00:19:32""#).unwrap(),
            "'1900-01-01 00:19:32.000000'"
        );
        assert_eq!(
            literal(PgType::Timestamptz, r#""2024-01-01T05:00:00+05""#).unwrap(),
            "'2024-01-01 00:00:00.000000'"
        );
    }

    #[test]
    fn out_of_range_dates_are_rejected() {
        for json in [
            r#""infinity""#,
            r#""-infinity""#,
            r#""0044-03-15 BC""#,
            r#""10000-01-01""#,
            r#""0000-01-01""#,
        ] {
            assert!(literal(PgType::Date, json).is_err(), "{json}");
        }
        assert!(literal(PgType::Timestamptz, r#""infinity""#).is_err());
        assert!(literal(PgType::Timestamp, r#""10000-01-01T00:00:00""#).is_err());
        assert!(literal(PgType::Timestamptz, r#""0001-01-01T00:30:00+01:00""#).is_err());
    }
}
