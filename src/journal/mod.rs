//! The journal: the durable local buffer between capture and apply.
//!
//! # On-disk format
//!
//! `DATA_DIR` holds:
//! - `lock`: an empty file. The running daemon keeps an exclusive `flock` on it, so exactly one
//!   process owns the directory.
//! - `journal.id`: a UUID made when the directory is first used. MySQL stores the applied
//!   position under this id, so a fresh directory never inherits the position of an old one.
//! - `segment-<first_seq, 20 digits>.jsonl`: append-only segments of JSON lines. The first line
//!   is a header, `{"format":"pg-to-mysql-sync-journal","version":1,"first_seq":N,
//!   "first_batch":B}`. Every further line is one [`JournalRecord`] whose last field, `crc`,
//!   holds the CRC-32 (hex) of all bytes of the line before that field. Sequence numbers rise by
//!   exactly one from line to line and from segment to segment.
//!
//! # Write path
//!
//! The capture stage hands over one batch at a time ([`JournalWriter::append_batch`]):
//! 1. If the current segment is full, a new one is written as `*.tmp` with its header, fsynced,
//!    renamed to its final name and the directory fsynced. A batch never spans two segments.
//! 2. All lines of the batch are written with one `write_all` and made durable with
//!    `fdatasync`. Only then does capture delete the rows from the PostgreSQL change log.
//! 3. If the write or the sync fails, the segment is cut back to its previous length, so a
//!    failed batch leaves nothing behind, and the error is returned.
//!
//! A crash before step 2 finishes leaves a batch that PostgreSQL still holds. Some of its lines
//! may survive (complete or torn); recovery keeps the complete ones and capture then deletes
//! exactly those rows from the change log instead of journaling them twice.
//!
//! # Recovery
//!
//! [`Journal::open`] reads the last segment completely. A final line without its newline is a
//! torn tail, the only damage a crash during a write leaves: the segment is truncated there and
//! the cut is reported (its batch was never acknowledged, so its changes are still in
//! PostgreSQL). A whole line that fails its checksum or breaks the sequence stops the daemon
//! with the file, line and byte offset, whether valid lines follow it or not, because it may
//! hold acknowledged changes and skipping it would silently drop them. Older segments are
//! checked record by record as the apply stage reads them.
//!
//! # Deletion
//!
//! A segment is deleted once every record in it is applied, which means MySQL has committed the
//! checkpoint that covers its last record ([`release_segments`]). The newest segment is never
//! deleted, because it carries the next sequence number.

mod record;

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub use record::{
    JournalRecord, Operation, RowValues, compact_json, parse_row_image, write_row_image,
};

/// Segment size after which the writer starts a new segment. Large enough that rotation is
/// rare, small enough that applied changes free disk space soon.
pub const DEFAULT_MAX_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

const FORMAT_NAME: &str = "pg-to-mysql-sync-journal";
const FORMAT_VERSION: u32 = 1;
const SEGMENT_PREFIX: &str = "segment-";
const SEGMENT_SUFFIX: &str = ".jsonl";

