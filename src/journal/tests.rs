use std::fs;

use rand::{RngExt, SeedableRng};
use serde_json::value::RawValue;

use super::*;

fn change(cid: i64, xid: i64) -> NewChange {
    let row = format!(r#"{{"id":{cid},"note":"row \"{cid}\"","amount":12345678901234567890.25}}"#);
    NewChange {
        xid,
        cid,
        table: "public.orders".into(),
        op: Operation::Insert,
        new: Some(RawValue::from_string(row).unwrap()),
        old: None,
    }
}

fn read_all(
    dir: &Path,
    from_seq: u64,
    durable_seq: u64,
) -> Result<Vec<JournalRecord>, JournalError> {
    let mut reader = JournalReader::new(dir, from_seq);
    let mut all = Vec::new();
    loop {
        let batch = reader.read_batch(durable_seq, 7, usize::MAX, 100)?;
        if batch.is_empty() {
            return Ok(all);
        }
        all.extend(batch);
    }
}

fn last_segment(dir: &Path) -> PathBuf {
    list_segments(dir).unwrap().pop().unwrap().1
}

#[test]
fn records_round_trip_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), 600).unwrap();
    let mut writer = journal.take_writer().unwrap();
    let mut cid = 0;
    for batch in 0..20 {
        let changes = (0..3)
            .map(|_| {
                cid += 1;
                change(cid, batch)
            })
            .collect();
        writer.append_batch(changes).unwrap();
    }
    assert!(
        list_segments(dir.path()).unwrap().len() > 3,
        "small segments must rotate"
    );

    let records = read_all(dir.path(), 1, 60).unwrap();
    assert_eq!(records.len(), 60);
    for (index, record) in records.iter().enumerate() {
        assert_eq!(record.seq, index as u64 + 1);
        assert_eq!(record.cid, index as i64 + 1);
    }
    let middle = read_all(dir.path(), 31, 60).unwrap();
    assert_eq!(middle.first().map(|r| r.seq), Some(31));
}

#[test]
fn reader_stops_at_durable_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), DEFAULT_MAX_SEGMENT_BYTES).unwrap();
    let mut writer = journal.take_writer().unwrap();
    writer
        .append_batch((1..=10).map(|i| change(i, i)).collect())
        .unwrap();
    let records = read_all(dir.path(), 1, 4).unwrap();
    assert_eq!(records.len(), 4);
}

#[test]
fn batch_extends_to_transaction_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), DEFAULT_MAX_SEGMENT_BYTES).unwrap();
    let mut writer = journal.take_writer().unwrap();
    let changes = vec![
        change(1, 1),
        change(2, 2),
        change(3, 2),
        change(4, 2),
        change(5, 3),
    ];
    writer.append_batch(changes).unwrap();
    let mut reader = JournalReader::new(dir.path(), 1);
    let first = reader.read_batch(5, 2, usize::MAX, 100).unwrap();
    assert_eq!(
        first.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    let second = reader.read_batch(5, 2, usize::MAX, 100).unwrap();
    assert_eq!(second.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![5]);
}

#[test]
fn second_open_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let _journal = Journal::open(dir.path(), DEFAULT_MAX_SEGMENT_BYTES).unwrap();
    let error = Journal::open(dir.path(), DEFAULT_MAX_SEGMENT_BYTES).unwrap_err();
    assert!(matches!(error, JournalError::Locked { .. }), "{error}");
    assert!(error.to_string().contains("in use by another"), "{error}");
}

#[test]
fn journal_id_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let id = Journal::open(dir.path(), DEFAULT_MAX_SEGMENT_BYTES)
        .unwrap()
        .id()
        .to_string();
    let again = Journal::open(dir.path(), DEFAULT_MAX_SEGMENT_BYTES).unwrap();
    assert_eq!(again.id(), id);
}

/// Model-based check of torn tails: cut the newest segment at every kind of byte offset, and
/// recovery must keep exactly the records that were whole before the cut.
#[test]
fn torn_tail_keeps_exactly_the_whole_records() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path(), DEFAULT_MAX_SEGMENT_BYTES).unwrap();
        let mut writer = journal.take_writer().unwrap();
        let batch_count = rng.random_range(1..6);
        let mut cid = 0;
        for batch in 0..batch_count {
            let changes = (0..rng.random_range(1..5)).map(|_| {
                cid += 1;
                change(cid, batch)
            });
            writer.append_batch(changes.collect()).unwrap();
        }
        drop(writer);
        drop(journal);

        let path = last_segment(dir.path());
        let content = fs::read(&path).unwrap();
        let header_end = content.iter().position(|&b| b == b'\n').unwrap() + 1;
        let cut = rng.random_range(header_end..=content.len());
        fs::write(&path, &content[..cut]).unwrap();
        let whole_lines = content[header_end..cut]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();

        let journal = Journal::open(dir.path(), DEFAULT_MAX_SEGMENT_BYTES).unwrap();
        let recovery = journal.recovery();
        assert_eq!(recovery.next_seq, whole_lines as u64 + 1);
        let kept_len = fs::metadata(&path).unwrap().len() as usize;
        assert_eq!(recovery.truncated_bytes as usize, cut - kept_len);
        let records = read_all(dir.path(), 1, recovery.next_seq - 1).unwrap();
        assert_eq!(records.len(), whole_lines);

        // The next append continues the sequence without a gap.
        drop(journal);
        let mut journal = Journal::open(dir.path(), DEFAULT_MAX_SEGMENT_BYTES).unwrap();
        let mut writer = journal.take_writer().unwrap();
        let appended = writer.append_batch(vec![change(1000, 99)]).unwrap();
        assert_eq!(appended.first_seq, whole_lines as u64 + 1);
    }
}

