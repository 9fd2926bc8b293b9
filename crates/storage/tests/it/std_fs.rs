//! The real disk: the data directory lock, and recovery of a file cut short.

use std::io::Write;

use concord_raft::{LogStore, Storage};
use concord_storage::{inspect, Error, Log, LogConfig};

use crate::support::{entries, TempDir};

// While a log has the directory open, a second open and an inspection are refused;
// once it closes, both work.
#[test]
fn directory_lock_excludes_a_second_user() {
    let dir = TempDir::new("lock");
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert!(matches!(
        Log::open(dir.path(), LogConfig::default()),
        Err(Error::Locked { .. })
    ));
    assert!(matches!(inspect(dir.path()), Err(Error::Locked { .. })));
    drop(log);
    inspect(dir.path()).unwrap();
    Log::open(dir.path(), LogConfig::default()).unwrap();
}

// A segment file with garbage appended (a write torn by a crash) is cut back to its
// last complete batch on the real disk, and the log carries on.
#[test]
fn torn_tail_on_disk_is_dropped() {
    let dir = TempDir::new("torn");
    let exact = LogConfig {
        preallocate_bytes: 0,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), exact.clone()).unwrap();
    let mut group = log.group(1);
    group.append(&entries(1, &[1, 1, 1], 100)).unwrap();
    drop(group);
    drop(log);
    let segment = dir.path().join(format!("segment-{:020}.log", 1));
    let length = std::fs::metadata(&segment).unwrap().len();
    // Half of a record header, as if the next write had been cut short.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap()
        .write_all(&[7u8; 10])
        .unwrap();
    let log = Log::open(dir.path(), exact).unwrap();
    let torn = log.recovery().torn_tail.clone().expect("torn tail");
    assert_eq!(
        (torn.path, torn.offset, torn.bytes_dropped),
        (segment.clone(), length, 10)
    );
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), length);
    let mut group = log.group(1);
    assert_eq!(group.last_index(), Ok(3));
    group.append(&entries(4, &[1], 100)).unwrap();
    drop(group);
    drop(log);
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(log.group(1).last_index(), Ok(4));
}