/// Errors of the journal. Apart from `Io` during an append, each one stops the daemon: the
/// journal files stay as they were for an operator to inspect.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A file operation failed.
    #[error("failed to {action} {path}")]
    Io {
        /// Action that failed.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Another process holds the directory lock.
    #[error(
        "data directory {path} is in use by another pg-to-mysql-sync process; stop it, or point \
         DATA_DIR at another directory"
    )]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// A record in the middle of the journal is damaged; nothing after it is applied.
    #[error(
        "journal record at {path} line {line} (byte {offset}) is corrupt: {reason}; valid records \
         follow it, so it is not a torn tail. Restore DATA_DIR from a backup, or, to give up the \
         changes from this point on, truncate the file to {offset} bytes and resync with a \
         snapshot"
    )]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Line number, starting at 1 for the header.
        line: u64,
        /// Byte offset of the start of the line.
        offset: u64,
        /// Problem found in it.
        reason: String,
    },
    /// The last records of the journal are complete lines that fail their check. A crash
    /// cannot cause that, so they may hold acknowledged changes; nothing is truncated.
    #[error(
        "journal record at {path} line {line} (byte {offset}) is damaged: {reason}; it is a \
         whole line, which a crash during a write does not leave, so the file was damaged \
         later. Restore DATA_DIR from a backup; or, if the host lost power during a write, the \
         changes are still in PostgreSQL, and you can truncate the file to {offset} bytes"
    )]
    DamagedTail {
        /// The segment file.
        path: PathBuf,
        /// Line number, starting at 1 for the header.
        line: u64,
        /// Byte offset of the start of the line.
        offset: u64,
        /// Problem found in it.
        reason: String,
    },
    /// A segment header is missing or not of this format.
    #[error("journal segment {path} has an invalid header: {reason}")]
    Header {
        /// The segment file.
        path: PathBuf,
        /// Problem found in it.
        reason: String,
    },
    /// A record that must be in the journal is not there.
    #[error(
        "journal record {seq} is missing from {dir}: the oldest segment starts later, or a \
         segment was removed by hand"
    )]
    Missing {
        /// The sequence number looked for.
        seq: u64,
        /// The journal directory.
        dir: PathBuf,
    },
    /// An earlier append failed and could not be undone; the process must restart.
    #[error(
        "journal segment {path} has a partly written batch that could not be removed; restart \
         the daemon so that recovery truncates it"
    )]
    Poisoned {
        /// The segment file.
        path: PathBuf,
    },
    /// The journal id file is unreadable.
    #[error("journal id file {path} is invalid; restore it from a backup")]
    InvalidId {
        /// The file.
        path: PathBuf,
    },
}

fn io_error<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> JournalError + 'a {
    move |source| JournalError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SegmentHeader {
    format: String,
    version: u32,
    first_seq: u64,
    first_batch: u64,
}

/// One source change handed from capture to the journal, before it has a sequence number.
#[derive(Debug, Clone)]
pub struct NewChange {
    /// Source transaction id.
    pub xid: i64,
    /// Change-log row id.
    pub cid: i64,
    /// Source table as `schema.table`.
    pub table: String,
    /// Kind of change.
    pub op: Operation,
    /// Row image after the change.
    pub new: Option<Box<RawValue>>,
    /// Primary key before the change.
    pub old: Option<Box<RawValue>>,
}

/// A change-log row that is in the journal: its id and its transaction id. The pair never
/// repeats, even if the change log is dropped and created again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeLogKey {
    /// Change-log row id.
    pub cid: i64,
    /// Source transaction id.
    pub xid: i64,
}

/// Result of recovering the last segment.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// Returns the sequence number of the next record. Every record below it is durable.
    pub next_seq: u64,
    /// Change-log rows of the newest batch. Their deletion from PostgreSQL may not have
    /// committed before the stop, so capture deletes them again before it drains.
    pub last_batch_keys: Vec<ChangeLogKey>,
    /// Bytes cut from a torn tail, if any.
    pub truncated_bytes: u64,
}

/// An open journal directory, locked for this process.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    id: String,
    // Held for the lifetime of the process; the lock goes with the file handle.
    _lock: File,
    writer: Option<JournalWriter>,
    recovery: Recovery,
}

