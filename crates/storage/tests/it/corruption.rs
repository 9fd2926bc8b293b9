//! Corruption: damage anywhere but the last record stops recovery with an error naming
//! the file and byte offset; damage to the last record is a torn tail; an operator can
//! choose to cut the log at the corruption instead.

use concord_raft::{LogStore, Storage, StorageError};
use concord_storage::{CorruptionPolicy, Error, LogConfig};

use crate::support::{
    assert_log_matches, build_history, entries, exact_config, open_sim, sim_dir, small_config,
    History,
};

fn one_segment() -> LogConfig {
    LogConfig {
        segment_bytes_max: 1 << 20,
        ..exact_config()
    }
}

fn history() -> History {
    build_history(21, one_segment(), 40)
}

// A bit flipped in any byte of a batch in the middle of the log (every byte of batch 20
// of 40 is tried) stops recovery with a corruption error naming the segment file and a
// byte offset inside that batch.
#[test]
fn bit_flip_in_the_middle_is_refused_with_file_and_offset() {
    let history = history();
    let segment = history.steps[20].segment.clone();
    let (start, end) = (
        history.steps[19].segment_bytes,
        history.steps[20].segment_bytes,
    );
    for byte in start..end {
        let fs = history.fs.fork();
        fs.flip_bit(&segment, byte, (byte % 8) as u8).unwrap();
        match open_sim(&fs, history.config.clone()) {
            Err(Error::Corruption {
                path,
                offset,
                reason,
            }) => {
                assert_eq!(path, segment, "byte {byte}");
                assert!(
                    (start..end).contains(&offset) && offset <= byte,
                    "byte {byte}: reported offset {offset} ({reason})"
                );
                let message = Error::Corruption {
                    path,
                    offset,
                    reason,
                }
                .to_string();
                assert!(
                    message.contains("segment-") && message.contains(&format!("at byte {offset}"))
                );
            }
            Err(other) => panic!("byte {byte}: {other}"),
            Ok(_) => panic!("byte {byte}: corruption not detected"),
        }
    }
}

// A bit flipped anywhere in the last record (the final batch's commit) is a torn tail:
// the final batch is dropped and the log opens with everything before it.
#[test]
fn bit_flip_in_the_last_record_drops_the_torn_batch() {
    let history = history();
    let last = history.steps.last().unwrap();
    let record_start = last.segment_bytes - (21 + 12);
    for byte in record_start..last.segment_bytes {
        let fs = history.fs.fork();
        fs.flip_bit(&last.segment, byte, 3).unwrap();
        let log = open_sim(&fs, history.config.clone())
            .unwrap_or_else(|error| panic!("byte {byte}: {error}"));
        let before = &history.steps[history.steps.len() - 2];
        assert_log_matches(&log, &before.models, &format!("byte {byte}"));
        let torn = log
            .recovery()
            .torn_tail
            .clone()
            .expect("torn tail reported");
        assert_eq!(torn.offset, before.segment_bytes);
    }
}

// Damage to an earlier record of the final batch, with intact records after it, is not
// what a crash does to the last write: recovery refuses it rather than guess.
#[test]
fn damage_followed_by_intact_records_is_refused_even_in_the_last_batch() {
    let history = history();
    let last = history.steps.last().unwrap();
    let batch_start = history.steps[history.steps.len() - 2].segment_bytes;
    let fs = history.fs.fork();
    fs.flip_bit(&last.segment, batch_start + 30, 0).unwrap();
    match open_sim(&fs, history.config.clone()) {
        Err(Error::Corruption { offset, .. }) => assert_eq!(offset, batch_start),
        other => panic!("expected corruption, got {other:?}"),
    }
}

