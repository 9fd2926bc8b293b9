//! fsync failure is fatal: the write fails, the log takes no more writes, nothing is
//! retried as if the data were safe, and a restart recovers from what is on disk.

use std::sync::{Arc, Barrier};

use concord_raft::{LogStore, Storage, StorageError};
use concord_storage::{Error, LogConfig, SimFs, WriteBatch};

use crate::support::{entries, open_sim, small_config};

// A failed fsync fails the write with a fatal error, later writes fail as poisoned
// without touching the disk, and no sync is retried.
#[test]
fn failed_fsync_is_fatal_and_never_retried() {
    let fs = SimFs::new(1);
    let log = open_sim(&fs, small_config()).unwrap();
    let mut group = log.group(1);
    group.append(&entries(1, &[1, 1], 10)).unwrap();
    let syncs_before = fs.stats().data_syncs;
    fs.fail_next_sync();
    let mut batch = WriteBatch::new();
    batch.group(1).entries = entries(3, &[1], 10);
    let error = log.write(batch).unwrap_err();
    assert!(
        matches!(
            error,
            Error::Fatal {
                operation: "syncing",
                ..
            }
        ),
        "{error}"
    );
    assert!(error.is_fatal());
    let written_before = fs.stats().bytes_written;
    let later = group.append(&entries(4, &[1], 10));
    match later {
        Err(StorageError::Failed(message)) => assert!(message.contains("stopped"), "{message}"),
        other => panic!("expected the log to refuse, got {other:?}"),
    }
    let mut batch = WriteBatch::new();
    batch.group(2).hard_state = Some(Default::default());
    assert!(matches!(log.write(batch), Err(Error::Poisoned(_))));
    assert_eq!(
        fs.stats().data_syncs,
        syncs_before,
        "no sync after the failure"
    );
    assert_eq!(
        fs.stats().bytes_written,
        written_before,
        "nothing written after it"
    );

    // After a restart the log holds what was durable: the failed batch is gone (its
    // data was dropped with the failed sync), everything before it is there.
    drop(group);
    drop(log);
    fs.crash();
    let log = open_sim(&fs, small_config()).unwrap();
    assert_eq!(log.group(1).last_index(), Ok(2));
}

// Every writer waiting on a flush whose fsync fails gets an error; none is told its
// batch is durable.
#[test]
fn all_waiting_writers_fail_with_the_flush() {
    let fs = SimFs::new(2);
    let log = open_sim(&fs, LogConfig::default()).unwrap();
    fs.fail_next_sync();
    let writers = 8;
    let barrier = Arc::new(Barrier::new(writers));
    let handles: Vec<_> = (0..writers as u64)
        .map(|group| {
            let log = log.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let mut batch = WriteBatch::new();
                batch.group(group + 1).entries = entries(1, &[1], 10);
                log.write(batch)
            })
        })
        .collect();
    let results: Vec<_> = handles
        .into_iter()
        .map(|handle| handle.join().unwrap())
        .collect();
    // The first flush fails; writers that were in it or came later all fail. None
    // succeeds after the failure.
    let failures = results.iter().filter(|result| result.is_err()).count();
    assert!(failures >= 1);
    for result in &results {
        if let Err(error) = result {
            assert!(error.is_fatal(), "{error}");
        }
    }
    let mut batch = WriteBatch::new();
    batch.group(100).entries = entries(1, &[1], 10);
    assert!(log.write(batch).unwrap_err().is_fatal());
}

// A failed fsync of a snapshot file or of the directory is fatal too.
#[test]
fn failed_snapshot_or_directory_sync_is_fatal() {
    let fs = SimFs::new(3);
    let log = open_sim(&fs, small_config()).unwrap();
    let mut group = log.group(1);
    group.append(&entries(1, &[1, 1], 10)).unwrap();
    fs.fail_next_sync();
    let result = group.create_snapshot(1, Default::default(), bytes::Bytes::from_static(b"x"));
    assert!(
        matches!(result, Err(StorageError::Failed(ref message)) if message.contains("fatal")),
        "{result:?}"
    );
    assert!(group.append(&entries(3, &[1], 10)).is_err(), "poisoned");

    // The directory sync when a new segment starts.
    let fs = SimFs::new(4);
    let log = open_sim(&fs, small_config()).unwrap();
    fs.fail_next_dir_sync();
    let mut failed = None;
    for index in 1..1000 {
        let mut batch = WriteBatch::new();
        batch.group(1).entries = entries(index, &[1], 100);
        if let Err(error) = log.write(batch) {
            failed = Some((index, error));
            break;
        }
    }
    let (index, error) = failed.expect("a new segment was started");
    assert!(
        matches!(
            error,
            Error::Fatal {
                operation: "syncing directory",
                ..
            }
        ),
        "{error}"
    );
    assert!(index > 1, "the first segment filled up first");
    assert!(log.group(1).append(&entries(index, &[1], 10)).is_err());
}