impl Journal {
    /// Opens or creates the journal in `dir`, takes the directory lock and recovers the last
    /// segment (see the module docs).
    pub fn open(dir: &Path, max_segment_bytes: u64) -> Result<Journal, JournalError> {
        // Segments hold row values, so a new directory is private to the daemon's user. An
        // existing one keeps its mode, such as the 0750 that the install script sets.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_error("create directory", dir))?;
        let lock = lock_directory(dir)?;
        let id = read_or_create_id(dir)?;
        remove_temporary_files(dir)?;

        let segments = list_segments(dir)?;
        let (writer, recovery) = match segments.last() {
            Some(&(first_seq, ref path)) => recover_last_segment(dir, path, first_seq)?,
            None => {
                let writer = JournalWriter::create_segment(dir, 1, 1, max_segment_bytes)?;
                (
                    writer,
                    Recovery {
                        next_seq: 1,
                        ..Recovery::default()
                    },
                )
            }
        };
        let writer = JournalWriter {
            max_segment_bytes,
            ..writer
        };

        Ok(Journal {
            dir: dir.to_path_buf(),
            id,
            _lock: lock,
            writer: Some(writer),
            recovery,
        })
    }

    /// Returns the journal's id, which keys the checkpoint row in MySQL.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Returns the result of recovery.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// Takes the writer; there is one per open journal.
    pub fn take_writer(&mut self) -> Option<JournalWriter> {
        self.writer.take()
    }

    /// Deletes the segments and the journal id, leaving the directory and its lock file. The
    /// next daemon then starts a new journal, with a new id and sequence numbers from 1.
    pub fn remove_files(self) -> Result<(), JournalError> {
        for (_, path) in list_segments(&self.dir)? {
            fs::remove_file(&path).map_err(io_error("remove", &path))?;
        }
        let id_path = self.dir.join("journal.id");
        fs::remove_file(&id_path).map_err(io_error("remove", &id_path))?;

        sync_directory(&self.dir)
    }

    /// Returns the oldest sequence number still on disk, if any segment exists.
    pub fn oldest_seq(&self) -> Result<Option<u64>, JournalError> {
        Ok(list_segments(&self.dir)?
            .first()
            .map(|(first_seq, _)| *first_seq))
    }
}

fn lock_directory(dir: &Path) -> Result<File, JournalError> {
    let path = dir.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_error("open lock file", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(JournalError::Locked {
            path: dir.to_path_buf(),
        }),
        Err(fs::TryLockError::Error(source)) => Err(JournalError::Io {
            action: "lock",
            path,
            source,
        }),
    }
}

fn read_or_create_id(dir: &Path) -> Result<String, JournalError> {
    let path = dir.join("journal.id");
    match fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            uuid::Uuid::parse_str(id)
                .map_err(|_| JournalError::InvalidId { path: path.clone() })?;
            Ok(id.to_string())
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            let id = uuid::Uuid::new_v4().to_string();
            write_durably(dir, &path, format!("{id}\n").as_bytes())?;
            Ok(id)
        }
        Err(source) => Err(JournalError::Io {
            action: "read",
            path,
            source,
        }),
    }
}

/// Writes a file so that after a crash it either does not exist or has its full content:
/// write a temporary file, fsync it, rename it into place, fsync the directory.
fn write_durably(dir: &Path, path: &Path, content: &[u8]) -> Result<(), JournalError> {
    let tmp = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_error("create", &tmp))?;
    file.write_all(content).map_err(io_error("write", &tmp))?;
    file.sync_all().map_err(io_error("fsync", &tmp))?;
    fs::rename(&tmp, path).map_err(io_error("rename", &tmp))?;
    sync_directory(dir)
}

fn sync_directory(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("fsync directory", dir))
}

fn remove_temporary_files(dir: &Path) -> Result<(), JournalError> {
    for entry in fs::read_dir(dir).map_err(io_error("list", dir))? {
        let path = entry.map_err(io_error("list", dir))?.path();
        if path.extension().is_some_and(|ext| ext == "tmp") {
            fs::remove_file(&path).map_err(io_error("remove", &path))?;
        }
    }

    Ok(())
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{SEGMENT_PREFIX}{first_seq:020}{SEGMENT_SUFFIX}"))
}