// With CorruptionPolicy::CutLog the log opens anyway, cut at the last complete batch
// before the damage: later batches and later segments are gone, and the cut is reported.
#[test]
fn cut_log_policy_opens_at_the_last_good_batch() {
    let history = build_history(22, exact_config(), 80);
    let damaged = &history.steps[30];
    let before = history
        .steps
        .iter()
        .rev()
        .find(|step| step.segment == damaged.segment && step.segment_bytes < damaged.segment_bytes)
        .expect("a batch before it in the same segment");
    let fs = history.fs.fork();
    fs.flip_bit(&damaged.segment, damaged.segment_bytes - 1, 1)
        .unwrap();
    assert!(open_sim(&fs, history.config.clone()).is_err());
    let config = LogConfig {
        corruption_policy: CorruptionPolicy::CutLog,
        ..history.config.clone()
    };
    let log = open_sim(&fs, config).unwrap();
    assert_log_matches(&log, &before.models, "after the cut");
    let cut = log.recovery().cut.clone().expect("cut reported");
    assert_eq!(
        (cut.path.clone(), cut.offset),
        (damaged.segment.clone(), before.segment_bytes)
    );
    assert!(cut.corruption.contains("corrupt data in"));
    assert!(!cut.segments_deleted.is_empty());
    // Later segments are gone; the log goes on in a new segment after the cut one.
    let segments = fs
        .paths()
        .into_iter()
        .filter(|path| path.to_string_lossy().contains("segment-"))
        .count();
    let cut_number: usize = cut.path.to_string_lossy()[cut.path.to_string_lossy().len() - 24..]
        .trim_end_matches(".log")
        .parse()
        .unwrap();
    assert_eq!(segments, cut_number + 1);
    // The log goes on from there, and reopens cleanly.
    let mut group = log.group(1);
    let next = group.last_index().unwrap() + 1;
    group.append(&entries(next, &[99], 10)).unwrap();
    drop(group);
    drop(log);
    let log = open_sim(&fs, history.config.clone()).unwrap();
    assert_eq!(log.group(1).term(next), Ok(99));
}

// A damaged snapshot file stops recovery with an error naming that file.
#[test]
fn damaged_snapshot_file_is_refused() {
    let fs = concord_storage::SimFs::new(5);
    let log = open_sim(&fs, small_config()).unwrap();
    let mut group = log.group(1);
    group.append(&entries(1, &[1, 1, 1], 10)).unwrap();
    group
        .create_snapshot(2, Default::default(), bytes::Bytes::from_static(b"state"))
        .unwrap();
    drop(group);
    drop(log);
    let path = sim_dir().join(format!("snapshot-{:020}-{:020}.snap", 1, 2));
    let last = fs.file_bytes(&path).unwrap().len() as u64 - 1;
    fs.flip_bit(&path, last, 2).unwrap();
    match open_sim(&fs, small_config()) {
        Err(Error::Corruption { path: found, .. }) => assert_eq!(found, path),
        other => panic!("expected corruption, got {other:?}"),
    }
}

// Entries read back from disk (evicted from the cache) are checked again: a bit flipped
// after the log opened makes the read fail instead of returning bad data.
#[test]
fn damage_found_when_reading_back() {
    let fs = concord_storage::SimFs::new(6);
    let log = open_sim(&fs, one_segment()).unwrap();
    let mut group = log.group(1);
    for index in 1..=20 {
        group.append(&entries(index, &[1], 50)).unwrap();
    }
    assert!(group.cached_bytes() <= small_config().entry_cache_bytes_max);
    // Entry 1's record sits right after the segment header and checkpoint.
    let segment = crate::support::newest_segment(&fs).0;
    let header_and_checkpoint = 21 + 20 + 21 + 12;
    fs.flip_bit(&segment, header_and_checkpoint + 40, 0)
        .unwrap();
    match group.entries(1, 2, u64::MAX) {
        Err(StorageError::Failed(message)) => assert!(message.contains("corrupt"), "{message}"),
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(
        group.entries(20, 21, u64::MAX).unwrap().len(),
        1,
        "cached entries still read"
    );
}
