//! Conversion of PostgreSQL values, as `to_json` wrote them, into MySQL SQL literals.
//!
//! The rule is: exact, or rejected. Each conversion is chosen by the column's catalog type,
//! never by the shape of the JSON value. Literals rely on the session's `sql_mode` containing
//! `NO_BACKSLASH_ESCAPES`, so that a quote doubled is the only escape a string needs, and on
//! `time_zone = '+00:00'`, so that UTC date-times are stored as they are written.
//!
//! Error messages describe the problem without the value: row values never reach logs.

use std::borrow::Cow;
use std::fmt::Write;

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, Timelike};
use serde_json::value::RawValue;

use crate::config::ValuePolicy;
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
        // Capture sends money as `numeric`, never in the format of `lc_monetary`.
        PgType::Money => write_number(out, text, false),
        PgType::Citext
        | PgType::Enum
        | PgType::Inet
        | PgType::Cidr
        | PgType::Macaddr
        | PgType::Macaddr8
        | PgType::Xml
        | PgType::Tsvector => {
            write_string(out, &json_string(text)?);
            Ok(())
        }
        PgType::Bit | PgType::Varbit => write_bits(out, &json_string(text)?),
        PgType::Interval => write_interval(out, &json_string(text)?),
        PgType::Time => write_time(out, &json_string(text)?),
        PgType::Timetz => write_timetz(out, &json_string(text)?),
        PgType::Array => write_array(out, text),
        PgType::Composite | PgType::Hstore => write_object(out, text),
        PgType::Geometry | PgType::Geography => write_geometry(out, text, false),
    }
}

/// Appends a `numeric` value as a string for a text column: the digits as PostgreSQL wrote
/// them, or `NaN`, `Infinity` and `-Infinity`, which `to_json` writes as strings.
pub(super) fn write_number_as_text(out: &mut String, text: &str) -> Result<(), String> {
    if text == "null" {
        out.push_str("NULL");
        return Ok(());
    }
    let digits = match text {
        r#""NaN""# => "NaN",
        r#""Infinity""# => "Infinity",
        r#""-Infinity""# => "-Infinity",
        number if is_json_number(number) => number,
        _ => return Err("a numeric value is not a number".to_string()),
    };
    write_string(out, digits);
    Ok(())
}

/// Appends a `uuid` as its 16 bytes, for a BINARY(16) column.
pub(super) fn write_uuid_bytes(out: &mut String, text: &str) -> Result<(), String> {
    if text == "null" {
        out.push_str("NULL");
        return Ok(());
    }
    let uuid: uuid::Uuid = serde_json::from_str::<String>(text)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| "a uuid value is not a UUID".to_string())?;
    out.push_str("X'");
    out.push_str(&hex::encode(uuid.as_bytes()));
    out.push('\'');
    Ok(())
}