/// Lists segments as (first sequence number, path), oldest first.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error("list", dir))? {
        let entry = entry.map_err(io_error("list", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let first_seq = name
            .strip_prefix(SEGMENT_PREFIX)
            .and_then(|rest| rest.strip_suffix(SEGMENT_SUFFIX))
            .and_then(|digits| digits.parse::<u64>().ok());
        if let Some(first_seq) = first_seq {
            segments.push((first_seq, entry.path()));
        }
    }
    segments.sort();

    Ok(segments)
}

fn parse_header(path: &Path, line: &[u8]) -> Result<SegmentHeader, JournalError> {
    let invalid = |reason: String| JournalError::Header {
        path: path.to_path_buf(),
        reason,
    };
    let header: SegmentHeader =
        serde_json::from_slice(line).map_err(|error| invalid(error.to_string()))?;
    if header.format != FORMAT_NAME {
        return Err(invalid(format!(
            "format is `{}`, expected `{FORMAT_NAME}`",
            header.format
        )));
    }
    if header.version != FORMAT_VERSION {
        return Err(invalid(format!(
            "version {} is not supported (this build reads version {FORMAT_VERSION})",
            header.version
        )));
    }

    Ok(header)
}

/// Reads the newest segment, truncates a torn tail and returns a writer positioned at its end.
fn recover_last_segment(
    dir: &Path,
    path: &Path,
    first_seq: u64,
) -> Result<(JournalWriter, Recovery), JournalError> {
    let mut content = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut content))
        .map_err(io_error("read", path))?;

    let header_end =
        content
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| JournalError::Header {
                path: path.to_path_buf(),
                reason: "no complete header line".into(),
            })?;
    let header = parse_header(path, &content[..header_end])?;
    if header.first_seq != first_seq {
        return Err(JournalError::Header {
            path: path.to_path_buf(),
            reason: format!(
                "first_seq {} does not match the file name",
                header.first_seq
            ),
        });
    }

    let scan = scan_records(path, &content, header_end + 1, first_seq)?;
    let mut truncated_bytes = 0;
    if scan.good_end < content.len() {
        truncated_bytes = (content.len() - scan.good_end) as u64;
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io_error("open", path))?;
        file.set_len(scan.good_end as u64)
            .map_err(io_error("truncate", path))?;
        file.sync_all().map_err(io_error("fsync", path))?;
    }

    let last_batch = scan
        .last_batch
        .unwrap_or(header.first_batch.saturating_sub(1));
    let writer = JournalWriter::open_segment(dir, path, first_seq, scan.next_seq, last_batch + 1)?;
    let recovery = Recovery {
        next_seq: scan.next_seq,
        last_batch_keys: scan.last_batch_keys,
        truncated_bytes,
    };

    Ok((writer, recovery))
}

struct Scan {
    good_end: usize,
    next_seq: u64,
    last_batch: Option<u64>,
    last_batch_keys: Vec<ChangeLogKey>,
}

/// Checks every record line of a segment held in memory. Stops at the first bad line; that
/// line starts a torn tail unless a valid record follows it.
fn scan_records(
    path: &Path,
    content: &[u8],
    start: usize,
    first_seq: u64,
) -> Result<Scan, JournalError> {
    let mut scan = Scan {
        good_end: start,
        next_seq: first_seq,
        last_batch: None,
        last_batch_keys: Vec::new(),
    };
    let mut position = start;
    let mut line_number = 2;
    while position < content.len() {
        let Some(length) = content[position..].iter().position(|&b| b == b'\n') else {
            // An incomplete last line: a torn tail.
            return Ok(scan);
        };
        let line = &content[position..position + length];
        let problem = match JournalRecord::decode_line(line) {
            Ok(record) if record.seq == scan.next_seq => {
                if scan.last_batch != Some(record.batch) {
                    scan.last_batch = Some(record.batch);
                    scan.last_batch_keys.clear();
                }
                scan.last_batch_keys.push(ChangeLogKey {
                    cid: record.cid,
                    xid: record.xid,
                });
                scan.next_seq += 1;
                position += length + 1;
                scan.good_end = position;
                line_number += 1;
                continue;
            }
            Ok(record) => format!(
                "sequence {} where {} was expected",
                record.seq, scan.next_seq
            ),
            Err(reason) => reason,
        };
        if has_valid_record_after(content, position + length + 1) {
            return Err(JournalError::Corrupt {
                path: path.to_path_buf(),
                line: line_number,
                offset: position as u64,
                reason: problem,
            });
        }
        // A crash during a write leaves a prefix of the batch: whole valid lines and at most
        // one line without its newline. A whole line that fails its check was damaged after
        // it was written, possibly after its batch was acknowledged, so it may hold changes
        // that exist nowhere else.
        return Err(JournalError::DamagedTail {
            path: path.to_path_buf(),
            line: line_number,
            offset: position as u64,
            reason: problem,
        });
    }

    Ok(scan)
}

