//! Group commit: writers on many threads share writes and fsyncs, and every write a
//! writer was told is durable survives.

use std::sync::{Arc, Barrier};

use concord_raft::{LogStore, Storage};
use concord_storage::{Log, LogConfig, SimFs, WriteBatch};

use crate::support::{entries, open_sim, TempDir};

const WRITERS: u64 = 16;
const WRITES_PER_WRITER: u64 = 25;

fn write_concurrently(log: &Log) {
    let barrier = Arc::new(Barrier::new(WRITERS as usize));
    let handles: Vec<_> = (1..=WRITERS)
        .map(|group| {
            let log = log.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                for index in 1..=WRITES_PER_WRITER {
                    let mut batch = WriteBatch::new();
                    batch.persist_ready(
                        group,
                        Some(concord_raft::HardState {
                            term: 1,
                            vote: group,
                            commit: index,
                        }),
                        None,
                        entries(index, &[1], 64),
                    );
                    log.write(batch).unwrap();
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
}

fn check_all_there(log: &Log) {
    for group in 1..=WRITERS {
        let storage = log.group(group);
        assert_eq!(storage.last_index(), Ok(WRITES_PER_WRITER), "group {group}");
        assert_eq!(storage.hard_state().commit, WRITES_PER_WRITER);
        let read = storage.entries(1, WRITES_PER_WRITER + 1, u64::MAX).unwrap();
        assert_eq!(read, entries(1, &[1; WRITES_PER_WRITER as usize], 64));
    }
}

// On the real disk, 16 writers share fsyncs (fewer flushes than batches) and a restart
// finds every acknowledged entry and hard state.
#[test]
fn concurrent_writers_share_fsyncs_on_disk() {
    let dir = TempDir::new("group-commit");
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let opened = log.stats();
    write_concurrently(&log);
    let stats = log.stats();
    let batches = stats.batches - opened.batches;
    let flushes = stats.flushes - opened.flushes;
    assert_eq!(batches, WRITERS * WRITES_PER_WRITER);
    assert!(flushes < batches, "{flushes} flushes for {batches} batches");
    assert_eq!(stats.syncs, stats.flushes, "one fsync per flush");
    drop(log);
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    check_all_there(&log);
}

// On the simulated disk with small segments, concurrent writers roll segments together
// and a torn crash afterwards loses nothing acknowledged.
#[test]
fn concurrent_writers_across_segments_lose_nothing() {
    let fs = SimFs::new(9);
    let config = LogConfig {
        segment_bytes_max: 8192,
        ..LogConfig::default()
    };
    let log = open_sim(&fs, config.clone()).unwrap();
    write_concurrently(&log);
    drop(log);
    fs.crash_torn();
    let log = open_sim(&fs, config).unwrap();
    check_all_there(&log);
}

// A batch for several groups is checked whole first: if one group's part is refused,
// no group's part is written.
#[test]
fn refused_batch_writes_nothing() {
    let fs = SimFs::new(10);
    let log = open_sim(&fs, LogConfig::default()).unwrap();
    let mut batch = WriteBatch::new();
    batch.group(1).entries = entries(1, &[1], 10);
    batch.group(2).entries = entries(5, &[1], 10); // a gap: refused
    assert!(matches!(
        log.write(batch),
        Err(concord_storage::Error::Unavailable)
    ));
    assert_eq!(log.group(1).last_index(), Ok(0));
    assert!(log.groups().is_empty());
    let mut group = log.group(1);
    group.append(&entries(1, &[1], 10)).unwrap();
    assert_eq!(group.last_index(), Ok(1));
}

// Submitted batches are visible to reads at once and durable in submission order: a
// driver can keep several of one group's batches in flight and wait on them later.
#[test]
fn submitted_batches_pipeline_in_order() {
    let fs = SimFs::new(11);
    let log = open_sim(&fs, LogConfig::default()).unwrap();
    let mut pending = Vec::new();
    for index in 1..=5 {
        let mut batch = WriteBatch::new();
        batch.group(1).entries = entries(index, &[1], 20);
        pending.push(log.submit(batch).unwrap());
        assert_eq!(
            log.group(1).last_index(),
            Ok(index),
            "visible before durable"
        );
    }
    assert!(!pending[0].is_durable());
    // Waiting on the last one flushes all of them in one write.
    let syncs = fs.stats().data_syncs;
    pending.pop().unwrap().wait().unwrap();
    assert_eq!(fs.stats().data_syncs, syncs + 1);
    for durable in pending {
        assert!(durable.is_durable());
        durable.wait().unwrap();
    }
    drop(log);
    fs.crash();
    let log = open_sim(&fs, LogConfig::default()).unwrap();
    assert_eq!(log.group(1).last_index(), Ok(5));
}
