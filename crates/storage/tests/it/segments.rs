//! Segments and memory: whole segments go once every group is past them, snapshots
//! replace older ones, and each group's memory stays bounded by its cache limit.

use std::path::PathBuf;

use bytes::Bytes;
use concord_raft::{ConfState, LogStore, MemStorage, Storage};
use concord_storage::{LogConfig, SimFs};

use crate::support::{assert_same_store, entries, open_sim, sim_dir, small_config};

fn segment_files(fs: &SimFs) -> Vec<PathBuf> {
    fs.paths()
        .into_iter()
        .filter(|path| path.to_string_lossy().contains("segment-"))
        .collect()
}

fn snapshot_files(fs: &SimFs) -> Vec<PathBuf> {
    fs.paths()
        .into_iter()
        .filter(|path| path.to_string_lossy().contains("snapshot-"))
        .collect()
}

// Old segments stay while any group still needs an entry in them, go once every group
// has snapshotted and compacted past them, and a restart after that rebuilds the same
// state from the segments left.
#[test]
fn segments_are_deleted_once_every_group_is_past_them() {
    let fs = SimFs::new(1);
    let log = open_sim(&fs, small_config()).unwrap();
    let mut models = [MemStorage::new(), MemStorage::new()];
    for index in 1..=200 {
        for (position, model) in models.iter_mut().enumerate() {
            let appended = entries(index, &[1], 40);
            model.append(&appended).unwrap();
            log.group(position as u64 + 1).append(&appended).unwrap();
        }
    }
    let before = segment_files(&fs).len();
    assert!(before > 5, "{before} segments");
    // Group 1 moves past everything; group 2 still needs its entries.
    let snapshot = Bytes::from_static(b"group state");
    models[0]
        .create_snapshot(190, ConfState::default(), snapshot.clone())
        .unwrap();
    models[0].compact(190).unwrap();
    let mut storage = log.group(1);
    storage
        .create_snapshot(190, ConfState::default(), snapshot)
        .unwrap();
    storage.compact(190).unwrap();
    assert_eq!(segment_files(&fs).len(), before, "group 2 still needs them");
    assert_eq!(log.stats().segments_deleted, 0);
    let mut storage = log.group(2);
    models[1]
        .create_snapshot(150, ConfState::default(), Bytes::new())
        .unwrap();
    models[1].compact(150).unwrap();
    storage
        .create_snapshot(150, ConfState::default(), Bytes::new())
        .unwrap();
    storage.compact(150).unwrap();
    let after = segment_files(&fs).len();
    assert!(
        after < before / 2,
        "{before} segments before, {after} after"
    );
    assert_eq!(log.stats().segments_deleted, (before - after) as u64);
    drop(storage);
    drop(log);
    fs.crash_torn();
    let log = open_sim(&fs, small_config()).unwrap();
    for (position, model) in models.iter().enumerate() {
        assert_same_store(model, &log.group(position as u64 + 1), "after restart");
    }
}

// Removing a group drops its state and snapshot, lets its segments go, and survives a
// restart; the id can be used again from scratch.
#[test]
fn removed_group_releases_its_segments_and_snapshot() {
    let fs = SimFs::new(2);
    let log = open_sim(&fs, small_config()).unwrap();
    let mut group = log
        .bootstrap_group(4, ConfState::with_voters([1, 2, 3]))
        .unwrap();
    for index in 2..=150 {
        group.append(&entries(index, &[1], 50)).unwrap();
    }
    assert_eq!(snapshot_files(&fs).len(), 1);
    let before = segment_files(&fs).len();
    log.remove_group(4).unwrap();
    assert_eq!(log.groups(), Vec::<u64>::new());
    assert!(snapshot_files(&fs).is_empty());
    // Segments go after the next flush that finds them unneeded.
    log.group(5).append(&entries(1, &[1], 10)).unwrap();
    assert!(segment_files(&fs).len() < before);
    drop(group);
    drop(log);
    fs.crash();
    let log = open_sim(&fs, small_config()).unwrap();
    assert_eq!(log.groups(), vec![5]);
    let fresh = log.group(4);
    assert_same_store(&MemStorage::new(), &fresh, "removed group is empty");
}