fn has_valid_record_after(content: &[u8], mut position: usize) -> bool {
    while position < content.len() {
        let Some(length) = content[position..].iter().position(|&b| b == b'\n') else {
            return false;
        };
        if JournalRecord::decode_line(&content[position..position + length]).is_ok() {
            return true;
        }
        position += length + 1;
    }

    false
}

/// Appends batches of changes to the newest segment. Owned by the capture stage.
#[derive(Debug)]
pub struct JournalWriter {
    dir: PathBuf,
    file: File,
    path: PathBuf,
    segment_len: u64,
    segment_has_records: bool,
    next_seq: u64,
    next_batch: u64,
    max_segment_bytes: u64,
    /// Set when a failed append could not be cut back; the file end is unknown until recovery.
    poisoned: bool,
}

/// The sequence numbers a batch received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendedBatch {
    /// Batch number.
    pub batch: u64,
    /// Sequence number of the first record.
    pub first_seq: u64,
    /// Sequence number of the last record; everything up to it is durable.
    pub last_seq: u64,
}

impl JournalWriter {
    fn create_segment(
        dir: &Path,
        first_seq: u64,
        first_batch: u64,
        max_segment_bytes: u64,
    ) -> Result<JournalWriter, JournalError> {
        let path = segment_path(dir, first_seq);
        let header = SegmentHeader {
            format: FORMAT_NAME.to_string(),
            version: FORMAT_VERSION,
            first_seq,
            first_batch,
        };
        let mut line = serde_json::to_vec(&header).expect("a segment header always serializes");
        line.push(b'\n');
        write_durably(dir, &path, &line)?;

        let mut writer = Self::open_segment(dir, &path, first_seq, first_seq, first_batch)?;
        writer.max_segment_bytes = max_segment_bytes;
        Ok(writer)
    }

    fn open_segment(
        dir: &Path,
        path: &Path,
        first_seq: u64,
        next_seq: u64,
        next_batch: u64,
    ) -> Result<JournalWriter, JournalError> {
        let mut file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io_error("open", path))?;
        let segment_len = file
            .seek(SeekFrom::End(0))
            .map_err(io_error("seek", path))?;