#[test]
fn damaged_whole_last_record_stops_recovery() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut journal = Journal::open(dir.path(), DEFAULT_MAX_SEGMENT_BYTES).unwrap();
        let mut writer = journal.take_writer().unwrap();
        writer
            .append_batch((1..=3).map(|i| change(i, 1)).collect())
            .unwrap();
    }
    let path = last_segment(dir.path());
    let mut content = fs::read(&path).unwrap();
    let len = content.len();
    content[len - 30] ^= 0x20;
    fs::write(&path, &content).unwrap();

    let error = Journal::open(dir.path(), DEFAULT_MAX_SEGMENT_BYTES).unwrap_err();
    assert!(
        matches!(error, JournalError::DamagedTail { line: 4, .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("truncate the file to"),
        "{error}"
    );
    assert_eq!(fs::read(&path).unwrap(), content, "nothing was cut");
}

#[test]
fn corrupt_middle_record_stops_recovery() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut journal = Journal::open(dir.path(), DEFAULT_MAX_SEGMENT_BYTES).unwrap();
        let mut writer = journal.take_writer().unwrap();
        writer
            .append_batch((1..=5).map(|i| change(i, 1)).collect())
            .unwrap();
    }
    let path = last_segment(dir.path());
    let mut content = fs::read(&path).unwrap();
    let third_line = content
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'\n')
        .nth(2)
        .unwrap()
        .0
        + 1;
    content[third_line + 10] ^= 0x01;
    fs::write(&path, &content).unwrap();

    let error = Journal::open(dir.path(), DEFAULT_MAX_SEGMENT_BYTES).unwrap_err();
    let JournalError::Corrupt { line, offset, .. } = &error else {
        panic!("{error}")
    };
    assert_eq!(*line, 4);
    assert_eq!(*offset, third_line as u64);
    let message = error.to_string();
    assert!(message.contains("is corrupt"), "{message}");
    assert!(message.contains("truncate the file"), "{message}");
    // Nothing was cut: the operator decides.
    assert_eq!(fs::read(&path).unwrap(), content);
}

#[test]
fn corrupt_record_in_older_segment_stops_the_reader() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), 400).unwrap();
    let mut writer = journal.take_writer().unwrap();
    for batch in 0..6 {
        writer
            .append_batch(vec![
                change(batch * 2 + 1, batch),
                change(batch * 2 + 2, batch),
            ])
            .unwrap();
    }
    let (_, first) = list_segments(dir.path()).unwrap().remove(0);
    let mut content = fs::read(&first).unwrap();
    let len = content.len();
    content[len - 40] ^= 0x04;
    fs::write(&first, &content).unwrap();

    let error = read_all(dir.path(), 1, 12).unwrap_err();
    assert!(matches!(error, JournalError::Corrupt { .. }), "{error}");
}

#[test]
fn last_batch_keys_are_recovered() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut journal = Journal::open(dir.path(), DEFAULT_MAX_SEGMENT_BYTES).unwrap();
        let mut writer = journal.take_writer().unwrap();
        writer
            .append_batch(vec![change(1, 10), change(2, 10)])
            .unwrap();
        writer
            .append_batch(vec![change(5, 11), change(3, 12)])
            .unwrap();
    }
    let journal = Journal::open(dir.path(), DEFAULT_MAX_SEGMENT_BYTES).unwrap();
    assert_eq!(
        journal.recovery().last_batch_keys,
        vec![
            ChangeLogKey { cid: 5, xid: 11 },
            ChangeLogKey { cid: 3, xid: 12 }
        ]
    );
}

#[test]
fn release_deletes_only_fully_applied_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), 300).unwrap();
    let mut writer = journal.take_writer().unwrap();
    for batch in 0..8 {
        writer.append_batch(vec![change(batch + 1, batch)]).unwrap();
    }
    let before = list_segments(dir.path()).unwrap();
    assert!(before.len() >= 3);
    let second_first_seq = before[1].0;

    assert_eq!(
        release_segments(dir.path(), second_first_seq - 2).unwrap(),
        0
    );
    assert_eq!(
        release_segments(dir.path(), second_first_seq - 1).unwrap(),
        1
    );
    assert_eq!(release_segments(dir.path(), 8).unwrap(), before.len() - 2);
    let after = list_segments(dir.path()).unwrap();
    assert_eq!(after.len(), 1, "the newest segment stays");
    assert_eq!(
        writer
            .append_batch(vec![change(100, 100)])
            .unwrap()
            .first_seq,
        9
    );
}

#[test]
fn new_journal_files_are_private() {
    use std::os::unix::fs::PermissionsExt;

    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("datalog");
    let mut journal = Journal::open(&dir, DEFAULT_MAX_SEGMENT_BYTES).unwrap();
    let mut writer = journal.take_writer().unwrap();
    writer.append_batch(vec![change(1, 1)]).unwrap();

    let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&last_segment(&dir)), 0o600);
    assert_eq!(mode(&dir.join("journal.id")), 0o600);
}