/// Returns the literal that replaces a value MySQL cannot store, when the policy sets one. That
/// is NULL for NaN and ±Infinity floats, and the nearest end of MySQL's range for dates and
/// time stamps that are infinite, BC or after year 9999.
pub(super) fn replacement_for(
    pg_type: PgType,
    text: &str,
    policy: ValuePolicy,
) -> Option<&'static str> {
    match pg_type {
        PgType::Float4 | PgType::Float8 if policy.floats_to_null => {
            matches!(text, r#""NaN""# | r#""Infinity""# | r#""-Infinity""#).then_some("NULL")
        }
        PgType::Date | PgType::Timestamp | PgType::Timestamptz if policy.clamp_dates => {
            let text: String = serde_json::from_str(text).ok()?;
            let low = text == "-infinity" || text.ends_with(" BC");
            // A year of five or more digits comes before the first hyphen.
            let high = text == "infinity" || text.find('-').is_some_and(|end| end > 4);
            match (pg_type, low, high) {
                (PgType::Date, true, _) => Some("'0001-01-01'"),
                (PgType::Date, _, true) => Some("'9999-12-31'"),
                (_, true, _) => Some("'0001-01-01 00:00:00'"),
                (_, _, true) => Some("'9999-12-31 23:59:59.999999'"),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Appends a geometry, captured as `[srid, "hex of ST_AsBinary"]`, as
/// `ST_GeomFromWKB(X'…', srid)`. PostGIS writes x (longitude) before y (latitude). MySQL 8
/// reads a geographic SRID such as 4326 latitude first by default, so
/// `long_lat_axis` adds its `axis-order=long-lat` option; MariaDB has no such option and
/// keeps the order as it is.
pub(super) fn write_geometry(
    out: &mut String,
    text: &str,
    long_lat_axis: bool,
) -> Result<(), String> {
    if text == "null" {
        out.push_str("NULL");
        return Ok(());
    }
    let (srid, hex): (u32, String) = serde_json::from_str(text)
        .map_err(|_| "a geometry value is not in the captured [srid, hex] form".to_string())?;
    if hex.len() < 10 || hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("a geometry value has invalid well-known binary".to_string());
    }
    let bytes = hex::decode(&hex[..10]).map_err(|_| "invalid well-known binary".to_string())?;
    let code = match bytes[0] {
        0 => u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]),
        1 => u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]),
        _ => return Err("a geometry value has invalid well-known binary".to_string()),
    };
    // ISO codes add 1000 for Z, 2000 for M and 3000 for ZM; extended WKB sets high bits.
    if code & 0xE000_0000 != 0 || code % 10_000 >= 1000 {
        return Err(
            "a geometry has Z or M coordinates, which MySQL cannot store; store 2D geometries, \
             e.g. with ST_Force2D in PostgreSQL"
                .to_string(),
        );
    }
    out.push_str("ST_GeomFromWKB(X'");
    out.push_str(&hex);
    out.push_str(&format!("', {srid}"));
    if long_lat_axis {
        out.push_str(", 'axis-order=long-lat'");
    }
    out.push(')');

    Ok(())
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
    let mut parts = value.split('\'');
    out.push_str(parts.next().unwrap_or_default());
    for part in parts {
        out.push_str("''");
        out.push_str(part);
    }
    out.push('\'');
}

/// Decodes a JSON string, borrowing the text when it contains no escape: most values do, and
/// copying each one showed in snapshot profiles.
fn json_string(text: &str) -> Result<Cow<'_, str>, String> {
    let invalid = || "a text-like value is not a JSON string".to_string();
    match text
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    {
        Some(inner) if !inner.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) => {
            Ok(Cow::Borrowed(inner))
        }
        _ => serde_json::from_str::<String>(text)
            .map(Cow::Owned)
            .map_err(|_| invalid()),
    }
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
    let mut literal = *b"'0000-00-00'";
    put_digits(&mut literal[1..5], date.year() as u32);
    put_digits(&mut literal[6..8], date.month());
    put_digits(&mut literal[9..11], date.day());
    out.push_str(std::str::from_utf8(&literal).expect("digits and punctuation are ASCII"));

    Ok(())
}

/// Parses `YYYY-MM-DD` with a four-digit year from 0001 to 9999. PostgreSQL writes BC dates,
/// five-digit years and infinity in other shapes, so they fail here.
fn parse_date(text: &str) -> Option<NaiveDate> {
    let bytes = text.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' || text.starts_with("0000") {
        return None;
    }
    // By hand: chrono's parse_from_str reads its pattern on every call, a measurable cost on
    // the apply and snapshot paths.
    let year = digits(&bytes[0..4])?;
    let month = digits(&bytes[5..7])?;
    let day = digits(&bytes[8..10])?;
    NaiveDate::from_ymd_opt(year as i32, month, day)
}

