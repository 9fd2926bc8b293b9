//! The durable group storage passes the same conformance suite as `MemStorage`, on a
//! simulated disk, on the real disk, and with every write followed by a crash and a
//! restart.

use std::sync::Arc;

use bytes::Bytes;
use concord_raft::storage::conformance;
use concord_raft::{
    ConfState, Entry, HardState, Index, LogStore, RaftState, Snapshot, Storage, StorageError, Term,
};
use concord_storage::{GroupStorage, Log, LogConfig, SimFs, StdFs};

use crate::support::{open_sim, small_config, TempDir};

// The suite passes on a fresh log on a simulated disk, default and small limits.
#[test]
fn conforms_on_sim_fs() {
    conformance::run_all(|| {
        open_sim(&SimFs::new(1), LogConfig::default())
            .unwrap()
            .group(7)
    });
    conformance::run_all(|| open_sim(&SimFs::new(2), small_config()).unwrap().group(7));
}

// The suite passes on the real disk (std::fs, fsync and all).
#[test]
fn conforms_on_std_fs() {
    let dirs = std::cell::RefCell::new(Vec::new());
    conformance::run_all(|| {
        let dir = TempDir::new("conformance");
        let log = Log::open_with(Arc::new(StdFs), dir.path(), small_config()).unwrap();
        dirs.borrow_mut().push(dir);
        log.group(3)
    });
}

// The suite passes when other groups share the log and write between every step.
#[test]
fn conforms_next_to_other_groups() {
    conformance::run_all(|| {
        let log = open_sim(&SimFs::new(3), small_config()).unwrap();
        let mut neighbour = log.group(8);
        neighbour
            .append(&crate::support::entries(1, &[1, 1, 1], 50))
            .unwrap();
        Noisy {
            inner: log.group(9),
            neighbour,
        }
    });
}

/// A store whose every write is followed by a crash of the simulated disk and a
/// restart, so every expectation of the suite is checked against what recovery rebuilds.
struct Restarting {
    fs: SimFs,
    group: GroupStorage,
}

impl Restarting {
    fn new(seed: u64) -> Self {
        let fs = SimFs::new(seed);
        let group = open_sim(&fs, small_config()).unwrap().group(5);
        Restarting { fs, group }
    }

    fn restart<T>(&mut self, result: Result<T, StorageError>) -> Result<T, StorageError> {
        self.fs.crash_torn();
        self.group = open_sim(&self.fs, small_config()).unwrap().group(5);
        result
    }
}

impl Storage for Restarting {
    fn initial_state(&self) -> Result<RaftState, StorageError> {
        self.group.initial_state()
    }
    fn entries(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        self.group.entries(low, high, max_bytes)
    }
    fn term(&self, index: Index) -> Result<Term, StorageError> {
        self.group.term(index)
    }
    fn first_index(&self) -> Result<Index, StorageError> {
        self.group.first_index()
    }
    fn last_index(&self) -> Result<Index, StorageError> {
        self.group.last_index()
    }
    fn snapshot(&self, request_index: Index) -> Result<Snapshot, StorageError> {
        self.group.snapshot(request_index)
    }
}

impl LogStore for Restarting {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let result = self.group.append(entries);
        self.restart(result)
    }
    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        let result = self.group.set_hard_state(hard_state);
        self.restart(result)
    }
    fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        let result = self.group.apply_snapshot(snapshot);
        self.restart(result)
    }
    fn create_snapshot(
        &mut self,
        index: Index,
        conf_state: ConfState,
        data: Bytes,
    ) -> Result<Snapshot, StorageError> {
        let result = self.group.create_snapshot(index, conf_state, data);
        self.restart(result)
    }
    fn compact(&mut self, compact_index: Index) -> Result<(), StorageError> {
        let result = self.group.compact(compact_index);
        self.restart(result)
    }
}

// The suite passes when the store is crashed (torn) and reopened after every write:
// what a write acknowledged is exactly what recovery gives back.
#[test]
fn conforms_across_crash_and_restart() {
    let mut seed = 0;
    conformance::run_all(|| {
        seed += 1;
        Restarting::new(seed)
    });
}

/// A store that has a neighbour group append an entry before each of its writes.
struct Noisy {
    inner: GroupStorage,
    neighbour: GroupStorage,
}

impl Noisy {
    fn poke(&mut self) {
        let next = self.neighbour.last_index().unwrap() + 1;
        self.neighbour
            .append(&crate::support::entries(next, &[1], 30))
            .unwrap();
    }
}

impl Storage for Noisy {
    fn initial_state(&self) -> Result<RaftState, StorageError> {
        self.inner.initial_state()
    }
    fn entries(&self, low: Index, high: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        self.inner.entries(low, high, max_bytes)
    }
    fn term(&self, index: Index) -> Result<Term, StorageError> {
        self.inner.term(index)
    }
    fn first_index(&self) -> Result<Index, StorageError> {
        self.inner.first_index()
    }
    fn last_index(&self) -> Result<Index, StorageError> {
        self.inner.last_index()
    }
    fn snapshot(&self, request_index: Index) -> Result<Snapshot, StorageError> {
        self.inner.snapshot(request_index)
    }
}

impl LogStore for Noisy {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.poke();
        self.inner.append(entries)
    }
    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        self.poke();
        self.inner.set_hard_state(hard_state)
    }
    fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        self.poke();
        self.inner.apply_snapshot(snapshot)
    }
    fn create_snapshot(
        &mut self,
        index: Index,
        conf_state: ConfState,
        data: Bytes,
    ) -> Result<Snapshot, StorageError> {
        self.poke();
        self.inner.create_snapshot(index, conf_state, data)
    }
    fn compact(&mut self, compact_index: Index) -> Result<(), StorageError> {
        self.poke();
        self.inner.compact(compact_index)
    }
}