        Ok(JournalWriter {
            dir: dir.to_path_buf(),
            file,
            path: path.to_path_buf(),
            segment_len,
            segment_has_records: next_seq > first_seq,
            next_seq,
            next_batch,
            max_segment_bytes: DEFAULT_MAX_SEGMENT_BYTES,
            poisoned: false,
        })
    }

    /// Returns the sequence number of the next record.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Appends a batch and makes it durable. When this returns `Ok`, every record of the batch
    /// survives a crash of the process or the host. On `Err`, none of them is in the journal.
    pub fn append_batch(&mut self, changes: Vec<NewChange>) -> Result<AppendedBatch, JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned {
                path: self.path.clone(),
            });
        }
        if self.segment_has_records && self.segment_len >= self.max_segment_bytes {
            *self = Self::create_segment(
                &self.dir,
                self.next_seq,
                self.next_batch,
                self.max_segment_bytes,
            )?;
        }

        let batch = self.next_batch;
        let first_seq = self.next_seq;
        let mut buffer = Vec::new();
        let mut seq = first_seq;
        for change in changes {
            let record = JournalRecord {
                seq,
                batch,
                xid: change.xid,
                cid: change.cid,
                table: change.table,
                op: change.op,
                new: change.new,
                old: change.old,
            };
            record.encode_line(&mut buffer);
            seq += 1;
        }
        if seq == first_seq {
            return Ok(AppendedBatch {
                batch,
                first_seq,
                last_seq: first_seq - 1,
            });
        }

        if let Err(error) = self.write_and_sync(&buffer) {
            // Cut off whatever part of the batch reached the file. If even that fails, later
            // lines would follow a torn one, so refuse further appends; recovery at the next
            // start removes the torn tail.
            if self.file.set_len(self.segment_len).is_err() {
                self.poisoned = true;
            }
            return Err(error);
        }
        self.segment_len += buffer.len() as u64;
        self.segment_has_records = true;
        self.next_seq = seq;
        self.next_batch += 1;

        Ok(AppendedBatch {
            batch,
            first_seq,
            last_seq: seq - 1,
        })
    }

    fn write_and_sync(&mut self, buffer: &[u8]) -> Result<(), JournalError> {
        self.file
            .write_all(buffer)
            .map_err(io_error("write", &self.path))?;
        crate::failpoint::hit("journal-after-write");
        self.file.sync_data().map_err(io_error("fsync", &self.path))
    }
}

/// Reads records in sequence order, for the apply stage. Checks each record's checksum.
///
/// The reader only returns records up to a durable sequence number given by the caller, so it
/// never reads a line that the writer is still writing.
#[derive(Debug)]
pub struct JournalReader {
    dir: PathBuf,
    next_seq: u64,
    current: Option<OpenSegment>,
    peeked: Option<JournalRecord>,
}

#[derive(Debug)]
struct OpenSegment {
    path: PathBuf,
    reader: BufReader<File>,
    line_number: u64,
    offset: u64,
}

impl JournalReader {
    /// Creates a reader whose first record is `from_seq`.
    pub fn new(dir: &Path, from_seq: u64) -> JournalReader {
        JournalReader {
            dir: dir.to_path_buf(),
            next_seq: from_seq,
            current: None,
            peeked: None,
        }
    }

    /// Reads up to `max_records` records or about `max_bytes` of row data, whichever comes
    /// first, but never beyond `durable_seq`. It then keeps reading while the next record
    /// belongs to the same source transaction as the last one, up to `hard_max_records`, so
    /// that a batch ends at a transaction boundary when one is near.
    pub fn read_batch(
        &mut self,
        durable_seq: u64,
        max_records: usize,
        max_bytes: usize,
        hard_max_records: usize,
    ) -> Result<Vec<JournalRecord>, JournalError> {
        let mut records: Vec<JournalRecord> = Vec::new();
        let mut bytes = 0;
        while records.len() < hard_max_records {
            let Some(record) = self.next_record(durable_seq)? else {
                break;
            };
            let full = records.len() >= max_records || bytes >= max_bytes;
            if full && records.last().is_some_and(|last| last.xid != record.xid) {
                self.peeked = Some(record);
                break;
            }
            bytes += record.new.as_ref().map_or(0, |raw| raw.get().len());
            records.push(record);
        }

        Ok(records)
    }