/// Parses ASCII digits as a number; `None` for anything else.
fn digits(bytes: &[u8]) -> Option<u32> {
    bytes.iter().try_fold(0u32, |value, &byte| {
        byte.is_ascii_digit()
            .then(|| value * 10 + u32::from(byte - b'0'))
    })
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.f…]`, with up to nine fraction digits.
fn parse_date_time(text: &str) -> Option<NaiveDateTime> {
    let (date, time) = text.split_once('T')?;
    let date = parse_date(date)?;
    let bytes = time.as_bytes();
    if bytes.len() < 8 || bytes[2] != b':' || bytes[5] != b':' {
        return None;
    }
    let (hour, minute, second) = (
        digits(&bytes[0..2])?,
        digits(&bytes[3..5])?,
        digits(&bytes[6..8])?,
    );
    let nanos = match &bytes[8..] {
        [] => 0,
        [b'.', fraction @ ..] if !fraction.is_empty() && fraction.len() <= 9 => {
            digits(fraction)? * 10u32.pow(9 - fraction.len() as u32)
        }
        _ => return None,
    };
    let time = chrono::NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?;

    Some(date.and_time(time))
}

fn write_date_time(out: &mut String, value: NaiveDateTime, kind: &str) -> Result<(), String> {
    if !(1..=9999).contains(&value.year()) {
        return Err(range_error(kind));
    }
    let mut text = *b"'0000-00-00 00:00:00.000000'";
    put_digits(&mut text[1..5], value.year() as u32);
    put_digits(&mut text[6..8], value.month());
    put_digits(&mut text[9..11], value.day());
    put_digits(&mut text[12..14], value.hour());
    put_digits(&mut text[15..17], value.minute());
    put_digits(&mut text[18..20], value.second());
    // A leap second shows as nanoseconds past one billion; MySQL has none, so keep 999999.
    put_digits(&mut text[21..27], (value.nanosecond() / 1000).min(999_999));
    out.push_str(std::str::from_utf8(&text).expect("digits and punctuation are ASCII"));

    Ok(())
}

/// Writes `number` as decimal digits into all of `slot`, zero-padded on the left; the
/// callers have checked that it fits. Faster than `write!`, which showed in snapshot profiles.
fn put_digits(slot: &mut [u8], mut number: u32) {
    for byte in slot.iter_mut().rev() {
        *byte = b'0' + (number % 10) as u8;
        number /= 10;
    }
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

/// Writes a bit string (`0101`) as text. A MySQL BIT column would read the quoted string as
/// bytes, so the target must be a character column.
fn write_bits(out: &mut String, text: &str) -> Result<(), String> {
    if !text.bytes().all(|b| b == b'0' || b == b'1') {
        return Err("a bit string holds characters other than 0 and 1".to_string());
    }
    write_string(out, text);

    Ok(())
}

/// Writes an interval in the ISO 8601 form that the capture functions pin with
/// `intervalstyle = 'iso_8601'`, such as `P1Y2M3DT4H5M6.5S` or `PT0S`. It keeps PostgreSQL's
/// three parts (months, days and microseconds) apart, so `P1M` and `P30D` stay distinct.
fn write_interval(out: &mut String, text: &str) -> Result<(), String> {
    let is_iso = text.len() > 1
        && text.starts_with('P')
        && text[1..]
            .bytes()
            .all(|b| b.is_ascii_digit() || b"YMWDTHS.-".contains(&b));
    if !is_iso {
        return Err(
            "an interval value is not in ISO 8601 form; run `pg-to-mysql-sync setup` again so \
             that the capture triggers pin intervalstyle"
                .to_string(),
        );
    }
    write_string(out, text);

    Ok(())
}

/// Parses `HH:MM:SS[.f…]` as PostgreSQL writes a `time`, from 00:00:00 to 24:00:00. Returns
/// the hours, minutes, seconds and microseconds.
fn parse_clock(text: &str) -> Option<(u32, u32, u32, u32)> {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (text, ""),
    };
    let bytes = whole.as_bytes();
    if bytes.len() != 8 || bytes[2] != b':' || bytes[5] != b':' {
        return None;
    }
    let field = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = &whole[range];
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    let (hours, minutes, seconds) = (field(0..2)?, field(3..5)?, field(6..8)?);
    if text.contains('.') && (fraction.is_empty() || fraction.len() > 6) {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let micros = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<6}").parse().ok()?
    };
    let in_range = minutes < 60
        && seconds < 60
        && (hours < 24 || (hours == 24 && minutes == 0 && seconds == 0 && micros == 0));

    in_range.then_some((hours, minutes, seconds, micros))
}

fn write_clock(out: &mut String, (hours, minutes, seconds, micros): (u32, u32, u32, u32)) {
    let _ = write!(out, "{hours:02}:{minutes:02}:{seconds:02}.{micros:06}");
}

/// Writes a `time` for a MySQL TIME(6) column, which also accepts PostgreSQL's 24:00:00.
fn write_time(out: &mut String, text: &str) -> Result<(), String> {
    let clock =
        parse_clock(text).ok_or_else(|| "a time value is not a valid time of day".to_string())?;
    out.push('\'');
    write_clock(out, clock);
    out.push('\'');

    Ok(())
}

/// Writes a `time with time zone` as text in one fixed form, `HH:MM:SS.ffffff+HH:MM`, with
/// `:SS` added to the offset when it has seconds. The offset is kept as written, not
/// converted to UTC, because a time of day has no date to convert with.
fn write_timetz(out: &mut String, text: &str) -> Result<(), String> {
    let invalid = || "a timetz value is not a valid time of day with an offset".to_string();
    let offset_start = text.rfind(['+', '-']).ok_or_else(invalid)?;
    let clock = parse_clock(&text[..offset_start]).ok_or_else(invalid)?;
    let offset = parse_offset(&text[offset_start..]).ok_or_else(invalid)?;
    let sign = if offset < 0 { '-' } else { '+' };
    let offset = offset.abs();
    out.push('\'');
    write_clock(out, clock);
    let _ = write!(out, "{sign}{:02}:{:02}", offset / 3600, offset / 60 % 60);
    if offset % 60 != 0 {
        let _ = write!(out, ":{:02}", offset % 60);
    }
    out.push('\'');

    Ok(())
}

/// Writes an array, which `to_json` turned into a JSON array, as the document's text. The
/// capture functions send the array's dimensions as a JSON string in its place when a lower
/// bound is not 1, because a JSON array would drop the bounds.
fn write_array(out: &mut String, text: &str) -> Result<(), String> {
    match text.as_bytes().first() {
        Some(b'[') => {
            write_string(out, text);
            Ok(())
        }
        Some(b'"') => Err(
            "an array has a lower bound other than 1, which a JSON array cannot keep; make \
             the array start at 1 in PostgreSQL, for example with value[:] (one [:] per \
             dimension)"
                .to_string(),
        ),
        _ => Err("an array column holds a value that is not a JSON array".to_string()),
    }
}

/// Writes a composite or `hstore` value, which `to_json` turned into a JSON object, as the
/// document's text.
fn write_object(out: &mut String, text: &str) -> Result<(), String> {
    if !text.starts_with('{') {
        return Err("a composite or hstore column holds a value that is not a JSON object".into());
    }
    write_string(out, text);

    Ok(())
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
    fn replacements_follow_the_policy() {
        let both = ValuePolicy {
            floats_to_null: true,
            clamp_dates: true,
        };
        assert_eq!(
            replacement_for(PgType::Float8, r#""NaN""#, both),
            Some("NULL")
        );
        assert_eq!(
            replacement_for(PgType::Float8, r#""NaN""#, ValuePolicy::default()),
            None
        );
        assert_eq!(
            replacement_for(PgType::Date, r#""infinity""#, both),
            Some("'9999-12-31'")
        );
        assert_eq!(
            replacement_for(PgType::Date, r#""0044-03-15 BC""#, both),
            Some("'0001-01-01'")
        );
        assert_eq!(
            replacement_for(PgType::Timestamp, r#""10000-01-01T00:00:00""#, both),
            Some("'9999-12-31 23:59:59.999999'")
        );
        // Anything else stays an error.
        assert_eq!(replacement_for(PgType::Date, r#""garbage""#, both), None);
        assert_eq!(replacement_for(PgType::Int4, "1", both), None);
    }

    #[test]
    fn numbers_for_text_columns_keep_every_digit() {
        let mut out = String::new();
        write_number_as_text(&mut out, "123456789012345678901234567890.50").unwrap();
        assert_eq!(out, "'123456789012345678901234567890.50'");
        let mut out = String::new();
        write_number_as_text(&mut out, r#""NaN""#).unwrap();
        assert_eq!(out, "'NaN'");
        assert!(write_number_as_text(&mut String::new(), r#""x'); DROP""#).is_err());
    }

    #[test]
    fn geometry_is_written_as_wkb_with_srid() {
        let point = r#"[4326,"0101000000000000000000f03f0000000000000040"]"#;
        let mut out = String::new();
        write_geometry(&mut out, point, false).unwrap();
        assert_eq!(
            out,
            "ST_GeomFromWKB(X'0101000000000000000000f03f0000000000000040', 4326)"
        );
        let mut out = String::new();
        write_geometry(&mut out, point, true).unwrap();
        assert!(out.ends_with(", 4326, 'axis-order=long-lat')"), "{out}");
        let mut out = String::new();
        write_geometry(&mut out, "null", true).unwrap();
        assert_eq!(out, "NULL");
    }

    #[test]
    fn geometry_with_z_or_bad_wkb_is_rejected() {
        // ISO WKB of POINT Z (1 2 3): type 1001.
        let point_z = r#"[0,"01e9030000000000000000f03f00000000000000400000000000000840"]"#;
        let error = write_geometry(&mut String::new(), point_z, false).unwrap_err();
        assert!(error.contains("Z or M"), "{error}");
        // Extended WKB with the Z flag.
        let ewkb_z = r#"[0,"0101000080000000000000f03f00000000000000400000000000000840"]"#;
        assert!(write_geometry(&mut String::new(), ewkb_z, false).is_err());
        for bad in [
            r#""0101""#,
            r#"[0,"zz"]"#,
            r#"[0,"0101"]"#,
            r#"[-1,"0101000000"]"#,
        ] {
            assert!(
                write_geometry(&mut String::new(), bad, false).is_err(),
                "{bad}"
            );
        }
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
        assert_eq!(literal(PgType::Text, r#""''x'""#).unwrap(), "'''''x'''");
        assert_eq!(literal(PgType::Text, r#""\"\u0001""#).unwrap(), "'\"\u{1}'");
        assert!(matches!(
            json_string(r#""plain""#),
            Ok(Cow::Borrowed("plain"))
        ));
        assert!(json_string(r#""a"b""#).is_err());
        assert!(json_string("1").is_err());
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

    #[test]
    fn money_is_written_as_a_decimal() {
        assert_eq!(
            literal(PgType::Money, "-92233720368547758.08").unwrap(),
            "-92233720368547758.08"
        );
        assert!(literal(PgType::Money, r#""$1.00""#).is_err());
    }

    #[test]
    fn date_times_parse_by_hand_as_chrono_would() {
        let parsed = parse_date_time("2024-02-29T23:59:58.5").unwrap();
        assert_eq!(parsed.to_string(), "2024-02-29 23:59:58.500");
        assert_eq!(
            parse_date_time("0001-01-01T00:00:00.000001")
                .unwrap()
                .to_string(),
            "0001-01-01 00:00:00.000001"
        );
        for bad in [
            "2023-02-29T00:00:00",
            "2024-01-01T25:00:00",
            "2024-01-01T00:00:00.",
            "2024-01-01T00:00:0x",
            "2024-01-01 00:00:00",
            "2024-01-01T00:00:00.1234567890",
        ] {
            assert_eq!(parse_date_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn times_are_written_with_six_fraction_digits() {
        assert_eq!(
            literal(PgType::Time, r#""24:00:00""#).unwrap(),
            "'24:00:00.000000'"
        );
        assert_eq!(
            literal(PgType::Time, r#""00:00:00.5""#).unwrap(),
            "'00:00:00.500000'"
        );
        for json in [
            r#""24:00:00.1""#,
            r#""12:60:00""#,
            r#""1:00:00""#,
            r#""12:00:00.""#,
            r#""12:00:00.1234567""#,
        ] {
            assert!(literal(PgType::Time, json).is_err(), "{json}");
        }
    }

    #[test]
    fn timetz_keeps_its_offset_in_one_form() {
        assert_eq!(
            literal(PgType::Timetz, r#""12:34:56.5+05:30""#).unwrap(),
            "'12:34:56.500000+05:30'"
        );
        assert_eq!(
            literal(PgType::Timetz, r#""00:00:00-00:19:32""#).unwrap(),
            "'00:00:00.000000-00:19:32'"
        );
        assert_eq!(
            literal(PgType::Timetz, r#""23:59:59.999999+00""#).unwrap(),
            "'23:59:59.999999+00:00'"
        );
        assert!(literal(PgType::Timetz, r#""12:00:00""#).is_err());
    }

    #[test]
    fn intervals_and_bits_are_checked_text() {
        assert_eq!(
            literal(PgType::Interval, r#""P-1M1DT-1S""#).unwrap(),
            "'P-1M1DT-1S'"
        );
        assert!(literal(PgType::Interval, r#""1 day""#).is_err());
        assert_eq!(literal(PgType::Varbit, r#""""#).unwrap(), "''");
        assert_eq!(literal(PgType::Bit, r#""0101""#).unwrap(), "'0101'");
        assert!(literal(PgType::Bit, r#""012""#).is_err());
    }

    #[test]
    fn documents_need_their_json_shape() {
        assert_eq!(
            literal(PgType::Array, r#"[1.10,null,"it's"]"#).unwrap(),
            r#"'[1.10,null,"it''s"]'"#
        );
        let error = literal(PgType::Array, r#""[0:1]""#).unwrap_err();
        assert!(error.contains("lower bound other than 1"), "{error}");
        assert!(literal(PgType::Array, "{}").is_err());
        assert_eq!(
            literal(PgType::Hstore, r#"{"a": "1", "b": null}"#).unwrap(),
            r#"'{"a": "1", "b": null}'"#
        );
        assert!(literal(PgType::Composite, "[1]").is_err());
    }
}