// A newer snapshot replaces the older file once durable; a snapshot file written just
// before a crash that lost its log record is deleted on restart.
#[test]
fn old_and_orphan_snapshot_files_are_deleted() {
    let fs = SimFs::new(3);
    let log = open_sim(&fs, small_config()).unwrap();
    let mut group = log.group(1);
    group.append(&entries(1, &[1, 1, 1, 1, 1], 10)).unwrap();
    group
        .create_snapshot(2, ConfState::default(), Bytes::from_static(b"two"))
        .unwrap();
    group
        .create_snapshot(4, ConfState::default(), Bytes::from_static(b"four"))
        .unwrap();
    let snapshot_4 = sim_dir().join(format!("snapshot-{:020}-{:020}.snap", 1, 4));
    assert_eq!(snapshot_files(&fs), vec![snapshot_4.clone()]);
    // The file of snapshot 5 is written, synced and named (two syncs), then the power
    // fails at the sync of the log record that would name it.
    fs.crash_at_sync(2, false);
    assert!(group
        .create_snapshot(5, ConfState::default(), Bytes::from_static(b"five"))
        .is_err());
    let orphan = sim_dir().join(format!("snapshot-{:020}-{:020}.snap", 1, 5));
    assert!(fs.file_bytes(&orphan).is_some(), "the file made it to disk");
    drop(group);
    drop(log);
    let log = open_sim(&fs, small_config()).unwrap();
    assert_eq!(log.recovery().removed_files, vec![orphan.clone()]);
    assert!(fs.file_bytes(&orphan).is_none());
    let snapshot = log.group(1).snapshot(0).unwrap();
    assert_eq!(
        (snapshot.metadata.index, snapshot.data),
        (4, Bytes::from_static(b"four"))
    );
    assert_eq!(snapshot_files(&fs), vec![snapshot_4]);
}

// Memory per group is bounded by the cache limit however long the log, and entries
// that fell out of the cache are read back from their records.
#[test]
fn memory_per_group_is_bounded() {
    let fs = SimFs::new(5);
    let config = LogConfig {
        entry_cache_bytes_max: 2_000,
        ..small_config()
    };
    let log = open_sim(&fs, config.clone()).unwrap();
    let mut group = log.group(1);
    let mut model = MemStorage::new();
    for index in 1..=500 {
        let appended = entries(index, &[1 + index / 100], 100);
        model.append(&appended).unwrap();
        group.append(&appended).unwrap();
        assert!(group.cached_bytes() <= config.entry_cache_bytes_max);
    }
    assert_same_store(&model, &group, "read back from disk");
    // 124 bytes per entry (100 of payload, 24 counted for its header): 4 fit in 500.
    assert_eq!(
        group.entries(10, 20, 500).unwrap().len(),
        4,
        "max_bytes holds on disk reads"
    );
}

// A bootstrapped group starts exactly as MemStorage::with_conf_state, durably, and
// cannot be bootstrapped twice.
#[test]
fn bootstrap_matches_mem_storage() {
    let fs = SimFs::new(6);
    let log = open_sim(&fs, small_config()).unwrap();
    let conf_state = ConfState::with_voters([1, 2, 3]);
    let group = log.bootstrap_group(9, conf_state.clone()).unwrap();
    let model = MemStorage::with_conf_state(conf_state.clone());
    assert_same_store(&model, &group, "bootstrapped");
    assert!(matches!(
        log.bootstrap_group(9, conf_state),
        Err(concord_storage::Error::GroupExists(9))
    ));
    drop(group);
    drop(log);
    fs.crash();
    let log = open_sim(&fs, small_config()).unwrap();
    assert_same_store(&model, &log.group(9), "after restart");
    // Compaction past the bootstrap snapshot is refused, as MemStorage does.
    let mut group = log.group(9);
    group.append(&entries(2, &[1, 1], 10)).unwrap();
    assert!(group.compact(3).is_err());
}

// With preallocation the tail segment's file runs past its last record in zeros; a
// finished segment has none left (else recovery would take them for corruption); a
// restart drops the tail's zeros, says so, and recovers every write — after a clean
// stop and after a crash.
#[test]
fn preallocated_zeros_are_cut_from_finished_segments_and_dropped_at_restart() {
    let config = small_config();
    assert!(config.preallocate_bytes > 0);
    for crash in [false, true] {
        let fs = SimFs::new(7);
        let log = open_sim(&fs, config.clone()).unwrap();
        let mut model = MemStorage::new();
        for index in 1..=120 {
            let appended = entries(index, &[1], 40);
            model.append(&appended).unwrap();
            log.group(1).append(&appended).unwrap();
        }
        let segments = segment_files(&fs);
        assert!(segments.len() >= 3, "rolled: {segments:?}");
        let tail = fs.file_bytes(segments.last().unwrap()).unwrap();
        assert!(
            tail.ends_with(&[0; 64]),
            "the tail segment runs on in zeros"
        );
        for finished in &segments[..segments.len() - 1] {
            let bytes = fs.file_bytes(finished).unwrap();
            assert!(
                !bytes.ends_with(&[0; 16]),
                "{} still ends in preallocated zeros",
                finished.display()
            );
        }
        drop(log);
        if crash {
            fs.crash();
        }
        let log = open_sim(&fs, config.clone()).unwrap();
        let torn = log
            .recovery()
            .torn_tail
            .clone()
            .expect("the zeros are dropped");
        assert_eq!(torn.reason, "unused preallocated space (zeros)");
        assert_same_store(&model, &log.group(1), "after restart");
    }
}