    fn next_record(&mut self, durable_seq: u64) -> Result<Option<JournalRecord>, JournalError> {
        if let Some(record) = self.peeked.take() {
            return Ok(Some(record));
        }
        if self.next_seq > durable_seq {
            return Ok(None);
        }
        loop {
            if self.current.is_none() {
                self.current = Some(self.open_segment_for(self.next_seq)?);
            }
            let segment = self.current.as_mut().expect("a segment was just opened");
            let mut line = Vec::new();
            let length = segment
                .reader
                .read_until(b'\n', &mut line)
                .map_err(io_error("read", &segment.path))?;
            if length == 0 || line.last() != Some(&b'\n') {
                // The record is in the next segment; opening it seeks by sequence number.
                if line.is_empty() {
                    self.current = None;
                    let next = segment_path(&self.dir, self.next_seq);
                    if !next.exists() {
                        return Err(JournalError::Missing {
                            seq: self.next_seq,
                            dir: self.dir.clone(),
                        });
                    }
                    continue;
                }
                return Err(corrupt(
                    segment,
                    "incomplete line before the durable end".into(),
                ));
            }
            line.pop();
            let record =
                JournalRecord::decode_line(&line).map_err(|reason| corrupt(segment, reason))?;
            segment.line_number += 1;
            segment.offset += length as u64;
            if record.seq < self.next_seq {
                continue;
            }
            if record.seq > self.next_seq {
                let reason = format!(
                    "sequence {} where {} was expected",
                    record.seq, self.next_seq
                );
                return Err(corrupt(segment, reason));
            }
            self.next_seq += 1;
            return Ok(Some(record));
        }
    }

    /// Opens the segment that contains `seq` and positions the reader after its header.
    fn open_segment_for(&self, seq: u64) -> Result<OpenSegment, JournalError> {
        let segments = list_segments(&self.dir)?;
        let (_, path) = segments
            .iter()
            .rev()
            .find(|(first_seq, _)| *first_seq <= seq)
            .ok_or_else(|| JournalError::Missing {
                seq,
                dir: self.dir.clone(),
            })?;
        let file = File::open(path).map_err(io_error("open", path))?;
        let mut reader = BufReader::with_capacity(256 * 1024, file);
        let mut header = Vec::new();
        reader
            .read_until(b'\n', &mut header)
            .map_err(io_error("read", path))?;
        if header.last() != Some(&b'\n') {
            return Err(JournalError::Header {
                path: path.clone(),
                reason: "no header line".into(),
            });
        }
        header.pop();
        parse_header(path, &header)?;

        Ok(OpenSegment {
            path: path.clone(),
            reader,
            line_number: 1,
            offset: header.len() as u64 + 1,
        })
    }
}

fn corrupt(segment: &OpenSegment, reason: String) -> JournalError {
    JournalError::Corrupt {
        path: segment.path.clone(),
        line: segment.line_number + 1,
        offset: segment.offset,
        reason,
    }
}

/// Deletes every segment whose records are all at or below `applied_seq`, except the newest.
/// Returns how many were deleted. Call only after MySQL has committed `applied_seq`.
pub fn release_segments(dir: &Path, applied_seq: u64) -> Result<usize, JournalError> {
    let segments = list_segments(dir)?;
    let mut deleted = 0;
    for pair in segments.windows(2) {
        let (_, ref path) = pair[0];
        let (next_first_seq, _) = pair[1];
        if next_first_seq > applied_seq + 1 {
            break;
        }
        fs::remove_file(path).map_err(io_error("remove", path))?;
        deleted += 1;
    }

    Ok(deleted)
}

/// Disk use of the journal's segments.
#[derive(Debug, Clone, Copy, Default)]
pub struct SegmentUsage {
    /// Total bytes of all segments.
    pub bytes: u64,
    /// Last modification of the oldest segment.
    pub oldest_modified: Option<std::time::SystemTime>,
}

/// Measures the journal's segments. Files that vanish meanwhile, deleted after an apply, are
/// skipped.
pub fn segment_usage(dir: &Path) -> Result<SegmentUsage, JournalError> {
    let mut usage = SegmentUsage::default();
    for (index, (_, path)) in list_segments(dir)?.iter().enumerate() {
        let Ok(metadata) = fs::metadata(path) else {
            continue;
        };
        usage.bytes += metadata.len();
        if index == 0 {
            usage.oldest_modified = metadata.modified().ok();
        }
    }

    Ok(usage)
}

#[cfg(test)]
mod tests;
