//! One simulated node's durable storage for one raft group, for concord-sim: a
//! [`SimFs`] disk, the real [`Log`] on it, and the group's [`GroupStorage`]. Crashing
//! it crashes the disk and reopens the log, so every simulated crash runs the real
//! recovery code.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use concord_raft::{
    ConfState, Entry, HardState, Index, LogStore, RaftState, Snapshot, Storage, StorageError, Term,
};

use crate::config::LogConfig;
use crate::error::Result;
use crate::log::Log;
use crate::sim_fs::SimFs;
use crate::storage::GroupStorage;
use crate::GroupId;

/// Where [`SimGroupStorage`] keeps its log on its disk.
pub const SIM_DATA_DIR: &str = "/concord";

/// A group's storage on a simulated disk. Clones share the disk and the log.
#[derive(Clone, Debug)]
pub struct SimGroupStorage {
    fs: SimFs,
    config: LogConfig,
    group: GroupStorage,
}

impl SimGroupStorage {
    /// A bootstrapped group `group` with membership `conf_state` (as
    /// `MemStorage::with_conf_state`) on a new disk whose random choices come from
    /// `seed`.
    pub fn bootstrap(
        seed: u64,
        group: GroupId,
        conf_state: ConfState,
        config: LogConfig,
    ) -> Result<Self> {
        let fs = SimFs::new(seed);
        let log = open(&fs, &config)?;
        let group = log.bootstrap_group(group, conf_state)?;
        Ok(SimGroupStorage { fs, config, group })
    }

    /// An empty group (as `MemStorage::new`: a node waiting to be added) on a new disk.
    pub fn empty(seed: u64, group: GroupId, config: LogConfig) -> Result<Self> {
        let fs = SimFs::new(seed);
        let group = open(&fs, &config)?.group(group);
        Ok(SimGroupStorage { fs, config, group })
    }

    /// The simulated disk, for fault injection (`flip_bit`, `fail_next_sync`,
    /// `crash_at_sync`, ...).
    pub fn fs(&self) -> &SimFs {
        &self.fs
    }

    /// The group's storage.
    pub fn group(&self) -> &GroupStorage {
        &self.group
    }

    /// The last recorded hard state.
    pub fn hard_state(&self) -> HardState {
        self.group.hard_state()
    }

    /// Records membership durably.
    pub fn set_conf_state(&mut self, conf_state: ConfState) -> Result<()> {
        self.group.set_conf_state(conf_state)
    }

    /// The node loses power: unsynced data is dropped and the log is recovered from
    /// what is left. Fails if recovery refuses the disk (corruption injected with
    /// `flip_bit`, for instance).
    pub fn crash(self) -> Result<Self> {
        self.fs.crash();
        self.reopen()
    }

    /// As [`SimGroupStorage::crash`], keeping random prefixes of unsynced writes (torn).
    pub fn crash_torn(self) -> Result<Self> {
        self.fs.crash_torn();
        self.reopen()
    }

    /// An independent copy: the disk as it is now (unsynced data included, to be lost or
    /// kept by the copy's own crashes) and the log reopened on it. For faults that
    /// need the storage as it was before a write.
    pub fn fork(&self) -> Result<Self> {
        let fs = self.fs.fork();
        let group = open(&fs, &self.config)?.group(self.group.group());
        Ok(SimGroupStorage {
            fs,
            config: self.config.clone(),
            group,
        })
    }

    fn reopen(self) -> Result<Self> {
        let SimGroupStorage { fs, config, group } = self;
        let id = group.group();
        drop(group);
        let group = open(&fs, &config)?.group(id);
        Ok(SimGroupStorage { fs, config, group })
    }
}

fn open(fs: &SimFs, config: &LogConfig) -> Result<Log> {
    Log::open_with(Arc::new(fs.clone()), data_dir(), config.clone())
}

fn data_dir() -> PathBuf {
    Path::new(SIM_DATA_DIR).to_owned()
}

impl Storage for SimGroupStorage {
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

impl LogStore for SimGroupStorage {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.group.append(entries)
    }

    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        self.group.set_hard_state(hard_state)
    }

    fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        self.group.apply_snapshot(snapshot)
    }

    fn create_snapshot(
        &mut self,
        index: Index,
        conf_state: ConfState,
        data: Bytes,
    ) -> Result<Snapshot, StorageError> {
        self.group.create_snapshot(index, conf_state, data)
    }

    fn compact(&mut self, compact_index: Index) -> Result<(), StorageError> {
        self.group.compact(compact_index)
    }
}

#[cfg(test)]
mod tests {
    use concord_raft::MemStorage;

    use super::*;

    // A bootstrapped simulated group reads as MemStorage::with_conf_state, keeps every
    // acknowledged write across a torn crash, and passes the conformance suite.
    #[test]
    fn sim_group_storage_survives_crashes_and_conforms() {
        let conf_state = ConfState::with_voters([1, 2, 3]);
        let mut storage =
            SimGroupStorage::bootstrap(1, 1, conf_state.clone(), LogConfig::default()).unwrap();
        let model = MemStorage::with_conf_state(conf_state);
        assert_eq!(storage.initial_state(), model.initial_state());
        let entry = Entry {
            term: 2,
            index: 2,
            kind: concord_raft::EntryKind::Normal,
            data: Bytes::from_static(b"x"),
        };
        storage.append(std::slice::from_ref(&entry)).unwrap();
        let mut fork = storage.fork().unwrap();
        let storage = storage.crash_torn().unwrap();
        assert_eq!(storage.entries(2, 3, u64::MAX), Ok(vec![entry.clone()]));
        // The fork holds the same log and goes its own way.
        assert_eq!(fork.last_index(), Ok(2));
        fork.append(&[Entry { index: 3, ..entry }]).unwrap();
        assert_eq!((fork.last_index(), storage.last_index()), (Ok(3), Ok(2)));
        assert_eq!(storage.hard_state(), model.hard_state());
        let mut seed = 0;
        concord_raft::storage::conformance::run_all(|| {
            seed += 1;
            SimGroupStorage::empty(seed, 1, LogConfig::default()).unwrap()
        });
    }
}
