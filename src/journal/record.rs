//! The journal record and its line encoding.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Length of the checksum suffix `,"crc":"xxxxxxxx"}` that ends every record line.
const CRC_SUFFIX_LEN: usize = 18;
const CRC_PREFIX: &str = ",\"crc\":\"";

/// The kind of a source change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    /// A new row, in `new`.
    #[serde(rename = "I")]
    Insert,
    /// A changed row whose key did not change; `new` holds the row after the change. A changed
    /// key arrives as a `Delete` of the old key followed by an `Update` of the new row.
    #[serde(rename = "U")]
    Update,
    /// A removed row, whose primary key is in `old`.
    #[serde(rename = "D")]
    Delete,
    /// The table was truncated.
    #[serde(rename = "T")]
    Truncate,
}

impl Operation {
    /// Parses the one-letter code used in the PostgreSQL change log.
    pub fn from_code(code: &str) -> Option<Self> {
        match code {
            "I" => Some(Operation::Insert),
            "U" => Some(Operation::Update),
            "D" => Some(Operation::Delete),
            "T" => Some(Operation::Truncate),
            _ => None,
        }
    }

    /// Returns a lower-case name for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Insert => "insert",
            Operation::Update => "update",
            Operation::Delete => "delete",
            Operation::Truncate => "truncate",
        }
    }
}

/// One source change, as stored in the journal.
///
/// Row images are the JSON text that PostgreSQL's `to_json` produced, kept verbatim (apart from
/// insignificant white space) so that numbers keep every digit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JournalRecord {
    /// Sequence number assigned by the journal: strictly increasing by one, starting at 1.
    pub seq: u64,
    /// Number of the capture batch that wrote the record; all records of one batch share it.
    pub batch: u64,
    /// Source transaction id (`txid_current()`, epoch-extended, so it never repeats).
    pub xid: i64,
    /// Id of the row in the PostgreSQL change log that carried the change.
    pub cid: i64,
    /// Source table as `schema.table`.
    pub table: String,
    /// Kind of change.
    pub op: Operation,
    /// Row image after the change (insert and update).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<Box<RawValue>>,
    /// Primary key before the change (delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<Box<RawValue>>,
}

impl JournalRecord {
    /// Encodes the record as one line, checksum included, ending with a newline.
    ///
    /// The checksum is the CRC-32 of every byte before the `,"crc":` field, so the line stays
    /// a plain JSON object that `jq` reads.
    pub fn encode_line(&self, out: &mut Vec<u8>) {
        let start = out.len();
        // Serializing plain fields and valid raw JSON cannot fail.
        serde_json::to_writer(&mut *out, self).expect("a journal record always serializes");
        // Drop the closing brace, checksum the body, then append the checksum field.
        out.pop();
        let crc = crc32fast::hash(&out[start..]);
        out.extend_from_slice(format!("{CRC_PREFIX}{crc:08x}\"}}\n").as_bytes());
    }

    /// Decodes one line (without its newline), checking the checksum first.
    pub fn decode_line(line: &[u8]) -> Result<Self, String> {
        if line.len() < CRC_SUFFIX_LEN + 2 {
            return Err("line too short for a record".to_string());
        }
        let (body, suffix) = line.split_at(line.len() - CRC_SUFFIX_LEN);
        let suffix = std::str::from_utf8(suffix).map_err(|_| "checksum field is not UTF-8")?;
        let hex = suffix
            .strip_prefix(CRC_PREFIX)
            .and_then(|rest| rest.strip_suffix("\"}"))
            .ok_or("line does not end with a checksum field")?;
        let stored = u32::from_str_radix(hex, 16).map_err(|_| "checksum is not hexadecimal")?;
        let actual = crc32fast::hash(body);
        if stored != actual {
            return Err(format!(
                "checksum mismatch (stored {stored:08x}, computed {actual:08x})"
            ));
        }

        let mut json = Vec::with_capacity(body.len() + 1);
        json.extend_from_slice(body);
        json.push(b'}');
        serde_json::from_slice(&json).map_err(|error| format!("invalid record JSON: {error}"))
    }
}

/// Column values of a row image as (column, raw value) pairs in document order, borrowed
/// from the image's text.
pub type RowValues<'a> = Vec<(Cow<'a, str>, &'a RawValue)>;

struct RowImage<'a>(RowValues<'a>);

impl<'de> Deserialize<'de> for RowImage<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ImageVisitor;
        impl<'de> Visitor<'de> for ImageVisitor {
            type Value = RowImage<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object of column values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some((ColumnName(name), value)) =
                    map.next_entry::<ColumnName<'de>, &'de RawValue>()?
                {
                    pairs.push((name, value));
                }
                Ok(RowImage(pairs))
            }
        }
        deserializer.deserialize_map(ImageVisitor)
    }
}

/// A column name that borrows the image's text unless it contains an escape. serde's own
/// `Cow<str>` always copies, which cost one allocation per value on the apply and snapshot
/// paths.
struct ColumnName<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for ColumnName<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> Visitor<'de> for NameVisitor {
            type Value = ColumnName<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a column name")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                name: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(ColumnName(Cow::Borrowed(name)))
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Self::Value, E> {
                Ok(ColumnName(Cow::Owned(name.to_string())))
            }
            fn visit_string<E: serde::de::Error>(self, name: String) -> Result<Self::Value, E> {
                Ok(ColumnName(Cow::Owned(name)))
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

/// Splits a row image (a JSON object) into its column values, keeping each value's text.
pub fn parse_row_image(raw: &RawValue) -> Result<RowValues<'_>, serde_json::Error> {
    serde_json::from_str::<RowImage<'_>>(raw.get()).map(|image| image.0)
}

/// Writes column values back as a JSON object, values verbatim.
pub fn write_row_image(values: &[(Cow<'_, str>, &RawValue)]) -> Box<RawValue> {
    let mut text = String::from("{");
    for (index, (name, value)) in values.iter().enumerate() {
        if index > 0 {
            text.push(',');
        }
        text.push_str(&serde_json::to_string(name.as_ref()).expect("a string always serializes"));
        text.push(':');
        text.push_str(value.get());
    }
    text.push('}');

    RawValue::from_string(text).expect("joined JSON values form a valid object")
}

/// Removes white space outside strings from JSON text, so that a row image fits on one line.
///
/// PostgreSQL's `json` type keeps the text as the user wrote it, newlines included, and
/// `to_json` of a row embeds such values verbatim. Tokens are copied unchanged, so numbers keep
/// every digit.
pub fn compact_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }

    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> JournalRecord {
        JournalRecord {
            seq: 7,
            batch: 2,
            xid: 1234,
            cid: 99,
            table: "public.orders".into(),
            op: Operation::Update,
            new: Some(
                RawValue::from_string(r#"{"id":1,"n":12345678901234567890.123456789}"#.into())
                    .unwrap(),
            ),
            old: None,
        }
    }

    #[test]
    fn line_round_trips_exactly() {
        let mut line = Vec::new();
        record().encode_line(&mut line);
        assert_eq!(line.last(), Some(&b'\n'));
        let decoded = JournalRecord::decode_line(&line[..line.len() - 1]).unwrap();
        assert_eq!(decoded.seq, 7);
        assert_eq!(decoded.op, Operation::Update);
        assert_eq!(
            decoded.new.unwrap().get(),
            r#"{"id":1,"n":12345678901234567890.123456789}"#
        );
    }

    #[test]
    fn line_is_plain_json() {
        let mut line = Vec::new();
        record().encode_line(&mut line);
        let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(value["table"], "public.orders");
        assert!(value["crc"].is_string());
    }

    #[test]
    fn flipped_byte_fails_checksum() {
        let mut line = Vec::new();
        record().encode_line(&mut line);
        line.pop();
        for position in 0..line.len() {
            let mut damaged = line.clone();
            damaged[position] ^= 0x01;
            assert!(
                JournalRecord::decode_line(&damaged).is_err(),
                "flip at {position} passed"
            );
        }
    }

    #[test]
    fn row_image_names_borrow_unless_escaped() {
        let raw = RawValue::from_string(r#"{"a":1,"b\u0041":"x","c":null}"#.to_string()).unwrap();
        let values = parse_row_image(&raw).unwrap();
        let names: Vec<&str> = values.iter().map(|(name, _)| name.as_ref()).collect();
        assert_eq!(names, ["a", "bA", "c"]);
        assert!(matches!(values[0].0, Cow::Borrowed(_)));
        assert!(matches!(values[1].0, Cow::Owned(_)));
        let texts: Vec<&str> = values.iter().map(|(_, value)| value.get()).collect();
        assert_eq!(texts, ["1", r#""x""#, "null"]);
    }

    #[test]
    fn compact_json_keeps_strings_and_numbers() {
        let text = "{\n  \"a b\" : \"x \\\" \\n y\",\t\"n\": 1.500000000000000000001 }";
        assert_eq!(
            compact_json(text),
            r#"{"a b":"x \" \n y","n":1.500000000000000000001}"#
        );
    }
}
